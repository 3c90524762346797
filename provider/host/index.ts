/**
 * The SSH edge: read a host's firewall state and apply a plan to it.
 *
 * One operation on one host = one SSH connection and at most two exec round trips: `dpa-read`
 * (facts + `iptables-save -t filter` per family) and `dpa-apply` (lock, fingerprint check,
 * test, apply, verify handshake, persist). A third round trip happens only when another writer
 * changed the rules between the two (the apply step hands back the new state, we re-plan once).
 *
 * This module knows nothing about what an allowlist means: planning and verification are
 * callbacks (the core's `planAllowlist` / `verifyApplied`), so the edge can be tested with
 * hand-written payloads and the core without a host.
 */
import type { ConnectionArgs } from "../args";
import { HostError } from "./errors";
import { renderRollback, conntrackCuts } from "./rollback";
import { APPLY_SCRIPT, READ_SCRIPT, forwardFingerprint, parseSections, remoteCommand } from "./scripts";
import { SshSession, type SessionOptions, type SessionStats } from "./ssh";

export { HostError, type HostErrorKind } from "./errors";
export {
  SshSession,
  fingerprintOfKeyBlob,
  expectedFingerprint,
  type SessionOptions,
  type SessionStats,
} from "./ssh";

export type FamilyName = "ipv4" | "ipv6";
const FAMILIES: readonly FamilyName[] = ["ipv4", "ipv6"];
const NUM: Record<FamilyName, "4" | "6"> = { ipv4: "4", ipv6: "6" };

/** The live state of one host, as read in one round trip. */
export interface HostSnapshot {
  readonly host: string;
  readonly uid?: number;
  /** Which iptables backend `iptables` on the host is. */
  readonly backend: "nf_tables" | "legacy" | "unknown";
  readonly iptablesVersion: string;
  /** `iptables-save -t filter`, or null when it failed (then `ipv4Error` says why). */
  readonly ipv4: string | null;
  readonly ipv4Error?: string;
  /** `ip6tables-save -t filter`, or null (no ip6tables, IPv6 off in the kernel...). */
  readonly ipv6: string | null;
  readonly ipv6Error?: string;
  /** Set only when this backend has no Docker chains: what the other backend has. */
  readonly otherBackend?: { readonly tool: string; readonly dockerChains: number };
  /** Count of nftables tables named like Docker's (Docker 29 nftables firewall backend). */
  readonly nftDockerTables: number;
  readonly tools: { readonly conntrack: boolean; readonly flock: boolean };
  /**
   * Fingerprint of our chains in the saved rules files and in the live rules; "missing" when
   * the file does not exist, "off" when persistence is off.
   */
  readonly persisted: { readonly ipv4: string; readonly ipv6: string };
  readonly liveFingerprint: { readonly ipv4: string; readonly ipv6: string };
}

/** What `plan` must give back: the core's `Plan`, structurally. */
export interface PlanLike {
  readonly inSync: boolean;
  /** An error finding prevents applying; nothing is sent to the host. */
  readonly blocked?: boolean;
  readonly changes: readonly string[];
  readonly families: {
    readonly ipv4?: { readonly payload: string; readonly fingerprint: string };
    readonly ipv6?: { readonly payload: string; readonly fingerprint: string };
  };
}

/** Where and whether to save rules for reboots, and who owns what (the chain name). */
export interface HostTarget {
  /** The allowlist's ruleName (chain `DPA-<ruleName>`). Validated by the core. */
  readonly ruleName: string;
  /** @default true */
  readonly persist?: boolean;
  /** @default "/etc/iptables/rules.v4" */
  readonly rulesV4Path?: string;
  /** @default "/etc/iptables/rules.v6" */
  readonly rulesV6Path?: string;
}

