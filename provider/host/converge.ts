/**
 * Converging a host to an allowlist: plan with the core, apply with {@link syncHost}, verify
 * with the core. The one place that joins the two; the provider, the tests and the bench all
 * converge through here.
 */
import type { ConnectionArgs } from "../args";
import { planAllowlist, verifyApplied, type AllowlistSpec, type Finding, type Plan } from "../core";
import { HostError } from "./errors";
import type { ApplyOptions, HostOutcome, HostTarget } from "./options";
import { syncHost } from "./sync";

/**
 * Everything of {@link ApplyOptions} a caller may add or replace: limits, persistence,
 * `cutConntrack`, `beforeCommit`, `session`, `connect`, and (tests that inject faults) `plan`
 * and `verify` themselves.
 */
export type ConvergeHooks = Partial<ApplyOptions<Plan> & { readonly requireDockerUser: boolean }>;

/** Finding messages as the provider shows them: `[family] severity: message`. */
export function findingMessages(findings: readonly Finding[]): string[] {
  return findings.map((f) => `[${f.family}] ${f.severity}: ${f.message}`);
}

/** The refusal of a plan the core blocked (an error finding): nothing was sent to the host. */
export function blockedError(host: string, plan: Plan): HostError {
  return new HostError(
    `the host is not in a state this allowlist can be applied to; nothing was changed:\n` +
      findingMessages(plan.findings.filter((f) => f.severity === "error")).join("\n"),
    { host, kind: "precondition" },
  );
}

/**
 * The {@link syncHost} options that converge a host to `desired`, or remove everything
 * `target.ruleName` owns when `desired` is null. A blocked plan for a desired allowlist is
 * refused with {@link blockedError}; a blocked deletion leaves the host alone.
 */
export function convergeOptions(
  desired: AllowlistSpec | null,
  target: HostTarget,
  hooks: ConvergeHooks = {},
): ApplyOptions<Plan> & { readonly requireDockerUser: boolean } {
  const ruleName = target.ruleName;
  return {
    ruleName,
    persist: target.persist,
    rulesV4Path: target.rulesV4Path,
    rulesV6Path: target.rulesV6Path,
    requireDockerUser: desired !== null,
    plan: (live, snapshot) => {
      const plan = planAllowlist(live, desired, ruleName);
      if (plan.blocked && desired !== null) throw blockedError(snapshot.host, plan);
      return plan;
    },
    verify: (family, saveText) =>
      verifyApplied(saveText, desired, ruleName, family)
        .filter((f) => f.severity === "error")
        .map((f) => f.message),
    ...hooks,
  };
}

/** Converges one host (see {@link convergeOptions}) in one connection and one exec. */
export function converge(
  conn: ConnectionArgs,
  desired: AllowlistSpec | null,
  target: HostTarget,
  hooks: ConvergeHooks = {},
): Promise<HostOutcome<Plan>> {
  return syncHost<Plan>(conn, convergeOptions(desired, target, hooks));
}
