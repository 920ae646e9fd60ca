/**
 * The picture drawn for someone without an uploaded one (every guest): the
 * initials of their name on a colour derived from their user id, so a
 * person keeps their colour through renames, in every browser, with nothing
 * stored or fetched.
 *
 * ```ts
 * const { initials, hue } = guestAvatar(user._id, user.name);
 * ```
 */

export type GuestAvatar = { initials: string; hue: number };

export function guestAvatar(userId: string, name: string): GuestAvatar {
  return { initials: initialsOf(name), hue: hashOf(userId) % 360 };
}

/** "Ada Lovelace" -> "AL", "User 4821" -> "U4", "ada" -> "A". */
function initialsOf(name: string): string {
  const words = name.trim().split(/\s+/).filter(Boolean);
  const letters = words.slice(0, 2).map((word) => [...word][0] ?? "");
  return letters.join("").toUpperCase() || "?";
}

/** FNV-1a over the id's UTF-16 code units: stable and well spread. */
function hashOf(text: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  return hash >>> 0;
}
