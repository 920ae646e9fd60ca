/**
 * One sync session per WebSocket: the server side of convex 1.48's
 * `BaseConvexClient` protocol (spec §1).
 *
 * Versions. The client holds a `StateVersion {querySet, identity, ts}` and
 * throws unless each Transition starts exactly there (`remote_query_set.ts`).
 * - `#sent`: the endVersion of the last Transition sent; the next one starts
 *   here. Starts at {0, 0, 0}, as the client's does on every new socket.
 * - `#receivedQuerySet`: the newVersion of the last ModifyQuerySet received;
 *   `baseVersion` of the next must equal it. Reaches `#sent` once an update
 *   has applied those modifications.
 * - `#receivedIdentity`: the same for Authenticate.
 * - ts only moves forward: every update runs at the latest committed snapshot.
 *
 * Updates. Incoming query-set changes, auth changes and mutation completions
 * queue this session's update at the front of the hub's fan-out queue; commits
 * that invalidate one of its queries queue it at the back
 * (`subscriptions.ts`). An update runs inside one of the hub's slices and
 * sends one Transition once every query it sends holds a result valid at the
 * latest commit (commits land while queries run; each clears what it
 * invalidates); one that reaches the slice's deadline with queries left to
 * run keeps its state and finishes in a later slice, re-running whatever a
 * commit invalidated meanwhile, so each Transition is one consistent snapshot.
 * An update that runs long (LONG_UPDATE_AFTER_MS) or is starved (commits keep
 * clearing what it ran, STARVED_PASSES) pins a snapshot and runs what it
 * lacks there (`#snapshotPass`), however many commits land meanwhile; its
 * Transition carries the snapshot's ts, and what commits changed since is
 * run again in the next update, at a newer snapshot. So a query set that
 * costs more than the time between two commits still gets Transitions, and
 * no writer is held for it.
 *
 * Single flight. While MAX_SEND_TRANSITIONS Transitions wait unwritten in the
 * socket's buffer (a client that reads slowly), no new one is computed; what
 * changes meanwhile folds into the next, sent once the socket drains (as
 * convex-backend's `SYNC_MAX_SEND_TRANSITION_COUNT`, `crates/sync/src/worker.rs`).
 *
 * Identity. `Authenticate` is verified asynchronously (a token may need its
 * provider's keys); the messages that arrive meanwhile are held and handled
 * after it, so a mutation sent after `setAuth` runs under the new identity.
 * - `#identity`: set when verification succeeds; every query, mutation and
 *   action from this socket runs under it, and the next Transition re-runs all
 *   queries (under the new sharing key) and advances `identity`.
 * - `#held`: non-null while a verification is in flight.
 * - a refused token gets AuthError (`authUpdateAttempted: true`) and the
 *   socket closes; the client retries with a fresh token or goes on without.
 * - a user token that expires mid-session gets AuthError with
 *   `authUpdateAttempted: false` at its `exp` (convex-backend sync worker).
 *
 * Mutations from one socket run one at a time in arrival order. Each success
 * is answered with MutationResponse and then, on this socket, a Transition
 * whose ts is at least the commit's: the client resolves `await mutation()` only
 * on that Transition (convex 1.48 `request_manager.ts` `removeCompleted`).
 *
 * Durability. A commit returns before it is on disk (group commit,
 * storage/database.ts), so every MutationResponse and Transition goes through
 * `#outbox`: frames leave in the order they were made, each once the commit it
 * may reflect (its ts) is durable (the hub's `whenDurable`: one wait per
 * commit for all sockets, resumed in its time slices). A socket's next
 * mutation runs while the previous one waits there, so a client's pipelined
 * mutations share fsyncs.
 *
 * Frames. A Transition's bytes come from the hub's `frames`
 * (`transitionFrames.ts`): sockets sending the same Transition send the same
 * Buffer.
 */
import { performance } from "node:perf_hooks";
import type { JSONValue } from "convex/values";
import {
  ANONYMOUS,
  AuthenticationError,
  type Authenticator,
  type Credential,
  type Identity,
} from "../functions/authentication.ts";
import type { CommitWatch } from "../functions/commitLog.ts";
import { decodeTs } from "../values/wire.ts";
import type { PinnedSnapshot } from "../functions/functionRunner.ts";
import type { Pace } from "../functions/syscalls.ts";
import { queryModification } from "./outcomes.ts";
import type { SessionVersion, TransitionParts } from "./transitionFrames.ts";
import {
  type QueryEntry,
  type SharedResult,
  type SubscriptionHub,
  type Subscriber,
  type UpdateSlot,
} from "./subscriptions.ts";
import { actionResponse, mutationResponse } from "./outcomes.ts";
import {
  type AddQuery,
  type ClientMessage,
  parseClientMessage,
  MAX_FRAME_BYTES,
  parseClientMessageInTurns,
  ProtocolError,
  type QueryId,
  type RemoveQuery,
  type ServerMessage,
} from "./protocol.ts";

/** The real sync worker pings after 15 s of quiet; the client gives up after 60 s. */
export const PING_INTERVAL_MS = 15_000;

/** convex-backend `SYNC_MAX_SEND_TRANSITION_COUNT` (`crates/common/src/knobs.rs`). */
export const MAX_SEND_TRANSITIONS = 2;
/**
 * Full passes over a socket's queries whose results commits cleared again
 * before a Transition could go out (a pass may span slices, `#pass`); after
 * that many, or once one query could not be validated at all (`resultOf`),
 * the update runs its queries at a snapshot (`#snapshotPass`), so a busy
 * table cannot starve a subscriber.
 */
const STARVED_PASSES = 3;
/**
 * When no snapshot can be pinned (all MAX_SNAPSHOTS are), a starved update
 * may hold commits off instead, for at most this long: about its queries'
 * cost, estimated from their runs so far. A query set that costs more keeps
 * trying, since holding every writer that long would hold every other client.
 */
const STARVED_HOLD_MAX_MS = 100;
/**
 * An update that has run its queries this long since its last Transition
 * (hundreds of queries, or slow ones) is a long one: from then on it stops
 * at LONG_UPDATE_SLICE_MS into each slice and ends the slice, so the event
 * loop turns about every millisecond rather than every SLICE_MS while it
 * runs, and another client's request, which needs a few turns, is not held
 * at each of them (as a long run's windows, deadline.ts LONG_RUN_AFTER_MS).
 */
const LONG_UPDATE_AFTER_MS = 20;
const LONG_UPDATE_SLICE_MS = 1;
/** Messages held while a token is verified; more is a misbehaving client. */
const MAX_HELD_MESSAGES = 10_000;
/**
 * Mutations and actions of one socket waiting for their answers at most, and
 * their frames' characters: as many as may wait to be read, so a call of
 * any size a frame can carry fits (one over Convex's 16 MiB of arguments
 * gets Convex's error, not a closed socket).
 */
