/**
 * The SSH edge: read a host's firewall state and apply a plan to it.
 *
 * One write operation on one host = one SSH connection and ONE exec (`dpa-sync`) that holds the
 * host lock (/run/docker-port-allowlist.lock) from the read to the commit. So allowlists applied
 * in parallel to the same host (a fleet with several policies per host) queue on the lock and
 * never see each other's changes as conflicts. The fingerprint check stays: it catches writers
 * that do not take our lock (Docker, people), and then the state is re-read and re-planned in
 * the same exec, up to `maxAttempts` times. See {@link syncHost} for what a round trip is.
 *
 * This module knows nothing about what an allowlist means: planning and verification are
 * callbacks (the core's `planAllowlist` / `verifyApplied`), so the edge can be tested with
 * hand-written payloads and the core without a host.
 */
import type { ConnectionArgs } from "../args";
import { HostError } from "./errors";
import { renderRollback } from "../core/rollback";
import { EXIT, READ_SCRIPT, SYNC_SCRIPT, parseSections, remoteCommand } from "./scripts";
import { SshSession, type ExecChannel, type ExecResult, type SessionOptions, type SessionStats } from "./ssh";

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

/**
 * What `plan` must give back: the core's `Plan`, structurally. A family's `conntrack` holds the
 * policy lines of the host's conntrack cut (none: no flow is cut).
 */
