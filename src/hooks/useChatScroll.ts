/**
 * Scrolling for a chat list shown oldest-first with the newest at the bottom:
 * - follows new messages only while the reader is at the bottom, and always
 *   for the message this tab just sent;
 * - keeps the visible messages still when an older page is prepended;
 * - asks for the next older page when the reader nears the top.
 * The container must set `overflow-anchor: none`, or the browser's own scroll
 * anchoring applies the prepend correction a second time.
 *
 * Usage: `const { containerRef, onScroll } = useChatScroll({ ... })`, then
 * `<div ref={containerRef} onScroll={onScroll}>` with `data-item-id` on items.
 */
import { useCallback, useEffect, useLayoutEffect, useRef } from "react";

const AT_BOTTOM_PX = 48;
const LOAD_OLDER_PX = 200;

type Snapshot = {
  oldestId: string | null;
  newestId: string | null;
  /** Offset of the oldest item from the top of the content. */
  oldestTop: number;
  sentId: string | null;
};

export function useChatScroll({
  items,
  sentId,
  canLoadMore,
  loadMore,
}: {
  items: readonly { _id: string }[];
  /** The id of the message this tab sent last. */
  sentId: string | null;
  canLoadMore: boolean;
  loadMore: () => void;
}) {
  const containerRef = useRef<HTMLDivElement>(null);
  /** Updated on every scroll event; starts true so the first page lands at the bottom. */
  const atBottom = useRef(true);
  const last = useRef<Snapshot>({
    oldestId: null,
    newestId: null,
    oldestTop: 0,
    sentId: null,
  });

  useLayoutEffect(() => {
    const container = containerRef.current;
    if (!container) return;
    const prev = last.current;
    const oldestId = items.length > 0 ? items[0]._id : null;
    const newestId = items.length > 0 ? items[items.length - 1]._id : null;

    if (prev.oldestId !== null && oldestId !== prev.oldestId) {
      const node = findItem(container, prev.oldestId);
      if (node) {
        container.scrollTop += contentTop(container, node) - prev.oldestTop;
      }
    }
    const appended = newestId !== null && newestId !== prev.newestId;
    const justSent =
      sentId !== null &&
      sentId !== prev.sentId &&
      items.some((item) => item._id === sentId);
    if ((appended && atBottom.current) || justSent) {
      container.scrollTop = container.scrollHeight;
      atBottom.current = true;
    }

    const oldest = oldestId === null ? null : findItem(container, oldestId);
    last.current = {
      oldestId,
      newestId,
      oldestTop: oldest ? contentTop(container, oldest) : 0,
      sentId,
    };
  }, [items, sentId, canLoadMore]);

  // Keep the bottom in view when the list's box shrinks (the composer grows,
  // an on-screen keyboard opens).
  useEffect(() => {
    const container = containerRef.current;
    if (!container || typeof ResizeObserver === "undefined") return;
    const observer = new ResizeObserver(() => {
      if (atBottom.current) container.scrollTop = container.scrollHeight;
    });
    observer.observe(container);
    return () => observer.disconnect();
  }, []);

  const onScroll = useCallback(() => {
    const container = containerRef.current;
    if (!container) return;
    const { scrollTop, scrollHeight, clientHeight } = container;
    atBottom.current = scrollHeight - scrollTop - clientHeight <= AT_BOTTOM_PX;
    if (scrollTop <= LOAD_OLDER_PX && canLoadMore) loadMore();
  }, [canLoadMore, loadMore]);

  return { containerRef, onScroll };
}

function findItem(container: HTMLElement, id: string): HTMLElement | null {
  return container.querySelector(`[data-item-id="${CSS.escape(id)}"]`);
}

function contentTop(container: HTMLElement, node: HTMLElement): number {
  return (
    node.getBoundingClientRect().top -
    container.getBoundingClientRect().top +
    container.scrollTop
  );
}