const MAX_PENDING_REQUESTS = MAX_HELD_MESSAGES;
const MAX_PENDING_CHARS = MAX_FRAME_BYTES;

/** A message held while a token is verified, with its frame's size. */
type HeldMessage = { message: ClientMessage; chars: number };
/** What a close frame's reason may hold (`closeReason`). */
const MAX_CLOSE_REASON_BYTES = 123;
/**
 * A Transition of this many queries goes on after the turn that checked its
 * results, this many a turn (`#sendTransition`): for 10,000 results one
 * turn took 25-42 ms (the pass's last check 12-19 ms, taking the results
 * 11-18 ms) and the frame 14-33 ms more (bench/fairness.ts).
 */
const LARGE_TRANSITION_QUERIES = 1_000;
/** Query-set changes an update applies before it lets the event loop turn (10,000 at once: 40 ms). */
const APPLY_PER_UPDATE = 1_000;
/**
 * A client frame this long is parsed over several turns, and the hub's work
 * waits for a poll after the turn that received it
 * (`parseClientMessageInTurns`, `SubscriptionHub.endTurn`): parsing and
 * checking a ModifyQuerySet of 10,000 queries (1.3 MB) took 15-23 ms, and
 * its first update ran in the same turn (bench/fairness.ts).
 */
const LARGE_FRAME_CHARS = 256 * 1024;

/** A query whose new result a Transition sends. */
type Updated = { queryId: QueryId; result: SharedResult };

/**
 * One serialized server message (UTF-8 JSON, sent as a text message): a
 * Buffer may be the same one sent to other sockets, and is never changed; an
 * array is the message's fragments, in order (RFC 6455 section 5.4: the
 * client's WebSocket joins them), so a Transition encoded over several turns
 * is never copied into one Buffer.
 */
export type Frame = string | Buffer | readonly Buffer[];

/** A message's text, its fragments joined (for a transport that takes messages whole). */
export function frameText(frame: Frame): string {
  if (typeof frame === "string") return frame;
  return (Buffer.isBuffer(frame) ? frame : Buffer.concat(frame)).toString(
    "utf8",
  );
}

export type SessionTransport = {
  /**
   * Sends one message (`Frame`), whole, before anything sent after it.
   * `written`, when given, is called once it has left the process's buffer
   * (handed to the OS), as `ws`'s send callback is.
   */
  send(frame: Frame, written?: () => void): void;
  /**
   * Hands the frames sent so far to the OS now; without it they may wait
   * for the end of the tick, to leave in one write. Called after each burst
   * of frames the fan-out sends, so that the syscall is paid inside the time
   * slice that sent them (timeSlices.ts), not after it: a room of 1,000
   * sockets otherwise wrote its frames in one stretch after the slice.
   * A no-op when nothing waits.
   */
  flush(): void;
  /** Closes the socket; the client reconnects (never used for FatalError). */
  close(code: number, reason: string): void;
};

/** A starved update's pass at a pinned snapshot (`SyncSession.#snapshotPass`). */
type SnapshotPass = {
  pinned: PinnedSnapshot;
  /** Over the dirty queries, resumed in the next slice; the query it stopped before. */
  pass: Iterator<QueryId>;
  next: QueryId | null;
  /** A run at the snapshot is in flight: a drop releases it when that run is over. */
  running: boolean;
  dropped: boolean;
  /** Each query's result at the snapshot, the entry it is for, and whether it was held at the pin. */
  results: Map<QueryId, SnapshotResult>;
  /** The results run at the snapshot, watched for the commits since (`CommitWatch`). */
  watch: CommitWatch<SnapshotResult>;
};

type SnapshotResult = {
  entry: QueryEntry;
  result: SharedResult;
  held: boolean;
};

type QuerySubscription = {
  queryId: QueryId;
  udfPath: string;
  args: JSONValue;
  /** The latest journal the query produced; the next run continues from it. */
  journal: string | null;
  /** The shared query this subscription reads its results from; moves when
   *  the journal or the identity changes. */
  entry: QueryEntry;
  /** Hash of the last result sent, to leave unchanged results out.
   *  - undefined: never sent (just added)
   *  - set when a QueryUpdated/QueryFailed for it is sent */
  resultHash: string | undefined;
};

