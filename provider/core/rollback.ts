/**
 * The undo payload of the apply step: what the host restores when a plan fails verification,
 * gets no commit in time, or fails in another family.
 *
 * Pure functions only (no I/O). Guarantees of {@link renderRollback}:
 * - It touches only DOCKER-USER, the allowlist's own chain, FORWARD jumps the payload itself
 *   adds and the INPUT rules the payload inserted or deleted, so Docker's chains (which Docker
 *   may rebuild at any moment) are never rewound and INPUT, which other tools (ufw, fail2ban)
 *   share, is never flushed.
 * - Restoring it over the state the payload produced gives back, for those chains, exactly the
 *   rules of the snapshot (same text, same order), and removes chains the snapshot lacked.
 *   INPUT is undone rule by rule: what the payload inserted (always at the top) is deleted by its
 *   spec, what it deleted is inserted back at its old position, in ascending order.
 */
import type { Family } from "./ip";
import { DOCKER_USER, INPUT, chainName } from "./layout";
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
  // INPUT: jumps the payload inserted go before our chain can be deleted; the rules it deleted
  // (by their snapshot positions) come back after our chain exists again.
  const input = getChain(table, INPUT)?.rules ?? [];
  const reinsert: { position: number; spec: string }[] = [];
  for (const line of payload.split("\n")) {
    const c = parseRuleCommand(line);
    if (c === undefined || c.chain !== INPUT) continue;
    if (c.command === "-I") restore.deleteRule(INPUT, c.spec);
    if (c.command === "-D" && c.spec === "" && c.position !== undefined) {
      const r = input[c.position - 1];
      if (r !== undefined) reinsert.push({ position: c.position, spec: r.spec });
    }
  }
  const chains = [DOCKER_USER, chainName(ruleName)].map((name) => ({ name, model: getChain(table, name) }));
  for (const c of chains) restore.declareChain(c.name);
  for (const c of chains) for (const r of c.model?.rules ?? []) restore.append(c.name, r.spec);
  for (const r of reinsert.sort((a, b) => a.position - b.position)) restore.insert(INPUT, r.position, r.spec);
  for (const c of chains) if (c.model === undefined) restore.deleteChain(c.name);
  return restore.endTransaction().build();
}
