/**
 * Who is calling: the identity a request runs under, and the verification of
 * user tokens against the providers of `convex/auth.config.ts`.
 *
 * Follows convex-backend `crates/authentication/src/lib.rs` (`validate_id_token`)
 * and `crates/keybroker/src/broker.rs` (`UserIdentity::from_token`,
 * `from_custom_jwt`), error codes and texts included:
 * - the provider is picked from the unverified `iss` and `aud`: an OIDC provider
 *   needs `domain` = `iss` (trailing slashes ignored) and `applicationID` in `aud`;
 *   a `customJwt` provider needs `issuer` = `iss`, and `applicationID` in `aud`
 *   only when it names one;
 * - OIDC keys come from `<iss>/.well-known/openid-configuration` and its
 *   `jwks_uri`; only RS256 and EdDSA are accepted; `exp` is strict (the
 *   openidconnect crate has no leeway) and `nbf` is not checked;
 * - `customJwt` keys come from its `jwks` URL or `data:` URI; the token's `kid`
 *   must name a key and `alg` must be the provider's `algorithm` (RS256 or ES256);
 *   `exp`, `nbf` and `iat` are checked with 5 seconds of leeway.
 * Signatures are checked with node:crypto. Discovery documents and key sets
 * are cached for their `Cache-Control: max-age` (at most an hour) and fetched
 * with a timeout.
 *
 * Usage:
 *   const verifier = new TokenVerifier({ fetch: fetchForAuth });
 *   verifier.setProviders(parseAuthConfig(isolate.authConfig));
 *   const identity = await verifier.verify(jwt); // throws AuthenticationError
 */
import {
  createPublicKey,
  type JsonWebKey,
  type KeyObject,
  verify,
} from "node:crypto";
import type { JSONValue } from "convex/values";
import { adminKeyMatches } from "../storage/adminKey.ts";

/** convex-backend `TemporalOptions { epsilon: 5s }` for custom JWTs. */
const CUSTOM_JWT_LEEWAY_S = 5;
const FETCH_TIMEOUT_MS = 10_000;
const DEFAULT_CACHE_MS = 60_000;
const MAX_CACHE_MS = 60 * 60_000;
const MAX_CACHED_URLS = 64;

/** What `ctx.auth.getUserIdentity()` returns (convex 1.48 `UserIdentity`). */
export type UserIdentityAttributes = {
  tokenIdentifier: string;
  subject: string;
  issuer: string;
  [claim: string]: JSONValue;
};

/**
 * The identity of a request (convex-backend `Identity`):
 * - none: no token (anonymous)
 * - user: a verified token; `expiresAtMs` ends it
 * - admin: the data folder's admin key (internal functions, no user identity)
 * - actingUser: the admin key acting as the given user
 * - invalid: an HTTP action called with a refused token; it still runs, and
 *   `getUserIdentity()` throws the refusal (convex-backend `Identity::Unknown(Some(error))`)
 */
export type Identity =
  | { type: "none" }
  | { type: "invalid"; error: AuthenticationError }
  | {
      type: "user";
      attributes: UserIdentityAttributes;
      expiresAtMs: number;
    }
  | { type: "admin" }
  | { type: "actingUser"; attributes: UserIdentityAttributes };

export const ANONYMOUS: Identity = { type: "none" };

export function userIdentityOf(
  identity: Identity,
): UserIdentityAttributes | null {
  switch (identity.type) {
    case "user":
    case "actingUser":
      return identity.attributes;
    case "none":
    case "admin":
      return null;
    case "invalid":
      throw new Error(identity.error.message);
    default:
      return identity satisfies never;
  }
}

export function isAdmin(identity: Identity): boolean {
  return identity.type === "admin" || identity.type === "actingUser";
}

/**
 * The part of an identity a query result depends on (convex-backend
 * `Identity::cache_key`): the user's attributes, not the token or who acts.
 */
export function identityCacheKey(identity: Identity): string {
  if (identity.type === "invalid") return `invalid:${identity.error.message}`;
  const user = userIdentityOf(identity);
  if (user !== null) return `user:${stableJson(user)}`;
  return identity.type;
}

