/**
 * What one allowlist owns on a host, rendered as the exact lines `iptables-save` prints.
 *
 * Pure functions only (no I/O, no ssh2, no Pulumi). Guarantees:
 * - Every line returned here is byte-identical to what `iptables-save -t filter` (nft and legacy,
 *   v1.8.9, checked with real iptables in a throwaway namespace) prints after the line is
 *   applied; so planning against the state just applied yields no change.
 * - Every rule carries the tag `-m comment --comment "dpa:<ruleName>"`; nothing untagged is ours.
 *   The chain's last line names its owner (`"dpa:<ruleName> owner=... via=..."`, ./owner.ts).
 *
 * Packet path for `DockerPortAllowlist("web", { port: 8080, sources: ["198.18.1.0/24"] })`
 * (v4 in iptables, v6 in ip6tables, the same shape):
 *
 *   client --> nat PREROUTING --DNAT 8080->172.17.0.2:80--> filter FORWARD
 *                                                              |
 *     FORWARD  1: -j DOCKER-USER  (Docker's jump; on hosts without it, ours, tagged "dpa::forward")
 *                                                              v
 *     DOCKER-USER (our jumps first, before any foreign rule)
 *       -p tcp -m conntrack --ctorigdstport 8080 ... -j DPA-web  ----+
 *       -p udp ... (one jump per protocol)                           |
 *       <foreign rules, Docker's final RETURN if any>  <-------------+-- RETURN comes back here
 *                                                                    v
 *     DPA-web (owned entirely by this allowlist)
 *       1 -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN   replies and live flows: fast path
 *       2 -i docker0 -j RETURN, -i br-1a2b3c -j RETURN ...        containers' own outbound traffic
 *       3 -s <allowed source> -j RETURN  (one per source)         allowed: back to DOCKER-USER
 *       4 -j DROP | -j REJECT --reject-with icmp(6)-port-unreachable   everyone else
 *
 * RETURN rather than ACCEPT: an allowed packet still meets the foreign rules below our jumps
 * and Docker's own chains, which only accept what is really published.
 *
 * The docker-proxy path: with the userland proxy on (Docker's default), a published port is
 * also served by `docker-proxy` on the host's own sockets, e.g. on `[::]:8080` for containers
 * that have no IPv6 address. Such connections are not DNATed; they end on the host through
 * `INPUT` and never reach FORWARD or DOCKER-USER. So the same chain is also jumped to from the
 * top of INPUT, keyed on the host port itself (no DNAT: `-m tcp --dport`, `-d` for an original
 * destination):
 *
 *     INPUT (our jumps first, before any foreign rule)
 *       ! -i lo -p tcp -m tcp --dport 8080 ... -j DPA-web   (one jump per protocol)
 *
 * `! -i lo`: the host's own connections (to 127.0.0.1, ::1 or its own addresses, which all
 * arrive on lo) never pass DOCKER-USER either; the INPUT path polices exactly what the FORWARD
 * path polices: traffic from other machines.
 */
import { compareCidr, formatAddress, formatCidr, type Cidr, type Family } from "./ip";
import { renderSetLines, setName, usesSet } from "./ipset";
import { ownerComment, type Owner } from "./owner";

/** iptables chain names are at most 28 characters; `DPA-` takes four. */
export const RULE_NAME_MAX = 24;
export const RULE_NAME_PATTERN = /^[A-Za-z0-9_-]{1,24}$/;
export const CHAIN_PREFIX = "DPA-";
export const TAG_PREFIX = "dpa:";
/**
 * Tag of the `FORWARD -> DOCKER-USER` jump we add where Docker made none. `::` cannot occur in a
 * ruleName, so this tag never collides with an allowlist's own.
 */
export const FORWARD_TAG = "dpa::forward";
export const DOCKER_USER = "DOCKER-USER";
/** The built-in chain through which connections served by docker-proxy reach the host. */
export const INPUT = "INPUT";

/** A transport protocol Docker can publish. */
export type Protocol = "tcp" | "udp";
/** What happens to a packet for the port whose source is not allowed. */
export type Action = "DROP" | "REJECT";
/** Whether an allowlist polices IPv6 too: "auto" (when Docker manages ip6tables), "on", "off". */
export type Ipv6Mode = "auto" | "on" | "off";

/** An inclusive range of ports; a single port has `from === to`. */
export interface PortRange {
  readonly from: number;
  readonly to: number;
}