export interface PlanLike {
  readonly inSync: boolean;
  /** An error finding prevents applying; nothing is sent to the host. */
  readonly blocked?: boolean;
  readonly changes: readonly string[];
  readonly families: {
    readonly ipv4?: {
      readonly payload: string;
      readonly fingerprint: string;
      readonly conntrack?: readonly string[];
    };
    readonly ipv6?: {
      readonly payload: string;
      readonly fingerprint: string;
      readonly conntrack?: readonly string[];
    };
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

export interface ApplyOptions<P extends PlanLike> extends HostTarget, ApplyLimits {
  /** Builds the plan from the live rules (called again when a foreign writer changed them). */
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
   * Delete the conntrack entries of sources that lost access, so their live flows stop at once
   * (the ESTABLISHED fast path would let them go on for days). Needs `conntrack` on the host.
   * @default true
   */
  readonly cutConntrack?: boolean;
  /** Test hook: runs after verification, before "commit" is sent (the host lock is held). */
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
  /** True when a foreign writer's change made us plan more than once. */
  readonly replanned: boolean;
  /** Plans made (1 unless a writer that ignores our lock changed the rules meanwhile). */
  readonly attempts: number;
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

/** Read-only: the host's facts and filter tables, in one exec, without the lock. */
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
  return parseSnapshot(session.host, sections);
}

/** The snapshot in the sections `report_state` prints (scripts.ts). */
function parseSnapshot(host: string, sections: Map<string, { header: string; body: string }>): HostSnapshot {
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
    host,
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

/** What the host's reply to one message was: its output up to the next question, or to the end. */
interface Reply {
  readonly text: string;
  /** The question that ended it, or "closed" when the script ended (then `result` is set). */
  readonly until: "await-plan" | "await-commit" | "closed";
  readonly result?: ExecResult;
}

/**
 * One exec channel kept open for the dialogue with {@link SYNC_SCRIPT}. Every wait is bounded:
 * by the exec's timeout here, and on the host by the script's own read timeouts.
 */
class Dialogue {
  private stdout = "";
  private offset = 0;
  private channel?: ExecChannel;
  private result?: ExecResult;
  private error?: unknown;
  private wake?: () => void;

  constructor(session: SshSession, name: string, command: string, timeoutMs: number) {
    void session
      .exec(name, command, {
        endStdin: false,
        timeoutMs,
        onStdout: (soFar, channel) => {
          this.stdout = soFar;
          this.channel = channel;
          this.wake?.();
        },
      })
      .then(
        (r) => {
          this.result = r;
          this.wake?.();
        },
        (err: unknown) => {
          this.error = err;
          this.wake?.();
        },
      );
  }

  /** Waits for the host's next question (or the end of the script). */
  public async next(): Promise<Reply> {
    for (;;) {
      const rest = this.stdout.slice(this.offset);
      const m = /(^|\n)@@DPA:(await-plan|await-commit)[^\n]*\n/.exec(rest);
      if (m !== null) {
        const end = m.index + m[0].length;
        this.offset += end;
        return { text: rest.slice(0, end), until: m[2] as "await-plan" | "await-commit" };
      }
      if (this.error !== undefined) throw this.error;
      if (this.result !== undefined) {
        const text = this.result.stdout.slice(this.offset);
        this.offset = this.result.stdout.length;
        return { text, until: "closed", result: this.result };
      }
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }

  public send(text: string): void {
    try {
      this.channel?.write(text);
    } catch {
      // The script already ended (e.g. its plan timeout); next() reports how it ended.
    }
  }

  public end(): void {
    try {
      this.channel?.end();
    } catch {
      // As above: nothing left to close.
    }
  }

  /** Tells the host there is nothing to do: it exits at once, releasing the lock. */
  public async release(): Promise<void> {
    this.send("none\n");
    this.end();
    try {
      await this.next();
    } catch {
      // The caller reports its own, more useful error.
    }
  }
}

/**
 * The plan message of the dialogue: header `plan <nlines> <fp4> <fp6>`, then
 * payload/rollback sections per changed family, the conntrack cuts and `@@DPA:end`.
 */
function planMessage(snapshot: HostSnapshot, plan: PlanLike, rule: string, cut: boolean): string {
  const fps: Record<FamilyName, string> = { ipv4: "-", ipv6: "-" };
  const body: string[] = [];
  const cuts: string[] = [];
  for (const fam of FAMILIES) {
    const fp = plan.families[fam];
    if (fp === undefined || plan.inSync) continue;
    const before = snapshot[fam] ?? "";
    fps[fam] = fp.fingerprint;
    body.push(`@@DPA:payload${NUM[fam]}`, fp.payload.replace(/\n$/, ""));
    body.push(`@@DPA:rollback${NUM[fam]}`, renderRollback(before, fp.payload, rule, fam).replace(/\n$/, ""));
    if (cut) cuts.push(...(fp.conntrack ?? []));
  }
  if (cuts.length > 0) body.push("@@DPA:conntrack", ...cuts);
  body.push("@@DPA:end");
  const text = body.join("\n") + "\n";
  const header = ["plan", String(text.split("\n").length - 1), fps.ipv4, fps.ipv6].join(" ");
  return header + "\n" + text;
}

interface Ending {
  readonly code: number | null;
  readonly sections: Map<string, { header: string; body: string }>;
  readonly stderr: string;
  readonly problems: readonly string[];
}

function failure(session: SshSession, run: Ending, opts: HostTarget & ApplyLimits): HostError {
  const host = session.host;
  const base = { host, command: "dpa-sync", exitCode: run.code, stderr: run.stderr };
  const header = (k: string) => run.sections.get(k)?.header ?? "";
  const lock = "/run/docker-port-allowlist.lock";
  switch (run.code) {
    case EXIT.CONFLICT:
      return new HostError(
        `the rules in DOCKER-USER / FORWARD / DPA-${opts.ruleName} changed between our read and our apply ` +
          `on each of ${opts.maxAttempts ?? 3} attempts, although we held ${lock}: a writer that does not take ` +
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
      return new HostError(
        `the rules are LIVE but saving them for reboots failed (${header("persist-failed")}): the saved file ` +
          `and the live rules differ. Fix: create the directory / make it writable, or set persist: false ` +
          `or rulesV4Path/rulesV6Path; the next \`pulumi up\` saves again.`,
        { ...base, kind: "persist" },
      );
    case EXIT.LOCK_TIMEOUT:
      return new HostError(
        `another writer held ${lock} for more than lockWaitSeconds=${opts.lockWaitSeconds ?? 30}; nothing was ` +
          `changed. Fix: retry, or look for a stuck process holding the lock (fuser ${lock}).`,
        { ...base, kind: "conflict" },
      );
    case EXIT.ROLLBACK_FAILED:
      return new HostError(
        `applying failed AND the rollback failed: DOCKER-USER / the allowlist chain may be half-changed. ` +
          `Fix: inspect \`iptables-save -t filter\` on the host and run \`pulumi refresh\` then \`pulumi up\`.`,
        { ...base, kind: "rollback-failed" },
      );
    case EXIT.NO_PLAN:
      return new HostError(
        `the host got no plan within planTimeoutSeconds=${opts.planTimeoutSeconds ?? 30} (${header("no-plan")}), ` +
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

/**
 * One operation on one host over ONE SSH connection and ONE exec: lock, read, plan, and (when
 * needed) apply + verify + commit + persist, all under the host lock. Throws HostError; on
 * success tells what happened and what it cost.
 *
 * Round trips (`stats.roundTrips`) count request/response exchanges on the channel in which the
 * client waits for the host's answer before it can go on: opening the exec (answer: the state,
 * read under the lock) and each plan sent (answer: the applied state, or a conflict with the
 * fresh state). In sync = 1; a change = 2; each re-plan after a foreign writer's change adds 1.
 * The `commit` line that confirms a verified apply closes the second exchange; it is counted in
 * `stats.commits` (0 or 1), so nothing the operation sends is left uncounted.
 */
export async function syncHost<P extends PlanLike>(
  conn: ConnectionArgs,
  opts: ApplyOptions<P> & { readonly requireDockerUser: boolean },
): Promise<HostOutcome<P>> {
  const started = Date.now();
  const session = await SshSession.open(conn, opts.session);
  const p = paths(opts);
  const lockWait = opts.lockWaitSeconds ?? 30;
  const planTimeout = opts.planTimeoutSeconds ?? 30;
  const commitTimeout = opts.commitTimeoutSeconds ?? 30;
  const maxAttempts = Math.max(1, Math.floor(opts.maxAttempts ?? 3));
  const persistOn = opts.persist ?? true;
  const needsPersist = (s: HostSnapshot) =>
    persistOn && FAMILIES.some((f) => s[f] !== null && s.persisted[f] !== s.liveFingerprint[f]);
  let snapshot: HostSnapshot | undefined;
  let plan: P | undefined;
  let attempts = 0;
  try {
    const command = remoteCommand(
      SYNC_SCRIPT,
      "dpa-sync",
      [
        opts.ruleName,
        p.v4,
        p.v6,
        String(lockWait),
        String(planTimeout),
        String(commitTimeout),
        persistOn ? "1" : "0",
        String(maxAttempts),
      ],
      useSudo(conn),
    );
    const timeoutMs = (lockWait + maxAttempts * planTimeout + commitTimeout + 60) * 1000;
    const d = new Dialogue(session, "dpa-sync", command, timeoutMs);
    const ended = (r: Reply, text: string, problems: readonly string[] = []): HostError =>
      failure(
        session,
        {
          code: r.result?.code ?? null,
          sections: parseSections(text),
          stderr: r.result?.stderr ?? "",
          problems,
        },
        { ...opts, maxAttempts },
      );

    // Exchange 1: the host takes the lock and answers with the state.
    let reply = await d.next();
    for (;;) {
      if (reply.until !== "await-plan") throw ended(reply, reply.text);
      attempts++;
      snapshot = parseSnapshot(session.host, parseSections(reply.text));
      try {
        if (opts.requireDockerUser) assertChangeable(snapshot);
        plan = await opts.plan({ ipv4: snapshot.ipv4, ipv6: snapshot.ipv6 }, snapshot);
      } catch (err) {
        await d.release();
        throw err;
      }
      if (plan.blocked === true) {
        // Nothing applicable (e.g. no DOCKER-USER while deleting): leave the host alone.
        await d.release();
        return done(false, !needsPersist(snapshot), { ipv4: snapshot.ipv4, ipv6: snapshot.ipv6 }, 0);
      }
      if (plan.inSync && !needsPersist(snapshot)) {
        await d.release();
        return done(false, true, { ipv4: snapshot.ipv4, ipv6: snapshot.ipv6 }, 0);
      }
      // Exchange 2 (and one more per re-plan): the plan; the answer is the applied state, or a
      // conflict with the fresh state when a writer that ignores our lock changed the rules.
      session.countRoundTrip();
      d.send(planMessage(snapshot, plan, opts.ruleName, opts.cutConntrack ?? true));
      reply = await d.next();
      if (reply.until !== "await-plan") break;
    }

    let tail = reply.text;
    const problems: string[] = [];
    if (reply.until === "await-commit") {
      const sections = parseSections(reply.text);
      for (const fam of FAMILIES) {
        const s = sections.get(`new${NUM[fam]}`);
        if (s === undefined) continue;
        try {
          problems.push(...opts.verify(fam, s.body, plan!).map((m) => `${fam}: ${m}`));
        } catch (err) {
          problems.push(`${fam}: verification threw: ${(err as Error).message}`);
        }
      }
      if (problems.length === 0) await opts.beforeCommit?.(session);
      d.send(problems.length === 0 ? "commit\n" : "rollback\n");
      session.countCommit();
      d.end();
      reply = await d.next();
      tail += reply.text;
    }
    if (reply.result?.code !== EXIT.DONE) throw ended(reply, tail, problems);
    const sections = parseSections(tail);
    const live = {
      ipv4: sections.get("new4")?.body ?? snapshot.ipv4,
      ipv6: sections.get("new6")?.body ?? snapshot.ipv6,
    };
    const deleted = Number((sections.get("conntrack-deleted")?.header ?? "x 0").split(" ")[1]);
    return done(sections.has("committed"), true, live, deleted);

    function done(
      applied: boolean,
      persisted: boolean,
      live: { ipv4: string | null; ipv6: string | null },
      conntrackDeleted: number,
    ): HostOutcome<P> {
      return {
        snapshot: snapshot!,
        plan: plan!,
        applied,
        persisted,
        live,
        conntrackDeleted,
        replanned: attempts > 1,
        attempts,
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