/**
 * Identity attributes an admin acts as (`Authorization: Convex key:<base64 JSON>`
 * or `Authenticate.impersonating`), with `tokenIdentifier` defaulting to
 * `issuer|subject` as convex-test's `withIdentity` does.
 */
export function actingUserAttributes(raw: unknown): UserIdentityAttributes {
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) {
    throw new AuthenticationError(
      "InvalidAuthHeader",
      "The identity to act as must be a JSON object",
    );
  }
  const claims = raw as Record<string, JSONValue>;
  const subject =
    typeof claims.subject === "string" ? claims.subject : "test subject";
  const issuer =
    typeof claims.issuer === "string"
      ? claims.issuer
      : "https://convex.test.local";
  const tokenIdentifier =
    typeof claims.tokenIdentifier === "string"
      ? claims.tokenIdentifier
      : `${issuer}|${subject}`;
  return { ...claims, tokenIdentifier, subject, issuer };
}

/** A refused credential: Convex's short code and message (sent as `AuthError.error`). */
export class AuthenticationError extends Error {
  constructor(
    readonly code: string,
    message: string,
    /** Convex sends `bad_request` errors as FatalError rather than AuthError. */
    readonly kind: "unauthenticated" | "badRequest" = "unauthenticated",
  ) {
    super(message);
    this.name = "AuthenticationError";
  }
}

export type AuthProvider =
  | { type: "oidc"; domain: string; applicationID: string }
  | {
      type: "customJwt";
      issuer: string;
      jwks: string;
      algorithm: "RS256" | "ES256";
      applicationID: string | null;
    };

/** Reads the default export of `auth.config.ts` as the Convex CLI checks it at push. */
export function parseAuthConfig(config: unknown): AuthProvider[] {
  if (config === undefined || config === null) return [];
  const providers = (config as { providers?: unknown }).providers;
  if (!Array.isArray(providers)) {
    throw new Error(
      "auth.config.ts must `export default { providers: [...] }` (an array of providers)",
    );
  }
  return providers.map((raw: unknown, i): AuthProvider => {
    const p = (raw ?? {}) as Record<string, unknown>;
    const where = `auth.config.ts providers[${i}]`;
    if (p.type === "customJwt") {
      if (typeof p.issuer !== "string" || typeof p.jwks !== "string") {
        throw new Error(
          `${where}: a customJwt provider needs string "issuer" and "jwks" (got issuer ${JSON.stringify(p.issuer)}, jwks ${JSON.stringify(p.jwks)}); is an environment variable unset?`,
        );
      }
      if (p.algorithm !== "RS256" && p.algorithm !== "ES256") {
        throw new Error(
          `${where}: "algorithm" must be "RS256" or "ES256", got ${JSON.stringify(p.algorithm)}`,
        );
      }
      return {
        type: "customJwt",
        issuer: p.issuer,
        jwks: p.jwks,
        algorithm: p.algorithm,
        applicationID:
          typeof p.applicationID === "string" ? p.applicationID : null,
      };
    }
    if (typeof p.domain !== "string" || typeof p.applicationID !== "string") {
      throw new Error(
        `${where}: an OIDC provider needs string "domain" and "applicationID" (got domain ${JSON.stringify(p.domain)}, applicationID ${JSON.stringify(p.applicationID)}); is an environment variable unset?`,
      );
    }
    return { type: "oidc", domain: p.domain, applicationID: p.applicationID };
  });
}

type Jwk = Record<string, unknown> & { kid?: string; kty?: string };
type Claims = Record<string, JSONValue>;

export type AuthFetch = (url: string) => Promise<Response>;

/** The default fetch: the network, with a timeout. */
export const networkFetch: AuthFetch = (url) =>
  fetch(url, {
    headers: { accept: "application/json" },
    signal: AbortSignal.timeout(FETCH_TIMEOUT_MS),
  });

