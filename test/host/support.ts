/**
 * Shared pieces of the host edge's tests: the options with which the provider drives
 * `syncHost` (plan and verify with the core), and a way to await the HostError a call must end in.
 */
import { planAllowlist, verifyApplied, type AllowlistSpec, type Plan } from "../../provider/core";
import { HostError, type ApplyOptions } from "../../provider/host";

/** `syncHost` options that converge a host to `s`, or delete `s`'s rule name when `s` is a string. */
export function syncOptions(
  s: AllowlistSpec | string,
  extra: Partial<ApplyOptions<Plan>> = {},
): ApplyOptions<Plan> & { requireDockerUser: boolean } {
  const desired = typeof s === "string" ? null : s;
  const ruleName = typeof s === "string" ? s : s.ruleName;
  return {
    ruleName,
    requireDockerUser: true,
    plan: (live) => planAllowlist(live, desired, ruleName),
    verify: (family, text) => verifyApplied(text, desired, ruleName, family).map((f) => f.message),
    ...extra,
  };
}

/** The HostError `p` rejects with; fails the test when it resolves or rejects with anything else. */
export async function hostError(p: Promise<unknown>): Promise<HostError> {
  try {
    await p;
  } catch (err) {
    if (HostError.isInstance(err)) return err;
    throw err;
  }
  throw new Error("expected a HostError");
}
