/**
 * Pure helpers of the apply step: the undo payload and the conntrack cuts.
 *
 * No I/O. Guarantees of {@link renderRollback}:
 * - It touches only DOCKER-USER, the allowlist's own chain and FORWARD jumps the payload itself
 *   adds, so Docker's chains (which Docker may rebuild at any moment) are never rewound.
 * - Restoring it over the state the payload produced gives back, for those chains, exactly the
 *   rules of the snapshot (same lines, same order), and removes chains the snapshot lacked.
 */

const OWNED_FIXED = "DOCKER-USER";

function chainRules(saveText: string, chain: string): { exists: boolean; rules: string[] } {
  let exists = false;
  const rules: string[] = [];
  for (const line of saveText.split("\n")) {
    if (line.split(" ")[0] === `:${chain}`) exists = true;
    else if (line.startsWith(`-A ${chain} `)) rules.push(line);
  }
  return { exists, rules };
}

/**
 * An `iptables-restore --noflush` input that puts DOCKER-USER and `DPA-<ruleName>` back to how
 * `snapshot` (an `iptables-save -t filter` text) had them, undoing `payload`.
 */
export function renderRollback(snapshot: string, payload: string, ruleName: string): string {
  const chains = [OWNED_FIXED, `DPA-${ruleName}`];
  const out: string[] = ["*filter"];
  const state = chains.map((c) => ({ chain: c, ...chainRules(snapshot, c) }));
  // Jumps into FORWARD the payload adds (only where Docker made no DOCKER-USER jump) and the
  // snapshot did not have must go first, or DOCKER-USER could not be deleted below.
  const forwardUndo: string[] = [];
  for (const line of payload.split("\n")) {
    const m = /^-[AI] FORWARD (?:\d+ )?(.*)$/.exec(line);
    if (m !== null && !snapshot.split("\n").includes(`-A FORWARD ${m[1]}`))
      forwardUndo.push(`-D FORWARD ${m[1]}`);
  }
  out.push(...forwardUndo);
  for (const s of state) out.push(`:${s.chain} - [0:0]`);
  for (const s of state) if (s.exists) out.push(...s.rules);
  for (const s of state) if (!s.exists) out.push(`-X ${s.chain}`);
  out.push("COMMIT");
  return out.join("\n") + "\n";
}

/** The `-s` sources of our chain's RETURN rules in a save text. */
export function allowedSources(saveText: string, ruleName: string): string[] {
  const out: string[] = [];
  for (const line of chainRules(saveText, `DPA-${ruleName}`).rules) {
    const m = / -s (\S+) .*-j RETURN$/.exec(line);
    if (m !== null) out.push(m[1]);
  }
  return out;
}

/** A port (range) one of our jumps in DOCKER-USER polices. */
interface PolicedPort {
  readonly protocol: "tcp" | "udp";
  readonly from: number;
  readonly to: number;
  /** `--ctorigdst` without its /32 or /128, or undefined when any destination is policed. */
  readonly origDst?: string;
}

/** What our jumps in DOCKER-USER police: protocol, port or range, original destination. */
export function policedPorts(saveText: string, ruleName: string): PolicedPort[] {
  const out: PolicedPort[] = [];
  for (const line of chainRules(saveText, OWNED_FIXED).rules) {
    if (!line.endsWith(` -j DPA-${ruleName}`)) continue;
    const p = / -p (tcp|udp) /.exec(line);
    const range = / --ctorigdstport (\d+)(?::(\d+))? /.exec(line);
    const dst = / --ctorigdst (\S+) /.exec(line);
    if (p === null || range === null) continue;
    out.push({
      protocol: p[1] as "tcp" | "udp",
      from: Number(range[1]),
      to: Number(range[2] ?? range[1]),
      origDst: dst === null ? undefined : dst[1].replace(/\/(32|128)$/, ""),
    });
  }
  return out;
}

const ADDRESS = /^[0-9A-Fa-f:.]+$/;
const CIDR = /^[0-9A-Fa-f:.]+\/\d{1,3}$/;

/**
 * The data the host needs to cut live flows that the new rules no longer let in, as lines for
 * the host's CUT_AWK (provider/host/scripts.ts):
 * - `P <family> <tcp|udp> <lo> <hi> <origdst|->` per port (range) the allowlist polices after
 *   the change, from its jumps in DOCKER-USER;
 * - `A <family> <cidr>` per source its chain lets in after the change;
 * - `B <family>` when the chain exempts Docker's bridges (the host adds their subnets as `A`).
 * The host lists conntrack once per family and deletes each flow to a policed port, DNATed (so
 * inbound to a published port, not a container's own outbound flow), whose original source no
 * `A` network contains. So a new allowlist cuts flows it does not allow, an edit cuts only the
 * flows of sources that lost access (a source still covered by a wider one keeps its flows),
 * and a delete, which lets everyone in, cuts nothing.
 *
 * `after` is the family's state once the payload is applied (the core's restore simulator).
 * Every token is checked against a strict pattern, because the host script word-splits them.
 */
export function conntrackPolicy(after: string, ruleName: string, family: "ipv4" | "ipv6"): string[] {
  const chain = chainRules(after, `DPA-${ruleName}`);
  if (!chain.exists) return [];
  const ports: string[] = [];
  for (const { protocol, from, to, origDst } of policedPorts(after, ruleName)) {
    if (origDst !== undefined && !ADDRESS.test(origDst)) continue;
    ports.push(`P ${family} ${protocol} ${from} ${to} ${origDst ?? "-"}`);
  }
  if (ports.length === 0) return [];
  const lines = [...ports];
  for (const source of allowedSources(after, ruleName)) {
    const cidr = source.includes("/") ? source : `${source}/${family === "ipv4" ? 32 : 128}`;
    if (CIDR.test(cidr)) lines.push(`A ${family} ${cidr}`);
  }
  // A rule without -s lets every source in (a /0 source renders that way): nothing to cut.
  if (chain.rules.some((r) => / -j RETURN$/.test(r) && !/ -s | -i | --ctstate /.test(r))) return [];
  if (chain.rules.some((r) => / -i docker0 /.test(r))) lines.push(`B ${family}`);
  return lines;
}