export class TokenVerifier {
  readonly #fetch: AuthFetch;
  readonly #now: () => number;
  #providers: AuthProvider[] = [];
  readonly #cache = new Map<string, { body: unknown; expiresAt: number }>();
  readonly #inflight = new Map<string, Promise<unknown>>();

  constructor(options: { fetch?: AuthFetch; now?: () => number } = {}) {
    this.#fetch = options.fetch ?? networkFetch;
    this.#now = options.now ?? Date.now;
  }

  setProviders(providers: AuthProvider[]): void {
    this.#providers = providers;
    this.#cache.clear();
  }

  async verify(token: string): Promise<Identity & { type: "user" }> {
    const parts = token.split(".");
    const header = parts.length === 3 ? decodeSegment(parts[0]) : null;
    const payload = parts.length === 3 ? decodeSegment(parts[1]) : null;
    if (header === null || payload === null) {
      throw new AuthenticationError(
        "InvalidAuthHeader",
        "Could not parse JWT payload. Check that the token is a valid JWT format with three base64-encoded parts separated by dots.",
      );
    }
    const issuer = payload.iss;
    if (typeof issuer !== "string") {
      throw new AuthenticationError(
        "InvalidAuthHeader",
        "Missing issuer claim ('iss') in JWT payload. The JWT must include an 'iss' claim that matches one of your configured auth providers.",
      );
    }
    const audiences = audiencesOf(payload.aud);
    const provider = this.#providers.find((p) =>
      matchesToken(p, audiences, issuer),
    );
    if (provider === undefined) {
      throw new AuthenticationError(
        "NoAuthProvider",
        noProviderMessage(this.#providers),
      );
    }
    const signed = { header, payload, parts };
    return provider.type === "oidc"
      ? await this.#verifyOidc(signed, provider, issuer)
      : await this.#verifyCustomJwt(signed, provider);
  }