export interface ApplyOptions<P extends PlanLike> extends HostTarget {
  /** Builds the plan from the live rules (called again once if the rules changed meanwhile). */
  readonly plan: (
    live: { ipv4: string | null; ipv6: string | null },
    snapshot: HostSnapshot,
  ) => P | Promise<P>;
  /**
   * Checks the rules as they are after the apply, before the commit. Returns problems; any
   * problem rolls the host back.
   */
  readonly verify: (family: FamilyName, saveText: string, plan: P) => readonly string[];
  /**
   * Seconds the host waits for our "commit" before it rolls back by itself.
   * @default 30
   */
  readonly commitTimeoutSeconds?: number;
  /** Seconds to wait for another writer's host lock. @default 30 */
  readonly lockWaitSeconds?: number;
  /** Test hook: runs after verification, before "commit" is sent. */
  readonly beforeCommit?: (session: SshSession) => void | Promise<void>;
  /** Transport options (timeouts, retry pacing, warnings). */
  readonly session?: SessionOptions;
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
  readonly live: { readonly ipv4: string | null; readonly ipv6: string | null };
  readonly conntrackDeleted: number;
  readonly replanned: boolean;
  readonly stats: SessionStats & { readonly ms: number };
}

function useSudo(conn: ConnectionArgs): boolean {
  return conn.sudo ?? (conn.user ?? "root") !== "root";
}

