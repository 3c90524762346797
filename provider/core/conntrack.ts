/**
 * The conntrack cut policy: which live flows the host deletes after a commit, as the lines the
 * host's CUT_AWK reads (provider/host/scripts.ts):
 * - `P <family> <tcp|udp> <lo> <hi> <origdst|->` per port (range) the allowlist polices;
 * - `A <family> <cidr>` per source its chain lets in;
 * - `B <family> <bridge>` per Docker bridge the chain exempts (the host adds its subnets as `A`).
 * The host lists conntrack once per family and deletes each flow to a policed port, DNATed (so
 * inbound to a published port, not a container's own outbound flow), whose original source no
 * `A` network contains. So a new allowlist cuts flows it does not allow, an edit cuts only the
 * flows of sources that lost access (a source still covered by a wider one keeps its flows),
 * and a delete, which lets everyone in, cuts nothing.
 *
 * Pure functions only (no I/O). Guarantees:
 * - {@link conntrackPolicyOf} computes the policy from the spec, so the planner carries it in
 *   the plan (`FamilyPlan.conntrack`); it equals, as a set of lines, what
 *   {@link conntrackPolicy} reads back from the state the plan produces (proved by
 *   test/core/conntrack.property.test.ts with the restore simulator as the oracle).
 * - Every token is checked against a strict pattern, because the host script word-splits them.
 */
import { compareCidr, formatCidr, type Family } from "./ip";
import {
  DOCKER_USER,
  chainName,
  declaresFamily,
  originalDestinationText,
  type AllowlistSpec,
} from "./layout";
import { BRIDGE_NAME, getChain, parseFilterTable, type ParsedRule } from "./parse";

const ADDRESS = /^[0-9A-Fa-f:.]+$/;
const CIDR = /^[0-9A-Fa-f:.]+\/\d{1,3}$/;

/** A port (range) one of our jumps in DOCKER-USER polices. */
export interface PolicedPort {
  readonly protocol: "tcp" | "udp";
  readonly from: number;
  readonly to: number;
  /** `--ctorigdst` without its /32 or /128, or undefined when any destination is policed. */
  readonly origDst?: string;
}

function portLine(family: Family, p: PolicedPort): string | undefined {
  if (p.origDst !== undefined && !ADDRESS.test(p.origDst)) return undefined;
  return `P ${family} ${p.protocol} ${p.from} ${p.to} ${p.origDst ?? "-"}`;
}

function sourceLine(family: Family, cidr: string): string | undefined {
  return CIDR.test(cidr) ? `A ${family} ${cidr}` : undefined;
}

function bridgeLine(family: Family, bridge: string): string | undefined {
  return BRIDGE_NAME.test(bridge) ? `B ${family} ${bridge}` : undefined;
}

const defined = (l: string | undefined): l is string => l !== undefined;

/**
 * The policy for `family` once a plan for `spec` is applied, from the spec and Docker's bridges
 * on the host (`bridges`, as the chain exempts them). `spec` null (a delete) and a family the
 * allowlist does not police cut nothing; so does an allow-all source (a /0), which lets everyone in.
 */
export function conntrackPolicyOf(
  spec: AllowlistSpec | null,
  family: Family,
  bridges: readonly string[],
): string[] {
  if (spec === null || !declaresFamily(spec, family)) return [];
  const sources = [...spec.sources[family]].sort(compareCidr);
  if (sources.some((s) => s.prefix === 0)) return [];
  const origDst = originalDestinationText(spec);
  const ports = spec.protocols
    .map((protocol) => portLine(family, { protocol, ...spec.ports, origDst }))
    .filter(defined);
  if (ports.length === 0) return [];
  const lines = [...ports, ...sources.map((s) => sourceLine(family, formatCidr(s))).filter(defined)];
  if (spec.exemptDockerBridges) lines.push(...bridges.map((b) => bridgeLine(family, b)).filter(defined));
  return lines;
}

function returns(rule: ParsedRule): boolean {
  return rule.target === "RETURN" && rule.targetArgs === undefined;
}

/** The `-s` sources of our chain's RETURN rules in a save text. */
export function allowedSources(saveText: string, ruleName: string, family: Family = "ipv4"): string[] {
  const chain = getChain(parseFilterTable(saveText, family), chainName(ruleName));
  return (chain?.rules ?? []).filter((r) => r.source !== undefined && returns(r)).map((r) => r.source!.value);
}

/** What our jumps in DOCKER-USER police: protocol, port or range, original destination. */
export function policedPorts(saveText: string, ruleName: string, family: Family = "ipv4"): PolicedPort[] {
  const own = chainName(ruleName);
  const out: PolicedPort[] = [];
  for (const r of getChain(parseFilterTable(saveText, family), DOCKER_USER)?.rules ?? []) {
    if (r.target !== own || r.targetArgs !== undefined) continue;
    const protocol = r.protocol?.value;
    const range = r.ctOrigDstPort?.value;
    if ((protocol !== "tcp" && protocol !== "udp") || range === undefined) continue;
    // The parser already dropped a full-length mask, as iptables-save does.
    const dst = r.ctOrigDst?.value;
    out.push({ protocol, ...range, ...(dst === undefined ? {} : { origDst: dst }) });
  }
  return out;
}

/**
 * The policy as read back from a family's state (`after`: an `iptables-save -t filter` text once
 * the payload is applied): from our jumps in DOCKER-USER and the RETURN rules of our chain.
 * Production carries {@link conntrackPolicyOf} in the plan instead; this reading is what the
 * tests hold it against, and what a hostile or hand-edited state would yield.
 */
export function conntrackPolicy(after: string, ruleName: string, family: Family): string[] {
  const chain = getChain(parseFilterTable(after, family), chainName(ruleName));
  if (chain === undefined) return [];
  const ports = policedPorts(after, ruleName, family)
    .map((p) => portLine(family, p))
    .filter(defined);
  if (ports.length === 0) return [];
  const lines = [...ports];
  for (const source of allowedSources(after, ruleName, family)) {
    const cidr = source.includes("/") ? source : `${source}/${family === "ipv4" ? 32 : 128}`;
    const line = sourceLine(family, cidr);
    if (line !== undefined) lines.push(line);
  }
  // A rule without -s lets every source in (a /0 source renders that way): nothing to cut.
  if (
    chain.rules.some(
      (r) => returns(r) && r.source === undefined && r.inInterface === undefined && r.ctstate === undefined,
    )
  )
    return [];
  for (const r of chain.rules) {
    const i = r.inInterface;
    if (returns(r) && i !== undefined && !i.negated && r.source === undefined && r.ctstate === undefined) {
      const line = bridgeLine(family, i.value);
      if (line !== undefined) lines.push(line);
    }
  }
  return lines;
}
