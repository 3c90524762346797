/**
 * The operations on one host: read it (refresh), or sync it (lock, read, plan, apply, verify,
 * commit, persist) in one exec.
 *
 * One write operation on one host = one connection and ONE exec (`dpa-sync`) that holds the host
 * lock from the read to the commit. So allowlists applied in parallel to the same host (a fleet
 * with several policies per host) queue on the lock and never see each other's changes as
 * conflicts. The fingerprint check stays: it catches writers that do not take our lock (Docker,
 * people), and then the state is re-read and re-planned in the same exec, up to `maxAttempts`
 * times. See {@link syncHost} for what a round trip is.
 *
 * This module knows nothing about what an allowlist means: planning and verification are
 * callbacks (see ./converge.ts for the core's), so the edge can be tested with hand-written
 * payloads and the core without a host.
 */
import type { ConnectionArgs } from "../args";
import { foreignChanges } from "../core";
import { HostError } from "./errors";
import type { Connect, HostExec, HostKeys, SessionOptions, SessionStats } from "./exec";
import { Dialogue, planMessage, readCommand, syncCommand, syncTimeoutMs, type Reply } from "./dialogue";
import { failure, sudoError } from "./failure";
import {
  parseConntrackUncut,
  parseGuardOutcome,
  resolveLimits,
  type ApplyOptions,
  type ConntrackUncut,
  type GuardOutcome,
  type HostOutcome,
  type HostTarget,
  type PlanLike,
} from "./options";
import { EXIT, parseSections } from "./scripts";
import { guardUpdateEmpty, type GuardUpdate, type LiveState } from "../core";
import {
  FAMILIES,
  FAMILY_DIGIT,
  assertChangeable,
  liveOf,
  needsPersist,
  nftTableOf,
  parseSnapshot,
  type HostSnapshot,
} from "./snapshot";
import { SshSession } from "./ssh";

const ssh: Connect = (conn, options) => SshSession.open(conn, options);

