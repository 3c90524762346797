/**
 * Validation of a fleet as a whole: names, references between hosts and policies, the rollout.
 *
 * Pure functions over plain data (no @pulumi/pulumi, no I/O), shared by the fleet component
 * (provider/pulumi/fleet.ts, which throws the first issue as a FleetError) and the root program's
 * stack-config schema (program/config.ts, which lists every issue under its config key). Each
 * field's own rule (a policy's port, sources...) is a leaf validator in ./spec.ts; this module
 * checks only what needs more than one field.
 *
 * Guarantees:
 * - An {@link Issue} path is the argument's path (`["hosts", 1, "policies", 0]`) and its reason
 *   reads after that path: the bad value, what is allowed, the fix.
 * - Names come first: when a name is bad or repeated, {@link fleetIssues} reports only the
 *   names, so one typo does not also show up as a dozen broken references.
 * - Issues come in argument order, so "the first issue" is stable.
 */
import { RULE_NAME_MAX, RULE_NAME_PATTERN } from "./layout";
import { ALLOWLIST_LEAVES, type Issue } from "./spec";

/** The order in which hosts are changed. */
export interface RolloutArgs {
  /**
   * Hosts changed first, on their own, before any other host: host names, or a number meaning the
   * first N hosts in list order.
   * @default - no canary batch
   */
  readonly canaries?: readonly string[] | number;
  /**
   * How many (non-canary) hosts are changed together. Each batch starts only after every resource of
   * the batch before it succeeded.
   * @default - all remaining hosts in one batch
   */
  readonly batchSize?: number;
}

/** What the fleet checks read of a fleet's arguments. */
export interface FleetShape {
  readonly policies: readonly { readonly name: string }[];
  readonly hosts: readonly {
    readonly name: string;
    readonly policies?: readonly string[];
    readonly extraSources?: Readonly<Record<string, unknown>>;
  }[];
  readonly rollout?: RolloutArgs;
}

/** A host name: letters, digits, `.`, `_`, `-`, starting with a letter or digit, at most 63. */
export const HOST_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

const quote = (v: unknown): string => JSON.stringify(v) ?? String(v);

/** Every repeat of an earlier name, as "is already used by <list>[first]". */
function repeats(list: "policies" | "hosts", names: readonly string[], fix: string): Issue[] {
  const issues: Issue[] = [];
  names.forEach((name, i) => {
    const first = names.indexOf(name);
    if (first !== i) {
      issues.push({
        path: [list, i, "name"],
        reason: `${quote(name)} is already used by ${list}[${first}]; ${fix}`,
      });
    }
  });
  return issues;
}

/** Policy and host names: present, well-formed, unique. */
export function fleetNameIssues(fleet: FleetShape): Issue[] {
  if (fleet.policies.length === 0) {
    return [
      {
        path: ["policies"],
        reason: "is empty; a fleet needs at least one policy ({ name, port, sources }).",
      },
    ];
  }
  const issues: Issue[] = [];
  fleet.policies.forEach((p, i) => {
    if (!RULE_NAME_PATTERN.test(p.name)) {
      issues.push({
        path: ["policies", i, "name"],
        reason:
          `is ${quote(p.name)}; a policy name becomes the chain DPA-<name> on every host, ` +
          `so it must be 1-${RULE_NAME_MAX} letters, digits, \`_\` or \`-\`. Pick a shorter or simpler name.`,
      });
    }
  });
  issues.push(
    ...repeats(
      "policies",
      fleet.policies.map((p) => p.name),
      "each policy owns its own chain, so names must be unique. Rename one, or merge their sources.",
    ),
  );
  fleet.hosts.forEach((h, i) => {
    if (!HOST_NAME_PATTERN.test(h.name)) {
      issues.push({
        path: ["hosts", i, "name"],
        reason:
          `is ${quote(h.name)}; it must be 1-63 letters, digits, ".", "_" or "-", ` +
          "starting with a letter or digit (it is part of resource names).",
      });
    }
  });
  issues.push(...hostNameRepeats(fleet.hosts.map((h) => h.name)));
  return issues;
}

function hostNameRepeats(hostNames: readonly string[]): Issue[] {
  return repeats(
    "hosts",
    hostNames,
    "every host needs a unique name. Rename one of them (names are used in resource names and in rollout.canaries).",
  );
}

/** The policies a host applies: its own list, or every policy. */
export function appliedPolicies(fleet: FleetShape, host: FleetShape["hosts"][number]): readonly string[] {
  return host.policies ?? fleet.policies.map((p) => p.name);
}

