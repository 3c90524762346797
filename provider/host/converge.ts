/**
 * Converging a host to an allowlist: plan with the core, apply with {@link syncHost}, verify
 * with the core. The one place that joins the two; the provider, the tests and the bench all
 * converge through here.
 */
import type { ConnectionArgs } from "../args";
import {
  GUARD_DIR,
  chainName,
  guardAfter,
  guardCopyOwner,
  guardFindings,
  guardUpdate,
  hostText,
  planAllowlist,
  policedPaths,
  renderGuardCopy,
  dockerBridgesOf,
  standing,
  verifyApplied,
  verifyNft,
  firewallBackendOf,
  nftClaim,
  nftText,
  renderNftTable,
  type AllowlistSpec,
  type Claim,
  type Family,
  type Finding,
  type GuardWanted,
  type Owner,
  type Plan,
  keepsSet,
  setName,
} from "../core";
import { HostError } from "./errors";
import { unknownStateMessage } from "./failure";
import { rulesPaths, type ApplyOptions, type HostOutcome, type HostTarget } from "./options";
import { GUARD_SCRIPT } from "./scripts";
import { liveOf, type HostSnapshot } from "./snapshot";
import { syncHost } from "./sync";

/**
 * Everything of {@link ApplyOptions} a caller may add or replace: limits, persistence,
 * `cutConntrack`, `beforeCommit`, `session`, `connect`, and (tests that inject faults) `plan`
 * and `verify` themselves.
 */
export type ConvergeHooks = Partial<ApplyOptions<Plan> & { readonly requireDockerUser: boolean }> & {
  /** Who acts, and what it may take over (core's `Claim`); without it, owners are not checked. */
  readonly claim?: Claim;
};

/**
 * Finding messages as the provider shows them: `[family] severity: message`. A message may quote
 * a rule line the host printed (a byte string): it is shown as printable text (core's `hostText`),
 * so no host writes escape sequences into the operator's terminal through a finding.
 */
