/**
 * Web Crypto's `subtle.digest` for SHA-1 and SHA-2, computed in place. Node's
 * own runs on the thread pool and settles on a later turn of the event loop;
 * the chat's session middleware hashes a secret in every function, so each
 * hop would cost the run a second window (deadline.ts) and a mutation its
 * place in a shared one. The result is the same bytes, and the caller still
 * hands it back as a promise, as Web Crypto does.
 */
import { createHash } from "node:crypto";

const DIGESTS: Record<string, string> = {
  "SHA-1": "sha1",
  "SHA-256": "sha256",
  "SHA-384": "sha384",
  "SHA-512": "sha512",
};

/**
 * The digest of `data` (an ArrayBuffer or a view, of any realm), or
 * undefined when `algorithm` is not one of DIGESTS or the arguments are not
 * what Web Crypto takes: the platform's `digest` then gives its own error.
 */
export function digestNow(
  algorithm: unknown,
  data: unknown,
): ArrayBuffer | undefined {
  const name =
    typeof algorithm === "string"
      ? algorithm
      : (algorithm as { name?: unknown } | null)?.name;
  if (typeof name !== "string") return undefined;
  const nodeName = DIGESTS[name.toUpperCase()];
  if (nodeName === undefined) return undefined;
  let bytes: Uint8Array;
  // `instanceof` fails across realms; `ArrayBuffer.isView` does not.
  if (ArrayBuffer.isView(data)) {
    bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  } else if (
    Object.prototype.toString.call(data) === "[object ArrayBuffer]" ||
    Object.prototype.toString.call(data) === "[object SharedArrayBuffer]"
  ) {
    bytes = new Uint8Array(data as ArrayBuffer);
  } else {
    return undefined;
  }
  const hash = createHash(nodeName).update(bytes).digest();
  return hash.buffer.slice(hash.byteOffset, hash.byteOffset + hash.byteLength);
}
