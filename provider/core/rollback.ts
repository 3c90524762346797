/**
 * The undo payload of the apply step: what the host restores when a plan fails verification,
 * gets no commit in time, or fails in another family.
 *
 * Pure functions only (no I/O). Guarantees of {@link renderRollback}:
 * - It touches only DOCKER-USER, the allowlist's own chain and FORWARD jumps the payload itself
 *   adds, so Docker's chains (which Docker may rebuild at any moment) are never rewound.
 * - Restoring it over the state the payload produced gives back, for those chains, exactly the
 *   rules of the snapshot (same text, same order), and removes chains the snapshot lacked.
 */
import type { Family } from "./ip";
import { DOCKER_USER, chainName } from "./layout";
import { getChain, parseFilterTable, parseRuleCommand } from "./parse";
import { RestoreBuilder } from "./restore";

/**
 * An `iptables-restore --noflush` input that puts DOCKER-USER and `DPA-<ruleName>` back to how
 * `snapshot` (an `iptables-save -t filter` text of `family`) had them, undoing `payload`.
 */
export function renderRollback(
  snapshot: string,
  payload: string,
  ruleName: string,
  family: Family = "ipv4",
): string {
  const table = parseFilterTable(snapshot, family);
  const forward = getChain(table, "FORWARD")?.rules ?? [];
  const restore = new RestoreBuilder().startTransaction("filter");
  // Jumps into FORWARD the payload adds (only where Docker made no DOCKER-USER jump) and the
  // snapshot did not have must go first, or DOCKER-USER could not be deleted below.
  for (const line of payload.split("\n")) {
    const c = parseRuleCommand(line);
    if (c === undefined || c.chain !== "FORWARD" || (c.command !== "-A" && c.command !== "-I")) continue;
    if (!forward.some((r) => r.spec === c.spec)) restore.deleteRule("FORWARD", c.spec);
  }
  const chains = [DOCKER_USER, chainName(ruleName)].map((name) => ({ name, model: getChain(table, name) }));
  for (const c of chains) restore.declareChain(c.name);
  for (const c of chains) for (const r of c.model?.rules ?? []) restore.append(c.name, r.spec);
  for (const c of chains) if (c.model === undefined) restore.deleteChain(c.name);
  return restore.endTransaction().build();
}
