/**
 * Docker's nftables firewall backend (Docker 29 `"firewall-backend": "nftables"`): what one
 * allowlist owns there, rendered as the lines `nft -s list table` prints, planned and verified.
 *
 * Pure functions only (no I/O). Docker's nftables backend has no DOCKER-USER; Docker's own docs
 * say to use an own table with base chains on the same hooks, because a drop in any base chain is
 * final whatever the others accept. So each allowlist owns ONE table, `inet dpa-<ruleName>`, and
 * nothing else: both IP families in one table, one `nft -f` transaction for the whole change, and
 * no rule of Docker's or anyone else's is ever touched (they live in other tables).
 *
 *   table inet dpa-web {
 *     comment "dpa:web owner=<project/stack/resource> via=<host:port>"     the owner (./owner.ts)
 *     set allow4 { type ipv4_addr; flags interval; elements = { ... } }    the sources, per family
 *     set allow6 { type ipv6_addr; flags interval; elements = { ... } }
 *     chain forward {                                DNATed traffic to published ports (containers)
 *       type filter hook forward priority filter - 10; policy accept;   before Docker's (filter)
 *       meta l4proto tcp ct status dnat ct original proto-dst 8080 jump allowlist
 *     }
 *     chain input {                        the docker-proxy path (host sockets; see ./layout.ts)
 *       type filter hook input priority filter - 10; policy accept;
 *       iifname != "lo" tcp dport 8080 jump allowlist
 *     }
 *     chain allowlist {
 *       ct state established,related accept          replies and live flows: fast path
 *       iifname { "br-1a2b3c", "docker0" } accept    containers' own traffic (Docker's bridges)
 *       ip saddr @allow4 accept
 *       ip6 saddr @allow6 accept
 *       drop                                          (or reject)
 *     }
 *   }
 *
 * `accept` ends only this table's processing of the packet; Docker's chains still decide what is
 * published. Our `drop` is final.
 *
 * nft rewrites what it is given when it prints it (a set's elements sorted and wrapped, `reject
 * with icmpx port-unreachable` printed as `reject`, an anonymous set's names sorted), so the lines
 * here are written the way nft 1.0 prints them, and both sides are compared in one canonical form
 * ({@link canonicalNft}): blank lines and indentation dropped, one set element per line.
 */
import { compareCidr, formatAddress, type Cidr, type Family } from "./ip";
import { declaresFamily, originalDestinationText, tagOf, type AllowlistSpec, type PortRange } from "./layout";
import { BRIDGE_NAME } from "./parse";
import { ownerComment, parseOwnerComment, safe, type Claim, type Owner } from "./owner";

/** The nftables family of our tables: one table for IPv4 and IPv6. */
export const NFT_FAMILY = "inet";
/** Our table's name prefix: `dpa-<ruleName>` (a ruleName is `[A-Za-z0-9_-]{1,24}`). */
export const NFT_TABLE_PREFIX = "dpa-";
/** Before Docker's filter chains (priority `filter`, 0): cheaper, and a drop is final anyway. */
export const NFT_PRIORITY = "filter - 10";
/** nft keeps at most 128 bytes of a comment (NFTNL_UDATA_COMMENT_MAXLEN). */
const NFT_COMMENT_MAX = 128;

export function nftTableName(ruleName: string): string {
  return `${NFT_TABLE_PREFIX}${ruleName}`;
}

/** `inet dpa-<ruleName>`, as nft commands name the table. */
export function nftTableRef(ruleName: string): string {
  return `${NFT_FAMILY} ${nftTableName(ruleName)}`;
}

/**
 * The owner as written in our table's comment: an iptables comment holds 256 bytes, an nftables
 * one 128, so the names are shortened (uniquely, with a hash) to fit beside the tag.
 */
export function nftOwner(owner: Owner): Owner {
  return { name: safe(owner.name, 56), via: safe(owner.via, 28) };
}

