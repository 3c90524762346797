/**
 * What callers of the host edge say (target, limits, plan/verify callbacks, hooks) and what they
 * get back; the defaults of every limit, resolved in one place.
 */
import {
  DEFAULT_RULES_V4_PATH,
  DEFAULT_RULES_V6_PATH,
  type Family,
  type GuardUpdate,
  type LiveState,
} from "../core";
import type { Connect, HostExec, HostKeys, SessionOptions, SessionStats } from "./exec";
import type { HostSnapshot } from "./snapshot";

/** What `plan` must give back: the core's `Plan`, structurally. */
export interface PlanLike {
  readonly inSync: boolean;
  /** An error finding prevents applying; nothing is sent to the host. */
  readonly blocked?: boolean;
  readonly changes: readonly string[];
  readonly families: { readonly ipv4?: FamilyPlanLike; readonly ipv6?: FamilyPlanLike };
  /** Our nftables table's change (core's `NftPlan`), structurally. */
  readonly nft?: {
    readonly payload: string;
    readonly rollback: string;
    /** The host's digest of the table's listing the plan was made from (compare-and-swap). */
    readonly fingerprint: string;
    /** Applied before the iptables families (it adds policing) or after them (it removes it). */
    readonly first: boolean;
    readonly conntrack?: readonly string[];
  };
}

/** One family of a {@link PlanLike}: the core's `FamilyPlan`, structurally. */
export interface FamilyPlanLike {
  readonly payload: string;
  readonly fingerprint: string;
  /** Policy lines of the host's conntrack cut after the commit (none: no flow is cut). */
  readonly conntrack?: readonly string[];
  /** The family's ipset texts (core's `SetPlan`), structurally. */
  readonly sets?: {
    readonly apply: string;
    readonly drop: string;
    readonly rollback: string;
    readonly rollbackDrop: string;
  };
}

/** Where and whether to save rules for reboots, and who owns what (the chain name). */
export interface HostTarget {
  /** The allowlist's ruleName (chain `DPA-<ruleName>`). Validated by the core. */
  readonly ruleName: string;
  /** @default true */
  readonly persist?: boolean;
  /** @default "/etc/iptables/rules.v4" (core's DEFAULT_RULES_V4_PATH) */
  readonly rulesV4Path?: string;
  /** @default "/etc/iptables/rules.v6" (core's DEFAULT_RULES_V6_PATH) */
  readonly rulesV6Path?: string;
}

/** Bounds of the host dialogue: every wait under the host lock has one. */
export interface ApplyLimits {
  /**
   * Seconds the host waits for our "commit" before it rolls back by itself.
   * @default 30
   */
  readonly commitTimeoutSeconds?: number;
  /** Seconds to wait for another writer's host lock. @default 30 */
  readonly lockWaitSeconds?: number;
  /**
   * Seconds the host (holding the lock) waits for our plan after printing its state; then it
   * releases the lock and changes nothing.
   * @default 30
   */
  readonly planTimeoutSeconds?: number;
  /**
   * Plans sent per operation: a plan the host refuses because a writer that ignores our lock
   * changed the rules is re-made from the fresh state, up to this many plans in all.
   * @default 3
   */
  readonly maxAttempts?: number;
}

/** {@link ApplyLimits} with every default filled in. */
export type ResolvedLimits = { readonly [K in keyof ApplyLimits]-?: number };

export function resolveLimits(l: ApplyLimits): ResolvedLimits {
  return {
    commitTimeoutSeconds: l.commitTimeoutSeconds ?? 30,
    lockWaitSeconds: l.lockWaitSeconds ?? 30,
    planTimeoutSeconds: l.planTimeoutSeconds ?? 30,
    maxAttempts: Math.max(1, Math.floor(l.maxAttempts ?? 3)),
  };
}

/** The rules files the scripts take as argv: a path, or "-" when persistence is off. */
export function rulesPaths(target: HostTarget): { v4: string; v6: string } {
  const on = target.persist ?? true;
  return {
    v4: on ? (target.rulesV4Path ?? DEFAULT_RULES_V4_PATH) : "-",
    v6: on ? (target.rulesV6Path ?? DEFAULT_RULES_V6_PATH) : "-",
  };
}

export interface ApplyOptions<P extends PlanLike> extends HostTarget, ApplyLimits {
  /** Builds the plan from the live rules (called again when a foreign writer changed them). */
  readonly plan: (live: LiveState, snapshot: HostSnapshot) => P | Promise<P>;
  /**
   * Checks the rules as they are after the apply, before the commit (`ipsets`: `ipset save` of
   * the allowlist's sets then, where the host has ipset). Returns problems; any problem rolls the
   * host back.
   */
  readonly verify: (family: Family, saveText: string, plan: P, ipsets?: string) => readonly string[];
  /**
   * Checks our nftables table as listed after an apply (null: no table), before the commit, like
   * {@link verify}. Without it, a plan with an nftables change is refused.
   */
  readonly verifyNft?: (listing: string | null, plan: P) => readonly string[];
  /**
   * Delete the conntrack entries of sources that lost access, so their live flows stop at once
   * (the ESTABLISHED fast path would let them go on for days). Needs `conntrack` on the host.
   * @default true
   */
  readonly cutConntrack?: boolean;
  /**
   * Test hook: runs after verification, before "commit" is sent (the host lock is held).
   * (Method syntax on purpose: a hook written for `SshSession` stays assignable.)
   */
  beforeCommit?(session: HostExec): void | Promise<void>;
  /**
   * Test hook: a directory on the host that asks the sync script to stop at boundaries of the
   * write ({@link PAUSE_POINTS}): where `<pauseDir>/<point>` exists, the script creates
   * `<pauseDir>/<point>.reached` there and goes on once the test has removed `<pauseDir>/<point>`
   * (or after commitTimeoutSeconds). So a test can race a foreign writer or kill the session at
   * an exact step, waiting for a file instead of sleeping.
   * @default - no pauses
   */
  readonly pauseDir?: string;
  /**
   * What the guard on the host needs (its saved copies, script, units; core's `guardUpdate`),
   * given the state read and the plan made from it. Sent with the plan, or alone when the rules
   * are in sync; never an extra round trip.
   * @default - the guard is left alone
   */
  readonly guard?: (snapshot: HostSnapshot, plan: P) => GuardUpdate | undefined;
  /** Transport options (timeouts, retry pacing, warnings). */
  readonly session?: SessionOptions;
  /**
   * Opens the transport.
   * @default - SSH ({@link SshSession.open}); tests pass a {@link LocalExec}
   */
  readonly connect?: Connect;
}