/** A validated allowlist: everything normalised, nothing left to check. */
export interface AllowlistSpec {
  /** Name of what is owned on the host. */
  readonly ruleName: string;
  /** Inclusive port range; `from === to` for a single port. */
  readonly ports: PortRange;
  /** Sorted, de-duplicated. */
  readonly protocols: readonly Protocol[];
  /** Per family, host bits cleared, sorted, de-duplicated. */
  readonly sources: { readonly ipv4: readonly Cidr[]; readonly ipv6: readonly Cidr[] };
  /** Single address or undefined. Its family limits the allowlist to that family. */
  readonly originalDestination?: Cidr;
  readonly action: Action;
  readonly exemptDockerBridges: boolean;
  readonly ipv6: Ipv6Mode;
  readonly persist: boolean;
  readonly rulesV4Path: string;
  readonly rulesV6Path: string;
}

export function chainName(ruleName: string): string {
  return `${CHAIN_PREFIX}${ruleName}`;
}

export function tagOf(ruleName: string): string {
  return `${TAG_PREFIX}${ruleName}`;
}

/**
 * The comment match exactly as iptables-save prints it. iptables quotes a string unless it is
 * only letters, digits, `_` and `-`; our tags always hold a `:`, so they are always quoted.
 */
export function commentMatch(tag: string): string {
  return `-m comment --comment "${tag}"`;
}

/** `-s <cidr> ` as iptables-save prints it: nothing at all for a /0, which matches everyone. */
function sourceMatch(source: Cidr): string {
  return source.prefix === 0 ? "" : `-s ${formatCidr(source)} `;
}

function portText(ports: PortRange): string {
  return ports.from === ports.to ? String(ports.from) : `${ports.from}:${ports.to}`;
}

/**
 * Docker's default bridge: what a preview shows where the host's bridges are not known yet
 * (see {@link renderDesiredRules}); a plan always uses the bridges it reads from the host.
 */
export const DEFAULT_DOCKER_BRIDGES: readonly string[] = ["docker0"];

/**
 * The rules of the owned chain, in order, as `-A DPA-x ...` lines; with `owner`, its owner line
 * last (after the final DROP/REJECT, so no packet ever reaches it; see ./owner.ts). `bridges`:
 * the bridges Docker made on the host in this family (`dockerBridges` of ./parse.ts), one
 * exemption each, in the given (sorted) order, when the spec exempts Docker's bridges. Exempting
 * the actual bridges, not a name pattern: a host whose own uplink is a Linux bridge called
 * `br-lan` must not let every outside client in through `-i br-+`. `sets`: the sources are in
 * the family's ipset (./ipset.ts), matched by one rule; by default where the spec's size calls
 * for one (a plan passes false where the host has no ipset).
 */
export function renderChainRules(
  spec: AllowlistSpec,
  family: Family,
  bridges: readonly string[],
  owner?: Owner,
  sets: boolean = usesSet(spec, family),
): string[] {
  const chain = chainName(spec.ruleName);
  const tag = commentMatch(tagOf(spec.ruleName));
  const lines = [`-A ${chain} -m conntrack --ctstate RELATED,ESTABLISHED ${tag} -j RETURN`];
  if (spec.exemptDockerBridges) {
    for (const bridge of bridges) lines.push(`-A ${chain} -i ${bridge} ${tag} -j RETURN`);
  }
  if (sets) {
    lines.push(`-A ${chain} -m set --match-set ${setName(spec.ruleName, family)} src ${tag} -j RETURN`);
  } else {
    const sources = [...spec.sources[family]].sort(compareCidr);
    for (const source of sources) lines.push(`-A ${chain} ${sourceMatch(source)}${tag} -j RETURN`);
  }
  if (spec.action === "DROP") {
    lines.push(`-A ${chain} ${tag} -j DROP`);
  } else {
    const icmp = family === "ipv4" ? "icmp-port-unreachable" : "icmp6-port-unreachable";
    lines.push(`-A ${chain} ${tag} -j REJECT --reject-with ${icmp}`);
  }
  if (owner !== undefined)
    lines.push(`-A ${chain} ${commentMatch(ownerComment(tagOf(spec.ruleName), owner))}`);
  return lines;
}

/**
 * `lines` without the bridge exemptions {@link renderChainRules} writes (`-A DPA-x -i <bridge>
 * <tag> -j RETURN`): what a state's rule lines declare, apart from the host's own bridges.
 */