/** {@link Claim} with its owner names as {@link nftOwner} writes them (core's `standing` compares them). */
export function nftClaim(claim: Claim | undefined): Claim | undefined {
  if (claim === undefined) return undefined;
  return {
    ...claim,
    owner: claim.owner === undefined ? undefined : nftOwner(claim.owner),
    ...(claim.previous === undefined ? {} : { previous: safe(claim.previous, 56) }),
  };
}

function tableComment(ruleName: string, owner: Owner | undefined): string {
  const tag = tagOf(ruleName);
  const text = owner === undefined ? tag : ownerComment(tag, nftOwner(owner));
  if (text.length > NFT_COMMENT_MAX)
    throw new Error(`nft table comment longer than ${NFT_COMMENT_MAX}: ${text}`);
  return text;
}

/** `a` contains `b` (same family): every address of `b` is in `a`. */
function contains(a: Cidr, b: Cidr): boolean {
  if (a.family !== b.family || a.prefix > b.prefix) return false;
  const bits = BigInt(a.family === "ipv4" ? 32 : 128);
  const shift = bits - BigInt(a.prefix);
  return a.address >> shift === b.address >> shift;
}

/**
 * The set elements of `sources` as nft prints them: sorted, none inside another (an interval set
 * refuses overlapping elements), a full-length prefix as a bare address.
 */
export function nftElements(sources: readonly Cidr[]): string[] {
  const sorted = [...sources].sort((a, b) => a.prefix - b.prefix || compareCidr(a, b));
  const kept: Cidr[] = [];
  for (const s of sorted) if (!kept.some((k) => contains(k, s))) kept.push(s);
  return kept.sort(compareCidr).map((c) => {
    const full = c.family === "ipv4" ? 32 : 128;
    const a = formatAddress(c.family, c.address);
    return c.prefix === full ? a : `${a}/${c.prefix}`;
  });
}

function portText(ports: PortRange): string {
  return ports.from === ports.to ? String(ports.from) : `${ports.from}-${ports.to}`;
}

/**
 * Interface names in the order nft prints an anonymous set of them: it keeps a name as an integer
 * read little-endian from its bytes, so shorter names first, and among names of one length the
 * last byte decides first (`"b", "zz", "baa", "aab", "abz"`, as nft 1.0.6 printed them).
 */
export function compareIfnames(a: string, b: string): number {
  if (a.length !== b.length) return a.length - b.length;
  for (let i = a.length - 1; i >= 0; i--) {
    if (a.charCodeAt(i) !== b.charCodeAt(i)) return a.charCodeAt(i) - b.charCodeAt(i);
  }
  return 0;
}

/** `iifname "x"` or `iifname { "a", "b" }`, names in the order nft prints them. */
function ifnames(names: readonly string[]): string {
  const sorted = [...names].sort(compareIfnames);
  return sorted.length === 1 ? `"${sorted[0]}"` : `{ ${sorted.map((n) => `"${n}"`).join(", ")} }`;
}

/** The families this allowlist polices: both unless its declaration limits it to one. */
function familiesOf(spec: AllowlistSpec): Family[] {
  return (["ipv4", "ipv6"] as const).filter((f) => declaresFamily(spec, f));
}

/**
 * The lines of our table as `nft -s list table inet dpa-<ruleName>` prints them, in
 * {@link canonicalNft} form (no indentation, one set element per line). `bridges`: Docker's
 * bridges on the host (both families; {@link dockerNftBridges}).
 */
