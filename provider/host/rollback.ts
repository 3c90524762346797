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

/** `[protocol, port-or-range]` of our jumps in DOCKER-USER. */
export function policedPorts(saveText: string, ruleName: string): { protocol: string; ports: string }[] {
  const out: { protocol: string; ports: string }[] = [];
  for (const line of chainRules(saveText, OWNED_FIXED).rules) {
    if (!line.endsWith(`-j DPA-${ruleName}`)) continue;
    const p = / -p (tcp|udp) /.exec(line);
    const port = / --ctorigdstport (\d+(?::\d+)?) /.exec(line);
    if (p !== null && port !== null) out.push({ protocol: p[1], ports: port[1] });
  }
  return out;
}

/** Ranges larger than this are not cut port by port (too many conntrack calls). */
const CONNTRACK_MAX_PORTS = 64;
const SAFE_TOKEN = /^[0-9A-Fa-f:./]+$/;

/**
 * Argument lines for `conntrack -D` that cut the live flows of sources present `before` and
 * absent `after`, on the ports this allowlist polices. Every token is checked against a strict
 * pattern, because the host script word-splits these lines.
 */
export function conntrackCuts(
  before: string,
  after: string,
  ruleName: string,
  family: "ipv4" | "ipv6",
): string[] {
  const kept = new Set(allowedSources(after, ruleName));
  const removed = allowedSources(before, ruleName).filter((s) => !kept.has(s) && SAFE_TOKEN.test(s));
  const lines: string[] = [];
  for (const { protocol, ports } of policedPorts(before, ruleName)) {
    const [from, to] = ports.split(":").map(Number);
    const last = to ?? from;
    if (last - from + 1 > CONNTRACK_MAX_PORTS) continue;
    for (let port = from; port <= last; port++) {
      for (const source of removed)
        lines.push(`-f ${family} -p ${protocol} --orig-port-dst ${port} -s ${source}`);
    }
  }
  return lines;
}