export function withoutBridgeExemptions(lines: readonly string[]): string[] {
  const exemption = new RegExp(
    `^-A ${CHAIN_PREFIX}\\S+ -i \\S+ -m comment --comment "${TAG_PREFIX}[^"]*" -j RETURN$`,
  );
  return lines.filter((l) => !exemption.test(l));
}

/**
 * One jump from DOCKER-USER into `chain` for `protocol` and `ports`, limited to the original
 * destination address `origDst` (as iptables-save prints it: no mask) when given.
 */
export function renderJump(
  protocol: string,
  ports: { readonly from: number; readonly to: number },
  origDst: string | undefined,
  tag: string,
  chain: string,
): string {
  // iptables-save prints --ctorigdst before --ctorigdstport whatever order they were given in.
  const dst = origDst === undefined ? "" : ` --ctorigdst ${origDst}`;
  return `-A ${DOCKER_USER} -p ${protocol} -m conntrack${dst} --ctorigdstport ${portText(ports)} ${commentMatch(tag)} -j ${chain}`;
}

/** The original destination as `--ctorigdst` prints it, or undefined when any is policed. */
export function originalDestinationText(spec: AllowlistSpec): string | undefined {
  const d = spec.originalDestination;
  return d === undefined ? undefined : formatAddress(d.family, d.address);
}

/** The jumps from DOCKER-USER into the owned chain, one per protocol, as `-A DOCKER-USER ...`. */
export function renderJumps(spec: AllowlistSpec, _family: Family): string[] {
  const dst = originalDestinationText(spec);
  return spec.protocols.map((p) =>
    renderJump(p, spec.ports, dst, tagOf(spec.ruleName), chainName(spec.ruleName)),
  );
}

/**
 * One jump from INPUT into `chain` for `protocol` and `ports` (the docker-proxy path), limited to
 * the destination address `dst` (a CIDR as iptables-save prints it: with `/32` or `/128`) when
 * given. iptables-save prints `-d`, then `! -i lo`, then `-p` and its match, whatever the order
 * they were given in.
 */
export function renderInputJump(
  protocol: string,
  ports: PortRange,
  dst: string | undefined,
  tag: string,
  chain: string,
): string {
  const d = dst === undefined ? "" : `-d ${dst} `;
  return `-A ${INPUT} ${d}! -i lo -p ${protocol} -m ${protocol} --dport ${portText(ports)} ${commentMatch(tag)} -j ${chain}`;
}

/** The jumps from INPUT into the owned chain, one per protocol, as `-A INPUT ...`. */
export function renderInputJumps(spec: AllowlistSpec): string[] {
  const d = spec.originalDestination;
  const dst = d === undefined ? undefined : formatCidr(d);
  return spec.protocols.map((p) =>
    renderInputJump(p, spec.ports, dst, tagOf(spec.ruleName), chainName(spec.ruleName)),
  );
}

/** The FORWARD jump we add where the host has none (see {@link FORWARD_TAG}). */
export function renderForwardJump(): string {
  return `-A FORWARD ${commentMatch(FORWARD_TAG)} -j ${DOCKER_USER}`;
}

/**
 * Whether this allowlist polices `family` at all by its own declaration (before looking at the
 * host): an original destination of one family limits it to that family.
 */
export function declaresFamily(spec: AllowlistSpec, family: Family): boolean {
  if (spec.originalDestination !== undefined) return spec.originalDestination.family === family;
  return family === "ipv4" || spec.ipv6 !== "off";
}

/**
 * Every line this allowlist wants present in `family`: DOCKER-USER jumps, INPUT jumps, the
 * chain, then its ipset where it has one (./ipset.ts); exactly what `iptables-save` and
 * `ipset save` print for them. Used for preview (`pulumi preview
 * --diff`). A host whose Docker does not manage `family` (IPv6 with IPv4-only containers) gets
 * only the INPUT jumps and the chain; the preview cannot know that and shows all of them.
 * `bridges`: Docker's bridges in `family` as last read from the host; where none were read yet,
 * Docker's default bridge alone ({@link DEFAULT_DOCKER_BRIDGES}), the best guess for a host
 * not yet seen (the apply exempts the bridges it finds there).
 */
export function renderDesiredRules(
  spec: AllowlistSpec,
  family: Family,
  bridges: readonly string[] = DEFAULT_DOCKER_BRIDGES,
  owner?: Owner,
): string[] {
  if (!declaresFamily(spec, family)) return [];
  return [
    ...renderJumps(spec, family),
    ...renderInputJumps(spec),
    ...renderChainRules(spec, family, bridges, owner),
    ...renderSetLines(spec, family),
  ];
}