export function renderNftTable(spec: AllowlistSpec, bridges: readonly string[], owner?: Owner): string[] {
  const fams = familiesOf(spec);
  const lines = [`table ${nftTableRef(spec.ruleName)} {`, `comment "${tableComment(spec.ruleName, owner)}"`];
  for (const f of fams) {
    const n = f === "ipv4" ? "4" : "6";
    lines.push(`set allow${n} {`, `type ${f}_addr`, "flags interval");
    const elements = nftElements(spec.sources[f]);
    if (elements.length > 0) lines.push("elements = {", ...elements, "}");
    lines.push("}");
  }
  // One family only: say which, unless an original destination of that family already does
  // (nft then adds the dependency itself and does not print it).
  const origDst = originalDestinationText(spec);
  const dstFamily = spec.originalDestination?.family === "ipv6" ? "ip6" : "ip";
  const only = fams.length === 1 && origDst === undefined ? `meta nfproto ${fams[0]} ` : "";
  const ports = portText(spec.ports);
  lines.push("chain forward {", `type filter hook forward priority ${NFT_PRIORITY}; policy accept;`);
  for (const p of spec.protocols) {
    const dst = origDst === undefined ? "" : `ct original ${dstFamily} daddr ${origDst} `;
    lines.push(`${only}meta l4proto ${p} ct status dnat ${dst}ct original proto-dst ${ports} jump allowlist`);
  }
  lines.push("}", "chain input {", `type filter hook input priority ${NFT_PRIORITY}; policy accept;`);
  for (const p of spec.protocols) {
    const dst = origDst === undefined ? "" : `${dstFamily} daddr ${origDst} `;
    lines.push(`${only}iifname != "lo" ${dst}${p} dport ${ports} jump allowlist`);
  }
  lines.push("}", "chain allowlist {", "ct state established,related accept");
  const exempt = spec.exemptDockerBridges ? bridges.filter((b) => BRIDGE_NAME.test(b)) : [];
  if (exempt.length > 0) lines.push(`iifname ${ifnames(exempt)} accept`);
  for (const f of fams)
    lines.push(`${f === "ipv4" ? "ip" : "ip6"} saddr @allow${f === "ipv4" ? "4" : "6"} accept`);
  lines.push(spec.action === "DROP" ? "drop" : "reject", "}", "}");
  return lines;
}

/**
 * `lines` without the bridge exemption {@link renderNftTable} writes (`iifname ... accept`): what
 * a table's lines declare, apart from the host's own bridges.
 */
export function withoutNftBridgeExemptions(lines: readonly string[]): string[] {
  return lines.filter((l) => !/^iifname (?:"[^"]*"|\{ [^}]* \}) accept$/.test(l));
}

/** {@link renderNftTable} as input for `nft -f` (indented, elements comma-separated). */
export function nftText(lines: readonly string[]): string {
  const out: string[] = [];
  let depth = 0;
  let inElements = false;
  lines.forEach((line, i) => {
    if (line === "}") depth--;
    const next = lines[i + 1];
    const comma = inElements && line !== "}" && next !== "}" ? "," : "";
    out.push(`${"\t".repeat(Math.max(depth, 0))}${line}${comma}`);
    if (line === "}" && inElements) inElements = false;
    if (line.endsWith("{")) depth++;
    if (line === "elements = {") inElements = true;
  });
  return out.join("\n") + "\n";
}

/**
 * A listing of nft (`nft -s list table ...`) in canonical form: trimmed lines, blank lines
 * dropped, a set's elements one per line (`elements = {`, each element, `}`) however nft wrapped
 * them.
 */
export function canonicalNft(listing: string): string[] {
  const out: string[] = [];
  const lines = listing.split("\n").map((l) => l.trim());
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    if (line === "") continue;
    const m = /^elements = \{(.*)$/.exec(line);
    if (m === null) {
      out.push(line);
      continue;
    }
    let body = m[1];
    while (!body.trimEnd().endsWith("}") && i + 1 < lines.length) body += ` ${lines[++i]}`;
    const items = body
      .trimEnd()
      .replace(/\}$/, "")
      .split(",")
      .map((s) => s.trim())
      .filter((s) => s !== "");
    out.push("elements = {", ...items, "}");
  }
  return out;
}

/** The owner our table's comment names, read from a listing. */
export function nftTableOwner(listing: string, ruleName: string): Owner | undefined {
  const m = /^\s*comment "([^"]*)"$/m.exec(listing);
  return parseOwnerComment(m?.[1], tagOf(ruleName));
}

/**
 * Docker's bridges as its nftables backend names them: the keys of the interface maps of its
 * `docker-bridges` tables (`"docker0" : jump filter-forward-in__docker0`), both families, sorted.
 */