function sudoError(
  session: SshSession,
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

function paths(target: HostTarget): { v4: string; v6: string } {
  const on = target.persist ?? true;
  return {
    v4: on ? (target.rulesV4Path ?? "/etc/iptables/rules.v4") : "-",
    v6: on ? (target.rulesV6Path ?? "/etc/iptables/rules.v6") : "-",
  };
}

function kv(body: string | undefined): Map<string, string> {
  const map = new Map<string, string>();
  for (const line of (body ?? "").split("\n")) {
    const i = line.indexOf("=");
    if (i > 0) map.set(line.slice(0, i), line.slice(i + 1));
  }
  return map;
}

/** Round trip 1: reads the host's facts and filter tables. */
export async function readHost(session: SshSession, target: HostTarget): Promise<HostSnapshot> {
  const p = paths(target);
  const command = remoteCommand(
    READ_SCRIPT,
    "dpa-read",
    [target.ruleName, p.v4, p.v6],
    useSudo(session.conn),
  );
  const res = await session.exec("dpa-read", command);
  const sections = parseSections(res.stdout);
  if (res.code !== 0 || !sections.has("end")) {
    throw (
      sudoError(session, "dpa-read", res.code, res.stderr) ??
      new HostError(
        `reading the firewall state failed. Fix: make sure bash, iptables and coreutils are installed ` +
          `and the user may run them.`,
        { host: session.host, kind: "command", command: "dpa-read", exitCode: res.code, stderr: res.stderr },
      )
    );
  }
  const meta = kv(sections.get("meta")?.body);
  const other = kv(sections.get("other")?.body);
  const persisted = kv(sections.get("persisted")?.body);
  const save = (n: "4" | "6") => {
    const s = sections.get(`save${n}`);
    const ok = s !== undefined && s.header.endsWith(" rc=0");
    return {
      text: ok ? s.body : null,
      error: ok ? undefined : (sections.get(`save${n}err`)?.body.trim() ?? "no output"),
    };
  };
  const s4 = save("4");
  const s6 = save("6");
  const version = meta.get("iptables") ?? "";
  const uid = Number(meta.get("uid"));
  return {
    host: session.host,
    uid: Number.isInteger(uid) ? uid : undefined,
    backend: /nf_tables/.test(version) ? "nf_tables" : /legacy/.test(version) ? "legacy" : "unknown",
    iptablesVersion: version,
    ipv4: s4.text,
    ipv4Error: s4.error,
    ipv6: s6.text,
    ipv6Error: s6.error,
    otherBackend: other.has("backend")
      ? { tool: other.get("backend") ?? "", dockerChains: Number(other.get("dockerChains") ?? "0") }
      : undefined,
    nftDockerTables: Number(other.get("nftDockerTables") ?? "0"),
    tools: { conntrack: meta.get("tool.conntrack") === "yes", flock: meta.get("tool.flock") === "yes" },
    persisted: { ipv4: persisted.get("v4") ?? "missing", ipv6: persisted.get("v6") ?? "missing" },
    liveFingerprint: { ipv4: persisted.get("live4") ?? "", ipv6: persisted.get("live6") ?? "" },
  };
}

/**
 * Refuses hosts where rules would be inert or land in the wrong place. Called before any change
 * that adds rules (create/update); deleting and reading stay possible on a broken host.
 */
export function assertChangeable(snapshot: HostSnapshot): void {
  const host = snapshot.host;
  if (snapshot.ipv4 === null) {
    throw new HostError(
      `iptables-save failed (${snapshot.ipv4Error ?? "unknown error"}). Fix: install iptables and check ` +
        `that the user may run it (root, or sudo without password).`,
      { host, kind: "precondition", command: "dpa-read" },
    );
  }
  if (!snapshot.tools.flock) {
    throw new HostError(`flock is not installed, so changes cannot be serialized. Fix: install util-linux.`, {
      host,
      kind: "precondition",
    });
  }
  if (/^:DOCKER-USER /m.test(snapshot.ipv4)) return;
  const other = snapshot.otherBackend;
  if (other !== undefined && other.dockerChains > 0) {
    const fixTo = snapshot.backend === "nf_tables" ? "iptables-legacy" : "iptables-nft";
    throw new HostError(
      `iptables backend mismatch: \`iptables\` here is ${snapshot.backend} (${snapshot.iptablesVersion}), but ` +
        `Docker's chains (${other.dockerChains} DOCKER* chains) live in the other backend (${other.tool}). Rules ` +
        `written here would be invisible to Docker's traffic. Fix: make \`iptables\` point to the backend ` +
        `Docker uses (update-alternatives --set iptables /usr/sbin/${fixTo}; same for ip6tables) or restart ` +
        `Docker after switching.`,
      { host, kind: "precondition" },
    );
  }
  if (snapshot.nftDockerTables > 0) {
    throw new HostError(
      `DOCKER-USER does not exist because Docker runs its nftables firewall backend ("firewall-backend": ` +
        `"nftables", Docker 29+), which has no DOCKER-USER chain. This provider manages DOCKER-USER only. ` +
        `Fix: set "firewall-backend": "iptables" in /etc/docker/daemon.json and restart Docker.`,
      { host, kind: "precondition" },
    );
  }
  throw new HostError(
    `the iptables chain DOCKER-USER does not exist (${snapshot.iptablesVersion}). Docker creates it when ` +
      `it starts and manages iptables. Fix: start Docker (systemctl start docker) and make sure ` +
      `"iptables": false is not set in /etc/docker/daemon.json; rules added without it would never see ` +
      `traffic to published ports.`,
    { host, kind: "precondition" },
  );
}

interface ApplyRun {
  readonly code: number | null;
  readonly sections: Map<string, { header: string; body: string }>;
  readonly stderr: string;
  readonly problems: readonly string[];
}

async function runApply<P extends PlanLike>(
  session: SshSession,
  snapshot: HostSnapshot,
  plan: P | undefined,
  opts: ApplyOptions<P>,
): Promise<ApplyRun> {
  const p = paths(opts);
  const rule = opts.ruleName;
  const fps: Record<FamilyName, string> = { ipv4: "-", ipv6: "-" };
  const stdin: string[] = [];
  const cuts: string[] = [];
  const live = { ipv4: snapshot.ipv4, ipv6: snapshot.ipv6 };
  for (const fam of FAMILIES) {
    const fp = plan?.families[fam];
    if (plan === undefined || fp === undefined || plan.inSync) continue;
    const before = live[fam] ?? "";
    fps[fam] = fp.fingerprint;
    stdin.push(`@@DPA:payload${NUM[fam]}`, fp.payload.replace(/\n$/, ""));
    stdin.push(`@@DPA:rollback${NUM[fam]}`, renderRollback(before, fp.payload, rule).replace(/\n$/, ""));
    cuts.push(...conntrackCuts(before, fp.payload.split("\n").map(stripInsert).join("\n"), rule, fam));
  }
  if (cuts.length > 0) stdin.push("@@DPA:conntrack", ...cuts);
  stdin.push("@@DPA:end");
  const input = stdin.join("\n") + "\n";
  const args = [
    rule,
    fps.ipv4,
    fps.ipv6,
    String(opts.commitTimeoutSeconds ?? 30),
    (opts.persist ?? true) ? "1" : "0",
    snapshot.ipv4 === null ? "-" : p.v4,
    snapshot.ipv6 === null ? "-" : p.v6,
    String(opts.lockWaitSeconds ?? 30),
    String(input.split("\n").length - 1),
    forwardFingerprint(live.ipv4 ?? ""),
    forwardFingerprint(live.ipv6 ?? ""),
  ];
  const command = remoteCommand(APPLY_SCRIPT, "dpa-apply", args, useSudo(session.conn));
  let problems: string[] = [];
  let answered = false;
  const res = await session.exec("dpa-apply", command, {
    stdin: input,
    endStdin: false,
    timeoutMs: ((opts.commitTimeoutSeconds ?? 30) + (opts.lockWaitSeconds ?? 30) + 60) * 1000,
    onStdout: (soFar, channel) => {
      if (answered) return;
      if (/(^|\n)@@DPA:await-commit\n/.test(soFar)) {
        answered = true;
        const sections = parseSections(soFar);
        for (const fam of FAMILIES) {
          const s = sections.get(`new${NUM[fam]}`);
          if (s === undefined || plan === undefined) continue;
          try {
            problems.push(...opts.verify(fam, s.body, plan).map((m) => `${fam}: ${m}`));
          } catch (err) {
            problems.push(`${fam}: verification threw: ${(err as Error).message}`);
          }
        }
        void Promise.resolve(problems.length === 0 ? opts.beforeCommit?.(session) : undefined).then(() => {
          channel.write(problems.length === 0 ? "commit\n" : "rollback\n");
          channel.end();
        });
      } else if (/(^|\n)@@DPA:(conflict|done|test-failed|apply-failed|lock-timeout|error)/.test(soFar)) {
        answered = true;
        channel.end();
      }
    },
  });
  problems = [...problems];
  return { code: res.code, sections: parseSections(res.stdout), stderr: res.stderr, problems };
}

/** A payload line `-I CHAIN 1 rule` as it will read in iptables-save: `-A CHAIN rule`. */
function stripInsert(line: string): string {
  return line.replace(/^-I (\S+) \d+ /, "-A $1 ").replace(/^-I (\S+) /, "-A $1 ");
}

function failure(session: SshSession, run: ApplyRun): HostError {
  const host = session.host;
  const base = { host, command: "dpa-apply", exitCode: run.code, stderr: run.stderr };
  const header = (k: string) => run.sections.get(k)?.header ?? "";
  switch (run.code) {
    case 11:
      return new HostError(
        `iptables-restore --test rejected the planned rules (${header("test-failed")}); nothing was changed. ` +
          `This is a bug or an iptables without the conntrack/comment matches: report it with the stderr below.`,
        { ...base, kind: "command" },
      );
    case 12:
      return new HostError(
        `applying the rules failed (${header("apply-failed")}); every family was restored to its snapshot, nothing changed.`,
        {
          ...base,
          kind: "rolled-back",
        },
      );
    case 13:
      return new HostError(
        run.problems.length > 0
          ? `the rules read back after applying did not match the plan, so the host rolled back to its snapshot: ${run.problems.join("; ")}`
          : `no commit reached the host in time, so it rolled back to its snapshot (${header("rolled-back")}).`,
        { ...base, kind: "rolled-back" },
      );
    case 14:
      return new HostError(
        `the rules are LIVE but saving them for reboots failed (${header("persist-failed")}): the saved file ` +
          `and the live rules differ. Fix: create the directory / make it writable, or set persist: false ` +
          `or rulesV4Path/rulesV6Path; the next \`pulumi up\` saves again.`,
        { ...base, kind: "persist" },
      );
    case 15:
      return new HostError(
        `another writer held /run/docker-port-allowlist.lock for too long; nothing was changed. Fix: retry.`,
        { ...base, kind: "conflict" },
      );
    case 16:
      return new HostError(
        `applying failed AND the rollback failed: DOCKER-USER / the allowlist chain may be half-changed. ` +
          `Fix: inspect \`iptables-save -t filter\` on the host and run \`pulumi refresh\` then \`pulumi up\`.`,
        { ...base, kind: "rollback-failed" },
      );
    default:
      return (
        sudoError(session, "dpa-apply", run.code, run.stderr) ??
        new HostError(
          `the apply step failed (${header("error") || "unexpected exit"}); nothing was changed.`,
          {
            ...base,
            kind: "command",
          },
        )
      );
  }
}

/**
 * One operation on one host: connect, read, plan, and (when needed) apply + persist, over one
 * SSH connection. Throws HostError; on success tells what happened and what it cost.
 */
export async function syncHost<P extends PlanLike>(
  conn: ConnectionArgs,
  opts: ApplyOptions<P> & { readonly requireDockerUser: boolean },
): Promise<HostOutcome<P>> {
  const started = Date.now();
  const session = await SshSession.open(conn, opts.session);
  try {
    let snapshot = await readHost(session, opts);
    if (opts.requireDockerUser) assertChangeable(snapshot);
    let plan = await opts.plan({ ipv4: snapshot.ipv4, ipv6: snapshot.ipv6 }, snapshot);
    const persistOn = opts.persist ?? true;
    const needsPersist = (s: HostSnapshot) =>
      persistOn && FAMILIES.some((f) => s[f] !== null && s.persisted[f] !== s.liveFingerprint[f]);
    if (plan.blocked === true) {
      // Nothing applicable (e.g. no DOCKER-USER while deleting): leave the host alone.
      return done(false, !needsPersist(snapshot), { ipv4: snapshot.ipv4, ipv6: snapshot.ipv6 }, 0, false);
    }
    if (plan.inSync && !needsPersist(snapshot)) {
      return done(false, true, { ipv4: snapshot.ipv4, ipv6: snapshot.ipv6 }, 0, false);
    }
    let run = await runApply(session, snapshot, plan, opts);
    let replanned = false;
    if (run.code === 10) {
      // Someone changed the rules since our read. The script handed back the new state: plan
      // again from it (no extra read) and try once more; a second conflict is reported.
      replanned = true;
      const s4 = run.sections.get("save4")?.body ?? null;
      const s6 = run.sections.get("save6")?.body;
      snapshot = { ...snapshot, ipv4: s4, ipv6: snapshot.ipv6 === null ? null : (s6 ?? null) };
      if (opts.requireDockerUser) assertChangeable(snapshot);
      plan = await opts.plan({ ipv4: snapshot.ipv4, ipv6: snapshot.ipv6 }, snapshot);
      run = await runApply(session, snapshot, plan, opts);
      if (run.code === 10) {
        throw new HostError(
          `the rules in DOCKER-USER / DPA-${opts.ruleName} changed twice while we were applying; another ` +
            `writer is busy. Nothing was changed by us. Fix: retry when the other change is done.`,
          { host: session.host, kind: "conflict", command: "dpa-apply", exitCode: 10 },
        );
      }
    }
    if (run.code !== 0) throw failure(session, run);
    const applied = run.sections.has("committed");
    const live = {
      ipv4: run.sections.get("new4")?.body ?? snapshot.ipv4,
      ipv6: run.sections.get("new6")?.body ?? snapshot.ipv6,
    };
    const deleted = Number((run.sections.get("conntrack-deleted")?.header ?? "x 0").split(" ")[1]);
    return done(applied, true, live, deleted, replanned);

    function done(
      applied: boolean,
      persisted: boolean,
      live: { ipv4: string | null; ipv6: string | null },
      conntrackDeleted: number,
      replanned: boolean,
    ): HostOutcome<P> {
      return {
        snapshot,
        plan,
        applied,
        persisted,
        live,
        conntrackDeleted,
        replanned,
        stats: { ...session.stats, ms: Date.now() - started },
      };
    }
  } catch (err) {
    if (HostError.isInstance(err)) err.stats = { ...session.stats, ms: Date.now() - started };
    throw err;
  } finally {
    session.close();
  }
}

/** Read-only operation (refresh): one connection, one round trip. */
export async function inspectHost(
  conn: ConnectionArgs,
  target: HostTarget,
  session?: SessionOptions,
): Promise<{ snapshot: HostSnapshot; stats: SessionStats & { ms: number } }> {
  const started = Date.now();
  const s = await SshSession.open(conn, session);
  try {
    const snapshot = await readHost(s, target);
    return { snapshot, stats: { ...s.stats, ms: Date.now() - started } };
  } finally {
    s.close();
  }
}
