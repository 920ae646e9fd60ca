/**
 * The conversation, oldest at the top and newest at the bottom. Pages come
 * from `api.messages.list` (newest first) and are reversed for display; older
 * pages load when the reader scrolls to the top or presses "Load older".
 * The list is the same for every reader; this page marks its own messages by
 * comparing each author with `me` (`api.users.me`).
 */
import { useCallback, useMemo } from "react";
import type { FunctionReturnType } from "convex/server";
import { usePaginatedQuery } from "convex/react";
import { api } from "../../convex/_generated/api";
import type { Id } from "../../convex/_generated/dataModel";
import { useChatScroll } from "../hooks/useChatScroll";
import { Avatar } from "./Avatar";

type Message = FunctionReturnType<typeof api.messages.list>["page"][number];

const PAGE_SIZE = 30;

export function MessageList({
  sentId,
  meId,
}: {
  sentId: Id<"messages"> | null;
  /** The viewer's user id, or null until `api.users.me` has one. */
  meId: Id<"users"> | null;
}) {
  const { status, results, loadMore } = usePaginatedQuery(
    api.messages.list,
    {},
    { initialNumItems: PAGE_SIZE },
  );

  const messages = useMemo(
    () => (results ? [...results].reverse() : []),
    [results],
  );
  const canLoadMore = status === "CanLoadMore";
  const loadOlder = useCallback(() => {
    if (canLoadMore) loadMore(PAGE_SIZE);
  }, [canLoadMore, loadMore]);
  const { containerRef, onScroll } = useChatScroll({
    items: messages,
    sentId,
    canLoadMore,
    loadMore: loadOlder,
  });

  return (
    <div className="scroller" ref={containerRef} onScroll={onScroll}>
      {(status === "CanLoadMore" || status === "LoadingMore") && (
        <button
          type="button"
          className="load-older"
          aria-disabled={status === "LoadingMore" || undefined}
          onClick={loadOlder}
        >
          Load older
        </button>
      )}
      {status === "LoadingFirstPage" ? (
        <p className="list-note">Loading messages…</p>
      ) : messages.length === 0 ? (
        <p className="list-note">No messages yet. Say hi!</p>
      ) : null}
      <ol
        aria-label="Messages"
        className="messages"
        aria-busy={status === "LoadingFirstPage" || undefined}
      >
        {messages.map((message) => (
          <MessageItem
            key={message._id}
            message={message}
            isMine={meId !== null && message.author._id === meId}
          />
        ))}
      </ol>
    </div>
  );
}

function MessageItem({
  message,
  isMine,
}: {
  message: Message;
  isMine: boolean;
}) {
  const { _id, _creationTime, author, body } = message;
  const sent = new Date(_creationTime);
  return (
    <li
      className={isMine ? "message message--mine" : "message"}
      data-item-id={_id}
    >
      <Avatar user={author} />
      <p className="message__meta">
        <span className="message__author">{author.name}</span>
        {isMine && <span className="visually-hidden"> (you)</span>}{" "}
        <time dateTime={sent.toISOString()} title={FULL_TIME.format(sent)}>
          {formatSent(sent)}
        </time>
      </p>
      <p className="message__body">{body}</p>
    </li>
  );
}

const TIME = new Intl.DateTimeFormat(undefined, { timeStyle: "short" });
const DATE_TIME = new Intl.DateTimeFormat(undefined, {
  dateStyle: "medium",
  timeStyle: "short",
});
const FULL_TIME = new Intl.DateTimeFormat(undefined, {
  dateStyle: "full",
  timeStyle: "medium",
});

function formatSent(sent: Date): string {
  const today = new Date();
  return sent.toDateString() === today.toDateString()
    ? TIME.format(sent)
    : DATE_TIME.format(sent);
}
