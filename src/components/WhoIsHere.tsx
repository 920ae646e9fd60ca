/**
 * The people in the chat now, live: this tab joins while it is visible and
 * in use (`usePresence`), and the list marks the visitor's own entry.
 */
import { useId } from "react";
import type { Id } from "../../convex/_generated/dataModel";
import { usePresence } from "../hooks/usePresence";

export function WhoIsHere({ meId }: { meId: Id<"users"> | null }) {
  const people = usePresence();
  const headingId = useId();

  return (
    <section className="panel who" aria-labelledby={headingId}>
      <h2 id={headingId} className="panel__title">
        Here now
        {people !== undefined && (
          <span className="who__count"> ({people.length})</span>
        )}
      </h2>
      <ul className="who__list" aria-labelledby={headingId}>
        {people?.map((person) => (
          <li key={person._id}>
            {person.name}
            {person._id === meId && <span className="who__you"> (you)</span>}
          </li>
        ))}
      </ul>
    </section>
  );
}