  async #verifyOidc(
    token: SignedToken,
    provider: AuthProvider & { type: "oidc" },
    issuer: string,
  ): Promise<Identity & { type: "user" }> {
    const discoveryUrl = `${issuer.replace(/\/+$/, "")}/.well-known/openid-configuration`;
    let metadata: { issuer?: unknown; jwks_uri?: unknown };
    let jwks: { keys?: unknown };
    try {
      metadata = (await this.#getJson(discoveryUrl)) as typeof metadata;
      if (typeof metadata.jwks_uri !== "string") throw new Error("no jwks_uri");
      jwks = (await this.#getJson(metadata.jwks_uri)) as typeof jwks;
    } catch (error) {
      const detail =
        error instanceof HttpStatusError
          ? `: ${error.status} ${error.body}`
          : "";
      throw new AuthenticationError(
        "AuthProviderDiscoveryFailed",
        `Auth provider discovery of ${issuer} failed${detail}`,
        "badRequest",
      );
    }
    const { payload } = token;
    const claimsInvalid = () =>
      new AuthenticationError(
        "Unauthenticated",
        "Could not verify OIDC token claim. Check that the token signature is valid and the token hasn't expired.",
      );
    if (
      typeof payload.sub !== "string" ||
      typeof payload.exp !== "number" ||
      typeof payload.iat !== "number" ||
      payload.aud === undefined
    ) {
      throw new AuthenticationError(
        "InvalidAuthHeader",
        "Could not parse as OIDC ID token. Token might not be an OIDC-compliant JWT.",
      );
    }
    const alg = token.header.alg;
    if (alg !== "RS256" && alg !== "EdDSA") throw claimsInvalid();
    if (!verifySignature(token, alg, keysOf(jwks))) throw claimsInvalid();
    const audiences = audiencesOf(payload.aud);
    // openidconnect: issuer must equal the discovered one; one audience, ours.
    if (
      metadata.issuer !== issuer ||
      audiences.length !== 1 ||
      audiences[0] !== provider.applicationID
    )
      throw claimsInvalid();
    const nowS = Math.floor(this.#now() / 1000);
    if (nowS >= payload.exp) throw claimsInvalid();
    return {
      type: "user",
      attributes: oidcAttributes(payload, issuer),
      expiresAtMs: payload.exp * 1000,
    };
  }

  async #verifyCustomJwt(
    token: SignedToken,
    provider: AuthProvider & { type: "customJwt" },
  ): Promise<Identity & { type: "user" }> {
    const jwks = await this.#customJwks(provider.jwks);
    const kid = token.header.kid;
    const key =
      typeof kid === "string"
        ? keysOf(jwks).find((k) => k.kid === kid)
        : undefined;
    if (
      key === undefined ||
      token.header.alg !== provider.algorithm ||
      !verifySignature(token, provider.algorithm, [key])
    ) {
      throw new AuthenticationError(
        "InvalidAuthHeader",
        typeof kid === "string"
          ? `Could not decode token. The JWT's 'kid' (key ID) header is '${kid}', does this key match any key in the provider's JWKS?`
          : "Could not decode token. JWT may be missing a 'kid' (key ID) header.",
      );
    }
    const { payload } = token;
    const issuer = payload.iss as string;
    const withProtocol = /^https?:\/\//.test(issuer)
      ? issuer
      : `https://${issuer}`;
    if (trimSlashes(withProtocol) !== trimSlashes(provider.issuer)) {
      throw new AuthenticationError(
        "InvalidAuthHeader",
        `Invalid issuer: ${issuer} != ${provider.issuer}`,
      );
    }
    if (provider.applicationID !== null) {
      if (payload.aud === undefined) {
        throw new AuthenticationError(
          "InvalidAuthHeader",
          "Missing audience claim ('aud') in JWT payload. The JWT must include an 'aud' claim that matches your configured application ID.",
        );
      }
      const audiences = audiencesOf(payload.aud);
      if (!audiences.includes(provider.applicationID)) {
        throw new AuthenticationError(
          "InvalidAuthHeader",
          `Invalid audience: ${provider.applicationID} not in [${audiences.map((a) => JSON.stringify(a)).join(", ")}]`,
        );
      }
    }
    const temporal = temporalError(
      payload,
      Math.floor(this.#now() / 1000),
      CUSTOM_JWT_LEEWAY_S,
    );
    if (temporal !== null) {
      throw new AuthenticationError(
        "InvalidAuthHeader",
        `Could not validate token: ${temporal}`,
      );
    }
    if (typeof payload.sub !== "string" || typeof payload.exp !== "number") {
      throw new AuthenticationError(
        "InvalidAuthHeader",
        "Could not verify token claim. Check that the JWT contains valid claims and matches your auth provider configuration.",
      );
    }
    return {
      type: "user",
      attributes: customJwtAttributes(payload),
      expiresAtMs: payload.exp * 1000,
    };
  }

  async #customJwks(uri: string): Promise<unknown> {
    if (uri.startsWith("data:")) {
      const comma = uri.indexOf(",");
      const meta = uri.slice(5, comma);
      const data = uri.slice(comma + 1);
      try {
        const text = meta.endsWith(";base64")
          ? Buffer.from(data, "base64").toString("utf8")
          : decodeURIComponent(data);
        return JSON.parse(text) as unknown;
      } catch {
        throw new AuthenticationError(
          "InvalidAuthHeader",
          "Invalid JWKS data URL. Check that the data URL is properly formatted and contains valid base64-encoded JSON.",
        );
      }
    }
    try {
      return await this.#getJson(uri, true);
    } catch (error) {
      if (error instanceof AuthenticationError) throw error;
      throw new AuthenticationError(
        "InvalidAuthHeader",
        error instanceof HttpStatusError
          ? `Could not fetch JWKS from URL '${uri}': HTTP ${error.status} ${error.statusText}. Check that the URL is correct and accessible.`
          : `Could not fetch JWKS from URL '${uri}': ${(error as Error).message}. Check that the URL is correct and accessible.`,
      );
    }
  }

  /** GETs JSON through the cache; concurrent requests for one URL share a fetch. */
  async #getJson(url: string, checkJwksType = false): Promise<unknown> {
    const hit = this.#cache.get(url);
    if (hit !== undefined && hit.expiresAt > this.#now()) return hit.body;
    const running = this.#inflight.get(url);
    if (running !== undefined) return running;
    const request = (async () => {
      const response = await this.#fetch(url);
      if (response.status !== 200) {
        throw new HttpStatusError(
          response.status,
          response.statusText,
          (await response.text()).slice(0, 200),
        );
      }
      if (checkJwksType) {
        const type = response.headers.get("content-type") ?? "unknown";
        const essence = type.split(";")[0].trim().toLowerCase();
        if (
          essence !== "application/json" &&
          essence !== "application/jwk-set+json"
        ) {
          throw new AuthenticationError(
            "InvalidAuthHeader",
            `Invalid Content-Type '${type}' when fetching JWKS from '${url}'. Expected 'application/json' or 'application/jwk-set+json'.`,
          );
        }
      }
      const body: unknown = await response.json();
      const maxAge = /max-age=(\d+)/.exec(
        response.headers.get("cache-control") ?? "",
      );
      const ttl =
        maxAge === null
          ? DEFAULT_CACHE_MS
          : Math.min(Number(maxAge[1]) * 1000, MAX_CACHE_MS);
      if (this.#cache.size >= MAX_CACHED_URLS) {
        this.#cache.delete(this.#cache.keys().next().value!);
      }
      this.#cache.set(url, { body, expiresAt: this.#now() + ttl });
      return body;
    })();
    this.#inflight.set(url, request);
    try {
      return await request;
    } finally {
      this.#inflight.delete(url);
    }
  }
}

type SignedToken = { header: Claims; payload: Claims; parts: string[] };

class HttpStatusError extends Error {
  constructor(
    readonly status: number,
    readonly statusText: string,
    readonly body: string,
  ) {
    super(`HTTP ${status}`);
  }
}

function decodeSegment(segment: string): Claims | null {
  try {
    const value = JSON.parse(
      Buffer.from(segment, "base64url").toString("utf8"),
    ) as unknown;
    return value !== null && typeof value === "object" && !Array.isArray(value)
      ? (value as Claims)
      : null;
  } catch {
    return null;
  }
}

function audiencesOf(aud: JSONValue | undefined): string[] {
  if (typeof aud === "string") return [aud];
  if (Array.isArray(aud))
    return aud.filter((a): a is string => typeof a === "string");
  return [];
}

function trimSlashes(url: string): string {
  return url.replace(/\/+$/, "");
}

/** convex-backend `AuthInfo::matches_token`. */
function matchesToken(
  provider: AuthProvider,
  audiences: string[],
  issuer: string,
): boolean {
  if (provider.type === "oidc") {
    return (
      audiences.includes(provider.applicationID) &&
      trimSlashes(provider.domain) === trimSlashes(issuer)
    );
  }
  return (
    trimSlashes(provider.issuer) === trimSlashes(issuer) &&
    (provider.applicationID === null ||
      audiences.includes(provider.applicationID))
  );
}

function noProviderMessage(providers: AuthProvider[]): string {
  if (providers.length === 0) {
    return "No auth provider found matching the given token (no providers configured). Check convex/auth.config.ts.";
  }
  const list = providers.map((p) =>
    p.type === "oidc"
      ? `OIDC(domain=${p.domain}, app_id=${p.applicationID})`
      : `CustomJWT(issuer=${p.issuer}, app_id=${p.applicationID ?? "none"})`,
  );
  return `No auth provider found matching the given token. Check that your JWT's issuer and audience match one of your configured providers: [${list.join(", ")}]`;
}

function keysOf(jwks: unknown): Jwk[] {
  const keys = (jwks as { keys?: unknown } | null)?.keys;
  return Array.isArray(keys)
    ? keys.filter((k): k is Jwk => k !== null && typeof k === "object")
    : [];
}

const importedKeys = new WeakMap<Jwk, KeyObject | null>();

function importKey(jwk: Jwk): KeyObject | null {
  let key = importedKeys.get(jwk);
  if (key === undefined) {
    try {
      key = createPublicKey({
        key: jwk as JsonWebKey,
        format: "jwk",
      });
    } catch {
      key = null;
    }
    importedKeys.set(jwk, key);
  }
  return key;
}

/** Checks the signature with the key the `kid` names, or with each key when there is none. */
function verifySignature(
  token: SignedToken,
  alg: "RS256" | "ES256" | "EdDSA",
  keys: Jwk[],
): boolean {
  const kid = token.header.kid;
  const candidates =
    typeof kid === "string" ? keys.filter((k) => k.kid === kid) : keys;
  const data = Buffer.from(`${token.parts[0]}.${token.parts[1]}`);
  const signature = Buffer.from(token.parts[2], "base64url");
  for (const jwk of candidates) {
    const key = importKey(jwk);
    if (key === null) continue;
    try {
      const ok =
        alg === "RS256"
          ? key.asymmetricKeyType === "rsa" &&
            verify("sha256", data, key, signature)
          : alg === "ES256"
            ? key.asymmetricKeyType === "ec" &&
              verify(
                "sha256",
                data,
                { key, dsaEncoding: "ieee-p1363" },
                signature,
              )
            : key.asymmetricKeyType === "ed25519" &&
              verify(null, data, key, signature);
      if (ok) return true;
    } catch {
      continue;
    }
  }
  return false;
}

/** biscuit's temporal checks (`validate_exp`, `validate_nbf`, `validate_iat`) and texts. */
function temporalError(
  payload: Claims,
  nowS: number,
  leewayS: number,
): string | null {
  if (typeof payload.exp === "number" && payload.exp < nowS - leewayS)
    return `Token expired ${nowS - payload.exp} seconds ago`;
  if (typeof payload.nbf === "number" && payload.nbf > nowS + leewayS)
    return `Token will be valid in ${payload.nbf - nowS} seconds`;
  if (typeof payload.iat === "number" && payload.iat > nowS + leewayS)
    return `Token will be valid in ${payload.iat - nowS} seconds`;
  return null;
}

/** OIDC standard claims → `UserIdentity` fields (convex-backend `UserIdentity::from_token`). */
const STANDARD_CLAIMS: Record<string, string> = {
  name: "name",
  given_name: "givenName",
  family_name: "familyName",
  nickname: "nickname",
  preferred_username: "preferredUsername",
  profile: "profileUrl",
  picture: "pictureUrl",
  website: "websiteUrl",
  email: "email",
  email_verified: "emailVerified",
  gender: "gender",
  birthdate: "birthday",
  zoneinfo: "timezone",
  locale: "language",
  phone_number: "phoneNumber",
  phone_number_verified: "phoneNumberVerified",
  address: "address",
  updated_at: "updatedAt",
};
/** Claims that are neither standard nor custom: registered, or ones the openidconnect crate consumes. */
const OIDC_NOT_CUSTOM = new Set([
  "sub",
  "iss",
  "aud",
  "exp",
  "iat",
  "nbf",
  "jti",
  "auth_time",
  "nonce",
  "acr",
  "amr",
  "azp",
  "at_hash",
  "c_hash",
]);
const REGISTERED_CLAIMS = new Set([
  "iss",
  "sub",
  "aud",
  "exp",
  "nbf",
  "iat",
  "jti",
]);

function oidcAttributes(
  payload: Claims,
  issuer: string,
): UserIdentityAttributes {
  const subject = payload.sub as string;
  const attributes: UserIdentityAttributes = {
    tokenIdentifier: `${issuer}|${subject}`,
    subject,
    issuer,
  };
  for (const [claim, value] of Object.entries(payload)) {
    if (OIDC_NOT_CUSTOM.has(claim)) continue;
    const field = STANDARD_CLAIMS[claim];
    if (field === undefined) {
      attributes[claim] = value;
    } else if (claim === "address") {
      const formatted = (value as { formatted?: unknown } | null)?.formatted;
      if (typeof formatted === "string") attributes.address = formatted;
    } else if (claim === "updated_at") {
      if (typeof value === "number")
        attributes.updatedAt = new Date(value * 1000)
          .toISOString()
          .replace(".000Z", "+00:00");
    } else {
      attributes[field] = value;
    }
  }
  return attributes;
}

/** Custom JWTs: only the subject and issuer are mapped; other claims pass through, nested objects flattened to "a.b". */
function customJwtAttributes(payload: Claims): UserIdentityAttributes {
  const subject = payload.sub as string;
  const issuer = payload.iss as string;
  const attributes: UserIdentityAttributes = {
    tokenIdentifier: `${issuer}|${subject}`,
    subject,
    issuer,
  };
  const flatten = (claims: Claims, prefix: string) => {
    for (const [claim, value] of Object.entries(claims)) {
      if (prefix === "" && REGISTERED_CLAIMS.has(claim)) continue;
      if (value !== null && typeof value === "object" && !Array.isArray(value))
        flatten(value, `${prefix}${claim}.`);
      else attributes[`${prefix}${claim}`] = value;
    }
  };
  flatten(payload, "");
  return attributes;
}

function stableJson(value: JSONValue): string {
  if (value === null || typeof value !== "object") return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(stableJson).join(",")}]`;
  return `{${Object.keys(value)
    .sort()
    .map((k) => `${JSON.stringify(k)}:${stableJson(value[k])}`)
    .join(",")}}`;
}

/** A credential as the sync protocol's `Authenticate` carries it. */
export type Credential =
  | { type: "None" }
  | { type: "User"; token: string }
  | { type: "Admin"; key: string; actingAs?: unknown };

/**
 * Turns credentials into identities: user tokens through the verifier, admin
 * keys against the data folder's key (convex-backend `Application::authenticate`).
 */
export class Authenticator {
  readonly verifier: TokenVerifier;
  readonly #adminKey: string;

  constructor(verifier: TokenVerifier, adminKey: string) {
    this.verifier = verifier;
    this.#adminKey = adminKey;
  }

  async authenticate(credential: Credential): Promise<Identity> {
    switch (credential.type) {
      case "None":
        return ANONYMOUS;
      case "User":
        return await this.verifier.verify(credential.token);
      case "Admin": {
        if (
          this.#adminKey === "" ||
          !adminKeyMatches(this.#adminKey, credential.key)
        ) {
          throw new AuthenticationError(
            "BadAdminKey",
            "The provided admin key was invalid for this instance",
          );
        }
        return credential.actingAs === undefined
          ? { type: "admin" }
          : {
              type: "actingUser",
              attributes: actingUserAttributes(credential.actingAs),
            };
      }
      default:
        return credential satisfies never;
    }
  }

  /**
   * `Authorization` on the HTTP API and HTTP actions: `Bearer <jwt>`, or
   * `Convex <admin key>[:<base64 JSON identity>]` (convex 1.48 `http_client.ts`
   * `setAdminAuth`); no header is anonymous.
   */
  async fromHeader(header: string | undefined): Promise<Identity> {
    return await this.authenticate(parseAuthorization(header));
  }
}

export function parseAuthorization(header: string | undefined): Credential {
  if (header === undefined || header === "") return { type: "None" };
  if (header.startsWith("Convex ")) {
    const value = header.slice("Convex ".length).trim();
    const colon = value.indexOf(":");
    if (colon === -1) return { type: "Admin", key: value };
    let actingAs: unknown;
    try {
      actingAs = JSON.parse(
        Buffer.from(value.slice(colon + 1), "base64").toString("utf8"),
      );
    } catch {
      throw new AuthenticationError(
        "InvalidAuthHeader",
        "Could not parse the identity to act as: expected base64-encoded JSON after the admin key",
      );
    }
    return { type: "Admin", key: value.slice(0, colon), actingAs };
  }
  // convex-backend `extract_bearer_token`.
  if (header.length <= 7 || header.slice(0, 7).toLowerCase() !== "bearer ") {
    throw new AuthenticationError(
      "InvalidAuthHeader",
      "Header must begin with `bearer `",
    );
  }
  return { type: "User", token: header.slice(7).trim() };
}