/** Read-only: the host's facts and filter tables, in one exec, without the lock. */
export async function readHost(session: HostExec, target: HostTarget): Promise<HostSnapshot> {
  const res = await session.exec("dpa-read", readCommand(target, session.sudo));
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

/**
 * One operation on one host over ONE connection and ONE exec: lock, read, plan, and (when
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
  const session = await (opts.connect ?? ssh)(conn, opts.session ?? {});
  const limits = resolveLimits(opts);
  const persistOn = opts.persist ?? true;
  let snapshot: HostSnapshot | undefined;
  let plan: P | undefined;
  let guard: GuardUpdate | undefined;
  let attempts = 0;
  const progress = opts.session?.progress;
  try {
    const d = new Dialogue(
      session,
      "dpa-sync",
      syncCommand(opts, limits, session.sudo, opts.pauseDir),
      syncTimeoutMs(limits),
      (line) => progress?.(lockWaitMessage(line, limits.lockWaitSeconds), "wait"),
    );
    const ended = (r: Reply, text: string, problems: readonly string[] = []): HostError =>
      failure(
        session,
        {
          code: r.result?.code ?? null,
          sections: parseSections(text),
          stderr: r.result?.stderr ?? "",
          problems,
        },
        { ...opts, ...limits },
      );

    // Exchange 1: the host takes the lock and answers with the state.
    let reply = await d.next();
    for (;;) {
      if (reply.until !== "await-plan") throw ended(reply, reply.text);
      attempts++;
      snapshot = parseSnapshot(session.host, parseSections(reply.text));
      try {
        if (opts.requireDockerUser) assertChangeable(snapshot);
        plan = await opts.plan(liveOf(snapshot), snapshot);
      } catch (err) {
        await d.release();
        throw err;
      }
      if (plan.blocked === true) {
        // Nothing applicable (e.g. no DOCKER-USER while deleting): leave the host alone.
        await d.release();
        return done(false, !needsPersist(snapshot, persistOn), liveOf(snapshot), 0);
      }
      const g = opts.guard?.(snapshot, plan);
      guard = g === undefined || guardUpdateEmpty(g) ? undefined : g;
      // A host whose state was unknown (a rollback failed) gets a write even when in sync: its
      // success clears the marker on the host.
      if (
        plan.inSync &&
        !needsPersist(snapshot, persistOn) &&
        guard === undefined &&
        snapshot.unknownState === undefined
      ) {
        await d.release();
        return done(false, true, liveOf(snapshot), 0);
      }
      // Exchange 2 (and one more per re-plan): the plan; the answer is the applied state, or a
      // conflict with the fresh state when a writer that ignores our lock changed the rules.
      session.countRoundTrip();
      progress?.(
        plan.inSync
          ? "rules in sync; updating the saved copies"
          : `applying ${plan.changes.length} rule change(s) in one transaction per family`,
        "phase",
      );
      d.send(planMessage(snapshot, plan, opts.ruleName, opts.cutConntrack ?? true, guard));
      reply = await d.next();
      if (reply.until !== "await-plan") break;
    }

    let tail = reply.text;
    const problems: string[] = [];
    if (reply.until === "await-commit") {
      const sections = parseSections(reply.text);
      const newSets = sections.get("newsets")?.body;
      for (const fam of FAMILIES) {
        const s = sections.get(`new${FAMILY_DIGIT[fam]}`);
        if (s === undefined) continue;
        try {
          problems.push(...opts.verify(fam, s.body, plan!, newSets).map((m) => `${fam}: ${m}`));
          // A writer that ignores our lock changed DOCKER-USER between our read and our restore:
          // nothing of theirs was deleted (we delete by exact text), but the plan was made
          // without it, so it is not committed; the rollback keeps their rule too.
          const raced = foreignChanges(fam === "ipv4" ? snapshot!.ipv4 : snapshot!.ipv6, s.body, fam);
          if (raced !== undefined) problems.push(`${fam}: ${raced}`);
        } catch (err) {
          problems.push(`${fam}: verification threw: ${(err as Error).message}`);
        }
      }
      const nft = sections.get("newnft");
      if (nft !== undefined) {
        const listing = nftTableOf(nft).nftTable?.listing ?? null;
        problems.push(
          ...(opts.verifyNft === undefined
            ? ["nft: no verification of the nftables table was given"]
            : opts.verifyNft(listing, plan!).map((m) => `nft: ${m}`)),
        );
      }
      if (problems.length === 0) await opts.beforeCommit?.(session);
      progress?.(
        problems.length === 0
          ? "applied and verified; committing (then live-flow cut and persist)"
          : `verification failed; rolling back: ${problems.join("; ")}`,
        "phase",
      );
      d.send(problems.length === 0 ? "commit\n" : "rollback\n");
      session.countCommit();
      d.end();
      reply = await d.next();
      tail += reply.text;
    }
    if (reply.result?.code !== EXIT.DONE) throw ended(reply, tail, problems);
    const sections = parseSections(tail);
    const before = liveOf(snapshot);
    const newNft = nftTableOf(sections.get("newnft")).nftTable;
    const newSets = sections.get("newsets")?.body ?? before.ipsets;
    const live: LiveState = {
      ipv4: sections.get("new4")?.body ?? snapshot.ipv4,
      ipv6: sections.get("new6")?.body ?? snapshot.ipv6,
      ...(newSets === undefined ? {} : { ipsets: newSets }),
      ...(before.nft === undefined
        ? {}
        : { nft: newNft === undefined ? before.nft : { ...before.nft, ...newNft, sha: "" } }),
    };
    const deleted = Number((sections.get("conntrack-deleted")?.header ?? "x 0").split(" ")[1]);
    return done(
      sections.has("committed"),
      true,
      live,
      deleted,
      parseConntrackUncut(tail),
      parseGuardOutcome(tail, guard),
    );

    function done(
      applied: boolean,
      persisted: boolean,
      live: LiveState,
      conntrackDeleted: number,
      conntrackUncut: readonly ConntrackUncut[] = [],
      guardDone: GuardOutcome = { removed: false, failed: [] },
    ): HostOutcome<P> {
      return {
        snapshot: snapshot!,
        plan: plan!,
        applied,
        persisted,
        live,
        conntrackDeleted,
        conntrackUncut,
        replanned: attempts > 1,
        attempts,
        stats: { ...session.stats, ms: Date.now() - started },
        hostKeys: { ...session.hostKeys },
        guard: guardDone,
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
  connect: Connect = ssh,
): Promise<{ snapshot: HostSnapshot; stats: SessionStats & { ms: number }; hostKeys: HostKeys }> {
  const started = Date.now();
  const s = await connect(conn, session ?? {});
  try {
    const snapshot = await readHost(s, target);
    return { snapshot, stats: { ...s.stats, ms: Date.now() - started }, hostKeys: { ...s.hostKeys } };
  } finally {
    s.close();
  }
}

/**
 * The progress line for the host's `@@DPA:lock-busy <seconds waited> <holder>` (sync.sh): who
 * holds the host lock, as the holder wrote it into the lock file (`allowlist=<ruleName> pid=<n>
 * since=<epoch>`, or `guard pid=<n> ...`), and how long we waited of how long we may.
 */
export function lockWaitMessage(line: string, lockWaitSeconds: number): string {
  const [, waited = "0", ...rest] = line.slice("@@DPA:".length).split(" ");
  const holder = rest.join(" ");
  const field = (k: string) => new RegExp(`(?:^| )${k}=(\\S+)`).exec(holder)?.[1];
  const pid = field("pid");
  const who =
    field("allowlist") !== undefined
      ? `allowlist "${field("allowlist")}"${pid === undefined ? "" : ` (pid ${pid})`}`
      : holder.startsWith("guard")
        ? `the guard${pid === undefined ? "" : ` (pid ${pid})`}`
        : "a process that did not say who it is";
  return `waiting for the host lock, held by ${who}: ${waited} s of lockWaitSeconds=${lockWaitSeconds}`;
}
