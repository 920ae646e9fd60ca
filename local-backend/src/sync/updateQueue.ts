/**
 * The sockets waiting for an update (subscriptions.ts fan-out), first in
 * first out, urgent ones (a socket's own requests) before the others
 * (commits' invalidations); each socket at most once.
 *
 * Heavy ones (a socket whose last update ran its queries for long: results
 * of megabytes, thousands of queries) wait in a list of their own, behind the
 * light ones, so that a cheap client's update never queues behind ten
 * expensive ones (one that had waited HEAVY_MAX_WAIT_MS goes first, so none
 * starves), and are taken only when the caller allows (`take(false)` when
 * enough heavy updates are under way already).
 *
 * Why not two `Set`s: taking a Set's first entry walks past every entry
 * deleted before it (V8 keeps them until a rehash), so draining a room of N
 * sockets cost O(N²) per commit (3 µs per take at 3,000 sockets). Here a take
 * is O(1) amortized.
 *
 * Entries. Each waiting item holds one ticket, in `#tickets`, and the ticket
 * sits in its list; a list slot whose ticket is no longer the item's (taken,
 * removed, or moved up to urgent) is stale and skipped when the head reaches it.
 *
 * Usage:
 *   queue.add(session, urgent);
 *   const next = queue.take();   // undefined when empty
 *   queue.remove(session);       // a closed socket
 */

/** A heavy update that waited this long goes before the light ones. */
export const HEAVY_MAX_WAIT_MS = 50;

type Ticket<T> = {
  item: T;
  urgent: boolean;
  heavy: boolean;
  /** `performance.now()` when it was queued (aging the heavy ones). */
  at: number;
};

/** A list read from its head; slots behind the head are dropped as it moves. */
class TicketList<T> {
  #slots: Ticket<T>[] = [];
  #head = 0;

  push(ticket: Ticket<T>): void {
    this.#slots.push(ticket);
  }

  /** The first live ticket, dropping stale ones before it. */
  first(isLive: (ticket: Ticket<T>) => boolean): Ticket<T> | undefined {
    while (this.#head < this.#slots.length) {
      const ticket = this.#slots[this.#head];
      if (isLive(ticket)) return ticket;
      this.#head++;
    }
    this.#slots = [];
    this.#head = 0;
    return undefined;
  }

  /** Drops the first ticket (the one `first` returned). */
  shift(): void {
    this.#head++;
    // Stale slots past half the list: copy the rest down, so memory stays
    // proportional to what waits.
    if (this.#head > 1024 && 2 * this.#head > this.#slots.length) {
      this.#slots = this.#slots.slice(this.#head);
      this.#head = 0;
    }
  }

  clear(): void {
    this.#slots = [];
    this.#head = 0;
  }
}

export class UpdateQueue<T> {
  readonly #tickets = new Map<T, Ticket<T>>();
  readonly #urgent = new TicketList<T>();
  readonly #queued = new TicketList<T>();
  readonly #heavy = new TicketList<T>();
  readonly #isLive = (ticket: Ticket<T>) =>
    this.#tickets.get(ticket.item) === ticket;

  get size(): number {
    return this.#tickets.size;
  }

  /**
   * Queues `item` unless it waits already; `urgent` moves a waiting one up.
   * `heavy` (ignored for an urgent one) queues it behind the light ones.
   */
  add(item: T, urgent: boolean, heavy = false): void {
    const waiting = this.#tickets.get(item);
    if (waiting !== undefined && (waiting.urgent || !urgent)) return;
    const ticket = {
      item,
      urgent,
      heavy: heavy && !urgent,
      at: performance.now(),
    };
    this.#tickets.set(item, ticket);
    (urgent ? this.#urgent : ticket.heavy ? this.#heavy : this.#queued).push(
      ticket,
    );
  }

  /**
   * Takes the first item: the oldest urgent one, else a heavy one that
   * waited HEAVY_MAX_WAIT_MS, else the oldest light one, else the oldest
   * heavy one; heavy ones only when `heavyAllowed`.
   */
  take(heavyAllowed = true): T | undefined {
    const urgent = this.#takeFrom(this.#urgent);
    if (urgent !== undefined || !heavyAllowed)
      return urgent ?? this.#takeFrom(this.#queued);
    const oldest = this.#heavy.first(this.#isLive);
    if (
      oldest !== undefined &&
      performance.now() - oldest.at >= HEAVY_MAX_WAIT_MS
    )
      return this.#takeFrom(this.#heavy);
    return this.#takeFrom(this.#queued) ?? this.#takeFrom(this.#heavy);
  }

  remove(item: T): void {
    this.#tickets.delete(item);
  }

  #takeFrom(list: TicketList<T>): T | undefined {
    const ticket = list.first(this.#isLive);
    if (ticket === undefined) return undefined;
    list.shift();
    this.#tickets.delete(ticket.item);
    return ticket.item;
  }

  clear(): void {
    this.#tickets.clear();
    this.#urgent.clear();
    this.#queued.clear();
    this.#heavy.clear();
  }
}