export function dockerNftBridges(text: string): string[] {
  const names = new Set<string>();
  for (const m of text.matchAll(/"([^"]+)"\s*:\s*jump /g)) if (BRIDGE_NAME.test(m[1])) names.add(m[1]);
  return [...names].sort();
}

/** Our table on a host as read: its listing (null: no such table) and its digest (compare-and-swap). */
export interface NftLive {
  readonly listing: string | null;
  /** The host's sha256 of the listing as it printed it; the apply refuses when it changed. */
  readonly sha: string;
  /** Docker's bridges on the host ({@link dockerNftBridges}). */
  readonly bridges: readonly string[];
}

/** The change of our table: one `nft -f` transaction, and the one that undoes it. */
export interface NftPlan {
  /** Input for `nft -f`: replaces (or deletes) our table atomically. */
  readonly payload: string;
  /** Input for `nft -f` that puts the table back as it was read. */
  readonly rollback: string;
  /** {@link NftLive.sha} of the state planned from. */
  readonly fingerprint: string;
  /** The canonical lines that must be listed afterwards (empty: no table). */
  readonly expected: string[];
  readonly changes: string[];
  /** Apply before the iptables families (it adds policing) or after them (it removes it). */
  readonly first: boolean;
}

/** `nft -f` lines that make sure the table exists, then delete it (both in the same transaction). */
function dropTable(ruleName: string): string {
  return `table ${nftTableRef(ruleName)} {}\ndelete table ${nftTableRef(ruleName)}\n`;
}

/** The lines of `a` not in `b`, with multiplicity. */
function minus(a: readonly string[], b: readonly string[]): string[] {
  const left = new Map<string, number>();
  for (const l of b) left.set(l, (left.get(l) ?? 0) + 1);
  return a.filter((l) => {
    const n = left.get(l) ?? 0;
    if (n === 0) return true;
    left.set(l, n - 1);
    return false;
  });
}

/** Human change lines: `- [nft] <line>`, `+ [nft] <line>`, or one `~` when only the order differs. */
export function nftChanges(live: readonly string[], want: readonly string[]): string[] {
  const gone = minus(live, want).map((l) => `- [nft] ${l}`);
  const added = minus(want, live).map((l) => `+ [nft] ${l}`);
  if (gone.length + added.length === 0 && live.join("\n") !== want.join("\n"))
    return [`~ [nft] table ${live[0]?.slice("table ".length, -2) ?? ""} (lines reordered)`];
  return [...gone, ...added];
}

/**
 * Plans our table on a host: the desired lines (`desired` null: no table), the change, and the
 * `nft -f` payloads. Who holds the table is checked by the caller (./plan.ts).
 */
export function planNft(
  live: NftLive,
  desired: AllowlistSpec | null,
  ruleName: string,
  owner: Owner | undefined,
): { expected: string[]; changes: string[]; plan?: NftPlan } {
  const have = live.listing === null ? [] : canonicalNft(live.listing);
  const expected = desired === null ? [] : renderNftTable(desired, live.bridges, owner);
  const changes = nftChanges(have, expected);
  if (changes.length === 0) return { expected, changes };
  const payload = dropTable(ruleName) + (desired === null ? "" : nftText(expected));
  const rollback = dropTable(ruleName) + (live.listing ?? "");
  return {
    expected,
    changes,
    plan: { payload, rollback, fingerprint: live.sha, expected, changes, first: desired !== null },
  };
}

/** Problems of our table as listed after an apply: empty when it is exactly `expected`. */
export function verifyNft(listing: string | null, expected: readonly string[], ruleName: string): string[] {
  const have = listing === null ? [] : canonicalNft(listing);
  const changes = nftChanges(have, expected);
  if (changes.length === 0) return [];
  return [
    `after the apply, nft does not list what was planned (${changes.length} difference(s), first: ${changes
      .slice(0, 3)
      .join(
        "; ",
      )}). Another tool may have changed the table at the same time, or this nft prints rules differently from nft 1.0. Fix: run the update again; if it persists, report the output of \`nft -s list table ${nftTableRef(ruleName)}\`.`,
  ];
}