/**
 * The sync script's pause points (see {@link ApplyOptions.pauseDir}), in the order it reaches
 * them: after the fingerprint check, `--test` and the watchdog's start, before the first restore;
 * after the IPv4 restore, before the IPv6 one (only when both families change); after it printed
 * `await-commit`, before it reads the answer; after the commit, before the rules files are
 * written. `<point>.reached` holds the script's pid, so a test can kill exactly that process.
 */
export const PAUSE_POINTS = [
  "before-apply",
  "between-families",
  "awaiting-commit",
  "before-persist",
] as const;
export type PausePoint = (typeof PAUSE_POINTS)[number];

/** One family whose live flows the host could not (all) cut, as the sync script reports it. */
export interface ConntrackUncut {
  readonly family: Family;
  /**
   * `unavailable`: no conntrack binary on the host; `list-failed`: `conntrack -L` failed, so
   * nothing was cut; `delete-failed`: `flows` flows are still there after `conntrack -D` failed.
   */
  readonly reason: "unavailable" | "list-failed" | "delete-failed";
  /** Flows left uncut (delete-failed only). */
  readonly flows?: number;
}

/** The {@link ConntrackUncut} lines in the sync script's output (`@@DPA:conntrack-...`). */
export function parseConntrackUncut(stdout: string): ConntrackUncut[] {
  const out: ConntrackUncut[] = [];
  const re = /^@@DPA:conntrack-(unavailable|list-failed|failed) (ipv4|ipv6)(?: (\d+))?$/gm;
  for (const m of stdout.matchAll(re)) {
    const family = m[2] as Family;
    if (m[1] === "failed") out.push({ family, reason: "delete-failed", flows: Number(m[3] ?? "0") });
    else out.push({ family, reason: m[1] as "unavailable" | "list-failed" });
  }
  return out;
}

/** What the sync script's guard step did (remote/guard-install.sh). */
export interface GuardOutcome {
  /** What was sent (undefined: the guard was current, or left alone). */
  readonly sent?: GuardUpdate;
  /** `systemd`: units installed and enabled; `no-systemd`: script and copies only. */
  readonly installed?: "systemd" | "no-systemd";
  /** The last allowlist on the host went, and the guard with it. */
  readonly removed: boolean;
  /** What failed (copy4, copy6, script, units, directory, remove...); the rules are live regardless. */
  readonly failed: readonly string[];
}

/** The {@link GuardOutcome} lines in the sync script's output (`@@DPA:guard ...`). */
export function parseGuardOutcome(stdout: string, sent: GuardUpdate | undefined): GuardOutcome {
  const installed = /^@@DPA:guard installed (systemd|no-systemd)$/m.exec(stdout)?.[1] as
    "systemd" | "no-systemd" | undefined;
  return {
    ...(sent === undefined ? {} : { sent }),
    ...(installed === undefined ? {} : { installed }),
    removed: /^@@DPA:guard removed$/m.test(stdout),
    failed: [...stdout.matchAll(/^@@DPA:guard-failed (\S+)$/gm)].map((m) => m[1]),
  };
}

/** What one operation did on one host. */
export interface HostOutcome<P extends PlanLike> {
  readonly snapshot: HostSnapshot;
  readonly plan: P;
  /** True when rules were changed (and committed). */
  readonly applied: boolean;
  /** True when the saved files match the live rules at the end (or persistence is off). */
  readonly persisted: boolean;
  /** Live `iptables-save -t filter` per family after the operation. */
  readonly live: LiveState;
  readonly conntrackDeleted: number;
  /**
   * What the conntrack cut after the commit could not do, per family: empty when it cut every
   * flow it had to, or had nothing to cut (no policy lines sent).
   */
  readonly conntrackUncut: readonly ConntrackUncut[];
  /** True when a foreign writer's change made us plan more than once. */
  readonly replanned: boolean;
  /** Plans made (1 unless a writer that ignores our lock changed the rules meanwhile). */
  readonly attempts: number;
  readonly stats: SessionStats & { readonly ms: number };
  /** The host keys the transport verified (SSH: target and jump host); empty for LocalExec. */
  readonly hostKeys: HostKeys;
  /** What the guard step did. */
  readonly guard: GuardOutcome;
}