export class SyncSession implements Subscriber {
  readonly #hub: SubscriptionHub;
  readonly #transport: SessionTransport;
  readonly #unsubscribe: () => void;
  #clientSessionId: string | null = null;
  /**
   * The client's clock minus ours at Connect, in ms (latency included), sent
   * on every Transition: the client uses it to schedule refreshing a cached
   * auth token by the server's clock (convex-backend `sync/src/worker.rs`
   * `client_clock_skew`; convex 1.48 `authentication_manager.ts`).
   */
  #clientClockSkew: number | null = null;
  #sent = { querySet: 0, identity: 0, ts: 0n };
  /** Full passes that ran queries since the last Transition (STARVED_PASSES). */
  #passes = 0;
  /** Query runs since the last Transition, and their wall time (STARVED_HOLD_MAX_MS). */
  #runs = 0;
  #runMs = 0;
  /**
   * The part of `#runMs` spent in runs of its own (not waiting for another
   * socket's run of a shared query), and its value when the last Transition
   * went out: what `updateMs` reports.
   */
  #ownRunMs = 0;
  #lastOwnRunMs = 0;
  /**
   * The pass in progress over `#dirty`, resumed in the next slice where the
   * deadline stopped it (a Set's iterator sees later additions and skips
   * removals), so a pass costs one sweep of the query set however many slices
   * it spans; the query it stopped before; whether it ran any query.
   */
  #pass: Iterator<QueryId> | null = null;
  #passNext: QueryId | null = null;
  #passRan = false;
  /** A query could not be validated at all since the last Transition (`resultOf`). */
  #unvalidated = false;
  /** A snapshot pass read what snapshots do not cover: none until the next Transition. */
  #noSnapshot = false;
  /** The last Transition came from a snapshot and left queries out of date: the next update starts at one. */
  #contended = false;
  /**
   * A starved update's pass at a pinned snapshot (`#snapshotPass`), resumed
   * across slices: its results so far, each with the entry it was run for.
   */
  #atSnapshot: SnapshotPass | null = null;
  #receivedQuerySet = 0;
  #receivedIdentity = 0;
  #knownQueryIds = new Set<QueryId>();
  readonly #queries = new Map<QueryId, QuerySubscription>();
  #pendingModifications: (AddQuery | RemoveQuery)[] = [];
  /** How many of them an update applied so far (`#applyModifications`). */
  #appliedModifications = 0;
  /** The query-set version the applied modifications reach. */
  #appliedQuerySet = 0;
  /** Removals applied but not yet sent as QueryRemoved. */
  #removed: QueryId[] = [];
  #dirty = new Set<QueryId>();
  #rerunAll = false;
  /** The identity everything from this socket runs as (and the sharing key's slot). */
  #identity: Identity = ANONYMOUS;
  readonly #authenticator: Authenticator | null;
  #held: HeldMessage[] | null = null;
  /** Their frames' characters: at most MAX_FRAME_BYTES are held. */
  #heldChars = 0;
  /** Mutations and actions received and not yet answered (`#request`). */
  #pendingRequests = 0;
  /** The characters of their frames. */
  #pendingChars = 0;
  /**
   * Frames waiting to be handled, in order (`receive`): received while a
   * large one is parsed over several turns, or after the hub's slice ran out
   * in the turn they arrived in. Null when none waits.
   */
  #inbox: string[] | null = null;
  /** Their characters: at most MAX_FRAME_BYTES wait, as one frame may be. */
  #inboxChars = 0;
  #expiryTimer: NodeJS.Timeout | undefined;
  /**
   * The ts a Transition must reach for mutations answered on this socket, or
   * null when none is owed. A Transition is owed even when the mutation wrote
   * nothing (its ts is then the snapshot it read, possibly 0 or already sent):
   * the client resolves a completed mutation only on the next Transition
   * (convex 1.48 `client.ts` calls `requestManager.removeCompleted` there).
   */
  #owedTs: bigint | null = null;
  /** Transitions sent but not yet written out (single flight). */
  #unwritten = 0;
  /** An update was asked for while single flight held it back. */
  #heldBack = false;
  /**
   * Frames waiting for the commit they reflect to be durable, oldest first.
   * - a frame joins when made, unless the outbox is empty and its ts is
   *   already durable (then it is sent at once)
   * - leaves, in order, once `db.durable(ts)` has resolved for it
   * - cleared by `dispose`
   */
  #outbox: { ts: bigint; frame: Frame; written?: () => void }[] = [];
  /** The outbox's first frame waits for its commit (`hub.whenDurable`). */
  #awaitingDurable = false;
  readonly #resumeOutbox = () => {
    this.#awaitingDurable = false;
    this.#flushOutbox();
  };
  readonly #durabilityFailed = (error: unknown) =>
    this.#internalError("durability", error);
  #mutations: Promise<void> = Promise.resolve();
  #lastSendAt = Date.now();
  #pingTimer: NodeJS.Timeout;
  #closed = false;

  constructor(
    hub: SubscriptionHub,
    transport: SessionTransport,
    /** Verifies `Authenticate`; without one, every credential is refused. */
    authenticator: Authenticator | null = null,
  ) {
    this.#hub = hub;
    this.#transport = transport;
    this.#authenticator = authenticator;
    this.#unsubscribe = hub.add(this);
    this.#pingTimer = this.#schedulePing(PING_INTERVAL_MS);
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Frames received and not handled yet (`receive`). */
  get waitingFrames(): number {
    return this.#inbox?.length ?? 0;
  }

  /**
   * Handles one text frame, in the order received; a malformed one closes
   * this socket only. A large one is parsed over several turns
   * (`parseClientMessageInTurns`), the frames after it waiting for it.
   * Frames are handled inside the hub's slice (`SubscriptionHub.receiving`):
   * once frames of many sockets that arrived in one poll have used it up,
   * the rest wait for a later turn, each socket's in order (1,000 clients'
   * ModifyQuerySets at once were 12 ms in one stretch).
   */
  receive(frame: string): void {
    if (this.#closed) return;
    if (this.#inbox !== null) {
      this.#inboxChars += frame.length;
      if (
        this.#inbox.length >= MAX_HELD_MESSAGES ||
        this.#inboxChars > MAX_FRAME_BYTES
      ) {
        this.#fail(
          `More than ${MAX_HELD_MESSAGES} messages or ${MAX_FRAME_BYTES} characters sent while earlier ones waited to be read`,
        );
        return;
      }
      this.#inbox.push(frame);
      return;
    }
    if (!this.#hub.receiving()) {
      this.#inbox = [frame];
      this.#inboxChars = frame.length;
      this.#hub.whenReceiving(this.#drainInboxLater, this.#drainFailed);
      return;
    }
    if (frame.length >= LARGE_FRAME_CHARS) {
      this.#receiveLarge(frame);
      return;
    }
    this.#accept(() => parseClientMessage(frame), frame.length);
  }

  readonly #drainInboxLater = (): void => this.#drainInbox();
  readonly #drainFailed = (error: unknown): void =>
    this.#internalError("receive", error);

  /**
   * Handles the frames that wait (`#inbox`), in order, while the hub's slice
   * lasts; what is left waits for a later one.
   */
  #drainInbox(): void {
    if (this.#closed) return;
    const inbox = this.#inbox ?? [];
    let next = 0;
    try {
      while (next < inbox.length && this.#hub.receiving()) {
        const frame = inbox[next++];
        this.#inboxChars -= frame.length;
        // Another large one: the rest waits behind it, in order.
        if (frame.length >= LARGE_FRAME_CHARS) {
          this.#receiveLarge(frame, inbox.slice(next));
          return;
        }
        this.#accept(() => parseClientMessage(frame), frame.length);
        if (this.#closed) return;
      }
    } catch (error) {
      this.#internalError("receive", error);
      return;
    }
    if (next < inbox.length) {
      this.#inbox = inbox.slice(next);
      this.#hub.whenReceiving(this.#drainInboxLater, this.#drainFailed);
    } else {
      this.#inbox = null;
      this.#inboxChars = 0;
    }
  }

  /** `waiting`: frames received after it, handled once it is (`#inbox`). */
  #receiveLarge(frame: string, waiting: string[] = []): void {
    this.#inbox = waiting;
    this.#inboxChars = 0;
    for (const next of waiting) this.#inboxChars += next.length;
    // The turn already unmasked and decoded it: the hub's work waits for a poll.
    this.#hub.endTurn();
    parseClientMessageInTurns(frame, this.#hub.pace).then(
      (message) => {
        if (this.#closed) return;
        // As the socket's own handler does for a frame it was given.
        try {
          this.#accept(() => message, frame.length);
        } catch (error) {
          this.#internalError("receive", error);
          return;
        }
        this.#drainInbox();
      },
      (error: unknown) => {
        if (this.#closed) return;
        if (error instanceof ProtocolError) this.#fail(error.message);
        else this.#internalError("receive", error);
      },
    );
  }

  /**
   * Handles (or holds, while a token is verified) the message `parse` gives,
   * from a frame of `chars` characters.
   */
  #accept(parse: () => ClientMessage, chars: number): void {
    try {
      const message = parse();
      if (this.#held !== null) {
        this.#heldChars += chars;
        if (
          this.#held.length >= MAX_HELD_MESSAGES ||
          this.#heldChars > MAX_FRAME_BYTES
        ) {
          throw new ProtocolError(
            `More than ${MAX_HELD_MESSAGES} messages or ${MAX_FRAME_BYTES} characters while a token was being verified`,
          );
        }
        this.#held.push({ message, chars });
        return;
      }
      this.#handle(message, chars);
    } catch (error) {
      if (error instanceof ProtocolError) {
        this.#fail(error.message);
        return;
      }
      throw error;
    }
  }

  dispose(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#dropSnapshot();
    this.#outbox = [];
    clearTimeout(this.#pingTimer);
    clearTimeout(this.#expiryTimer);
    this.#unsubscribe();
    const queries = Array.from(
      this.#queries.values(),
      (query) => [query.queryId, query.entry] as const,
    );
    this.#queries.clear();
    this.#hub.unsubscribeAll(this, queries);
  }

  invalidate(queryIds: ReadonlySet<QueryId>): void {
    for (const queryId of queryIds) this.#dirty.add(queryId);
    this.#hub.schedule(this, false);
  }

  invalidateAll(): void {
    // Its results ran the functions being replaced.
    this.#dropSnapshot();
    this.#rerunAll = true;
    this.#scheduleUpdate();
  }

  #handle(message: ClientMessage, chars: number): void {
    switch (message.type) {
      case "Connect":
        this.#clientSessionId = message.sessionId;
        if (message.clientTs !== undefined)
          this.#clientClockSkew = Math.round(message.clientTs - Date.now());
        // A client that saw a later timestamp (data reset, clock change) must
        // not see time go backwards; move our clock instead of failing.
        if (message.maxObservedTimestamp !== undefined) {
          this.#hub.db.advanceClockPast(decodeTs(message.maxObservedTimestamp));
        }
        return;
      case "ModifyQuerySet": {
        if (
          message.baseVersion !== this.#receivedQuerySet ||
          message.newVersion <= message.baseVersion
        ) {
          throw new ProtocolError(
            `ModifyQuerySet from version ${message.baseVersion} to ${message.newVersion}, but the query set is at version ${this.#receivedQuerySet}`,
          );
        }
        for (const modification of message.modifications) {
          if (modification.type === "Add") {
            if (this.#knownQueryIds.has(modification.queryId)) {
              throw new ProtocolError(
                `Query ${modification.queryId} was added twice`,
              );
            }
            this.#knownQueryIds.add(modification.queryId);
          } else {
            if (!this.#knownQueryIds.delete(modification.queryId)) {
              throw new ProtocolError(
                `Query ${modification.queryId} was removed but never added`,
              );
            }
          }
        }
        this.#receivedQuerySet = message.newVersion;
        for (const modification of message.modifications)
          this.#pendingModifications.push(modification);
        this.#scheduleUpdate();
        return;
      }
      case "Mutation": {
        const { requestId, udfPath, args } = message;
        const identity = this.#identity;
        const done = this.#request(chars);
        this.#mutations = this.#mutations
          .then(() => this.#runMutation(requestId, udfPath, args, identity))
          .catch((error: unknown) => this.#internalError("mutation", error))
          .finally(done);
        return;
      }
      case "Action": {
        const done = this.#request(chars);
        this.#runAction(message.requestId, message.udfPath, message.args)
          .catch((error: unknown) => this.#internalError("action", error))
          .finally(done);
        return;
      }
      case "Authenticate": {
        if (message.baseVersion !== this.#receivedIdentity) {
          throw new ProtocolError(
            `Authenticate from identity version ${message.baseVersion}, but the identity is at version ${this.#receivedIdentity}`,
          );
        }
        this.#authenticate(message.baseVersion, credentialOf(message));
        return;
      }
      case "Event":
        return;
      default:
        message satisfies never;
    }
  }

  /**
   * Counts a mutation or action from a frame of `chars` until it is
   * answered (the returned function): a socket that sends them faster than
   * they run is closed once MAX_PENDING_REQUESTS or MAX_PENDING_CHARS wait,
   * rather than holding their arguments in memory without end.
   */
  #request(chars: number): () => void {
    if (
      this.#pendingRequests >= MAX_PENDING_REQUESTS ||
      this.#pendingChars + chars > MAX_PENDING_CHARS
    ) {
      throw new ProtocolError(
        `More than ${MAX_PENDING_REQUESTS} mutations and actions, or ${MAX_PENDING_CHARS} characters of them, wait for their answers`,
      );
    }
    this.#pendingRequests++;
    this.#pendingChars += chars;
    return () => {
      this.#pendingRequests--;
      this.#pendingChars -= chars;
    };
  }

  #authenticate(baseVersion: number, credential: Credential): void {
    this.#held = [];
    this.#heldChars = 0;
    const verified =
      credential.type === "None"
        ? Promise.resolve(ANONYMOUS)
        : this.#authenticator === null
          ? Promise.reject(
              new AuthenticationError(
                "Unauthenticated",
                "This backend has no authenticator",
              ),
            )
          : this.#authenticator.authenticate(credential);
    verified
      .then(
        (identity) => {
          if (this.#closed) return;
          this.#identity = identity;
          this.#receivedIdentity = baseVersion + 1;
          this.#watchExpiry(identity);
          this.#rerunAll = true;
          this.#scheduleUpdate();
        },
        (error: unknown) => {
          if (this.#closed) return;
          if (!(error instanceof AuthenticationError)) {
            this.#internalError("authentication", error);
            return;
          }
          this.#refuseIdentity(error, true);
        },
      )
      .finally(() => this.#releaseHeld())
      .catch((error: unknown) => this.#internalError("authentication", error));
  }

  /** Handles the messages held during a verification, until one starts another. */
  #releaseHeld(): void {
    const held = this.#held ?? [];
    this.#held = null;
    while (held.length > 0 && !this.#closed) {
      if (this.#held !== null) {
        (this.#held as HeldMessage[]).push(...held);
        for (const { chars } of held) this.#heldChars += chars;
        return;
      }
      const { message, chars } = held.shift()!;
      try {
        this.#handle(message, chars);
      } catch (error) {
        if (error instanceof ProtocolError) {
          this.#fail(error.message);
          return;
        }
        throw error;
      }
    }
  }

  /**
   * Sends AuthError (FatalError for a misconfigured provider, as Convex sends
   * `bad_request` errors) and closes: the real sync worker ends the session.
   * `baseVersion` is the identity version the server is still at.
   */
  #refuseIdentity(error: AuthenticationError, updateAttempted: boolean): void {
    this.#send(
      error.kind === "badRequest"
        ? { type: "FatalError", error: error.message }
        : {
            type: "AuthError",
            error: error.message,
            baseVersion: this.#receivedIdentity,
            authUpdateAttempted: updateAttempted,
          },
    );
    this.#transport.close(1000, "AuthError");
    this.dispose();
  }

  #watchExpiry(identity: Identity): void {
    clearTimeout(this.#expiryTimer);
    this.#expiryTimer = undefined;
    if (identity.type !== "user") return;
    // setTimeout's limit is 2^31-1 ms; a later expiry re-arms when it fires.
    const delay = Math.min(identity.expiresAtMs - Date.now(), 2 ** 31 - 1);
    this.#expiryTimer = setTimeout(
      () => {
        if (Date.now() < identity.expiresAtMs) {
          this.#watchExpiry(identity);
          return;
        }
        this.#refuseIdentity(
          new AuthenticationError("TokenExpired", "Token expired"),
          false,
        );
      },
      Math.max(0, delay),
    );
    this.#expiryTimer.unref();
  }

  async #runMutation(
    requestId: number,
    udfPath: string,
    args: JSONValue[],
    identity: Identity,
  ): Promise<void> {
    // The socket closed while it waited: as Convex's sync worker drops its
    // pending work with the connection; the client sends it again on its
    // next connection, where its request id finds any earlier outcome.
    if (this.#closed) return;
    const dedupe =
      this.#clientSessionId === null
        ? undefined
        : { sessionId: this.#clientSessionId, requestId };
    const outcome = await this.#hub.runner.executeMutation({
      path: udfPath,
      args,
      dedupe,
      identity,
    });
    if (this.#closed) return;
    this.#sendWhenDurable(
      outcome.observedTs,
      mutationResponse(requestId, outcome),
    );
    if (outcome.status === "success") {
      if (this.#owedTs === null || outcome.ts! > this.#owedTs)
        this.#owedTs = outcome.ts!;
      this.#scheduleUpdate();
    }
  }

  async #runAction(
    requestId: number,
    udfPath: string,
    args: JSONValue[],
  ): Promise<void> {
    const outcome = await this.#hub.runner.runAction({
      path: udfPath,
      args,
      identity: this.#identity,
    });
    if (this.#closed) return;
    this.#send(actionResponse(requestId, outcome));
    // Actions may have run mutations; the real worker schedules an update after each action.
    this.#scheduleUpdate();
  }

  /**
   * Commit invalidations wait one macrotask, so the socket whose mutation made
   * the commit gets to send its MutationResponse and queue its own update
   * first: its `await mutation()` then costs one re-run, not one per client.
   */
  #scheduleUpdate(): void {
    if (this.#closed) return;
    this.#hub.schedule(this, true);
  }

  get updateMs(): number {
    return Math.max(this.#ownRunMs, this.#lastOwnRunMs);
  }

  update(slot: UpdateSlot): boolean | Promise<boolean> {
    if (this.#closed) return true;
    if (this.#unwritten >= MAX_SEND_TRANSITIONS) {
      // A client that stops reading must not keep a snapshot pinned.
      this.#dropSnapshot();
      this.#heldBack = true;
      return true;
    }
    try {
      // The rest of a large query set in the next update (the lane takes
      // it again, in this slice if it has time left).
      if (!this.#applyModifications()) return false;
      if (this.#rerunAll) {
        for (const queryId of this.#queries.keys()) this.#dirty.add(queryId);
        this.#rerunAll = false;
      }
      // Every result held (another socket's run filled them): the Transition
      // goes out now, without a promise, as a pass that runs nothing would.
      // (Not while a pass is under way: it has results to run.)
      if (this.#pass === null && this.#atSnapshot === null && this.#allHeld()) {
        const sending = this.#sendTransition(slot.pace);
        if (sending === undefined) return true;
        return sending.then(
          () => true,
          (error: unknown) => {
            this.#internalError("update", error);
            return true;
          },
        );
      }
    } catch (error) {
      this.#internalError("update", error);
      return true;
    }
    return this.#updateOnce(slot).catch((error: unknown) => {
      this.#internalError("update", error);
      return true;
    });
  }

  /** Whether every dirty query holds a result valid now. */
  #allHeld(): boolean {
    for (const queryId of this.#dirty) {
      const query = this.#queries.get(queryId)!;
      this.#follow(query);
      if (query.entry.result === null) return false;
    }
    return true;
  }

  async #updateOnce(slot: UpdateSlot): Promise<boolean> {
    // A commit during a run may clear results already held, so passes repeat
    // until one finds every result held: that pass runs nothing, so the
    // results are all valid at one moment, the Transition's ts. Commits that
    // keep clearing them faster than they run would starve the socket, so
    // once starved (`#starved`) the update runs them at a snapshot instead.
    let ran = false;
    for (;;) {
      const long = this.#runMs >= LONG_UPDATE_AFTER_MS;
      // A long update of several queries goes on at a snapshot too, from
      // where it is (what it holds is valid there): commits landing during
      // a long pass would clear results faster than it runs them. (One
      // query alone is never mixed with another's snapshot; if commits keep
      // overlapping it, it is starved.)
      if (
        this.#atSnapshot === null &&
        !this.#noSnapshot &&
        ((long && this.#dirty.size > 1) || this.#starved())
      ) {
        this.#atSnapshot = this.#pinSnapshot(slot);
        if (this.#atSnapshot !== null) {
          this.#pass = null;
          this.#passNext = null;
          this.#passRan = false;
        }
      }
      if (
        this.#atSnapshot === null &&
        this.#pass === null &&
        this.#starved() &&
        this.#cheapToHold()
      ) {
        return slot.exclusive(async () => {
          while ((await this.#runPass(slot, true, Infinity)) === "ran");
          return true;
        });
      }
      const deadline = long
        ? Math.min(slot.deadline, performance.now() + LONG_UPDATE_SLICE_MS)
        : slot.deadline;
      const pass =
        this.#atSnapshot !== null
          ? await this.#snapshotPass(slot, ran, deadline)
          : await this.#runPass(slot, ran, deadline);
      if (pass === "deadline") {
        if (long) slot.endSlice();
        return false;
      }
      if (pass !== "ran") return true;
      ran = true;
      this.#passes++;
    }
  }

  /** Whether commits keep clearing this update's results faster than it runs them (checked between passes). */
  #starved(): boolean {
    return (
      this.#contended || this.#unvalidated || this.#passes >= STARVED_PASSES
    );
  }

  /** Whether finishing with commits held off costs little enough (STARVED_HOLD_MAX_MS). */
  #cheapToHold(): boolean {
    let toRun = 0;
    for (const queryId of this.#dirty)
      if (this.#queries.get(queryId)!.entry.result === null) toRun++;
    return (
      (this.#runMs / Math.max(1, this.#runs)) * toRun <= STARVED_HOLD_MAX_MS
    );
  }

  /**
   * Pins a snapshot for a starved update. The results held now are valid at
   * it (filed before it, and no commit cleared them), so they are taken as
   * they are; the others run at it (`#snapshotPass`).
   */
  #pinSnapshot(slot: UpdateSlot): SnapshotPass | null {
    const pinned = this.#pin(slot);
    if (pinned === null) return null;
    const results: SnapshotPass["results"] = new Map();
    for (const queryId of this.#dirty) {
      const query = this.#queries.get(queryId)!;
      this.#follow(query);
      const result = query.entry.result;
      if (result !== null)
        results.set(queryId, { entry: query.entry, result, held: true });
    }
    return {
      pinned,
      pass: this.#dirty.values(),
      next: null,
      running: false,
      dropped: false,
      results,
      watch: pinned.watch<SnapshotResult>(),
    };
  }

  /**
   * The pass of a starved update at its snapshot: runs every dirty query
   * without a result there, in slices like `#runPass`, then sends them all
   * in one Transition at the snapshot's ts, however many commits landed
   * meanwhile. Results no commit has overlapped since are valid now too and
   * fill their shared entries (`hub.adopt`); the others stay dirty for the
   * next update, which starts at a new snapshot.
   */
  async #snapshotPass(
    slot: UpdateSlot,
    ranBefore: boolean,
    deadline: number,
  ): Promise<"sent" | "ran" | "deadline" | "closed"> {
    const at = this.#atSnapshot!;
    let ran = false;
    for (;;) {
      let queryId = at.next;
      at.next = null;
      if (queryId === null) {
        const next = at.pass.next();
        if (next.done === true) break;
        queryId = next.value;
      }
      const query = this.#queries.get(queryId);
      if (query === undefined || !this.#dirty.has(queryId)) continue;
      this.#follow(query);
      if (at.results.get(queryId)?.entry === query.entry) continue;
      if ((ran || ranBefore) && performance.now() >= deadline) {
        at.next = queryId;
        return "deadline";
      }
      if (at.pinned.expired && !this.#repin(slot, at)) {
        this.#passes = 0;
        return "ran";
      }
      const started = performance.now();
      const { path, args, journal, identity } = query.entry.query;
      const entry = query.entry;
      at.running = true;
      let outcome;
      try {
        outcome = await at.pinned.run({
          path,
          args,
          journal,
          identity,
          pace: slot.pace,
          offMainThread: entry.large,
        });
      } finally {
        at.running = false;
        if (at.dropped) at.pinned.release();
      }
      this.#runs++;
      this.#runMs += performance.now() - started;
      this.#ownRunMs += performance.now() - started;
      ran = true;
      if (this.#closed || at.dropped) return "closed";
      if (outcome === null) {
        // It read a search index while commits landed: no outcome at the
        // snapshot. Until its next Transition the update goes on the
        // ordinary way (finishing with commits held off, if that is cheap).
        this.#dropSnapshot();
        this.#noSnapshot = true;
        this.#contended = false;
        return "ran";
      }
      const previous = at.results.get(queryId);
      if (previous !== undefined) at.watch.delete(previous);
      const got = {
        entry,
        result: { outcome, ...queryModification(outcome) },
        held: false,
      };
      entry.ran(outcome);
      at.results.set(queryId, got);
      at.watch.add(got, outcome.readSet, outcome.readTimestamp);
      // Its decoding took the run's last turn: the Transition of a large
      // result (a frame as large) is built in a turn of its own.
      if (entry.large) {
        await new Promise<void>((resume) => slot.pace(resume));
        if (this.#closed || at.dropped) return "closed";
      }
    }
    this.#atSnapshot = null;
    const outOfDate = new Set<QueryId>();
    // Synchronous from here to the Transition: no commit can come between.
    const invalid = this.#invalidNow(at);
    for (const queryId of this.#dirty) {
      const query = this.#queries.get(queryId)!;
      const got = at.results.get(queryId);
      if (got === undefined) {
        // Not expected: every dirty query was run above. Start over.
        at.pinned.release();
        return "ran";
      }
      if (!invalid.has(got) && got.entry === query.entry) {
        if (!got.held) this.#hub.adopt(got.entry, got.result);
      } else outOfDate.add(queryId);
    }
    at.pinned.release();
    const sending = this.#sendTransition(slot.pace, at.pinned.ts, at.results);
    this.#contended = outOfDate.size > 0;
    for (const queryId of outOfDate) this.#dirty.add(queryId);
    if (outOfDate.size > 0) this.#hub.schedule(this, false);
    await sending;
    return "sent";
  }

  /**
   * Moves a pass to a newer snapshot when its own has been held so long
   * that the WAL reached its cap behind it (`PinnedSnapshot.expired`): the
   * results still valid now are valid at the new one and are kept, the
   * others run again there. Returns false when no newer one could be
   * pinned: the pass is dropped (the update starts over, in the next slice).
   */
  #repin(slot: UpdateSlot, at: SnapshotPass): boolean {
    // Synchronous from the checks to the new pin: no commit can come between.
    const invalid = this.#invalidNow(at);
    for (const [queryId, got] of at.results)
      if (invalid.has(got)) at.results.delete(queryId);
    at.pinned.release();
    const fresh = this.#pin(slot);
    if (fresh === null) {
      this.#dropSnapshot();
      return false;
    }
    at.pinned = fresh;
    fresh.watch(at.watch);
    // Every dirty query again, skipping those it holds.
    at.pass = this.#dirty.values();
    at.next = null;
    return true;
  }

  /** A snapshot this socket's next Transition may be at, or null. */
  #pin(slot: UpdateSlot): PinnedSnapshot | null {
    const pinned = slot.pinSnapshot();
    // Every Transition so far showed a ts the snapshot includes (it pins
    // every commit made so far); checked all the same, as ts never goes back.
    if (pinned !== null && pinned.ts < this.#sent.ts) {
      pinned.release();
      return null;
    }
    return pinned;
  }

  /**
   * The pass's results that are not valid now: a held one that a commit
   * cleared from its entry, or a run at the snapshot that a commit since
   * wrote into (`CommitWatch.conflicted`: those leave the watch, so the
   * caller drops or re-runs them).
   */
  #invalidNow(at: SnapshotPass): Set<SnapshotResult> {
    const invalid = at.watch.conflicted();
    for (const got of at.results.values())
      if (got.held && got.entry.result !== got.result) invalid.add(got);
    return invalid;
  }

  /** Abandons a snapshot pass (its results are not sent): the next update starts over. */
  #dropSnapshot(): void {
    const at = this.#atSnapshot;
    if (at === null) return;
    this.#atSnapshot = null;
    at.dropped = true;
    // A run still reading it releases it when it is over.
    if (!at.running) at.pinned.release();
  }

  /**
   * One pass over the dirty queries, running those without a valid result.
   * Past `deadline` (after at least one run in this update, `ranBefore` or
   * in this pass, so every slice makes progress) it stops, to finish in a
   * later slice. A pass that finds every result held sends the Transition
   * there and then ("sent"): after an `await`, a commit could clear one.
   */
  async #runPass(
    slot: UpdateSlot,
    ranBefore: boolean,
    deadline: number,
  ): Promise<"sent" | "ran" | "deadline" | "closed"> {
    let ran = false;
    const pass = (this.#pass ??= this.#dirty.values());
    for (;;) {
      let queryId = this.#passNext;
      this.#passNext = null;
      if (queryId === null) {
        const next = pass.next();
        if (next.done === true) break;
        queryId = next.value;
      }
      const query = this.#queries.get(queryId);
      // Removed while the pass waited for its next slice.
      if (query === undefined || !this.#dirty.has(queryId)) continue;
      this.#follow(query);
      if (query.entry.result !== null) continue;
      if ((ran || ranBefore) && performance.now() >= deadline) {
        this.#passNext = queryId;
        return "deadline";
      }
      const started = performance.now();
      // Joining another socket's run of the query costs this one nothing.
      const own = query.entry.running === null;
      if (!(await this.#hub.resultOf(query.entry, slot.runQuery)))
        this.#unvalidated = true;
      this.#runs++;
      this.#runMs += performance.now() - started;
      if (own) this.#ownRunMs += performance.now() - started;
      ran = true;
      this.#passRan = true;
      if (this.#closed) return "closed";
    }
    this.#pass = null;
    const passRan = this.#passRan;
    this.#passRan = false;
    // A pass that ran nothing went through synchronously (it stops only
    // before a run): every result was held at one moment.
    if (passRan) return "ran";
    await this.#sendTransition(slot.pace);
    return "sent";
  }

  /**
   * Sends what the update computed: every dirty query holds a result now,
   * or, from a snapshot pass, `results` holds them all at `atTs`. Which
   * queries it sends, with which versions, is settled here, synchronously:
   * the dirty set is taken (a commit from now on marks queries dirty for the
   * next update), and so are results that a commit could clear (those held
   * in the shared entries). A large one (LARGE_TRANSITION_QUERIES) goes on
   * in later turns, inside the hub's slices (`pace`): a snapshot pass's
   * results are taken LARGE_TRANSITION_QUERIES a turn, then the frame is
   * encoded as many a turn (`TransitionFrames.transitionInTurns`). The
   * promise resolves once it is queued, and the update waits for it, so
   * Transitions go out in order.
   */
  #sendTransition(
    pace: Pace,
    atTs?: bigint,
    results?: ReadonlyMap<QueryId, SnapshotResult>,
  ): Promise<void> | undefined {
    this.#passes = 0;
    this.#runs = 0;
    this.#lastOwnRunMs = this.#ownRunMs;
    this.#ownRunMs = 0;
    this.#runMs = 0;
    this.#unvalidated = false;
    this.#noSnapshot = false;
    const removed = this.#removed;
    this.#removed = [];
    const dirty = this.#dirty;
    this.#dirty = new Set();
    const version = {
      querySet: this.#appliedQuerySet,
      identity: this.#receivedIdentity,
      ts: atTs ?? this.#hub.db.lastTs,
    };
    const updated: Updated[] = [];
    if (dirty.size + removed.length < LARGE_TRANSITION_QUERIES) {
      for (const queryId of dirty) this.#take(queryId, results, updated);
      const parts = this.#transitionParts(removed, updated, version);
      if (parts !== null)
        this.#queueTransition(parts, this.#hub.frames.transition(parts));
      return undefined;
    }
    const paced = () => new Promise<void>((resume) => pace(resume));
    if (results === undefined)
      for (const queryId of dirty) this.#take(queryId, results, updated);
    return (async () => {
      await paced();
      if (this.#closed) return;
      if (results !== undefined) {
        let inTurn = 0;
        for (const queryId of dirty) {
          this.#take(queryId, results, updated);
          if (++inTurn < LARGE_TRANSITION_QUERIES) continue;
          inTurn = 0;
          await paced();
          if (this.#closed) return;
        }
      }
      const parts = this.#transitionParts(removed, updated, version);
      if (parts === null) return;
      const frame = await this.#hub.frames.transitionInTurns(parts, pace);
      this.#queueTransition(parts, frame);
    })();
  }

  /**
   * Takes a dirty query's result into `updated` when it changed; its journal
   * is saved either way. Outside a snapshot pass, the shared entry's result
   * (held: the last pass found it so, and nothing ran since).
   */
  #take(
    queryId: QueryId,
    results: ReadonlyMap<QueryId, SnapshotResult> | undefined,
    updated: Updated[],
  ): void {
    const query = this.#queries.get(queryId)!;
    const result = results?.get(queryId)!.result ?? query.entry.result!;
    // Saved even when the result is unchanged, so the next run continues
    // from it (convex-backend `SyncState::complete_fetch`).
    query.journal = result.outcome.journal;
    if (result.hash === query.resultHash) return;
    query.resultHash = result.hash;
    updated.push({ queryId, result });
  }

  /**
   * The Transition from `removed` and `updated` to `version`, or null when
   * it would tell the client nothing. Advances `#sent`.
   */
  #transitionParts(
    removed: QueryId[],
    updated: Updated[],
    version: SessionVersion,
  ): TransitionParts | null {
    const { querySet, identity, ts } = version;
    const advancesVersion =
      querySet !== this.#sent.querySet || identity !== this.#sent.identity;
    if (
      removed.length === 0 &&
      updated.length === 0 &&
      !advancesVersion &&
      this.#owedTs === null
    )
      return null;
    const endTs = ts > this.#sent.ts ? ts : this.#sent.ts;
    const parts: TransitionParts = {
      startVersion: this.#sent,
      endVersion: { querySet, identity, ts: endTs },
      removed,
      updated,
      clientClockSkew: this.#clientClockSkew,
    };
    this.#sent = parts.endVersion;
    if (this.#owedTs !== null && this.#owedTs <= endTs) this.#owedTs = null;
    return parts;
  }

  #queueTransition(parts: TransitionParts, frame: Frame): void {
    this.#unwritten++;
    this.#queueFrame(parts.endVersion.ts, frame, () => {
      this.#unwritten--;
      if (this.#heldBack && this.#unwritten < MAX_SEND_TRANSITIONS) {
        this.#heldBack = false;
        this.#hub.schedule(this, false);
      }
    });
  }

  /**
   * Applies the query-set changes received since the last update, in order,
   * at most APPLY_PER_UPDATE of them; true once none is left, the query set
   * then being the last one received.
   */
  #applyModifications(): boolean {
    const pending = this.#pendingModifications;
    const end = Math.min(
      pending.length,
      this.#appliedModifications + APPLY_PER_UPDATE,
    );
    for (let i = this.#appliedModifications; i < end; i++) {
      const modification = pending[i];
      if (modification.type === "Add") {
        const { queryId, udfPath, args } = modification;
        const journal = modification.journal ?? null;
        const shared = this.#shared({ udfPath, args, journal });
        // One literal: a spread made each subscription an object of a shape
        // of its own (0.2 KB of heap each, 20,000 on one socket).
        this.#queries.set(queryId, {
          queryId,
          udfPath,
          args,
          journal,
          entry: this.#hub.subscribe(this, queryId, shared),
          resultHash: undefined,
        });
        this.#dirty.add(queryId);
      } else {
        const query = this.#queries.get(modification.queryId);
        if (query !== undefined)
          this.#hub.unsubscribe(this, query.queryId, query.entry);
        this.#queries.delete(modification.queryId);
        this.#dirty.delete(modification.queryId);
        this.#removed.push(modification.queryId);
      }
    }
    if (end < pending.length) {
      this.#appliedModifications = end;
      return false;
    }
    this.#pendingModifications = [];
    this.#appliedModifications = 0;
    this.#appliedQuerySet = this.#receivedQuerySet;
    return true;
  }

  #shared(query: { udfPath: string; args: JSONValue; journal: string | null }) {
    return {
      path: query.udfPath,
      args: query.args,
      journal: query.journal,
      identity: this.#identity,
    };
  }

  /** Moves a subscription to the shared entry its current journal and identity name. */
  #follow(query: QuerySubscription): void {
    // Path and arguments never change; journal and identity may.
    const current = query.entry.query;
    if (
      current.journal === query.journal &&
      current.identity === this.#identity
    )
      return;
    const shared = this.#shared(query);
    const before = query.entry;
    this.#hub.unsubscribe(this, query.queryId, before);
    query.entry = this.#hub.subscribe(this, query.queryId, shared);
    // The same function and arguments, paged the same way: as large as before.
    if (query.entry.result === null && query.entry.running === null)
      query.entry.large ||= before.large;
  }

  /** Pings exactly when the socket has been quiet for PING_INTERVAL_MS (any message resets the clock). */
  #schedulePing(delay: number): NodeJS.Timeout {
    const timer = setTimeout(
      () => {
        const quiet = Date.now() - this.#lastSendAt;
        if (quiet >= PING_INTERVAL_MS) this.#send({ type: "Ping" });
        if (!this.#closed) {
          this.#pingTimer = this.#schedulePing(
            PING_INTERVAL_MS - (Date.now() - this.#lastSendAt),
          );
        }
      },
      Math.max(0, delay),
    );
    timer.unref();
    return timer;
  }

  #send(message: ServerMessage): void {
    this.#sendFrame(JSON.stringify(message));
    this.#flush();
  }

  #sendWhenDurable(ts: bigint, message: ServerMessage): void {
    this.#queueFrame(ts, JSON.stringify(message));
  }

  /** Sends a frame once every commit up to `ts` is durable, after the frames queued before it. */
  #queueFrame(ts: bigint, frame: Frame, written?: () => void): void {
    if (this.#closed) return;
    if (this.#outbox.length === 0 && this.#hub.db.isDurable(ts)) {
      this.#sendFrame(frame, written);
      this.#flush();
      return;
    }
    this.#outbox.push(
      written === undefined ? { ts, frame } : { ts, frame, written },
    );
    this.#flushOutbox();
  }

  /** Sends the outbox's frames whose commits are durable, in one write (`flush`). */
  #flushOutbox(): void {
    while (this.#outbox.length > 0 && !this.#awaitingDurable) {
      const next = this.#outbox[0];
      if (!this.#hub.db.isDurable(next.ts)) {
        this.#awaitingDurable = true;
        this.#hub.whenDurable(
          next.ts,
          this.#resumeOutbox,
          this.#durabilityFailed,
        );
        break;
      }
      this.#outbox.shift();
      this.#sendFrame(next.frame, next.written);
    }
    this.#flush();
  }

  /** Ends a burst of frames: they go to the OS now (`SessionTransport.flush`). */
  #flush(): void {
    if (!this.#closed) this.#transport.flush();
  }

  #sendFrame(frame: Frame, written?: () => void): void {
    if (this.#closed) return;
    this.#lastSendAt = Date.now();
    this.#transport.send(frame, written);
  }

  /**
   * A bug in our own code path: drop this socket (the client resyncs on
   * reconnect) rather than leave it with a stale view or crash the process.
   * "InternalServerError" makes the client back off before reconnecting.
   */
  #internalError(what: string, error: unknown): void {
    console.error(`local backend: sync ${what} failed:`, error);
    this.#fail(`InternalServerError: sync ${what} failed`);
  }

  #fail(reason: string): void {
    // Close codes other than 1000/1001/1005/4040 make the client log the reason
    // and reconnect with backoff; FatalError would stop it for good.
    this.#transport.close(4000, closeReason(reason));
    this.dispose();
  }
}

/**
 * A close frame's payload is at most 125 bytes, 2 of them the code (RFC
 * 6455 5.5), and `ws` throws for a longer reason: cut to 123 bytes of
 * UTF-8 at a character's end. Reasons quote what the client sent (an
 * unknown message type), so their length in bytes is the client's to pick.
 */
function closeReason(reason: string): string {
  if (Buffer.byteLength(reason) <= MAX_CLOSE_REASON_BYTES) return reason;
  let bytes = 0;
  let end = 0;
  for (const char of reason) {
    bytes += Buffer.byteLength(char);
    if (bytes > MAX_CLOSE_REASON_BYTES) break;
    end += char.length;
  }
  return reason.slice(0, end);
}

function credentialOf(
  message: ClientMessage & { type: "Authenticate" },
): Credential {
  switch (message.tokenType) {
    case "None":
      return { type: "None" };
    case "User":
      return { type: "User", token: message.value ?? "" };
    case "Admin":
      return {
        type: "Admin",
        key: message.value ?? "",
        ...(message.impersonating !== undefined
          ? { actingAs: message.impersonating }
          : {}),
      };
    default:
      return message.tokenType satisfies never;
  }
}
