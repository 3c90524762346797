/**
 * A tiny, strict model of `iptables-restore --noflush` on the filter table: the oracle of the
 * planner's property and golden tests (and of bench/). Test code, not on the production path:
 * production carries everything it needs in the plan (payload, expected lines, conntrack policy).
 *
 * Pure functions only. It understands exactly the commands the planner emits (`:CHAIN`, `-A`,
 * `-I CHAIN [n]`, `-D CHAIN n|spec`, `-X`, `-F`, `-N`, `COMMIT`) and, like iptables-restore, fails
 * the whole transaction (throws, nothing applied) on anything iptables would refuse: an unknown
 * chain, a rule number out of range, deleting a chain that is not empty or still referenced, a
 * jump to a chain that does not exist. Rules come out in the canonical form of `parse.ts`; the
 * exact spelling iptables prints is checked against real iptables in the lab tests instead.
 */
import type { Family } from "../../../provider/core/ip";
import { canonicalRule, parseFilterTable, tokenize } from "../../../provider/core/parse";

const BUILTIN = ["INPUT", "FORWARD", "OUTPUT"];
/** Targets that are not chains (the ones a filter table sees in practice). */
const TARGETS = new Set([
  "ACCEPT",
  "DROP",
  "RETURN",
  "REJECT",
  "LOG",
  "NFLOG",
  "QUEUE",
  "NFQUEUE",
  "TCPMSS",
  "CT",
  "MARK",
  "CONNMARK",
  "AUDIT",
  "TRACE",
  "NOTRACK",
  "CHECKSUM",
  "CLASSIFY",
  "SET",
]);

/** Error thrown for a payload iptables-restore would refuse; `line` is the 1-based payload line. */
export class SimulatedRestoreError extends Error {
  constructor(
    message: string,
    readonly line: number,
  ) {
    super(`iptables-restore (simulated): line ${line}: ${message}`);
    this.name = "SimulatedRestoreError";
  }
}

interface SimChain {
  name: string;
  policy: string;
  rules: string[];
}

function targetOf(canonical: string): string | undefined {
  const tokens = tokenize(canonical) ?? [];
  for (let i = 0; i < tokens.length - 1; i++)
    if (tokens[i] === "-j" || tokens[i] === "-g") return tokens[i + 1];
  return undefined;
}

/** Applies `payload` to `saveText` (both filter-table text) and returns the new save text. */
export function applyPayload(saveText: string, payload: string, family: Family): string {
  const table = parseFilterTable(saveText, family);
  const chains = new Map<string, SimChain>();
  for (const name of BUILTIN) chains.set(name, { name, policy: "ACCEPT", rules: [] });
  for (const c of table.chains) {
    const chain = chains.get(c.name) ?? { name: c.name, policy: c.policy, rules: [] };
    chain.policy = c.policy;
    chain.rules = c.rules.map((r) => r.canonical);
    chains.set(c.name, chain);
  }
  const need = (name: string, n: number): SimChain => {
    const c = chains.get(name);
    if (c === undefined) throw new SimulatedRestoreError(`chain ${name} does not exist`, n);
    return c;
  };
  const checkTarget = (rule: string, n: number): void => {
    const target = targetOf(rule);
    if (target !== undefined && !TARGETS.has(target) && !chains.has(target)) {
      throw new SimulatedRestoreError(`jump to ${target}, which is neither a target nor a chain`, n);
    }
  };
  const lines = payload.split("\n");
  let inFilter = false;
  let committed = false;
  lines.forEach((raw, index) => {
    const n = index + 1;
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) return;
    if (line === "*filter") {
      inFilter = true;
      return;
    }
    if (!inFilter) throw new SimulatedRestoreError(`${JSON.stringify(line)} outside *filter`, n);
    if (line === "COMMIT") {
      inFilter = false;
      committed = true;
      return;
    }
    if (line.startsWith(":")) {
      const [name, policy = "-"] = line.slice(1).split(/\s+/);
      const existing = chains.get(name);
      if (existing === undefined) chains.set(name, { name, policy, rules: [] });
      else if (!BUILTIN.includes(name))
        existing.rules = []; // --noflush still flushes a declared user chain
      else existing.policy = policy;
      return;
    }
    const tokens = tokenize(line);
    if (tokens === undefined || tokens.length < 2)
      throw new SimulatedRestoreError(`cannot parse ${JSON.stringify(line)}`, n);
    const [cmd, name] = tokens;
    const spec = line.replace(/^\S+\s+\S+\s*/, "");
    switch (cmd) {
      case "-A": {
        const rule = canonicalRule(`-A ${name} ${spec}`, family)!;
        checkTarget(rule, n);
        need(name, n).rules.push(rule);
        return;
      }
      case "-I": {
        const chain = need(name, n);
        let position = 1;
        let rest = spec;
        if (/^\d+(\s|$)/.test(rest)) {
          position = Number(rest.split(/\s+/)[0]);
          rest = rest.replace(/^\d+\s*/, "");
        }
        if (position < 1 || position > chain.rules.length + 1) {
          throw new SimulatedRestoreError(`index of insertion too big: ${position} in ${name}`, n);
        }
        const rule = canonicalRule(`-A ${name} ${rest}`, family)!;
        checkTarget(rule, n);
        chain.rules.splice(position - 1, 0, rule);
        return;
      }
      case "-D": {
        const chain = need(name, n);
        if (/^\d+$/.test(spec)) {
          const position = Number(spec);
          if (position < 1 || position > chain.rules.length) {
            throw new SimulatedRestoreError(`index of deletion too big: ${position} in ${name}`, n);
          }
          chain.rules.splice(position - 1, 1);
          return;
        }
        const rule = canonicalRule(`-A ${name} ${spec}`, family);
        const at = rule === undefined ? -1 : chain.rules.indexOf(rule);
        if (at === -1)
          throw new SimulatedRestoreError(`bad rule (does a matching rule exist in ${name}?)`, n);
        chain.rules.splice(at, 1);
        return;
      }
      case "-F":
        need(name, n).rules = [];
        return;
      case "-N":
        if (chains.has(name)) throw new SimulatedRestoreError(`chain ${name} already exists`, n);
        chains.set(name, { name, policy: "-", rules: [] });
        return;
      case "-X": {
        const chain = need(name, n);
        if (BUILTIN.includes(name))
          throw new SimulatedRestoreError(`cannot delete built-in chain ${name}`, n);
        if (chain.rules.length > 0) throw new SimulatedRestoreError(`chain ${name} is not empty`, n);
        for (const other of chains.values()) {
          if (other.rules.some((r) => targetOf(r) === name)) {
            throw new SimulatedRestoreError(`chain ${name} is still referenced from ${other.name}`, n);
          }
        }
        chains.delete(name);
        return;
      }
      default:
        throw new SimulatedRestoreError(`unsupported command ${cmd}`, n);
    }
  });
  if (!committed || inFilter) throw new SimulatedRestoreError("no COMMIT", lines.length);
  return renderTable(chains.values());
}

function renderTable(chains: Iterable<SimChain>): string {
  const list = [...chains];
  const ordered = [
    ...BUILTIN.map((b) => list.find((c) => c.name === b)!),
    ...list
      .filter((c) => !BUILTIN.includes(c.name))
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)),
  ];
  const out = ["# Generated by dpa-simulate", "*filter"];
  for (const c of ordered) out.push(`:${c.name} ${c.policy} [0:0]`);
  for (const c of ordered) out.push(...c.rules);
  out.push("COMMIT", "");
  return out.join("\n");
}
