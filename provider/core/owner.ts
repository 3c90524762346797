/**
 * Who holds an allowlist's chain on a host, written on the host itself so that every reader
 * (another stack, a replacement, a refresh from another checkout) can tell.
 *
 * Pure functions only (no I/O). The owner is one extra line at the END of the chain, after its
 * final DROP/REJECT, where no packet ever reaches it (it costs nothing on the packet path) and
 * which iptables-save prints back verbatim (a rule with a comment and no target):
 *
 *     -A DPA-web -m comment --comment "dpa:web owner=shop/prod/web via=10.0.0.5:22"
 *
 * - `owner=<project>/<stack>/<resource name>`: who declared it. Two stacks (or two programs)
 *   using one ruleName on a host are two owners: neither rewrites nor deletes the other's chain.
 * - `via=<host>:<port>`: how that owner reaches the host. A replacement of the resource (new
 *   connection host or port) has the same owner and another `via`: it takes the chain over when
 *   it is created, and the old resource's delete, which runs afterwards, then leaves it alone.
 *
 * Names are written in a restricted alphabet (anything else becomes `_`, and a short hash of the
 * original keeps two different names apart), so they never need escaping in iptables-save, the
 * restore payload or a shell.
 */
import { createHash } from "node:crypto";

export interface Owner {
  /** `<project>/<stack>/<resource name>`, as written on the host (see {@link ownerOf}). */
  readonly name: string;
  /** `<host>:<port>` the owner connects to, as written on the host. */
  readonly via: string;
}

/**
 * What an operation may do with a chain someone else holds:
 * - `create`: take over a chain of its own owner (a replacement) or of another resource of the
 *   same project and stack (a renamed resource that keeps its ruleName; warned about);
 * - `update`: take over its own, or the one its previous state recorded (`previous`: an alias
 *   rename, a renamed stack);
 * - `delete`: delete only its own; leave alone what a replacement or a renamed resource of the
 *   same stack took over; refuse anything else;
 * - `read`: report a chain held by another owner.
 * `owner` is undefined for state written before owners existed: such an operation accepts only
 * chains without an owner line.
 */
export interface Claim {
  readonly owner: Owner | undefined;
  readonly operation: "create" | "update" | "delete" | "read";
  readonly previous?: string;
}

const SAFE = /[^A-Za-z0-9._/:@+-]/g;

function hash8(text: string): string {
  return createHash("sha256").update(text).digest("hex").slice(0, 8);
}

/** `text` in the owner alphabet, at most `max` characters; unique per original text. */
export function safe(text: string, max: number): string {
  const cleaned = text.replace(SAFE, "_");
  if (cleaned === text && text.length <= max && text.length > 0) return text;
  return `${cleaned.slice(0, max - 9)}~${hash8(text)}`;
}

/**
 * The owner of an allowlist declared as `resourceName` in `stack` (`<project>/<stack>`, which
 * the resource class supplies) and reached at `host`:`port`; undefined for state written before
 * owners existed (no `stack`).
 */
export function ownerOf(
  stack: string | undefined,
  resourceName: string,
  host: string,
  port: number,
): Owner | undefined {
  if (stack === undefined || stack === "") return undefined;
  return { name: safe(`${stack}/${resourceName}`, 160), via: safe(`${host}:${port}`, 72) };
}

/** `<project>/<stack>` of an owner name. */
export function stackOf(ownerName: string): string {
  const parts = ownerName.split("/");
  return parts.slice(0, 2).join("/");
}

/** The comment of the owner line of the chain whose rules carry the tag `tag` (`dpa:<ruleName>`). */
export function ownerComment(tag: string, owner: Owner): string {
  return `${tag} owner=${owner.name} via=${owner.via}`;
}

const OWNER_COMMENT = /^(\S+) owner=(\S+) via=(\S+)$/;

/** The owner an owner-line comment names for the chain tagged `tag`, or undefined when it is not one. */
export function parseOwnerComment(comment: string | undefined, tag: string): Owner | undefined {
  const m = comment === undefined ? null : OWNER_COMMENT.exec(comment);
  if (m === null || m[1] !== tag) return undefined;
  return { name: m[2], via: m[3] };
}

/** How an operation stands towards the owner found on the host (see {@link Claim}). */
export type Standing =
  /** Ours, or nobody's (no chain, or a chain without owner line): go ahead. */
  | { readonly kind: "own" }
  /** Taken over on purpose (a replacement, an alias or stack rename): go ahead, rewriting the owner line. */
  | { readonly kind: "take-over"; readonly from: Owner; readonly warn: boolean }
  /** A delete of something a replacement or renamed resource now holds: change nothing. */
  | { readonly kind: "handed-over"; readonly to: Owner }
  /** Someone else's: refuse. */
  | { readonly kind: "foreign"; readonly holder: Owner };

export function standing(held: Owner | undefined, claim: Claim | undefined): Standing {
  if (held === undefined || claim === undefined) return { kind: "own" };
  const me = claim.owner;
  if (me === undefined) return { kind: "foreign", holder: held };
  if (held.name === me.name) {
    if (held.via === me.via) return { kind: "own" };
    // Same owner, another connection: a replacement holds it now (or is about to).
    return claim.operation === "delete"
      ? { kind: "handed-over", to: held }
      : { kind: "take-over", from: held, warn: false };
  }
  const sameStack = stackOf(held.name) === stackOf(me.name);
  switch (claim.operation) {
    case "create":
      return sameStack ? { kind: "take-over", from: held, warn: true } : { kind: "foreign", holder: held };
    case "update":
      return held.name === claim.previous
        ? { kind: "take-over", from: held, warn: false }
        : { kind: "foreign", holder: held };
    case "delete":
      return sameStack ? { kind: "handed-over", to: held } : { kind: "foreign", holder: held };
    case "read":
      return { kind: "foreign", holder: held };
  }
}
