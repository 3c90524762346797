/**
 * IP addresses and CIDRs as iptables prints them.
 *
 * Pure functions only (no I/O). Guarantees:
 * - `parseCidr` accepts exactly the dotted-quad IPv4 and RFC 4291 IPv6 text forms (no zone ids,
 *   no leading-zero octets, which some libcs read as octal), so nothing else can reach a host.
 * - `formatCidr` prints what `iptables-save` / `ip6tables-save` print for the same network:
 *   host bits cleared, `/32` or `/128` spelled out, IPv6 compressed the way glibc's `inet_ntop`
 *   does (longest run of two or more zero groups, first on a tie, lower-case hex, and the
 *   dotted tail for IPv4-compatible and IPv4-mapped addresses). A plan against the state just
 *   applied is only empty if these strings match byte for byte.
 */

/** Address family in the words iptables tooling uses. */
export type Family = "ipv4" | "ipv6";

/** A parsed network: `address` already has its host bits cleared. */
export interface Cidr {
  readonly family: Family;
  /** The network address as an unsigned integer (32 or 128 bits). */
  readonly address: bigint;
  /** Prefix length, 0-32 or 0-128. */
  readonly prefix: number;
}

const IPV4_OCTET = /^(0|[1-9][0-9]{0,2})$/;

/** Parses a dotted-quad IPv4 address; undefined when it is not one. */
export function parseIpv4(text: string): bigint | undefined {
  const parts = text.split(".");
  if (parts.length !== 4) return undefined;
  let value = 0n;
  for (const part of parts) {
    if (!IPV4_OCTET.test(part)) return undefined;
    const octet = Number(part);
    if (octet > 255) return undefined;
    value = (value << 8n) | BigInt(octet);
  }
  return value;
}

const HEX_GROUP = /^[0-9a-fA-F]{1,4}$/;

/** Parses an IPv6 address (with optional `::` and dotted IPv4 tail); undefined when invalid. */
export function parseIpv6(text: string): bigint | undefined {
  if (text.length === 0 || text.length > 45) return undefined;
  const halves = text.split("::");
  if (halves.length > 2) return undefined;
  const groupsOf = (part: string): number[] | undefined => {
    if (part === "") return [];
    const out: number[] = [];
    const pieces = part.split(":");
    for (let i = 0; i < pieces.length; i++) {
      const piece = pieces[i];
      if (i === pieces.length - 1 && piece.includes(".")) {
        const v4 = parseIpv4(piece);
        if (v4 === undefined) return undefined;
        out.push(Number(v4 >> 16n), Number(v4 & 0xffffn));
      } else if (HEX_GROUP.test(piece)) {
        out.push(parseInt(piece, 16));
      } else {
        return undefined;
      }
    }
    return out;
  };
  const head = groupsOf(halves[0]);
  const tail = halves.length === 2 ? groupsOf(halves[1]) : [];
  if (head === undefined || tail === undefined) return undefined;
  // A dotted tail is only legal at the very end of the address.
  if (halves.length === 2 && halves[0].includes(".")) return undefined;
  let groups: number[];
  if (halves.length === 2) {
    const missing = 8 - head.length - tail.length;
    if (missing < 1) return undefined;
    groups = [...head, ...new Array<number>(missing).fill(0), ...tail];
  } else {
    groups = head;
  }
  if (groups.length !== 8) return undefined;
  let value = 0n;
  for (const g of groups) value = (value << 16n) | BigInt(g);
  return value;
}

const BITS: Record<Family, number> = { ipv4: 32, ipv6: 128 };

function mask(family: Family, prefix: number): bigint {
  const bits = BigInt(BITS[family]);
  const all = (1n << bits) - 1n;
  return prefix === 0 ? 0n : (all >> (bits - BigInt(prefix))) << (bits - BigInt(prefix));
}

const PREFIX = /^(0|[1-9][0-9]{0,2})$/;

/**
 * Parses `address` or `address/prefix` of either family. Host bits are cleared (the network
 * is the same set of addresses, spelled the way iptables prints it back).
 */
export function parseCidr(text: string): Cidr | undefined {
  const slash = text.indexOf("/");
  const addressText = slash === -1 ? text : text.slice(0, slash);
  const prefixText = slash === -1 ? undefined : text.slice(slash + 1);
  const family: Family | undefined = addressText.includes(":")
    ? "ipv6"
    : addressText.includes(".")
      ? "ipv4"
      : undefined;
  if (family === undefined) return undefined;
  const address = family === "ipv4" ? parseIpv4(addressText) : parseIpv6(addressText);
  if (address === undefined) return undefined;
  let prefix = BITS[family];
  if (prefixText !== undefined) {
    if (!PREFIX.test(prefixText)) return undefined;
    prefix = Number(prefixText);
    if (prefix > BITS[family]) return undefined;
  }
  return { family, address: address & mask(family, prefix), prefix };
}

/** Parses a single address (no prefix). */
export function parseAddress(text: string): Cidr | undefined {
  if (text.includes("/")) return undefined;
  return parseCidr(text);
}

export function formatIpv4(value: bigint): string {
  return [24n, 16n, 8n, 0n].map((shift) => String((value >> shift) & 0xffn)).join(".");
}

/** glibc `inet_ntop(AF_INET6)`; see the module header for why the exact spelling matters. */
export function formatIpv6(value: bigint): string {
  const words: number[] = [];
  for (let i = 7; i >= 0; i--) words.push(Number((value >> BigInt(i * 16)) & 0xffffn));
  let bestBase = -1;
  let bestLen = 0;
  let curBase = -1;
  let curLen = 0;
  for (let i = 0; i < 8; i++) {
    if (words[i] === 0) {
      if (curBase === -1) {
        curBase = i;
        curLen = 1;
      } else {
        curLen++;
      }
    } else if (curBase !== -1) {
      if (bestBase === -1 || curLen > bestLen) {
        bestBase = curBase;
        bestLen = curLen;
      }
      curBase = -1;
    }
  }
  if (curBase !== -1 && (bestBase === -1 || curLen > bestLen)) {
    bestBase = curBase;
    bestLen = curLen;
  }
  if (bestBase !== -1 && bestLen < 2) bestBase = -1;
  let out = "";
  for (let i = 0; i < 8; i++) {
    if (bestBase !== -1 && i >= bestBase && i < bestBase + bestLen) {
      if (i === bestBase) out += ":";
      continue;
    }
    if (i !== 0) out += ":";
    // IPv4-compatible (::a.b.c.d) and IPv4-mapped (::ffff:a.b.c.d) keep a dotted tail.
    if (i === 6 && bestBase === 0 && (bestLen === 6 || (bestLen === 5 && words[5] === 0xffff))) {
      out += formatIpv4(value & 0xffffffffn);
      break;
    }
    out += words[i].toString(16);
  }
  if (bestBase !== -1 && bestBase + bestLen === 8) out += ":";
  return out;
}

export function formatAddress(family: Family, value: bigint): string {
  return family === "ipv4" ? formatIpv4(value) : formatIpv6(value);
}

/** `198.18.1.0/24`, `198.18.1.7/32`, `2001:db8::/32`: the form `-s` takes in iptables-save. */
export function formatCidr(cidr: Cidr): string {
  return `${formatAddress(cidr.family, cidr.address)}/${cidr.prefix}`;
}

/** Total order used for rendering: by address, then by prefix length. */
export function compareCidr(a: Cidr, b: Cidr): number {
  if (a.address !== b.address) return a.address < b.address ? -1 : 1;
  return a.prefix - b.prefix;
}
