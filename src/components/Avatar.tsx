/**
 * A person's picture beside their name: the member's uploaded one, or one
 * drawn from their user id (`lib/guestAvatar.ts`). Decorative: the name next
 * to it is what a screen reader reads.
 */
import { guestAvatar } from "../lib/guestAvatar";

export type AvatarUser = {
  _id: string;
  name: string;
  avatarUrl: string | null;
};

export function Avatar({
  user,
  size = 28,
}: {
  user: AvatarUser;
  size?: number;
}) {
  if (user.avatarUrl !== null) {
    return (
      <img
        className="avatar"
        src={user.avatarUrl}
        alt=""
        width={size}
        height={size}
        data-avatar="uploaded"
      />
    );
  }
  const { initials, hue } = guestAvatar(user._id, user.name);
  return (
    <svg
      className="avatar"
      viewBox="0 0 32 32"
      width={size}
      height={size}
      aria-hidden="true"
      data-avatar="generated"
    >
      <circle cx="16" cy="16" r="16" fill={`hsl(${hue} 55% 42%)`} />
      <text
        x="16"
        y="16"
        dy="0.35em"
        textAnchor="middle"
        fontSize={initials.length > 1 ? 12 : 15}
        fontWeight="600"
        fill="#fff"
      >
        {initials}
      </text>
    </svg>
  );
}
