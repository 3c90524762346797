/**
 * How the host scripts end, turned into HostErrors that say what failed and how to fix it: the
 * exit codes of `dpa-sync` (named in ./remote/exit-codes.sh, the one table the script and this
 * module share) and sudo's own refusals.
 */
import { chainName } from "../core";
import { hostText } from "../core/text";
import { HostError } from "./errors";
import type { HostExec } from "./exec";
import { EXIT, HOST_LOCK_PATH, UNKNOWN_STATE_DIR } from "./scripts";
import type { HostTarget, ResolvedLimits } from "./options";
import type { Sections } from "./snapshot";

/**
 * What to run on a host whose state for `ruleName` is unknown (a rollback failed for good): our
 * rules as both families have them now, with line numbers, and the marker the host keeps.
 */
export function inspectCommand(ruleName: string): string {
  const chain = chainName(ruleName);
  return (
    `iptables-save -t filter | grep -n -- '${chain}'; ip6tables-save -t filter | grep -n -- '${chain}'; ` +
    `cat ${UNKNOWN_STATE_DIR}/unknown.${ruleName}`
  );
}

/**
 * The host's state for `ruleName` is unknown: why, what to look at, and that the next write
 * settles it. `marker` is what the host's marker says (when read back).
 */
export function unknownStateMessage(ruleName: string, marker?: string): string {
  return (
    `the host's iptables state for ${chainName(ruleName)} is UNKNOWN: a rollback failed after every retry, ` +
    `so FORWARD / DOCKER-USER / INPUT / ${chainName(ruleName)} may be half-changed` +
    (marker === undefined || marker === "" ? "" : ` (the host says: ${marker.replace(/\n/g, " | ")})`) +
    `. Inspect: \`${inspectCommand(ruleName)}\`. Fix: once whatever held the xtables lock (or made the ` +
    `restore fail) is gone, run \`pulumi up\`: it re-reads the host, converges it and clears this.`
  );
}

/** How one run of the sync script ended. */
export interface Ending {
  readonly code: number | null;
  readonly sections: Sections;
  readonly stderr: string;
  /** What verification found (they made the client answer "rollback"). */
  readonly problems: readonly string[];
}

/** sudo's own refusal (password needed, sudo missing), or undefined when stderr is not that. */
export function sudoError(
  session: HostExec,
  command: string,
  code: number | null,
  stderr: string,
): HostError | undefined {
  if (!/^sudo: /m.test(stderr) && !(code === 127 && /sudo/.test(stderr))) return undefined;
  const needsPassword = /password is required|terminal is required|askpass/.test(stderr);
  return new HostError(
    needsPassword
      ? `user ${session.user} needs a password for sudo, but this provider runs \`sudo -n\` (never types ` +
          `passwords). Fix: allow ${session.user} to run iptables, ip6tables, iptables-save/-restore, flock ` +
          `and conntrack without a password (NOPASSWD in /etc/sudoers.d), or connect as root.`
      : `sudo failed for user ${session.user}. Fix: install sudo and allow ${session.user} to run the ` +
          `iptables tools without a password, or connect as root.`,
    { host: session.host, kind: "sudo", command, exitCode: code, stderr },
  );
}

/**
 * Why a rules file could not be saved and the fix, from the script's `persist-failed <fam>
 * <reason> <path>` (remote/sync.sh names the reasons). The old file is intact in every case: the
 * script only ever replaces it by renaming a checked temp file over it.
 */
export function persistMessage(header: string): string {
  const [, fam = "?", reason = "", path = "?"] = header.split(" ");
  const dir = path.includes("/") ? path.slice(0, path.lastIndexOf("/")) || "/" : ".";
  const family = fam === "6" ? "ipv6" : "ipv4";
  const pathOption = fam === "6" ? "rulesV6Path" : "rulesV4Path";
  const tool = fam === "6" ? "ip6tables" : "iptables";
  const elsewhere = `set ${pathOption} to a writable path this host restores at boot, or persist: false`;
  const why: Record<string, string> = {
    "no-directory":
      `the directory ${dir} does not exist. Fix: install iptables-persistent (Debian/Ubuntu; it creates ` +
      `/etc/iptables and restores the files at boot) or create ${dir}, or ${elsewhere}.`,
    "disk-full": `the filesystem of ${dir} is full. Fix: free space in ${dir} (\`df -h ${dir}\`), or ${elsewhere}.`,
    "read-only": `${dir} is on a read-only filesystem. Fix: remount it read-write, or ${elsewhere}.`,
    "not-writable": `${dir} is not writable for the user the provider runs as. Fix: connect as root or with sudo: true, or ${elsewhere}.`,
    "save-failed": `${tool}-save failed (stderr below). Fix: run \`${tool}-save\` on the host to see why.`,
    incomplete:
      `${tool}-save wrote incomplete rules (stderr below says what was missing), so they were not saved. ` +
      `Fix: run \`${tool}-save\` on the host to see why.`,
    "test-rejected":
      `${tool}-restore --test rejected what ${tool}-save printed, so the file would not load at boot; ` +
      `it was not saved. Fix: run \`${tool}-save | ${tool}-restore --test\` on the host to see why.`,
  };
  return (
    `the rules are LIVE but saving them for reboots failed (${family}, ${path}): ` +
    (why[reason] ?? `writing the file failed (stderr below). Fix: make ${dir} writable, or ${elsewhere}.`) +
    ` ${path} was left as it was, so it and the live rules differ; the next \`pulumi up\` saves again.`
  );
}