export function findingMessages(findings: readonly Finding[]): string[] {
  return findings.map((f) => hostText(`[${f.family}] ${f.severity}: ${f.message}`));
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
 * refused with {@link blockedError}, and so is a deletion of a chain another owner holds; any
 * other blocked deletion leaves the host alone.
 */
export function convergeOptions(
  desired: AllowlistSpec | null,
  target: HostTarget,
  hooks: ConvergeHooks = {},
): ApplyOptions<Plan> & { readonly requireDockerUser: boolean } {
  const ruleName = target.ruleName;
  const { claim, ...rest } = hooks;
  return {
    ruleName,
    persist: target.persist,
    rulesV4Path: target.rulesV4Path,
    rulesV6Path: target.rulesV6Path,
    requireDockerUser: desired !== null,
    plan: (live, snapshot) => {
      const plan = planAllowlist(live, desired, ruleName, claim);
      const foreign = plan.findings.some((f) => f.code === "owned-by-another");
      if (plan.blocked && (desired !== null || foreign)) throw blockedError(snapshot.host, plan);
      return plan;
    },
    verify: (family, saveText, plan, ipsets) =>
      verifyApplied(saveText, plan.backend === "iptables" ? desired : null, ruleName, family, claim, ipsets)
        .filter((f) => f.severity === "error")
        .map((f) => f.message),
    verifyNft: (listing, plan) => verifyNft(listing, plan.nftExpected, ruleName),
    guard: (snapshot) => {
      // A delete removes only copies it holds: after a replacement took the chain over (same
      // ruleName), the copy is the replacement's now.
      if (desired === null) {
        const c = snapshot.guard.copies;
        const ipt = c.ipv4 ?? c.ipv6;
        const held =
          ipt !== null
            ? standing(guardCopyOwner(ipt, ruleName), claim)
            : standing(guardCopyOwner(c.nft ?? null, ruleName), nftClaim(claim));
        if (held.kind !== "own") return undefined;
      }
      return guardUpdate(snapshot.guard, guardWanted(desired, ruleName, snapshot, claim?.owner));
    },
    ...rest,
  };
}

/**
 * What the guard of a host should hold for `desired` (null: nothing of `ruleName`), on the host
 * whose state `snapshot` is: one copy per family it polices there, and the guard script.
 */
export function guardWanted(
  desired: AllowlistSpec | null,
  ruleName: string,
  snapshot: HostSnapshot,
  owner: Owner | undefined,
): GuardWanted {
  // The allowlist lives in one backend: the guard holds copies of that one only (iptables: one
  // per family; Docker's nftables backend: the table, core's ./nft.ts).
  const nft = firewallBackendOf(liveOf(snapshot)) === "nftables";
  const copy = (f: Family) =>
    desired === null || nft
      ? ""
      : renderGuardCopy(
          desired,
          f,
          policedPaths(snapshot[f], desired, f),
          dockerBridgesOf(snapshot[f], f),
          owner,
          keepsSet(desired, f, snapshot.ipsets !== undefined),
        );
  const table = desired === null || !nft ? "" : nftText(renderNftTable(desired, snapshot.nftBridges, owner));
  return {
    ruleName,
    script: GUARD_SCRIPT,
    copies: { ipv4: copy("ipv4"), ipv6: copy("ipv6"), nft: table },
  };
}

/** What the guard on a host looks like for `desired` in `report` (core's `guardFindings`). */
export function guardFindingsOf(
  desired: AllowlistSpec,
  target: HostTarget,
  snapshot: HostSnapshot,
  report: HostSnapshot["guard"],
  owner: Owner | undefined,
): Finding[] {
  const p = rulesPaths(target);
  return guardFindings(report, guardWanted(desired, target.ruleName, snapshot, owner), {
    on: target.persist ?? true,
    v4: p.v4,
    v6: p.v6,
  });
}

/**
 * After a write: what the guard looks like now (the report read before it, with what the write
 * sent and the host did), and warnings for what the guard step could not do.
 */
export function guardOutcomeFindings(
  outcome: HostOutcome<Plan>,
  desired: AllowlistSpec,
  target: HostTarget,
  owner: Owner | undefined,
): { host: Finding[]; operation: Finding[] } {
  const g = outcome.guard;
  const after = guardAfter(outcome.snapshot.guard, g.sent, g.failed);
  return {
    host: guardFindingsOf(desired, target, outcome.snapshot, after, owner),
    operation: guardStepFindings(g.failed),
  };
}

/** Warnings for what the sync script's guard step could not do (`failed` of its outcome). */
export function guardStepFindings(failed: readonly string[]): Finding[] {
  return failed.map((what): Finding => ({
    code: "guard-install-failed",
    severity: "warning",
    family: what === "copy6" || what === "remove-copy6" ? "ipv6" : "ipv4",
    message:
      `The rules are live, but the guard step failed (${what}): ` +
      (what.startsWith("copy")
        ? `the guard's saved copy of this allowlist was removed, so the guard cannot put its rules back. `
        : what.startsWith("remove-copy")
          ? `the guard's saved copy of this allowlist could not be removed: the guard may put back rules that are no longer wanted. `
          : `the guard may not run. `) +
      `Fix: check that ${GUARD_DIR} can be written (and that systemctl works) on the host, then \`pulumi up\` again.`,
  }));
}

/**
 * An error finding when the host keeps the marker of a rollback of `ruleName` that failed for
 * good (see `HostSnapshot.unknownState`): its state is unknown, with the command to inspect it.
 */
export function unknownStateFindings(snapshot: HostSnapshot, ruleName: string): Finding[] {
  if (snapshot.unknownState === undefined) return [];
  const message = unknownStateMessage(ruleName, snapshot.unknownState);
  return [
    {
      code: "host-state-unknown",
      severity: "error",
      family: "ipv4",
      message: message.charAt(0).toUpperCase() + message.slice(1),
    },
  ];
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

function uncut(family: Family, message: string): Finding {
  return { code: "conntrack-cut-incomplete", severity: "warning", family, message };
}

/**
 * True when the plan took access away from someone in `family`: it removes an allowed source,
 * or it creates the allowlist's chain there (everyone not listed loses access). Those are the
 * live flows the conntrack cut is for.
 */
function revokes(plan: Plan, before: string | null, family: Family, ruleName: string): boolean {
  // Our nftables table: created (everyone not listed loses access) or a source removed.
  if (plan.nft?.first === true) {
    return plan.nft.changes.some(
      (c) => c.startsWith("+ [nft] table ") || /^- \[nft\] [0-9a-f:.]+(\/\d+)?$/.test(c),
    );
  }
  const chain = chainName(ruleName);
  const created = before === null || !before.includes(`:${chain} `);
  const set = `- [${family}] add ${setName(ruleName, family)} `;
  return (
    created || plan.changes.some((c) => c.startsWith(`- [${family}] -A ${chain} -s `) || c.startsWith(set))
  );
}

/**
 * Warnings for the live flows an operation could not cut (see `ConntrackUncut`): failed deletes
 * and failed listings always (there was something to cut), a missing conntrack binary only when
 * the plan took access away from someone in that family.
 */
export function conntrackFindings(outcome: HostOutcome<Plan>, ruleName: string): Finding[] {
  const out: Finding[] = [];
  for (const u of outcome.conntrackUncut) {
    const fam = u.family;
    if (u.reason === "delete-failed") {
      out.push(
        uncut(
          fam,
          `${u.flows} live flow(s) of sources that ${chainName(ruleName)} no longer lets in could not be cut ` +
            `(conntrack -D failed) and go on until they end. Fix: on the host, list them with ` +
            `\`conntrack -L -f ${fam}\` and delete them by hand (\`conntrack -D -f ${fam} -s <source> ...\`).`,
        ),
      );
    } else if (u.reason === "list-failed") {
      out.push(
        uncut(
          fam,
          `conntrack -L -f ${fam} failed on the host, so no live flow of sources that ${chainName(ruleName)} ` +
            `no longer lets in was cut: they go on until they end. Fix: check that the user may run conntrack ` +
            `(root, or sudo without password) and that the nf_conntrack_netlink module loads; meanwhile delete such ` +
            `flows by hand (\`conntrack -D -f ${fam} -s <source> ...\`).`,
        ),
      );
    } else if (revokes(outcome.plan, outcome.snapshot[fam], fam, ruleName)) {
      out.push(
        uncut(
          fam,
          `conntrack is not installed on the host, so live flows of sources that ${chainName(ruleName)} no ` +
            `longer lets in were not cut: they go on until they end (new connections are refused). Fix: ` +
            `install conntrack (Debian/Ubuntu package \`conntrack\`, RHEL \`conntrack-tools\`); the next change applied ` +
            `then cuts them.`,
        ),
      );
    }
  }
  return out;
}