/** References from hosts to policies (`hosts[].policies`, `hosts[].extraSources`) and the rollout. */
export function fleetReferenceIssues(fleet: FleetShape): Issue[] {
  const policyNames = fleet.policies.map((p) => p.name);
  const known = `known policies: ${policyNames.join(", ")}`;
  const issues: Issue[] = [];
  fleet.hosts.forEach((h, i) => {
    h.policies?.forEach((p, j) => {
      if (!policyNames.includes(p)) {
        issues.push({
          path: ["hosts", i, "policies", j],
          reason: `is ${quote(p)}, not a policy of this fleet; ${known}.`,
        });
      }
    });
    const applied = appliedPolicies(fleet, h);
    for (const p of Object.keys(h.extraSources ?? {})) {
      if (!applied.includes(p)) {
        issues.push({
          path: ["hosts", i, "extraSources", p],
          reason:
            `adds sources to policy ${quote(p)}, which is not applied to host ${quote(h.name)}; ` +
            `${known}${h.policies ? `; this host applies: ${h.policies.join(", ")}` : ""}. Fix the name or apply the policy.`,
        });
      }
    }
  });
  issues.push(
    ...rolloutIssues(
      fleet.hosts.map((h) => h.name),
      fleet.rollout,
    ),
  );
  return issues;
}

/**
 * Everything a fleet relies on: names first ({@link fleetNameIssues}); when they are sound, the
 * references and the rollout ({@link fleetReferenceIssues}).
 */
export function fleetIssues(fleet: FleetShape): Issue[] {
  const names = fleetNameIssues(fleet);
  return names.length > 0 ? names : fleetReferenceIssues(fleet);
}

/** What {@link planRollout} needs: unique host names, a batch size >= 1, canaries that exist. */
export function rolloutIssues(hostNames: readonly string[], rollout: RolloutArgs = {}): Issue[] {
  const issues = hostNameRepeats(hostNames);
  const { batchSize, canaries } = rollout;
  if (batchSize !== undefined && !(Number.isInteger(batchSize) && batchSize >= 1)) {
    issues.push({
      path: ["rollout", "batchSize"],
      reason:
        `is ${String(batchSize)}; it must be a whole number of hosts, 1 or more. ` +
        `Leave it unset to change all non-canary hosts in one batch.`,
    });
  }
  if (typeof canaries === "number") {
    if (!Number.isInteger(canaries) || canaries < 0 || canaries > hostNames.length) {
      issues.push({
        path: ["rollout", "canaries"],
        reason:
          `is ${canaries}; as a number it means "the first N hosts" and must be a ` +
          `whole number from 0 to ${hostNames.length} (the number of hosts). Or list host names instead.`,
      });
    }
  } else if (canaries !== undefined) {
    const known = [...new Set(hostNames)];
    canaries.forEach((name, i) => {
      if (!known.includes(name)) {
        issues.push({
          path: ["rollout", "canaries", i],
          reason:
            `names ${quote(name)}, which is not a host of this fleet; ` +
            `known hosts: ${known.join(", ") || "(none)"}. Use one of those names.`,
        });
      } else if (canaries.indexOf(name) !== i) {
        issues.push({
          path: ["rollout", "canaries", i],
          reason: `lists ${quote(name)} twice; list each canary host once.`,
        });
      }
    });
  }
  return issues;
}

/** The policy fields {@link policyOverlaps} reads; values already leaf-validated. */
export interface PolicyPorts {
  readonly name: string;
  readonly port: number | string;
  readonly protocols?: readonly string[];
  readonly originalDestination?: string;
}

/**
 * Two policies on one host that police the same port and protocol (for the same destination)
 * would chain their drops: a source allowed by one is dropped by the other. One issue per
 * (host, later policy), under the later policy's port.
 *
 * Used by the root program; the fleet component does not refuse this today.
 */
export function policyOverlaps(
  fleet: Omit<FleetShape, "policies"> & { readonly policies: readonly PolicyPorts[] },
): Issue[] {
  const issues: Issue[] = [];
  const range = (p: PolicyPorts) => {
    const r = ALLOWLIST_LEAVES.port(p.port);
    return r.ok ? r.value : undefined;
  };
  for (const host of fleet.hosts) {
    const applied = appliedPolicies(fleet, host);
    const onHost = fleet.policies.map((p, i) => ({ p, i })).filter(({ p }) => applied.includes(p.name));
    for (let a = 0; a < onHost.length; a++) {
      for (let b = a + 1; b < onHost.length; b++) {
        const [pa, pb] = [onHost[a]!.p, onHost[b]!.p];
        const [ra, rb] = [range(pa), range(pb)];
        if (ra === undefined || rb === undefined) continue;
        const protoA = pa.protocols ?? ["tcp"];
        const shared = (pb.protocols ?? ["tcp"]).filter((x) => protoA.includes(x));
        const sameDest = (pa.originalDestination ?? "*") === (pb.originalDestination ?? "*");
        if (ra.from <= rb.to && rb.from <= ra.to && shared.length > 0 && sameDest) {
          issues.push({
            path: ["policies", onHost[b]!.i, "port"],
            reason:
              `overlaps policy ${quote(pa.name)} (${String(pa.port)}/${[...new Set(shared)].join(",")}) on host ${quote(host.name)}: ` +
              "a source allowed by one would be dropped by the other. Merge their sources into one policy, " +
              "or apply them to different hosts with hosts[].policies",
          });
        }
      }
    }
  }
  return issues;
}