/** The HostError for a sync script that did not end in success. */
export function failure(session: HostExec, run: Ending, opts: HostTarget & ResolvedLimits): HostError {
  const host = session.host;
  const base = { host, command: "dpa-sync", exitCode: run.code, stderr: run.stderr };
  // Section headers carry host bytes (a path, a tool's words): shown as text, never as bytes.
  const header = (k: string) => hostText(run.sections.get(k)?.header ?? "");
  const lock = HOST_LOCK_PATH;
  switch (run.code) {
    case EXIT.CONFLICT:
      return new HostError(
        `the rules in DOCKER-USER / FORWARD / DPA-${opts.ruleName} changed between our read and our apply ` +
          `on each of ${opts.maxAttempts} attempts, although we held ${lock}: a writer that does not take ` +
          `that lock (Docker restarting, a person, another tool) is busy. Nothing was changed by us. Fix: retry ` +
          `when the other change is done.`,
        { ...base, kind: "conflict" },
      );
    case EXIT.TEST_FAILED:
      return new HostError(
        `iptables-restore --test rejected the planned rules (${header("test-failed")}); nothing was changed. ` +
          `This is a bug or an iptables without the conntrack/comment matches: report it with the stderr below.`,
        { ...base, kind: "command" },
      );
    case EXIT.APPLY_FAILED:
      return new HostError(
        `applying the rules failed (${header("apply-failed")}); every family was restored to its snapshot, nothing changed.`,
        { ...base, kind: "rolled-back" },
      );
    case EXIT.ROLLED_BACK:
      return new HostError(
        run.problems.length > 0
          ? `the rules read back after applying did not match the plan, so the host rolled back to its snapshot: ${run.problems.join("; ")}`
          : `no commit reached the host in time, so it rolled back to its snapshot (${header("rolled-back")}).`,
        { ...base, kind: "rolled-back" },
      );
    case EXIT.PERSIST_FAILED:
      return new HostError(persistMessage(header("persist-failed")), { ...base, kind: "persist" });
    case EXIT.LOCK_TIMEOUT:
      return new HostError(
        `another writer held ${lock} for more than lockWaitSeconds=${opts.lockWaitSeconds}; nothing was ` +
          `changed. Fix: retry, or look for a stuck process holding the lock (fuser ${lock}).`,
        { ...base, kind: "conflict" },
      );
    case EXIT.ROLLBACK_FAILED:
      return new HostError(
        `${
          !run.sections.has("await-commit")
            ? "applying the rules failed"
            : run.problems.length > 0
              ? "the rules read back after applying did not match the plan"
              : "no commit reached the host"
        } AND rolling back failed too: ${unknownStateMessage(opts.ruleName)}`,
        { ...base, kind: "rollback-failed" },
      );
    case EXIT.NO_PLAN:
      return new HostError(
        `the host got no plan within planTimeoutSeconds=${opts.planTimeoutSeconds} (${header("no-plan")}), ` +
          `so it released ${lock} without changing anything. Fix: retry; if planning is this slow, raise ` +
          `planTimeoutSeconds.`,
        { ...base, kind: "timeout" },
      );
    case EXIT.NO_FLOCK:
      return new HostError(
        `flock is not installed, so changes cannot be serialized. Fix: install util-linux.`,
        {
          ...base,
          kind: "precondition",
        },
      );
    default:
      if (run.code === null || run.code > 128) {
        // Killed (SIGKILL, the OOM killer): what stands depends on how far it got.
        const how = run.code === null ? "was killed" : `was killed (exit code ${run.code})`;
        return new HostError(
          run.sections.has("committed")
            ? `the change was committed and is live, but the sync script ${how} before it finished: the ` +
                `guard's copies, the conntrack cut or the rules files may lag behind. Fix: \`pulumi up\` again ` +
                `completes them.`
            : `the sync script ${how} before the commit. If it had applied anything, its watchdog on the host ` +
                `rolls that back to the snapshot (if that fails, the next read says the host's state is unknown). ` +
                `Fix: \`pulumi up\` again; it re-reads the host.`,
          { ...base, kind: run.sections.has("committed") ? "command" : "rolled-back" },
        );
      }
      return (
        sudoError(session, "dpa-sync", run.code, run.stderr) ??
        new HostError(
          `the sync step failed (${header("error") || "unexpected exit"}); nothing was changed.`,
          {
            ...base,
            kind: "command",
          },
        )
      );
  }
}
