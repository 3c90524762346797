/**
 * The undo payload of the apply step: what the host restores when a plan fails verification,
 * gets no commit in time, or fails in another family.
 *
 * Pure functions only (no I/O). Guarantees of {@link renderRollback}:
 * - It touches only the rules the payload itself added or deleted in the chains we share with
 *   others (FORWARD, DOCKER-USER, INPUT), the allowlist's own chain, and DOCKER-USER as a chain
 *   only where the payload created or deleted it. Shared chains are undone rule by rule and never
 *   flushed: what the payload inserted is deleted by its text, what it deleted is inserted back at
 *   its snapshot position, in ascending order. So Docker's chains (which Docker may rebuild at any
 *   moment) are never rewound, and a foreign rule someone added to DOCKER-USER or INPUT while we
 *   applied survives the rollback.
 * - Restoring it over the state the payload produced gives back, for those chains, exactly the
 *   rules of the snapshot (same text, same order), and removes chains the snapshot lacked.
 */
import type { Family } from "./ip";
import { DOCKER_USER, INPUT, chainName } from "./layout";
import { getChain, parseFilterTable, parseRuleCommand, type FilterTable } from "./parse";
import { RestoreBuilder } from "./restore";

/** The chains we share with others, undone rule by rule; FORWARD first (it jumps to DOCKER-USER). */
const SHARED = ["FORWARD", DOCKER_USER, INPUT] as const;

/**
 * An `iptables-restore --noflush` input that puts DOCKER-USER, INPUT, FORWARD's rules of ours and
 * `DPA-<ruleName>` back to how `snapshot` (an `iptables-save -t filter` text of `family`) had
 * them, undoing `payload`.
 */
export function renderRollback(
  snapshot: string,
  payload: string,
  ruleName: string,
  family: Family = "ipv4",
): string {
  const table = parseFilterTable(snapshot, family);
  const own = chainName(ruleName);
  const commands = payload.split("\n").flatMap((line) => {
    const c = parseRuleCommand(line);
    return c === undefined ? [] : [c];
  });
  const declared = new Set(
    payload.split("\n").flatMap((l) => (l.startsWith(":") ? [l.slice(1).split(" ")[0]] : [])),
  );
  const removed = new Set(
    payload.split("\n").flatMap((l) => (l.startsWith("-X ") ? [l.slice(3).trim()] : [])),
  );
  const restore = new RestoreBuilder().startTransaction("filter");

  // 1. What the payload added to shared chains goes first, so the chains it points to can go.
  for (const chain of SHARED)
    for (const c of commands)
      if (c.chain === chain && (c.command === "-I" || c.command === "-A")) restore.deleteRule(chain, c.spec);

  // 2. The chains: ours back to the snapshot's rules; DOCKER-USER re-made where the payload
  //    deleted it (its rules come back in 3.), emptied where the payload made it (deleted in 4.).
  const dockerUser = getChain(table, DOCKER_USER);
  if (dockerUser === undefined ? declared.has(DOCKER_USER) : removed.has(DOCKER_USER))
    restore.declareChain(DOCKER_USER);
  restore.declareChain(own);
  for (const r of getChain(table, own)?.rules ?? []) restore.append(own, r.spec);

  // 3. What the payload deleted from shared chains, back where it was.
  for (const chain of SHARED) {
    for (const r of reinserts(table, chain, commands)) restore.insert(chain, r.position, r.spec);
  }

  // 4. Chains the snapshot lacked.
  if (getChain(table, own) === undefined) restore.deleteChain(own);
  if (dockerUser === undefined && declared.has(DOCKER_USER)) restore.deleteChain(DOCKER_USER);
  return restore.endTransaction().build();
}

/**
 * The snapshot rules of `chain` that the payload's `-D` commands removed, ascending by position:
 * `-D CHAIN <rule>` removes the first rule with that text, so the k-th delete of a text removed
 * its k-th copy; `-D CHAIN <n>` (older payloads) the rule at n in the chain as it was then.
 */
function reinserts(
  table: FilterTable,
  chain: string,
  commands: readonly ReturnType<typeof parseRuleCommand>[],
): { position: number; spec: string }[] {
  const rules = getChain(table, chain)?.rules ?? [];
  const taken = new Set<number>();
  const out: { position: number; spec: string }[] = [];
  for (const c of commands) {
    if (c === undefined || c.chain !== chain || c.command !== "-D") continue;
    const r =
      c.spec === "" && c.position !== undefined
        ? rules[c.position - 1]
        : rules.find((x) => x.spec === c.spec && !taken.has(x.position));
    if (r === undefined || taken.has(r.position)) continue;
    taken.add(r.position);
    out.push({ position: r.position, spec: r.spec });
  }
  return out.sort((a, b) => a.position - b.position);
}
