/**
 * Types for the few browser globals that functions given to `page.evaluate`
 * and `addInitScript` touch. Those functions run in Chromium but are
 * type-checked with tsconfig.node.json, which has no DOM lib; a
 * `/// <reference lib="dom" />` would apply to that whole program and retype
 * Node's globals under local-backend (`Headers`, `crypto`). Cast at the top
 * of the function; the cast is erased before Playwright serializes it, and a
 * page function cannot call helpers from this module anyway.
 *
 * ```ts
 * await page.evaluate(() => {
 *   const { localStorage } = globalThis as unknown as PageGlobals;
 *   return localStorage.getItem("chat-session-id");
 * });
 * ```
 */

export type PageNode = {
  readonly nodeType: number;
};

export type PageElement = PageNode & {
  readonly textContent: string | null;
  readonly classList: { contains(token: string): boolean };
  getAttribute(name: string): string | null;
  querySelector(selectors: string): PageElement | null;
  closest(selectors: string): PageElement | null;
};

export type PageField = PageElement & { readonly value: string };

export type PageMutationRecord = {
  readonly addedNodes: ArrayLike<PageNode>;
};

export type PageStorage = {
  readonly length: number;
  key(index: number): string | null;
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
};

export type PageGlobals = {
  document: {
    readonly body: PageElement;
    readonly activeElement: PageElement | null;
    querySelector(selectors: string): PageElement | null;
  };
  localStorage: PageStorage;
  sessionStorage: PageStorage;
  MutationObserver: new (callback: (records: PageMutationRecord[]) => void) => {
    observe(
      target: PageElement,
      options: { childList?: boolean; subtree?: boolean },
    ): void;
  };
  addEventListener(
    type: "keydown",
    listener: (event: { key: string; timeStamp: number }) => void,
    options?: { capture?: boolean },
  ): void;
};
