/**
 * The REAL host scripts (dpa-read, dpa-sync) and the dialogue with them, run on this machine
 * through the exec seam (LocalExec) against stub iptables/conntrack tools (./stubhost.ts): every
 * way the sync script can end, and what the client makes of it. The lab proves the same over
 * SSH against real iptables.
 */
import {
  chmodSync,
  chownSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "fs";
import { join } from "path";
import { fingerprint, planAllowlist, validateAllowlist, type AllowlistSpec } from "../../provider/core";
import {
  conntrackFindings,
  converge,
  convergeOptions,
  inspectHost,
  lockWaitMessage,
  readHost,
  syncHost,
  type ConvergeHooks,
  type HostExec,
} from "../../provider/host";
import { hostError, planWithExtraRule } from "./support";
import { StubHost, until } from "./stubhost";

jest.setTimeout(30_000);

const FIXTURE = join(__dirname, "..", "core", "fixtures", "docker29");
const SAVE4 = readFileSync(join(FIXTURE, "iptables-save.v4.txt"), "utf8");
const SAVE6 = readFileSync(join(FIXTURE, "iptables-save.v6.txt"), "utf8");
const CONN = { host: "stubhost" };

function spec(ruleName: string, sources: string[], extra: Record<string, unknown> = {}): AllowlistSpec {
  const v = validateAllowlist({ port: 8080, protocols: ["tcp"], sources, ruleName, ...extra }, ruleName);
  if (!v.ok) throw new Error(JSON.stringify(v.failures));
  return v.spec;
}

let host: StubHost;
beforeEach(() => {
  host = new StubHost();
  host.write("save4", SAVE4);
  host.write("save6.fail", "ip6tables-save: IPv6 is off on this host");
});
afterEach(() => host.remove());

/** Converges the stub host, its rules files in the host's temp dir, the restore stub told where payloads lead. */
function sync(desired: AllowlistSpec | null, ruleName: string, hooks: ConvergeHooks = {}) {
  const target = {
    ruleName,
    rulesV4Path: join(host.root, "etc", "rules.v4"),
    rulesV6Path: join(host.root, "etc", "rules.v6"),
  };
  const base = convergeOptions(desired, target, { connect: host.connect(), ...hooks });
  return syncHost(CONN, { ...base, plan: host.leadsTo(base.plan) });
}

describe("dpa-read through the exec seam", () => {
  test("reports the facts and both families, with the same fingerprint as the core", async () => {
    host.write("save6", SAVE6);
    rmState("save6.fail");
    const s = host.exec();
    const snapshot = await readHost(s, { ruleName: "web", persist: false });
    s.close();
    expect(snapshot).toMatchObject({
      host: "stubhost",
      uid: 0,
      backend: "nf_tables",
      iptablesVersion: "iptables v1.8.9 (nf_tables)",
      ipv4: SAVE4,
      ipv6: SAVE6,
      tools: { conntrack: true, flock: true },
      persisted: { ipv4: "off", ipv6: "off" },
      liveFingerprint: { ipv4: fingerprint(SAVE4, "web", "saved"), ipv6: fingerprint(SAVE6, "web", "saved") },
    });
    expect(s.stats).toMatchObject({ roundTrips: 1 });
  });

  test("a family whose save fails is null with the tool's stderr, and a missing rules file is 'missing'", async () => {
    const { snapshot, stats } = await inspectHost(
      CONN,
      { ruleName: "web", rulesV4Path: join(host.root, "etc", "none.v4") },
      undefined,
      host.connect(),
    );
    expect(snapshot.ipv6).toBeNull();
    expect(snapshot.ipv6Error).toBe("ip6tables-save: IPv6 is off on this host");
    expect(snapshot.persisted.ipv4).toBe("missing");
    expect(stats).toMatchObject({ connections: 1, roundTrips: 1 });
  });

  test("without DOCKER-USER it looks at the other backend (the precondition names the cause) and at nftables", async () => {
    host.write(
      "save4",
      SAVE4.split("\n")
        .filter((l) => !l.includes("DOCKER-USER"))
        .join("\n"),
    );
    host.write("legacy-save", ":DOCKER - [0:0]\n:DOCKER-USER - [0:0]\n");
    const err = await hostError(sync(spec("mism", ["198.18.200.0/24"]), "mism"));
    expect(err.kind).toBe("precondition");
    expect(err.message).toContain("iptables backend mismatch: `iptables` here is nf_tables");
    expect(err.message).toContain("(2 DOCKER* chains) live in the other backend (iptables-legacy-save)");
    expect(host.lockFree()).toBe(true);

    host.write("legacy-save", "");
    host.write("nft-tables", "table ip docker-bridges\n");
    // Docker's nftables backend (its nat chain lists): the allowlist goes to an nftables table of
    // its own. This stub's nft prints the same text whatever it is asked and keeps nothing, so the
    // table listed after the apply is not the one planned: the host rolls back, nothing is kept.
    const nft = await hostError(sync(spec("nft29", ["198.18.200.0/24"]), "nft29"));
    expect(nft.kind).toBe("rolled-back");
    expect(nft.message).toContain("nft: after the apply, nft does not list what was planned");
    // The detached watchdog holds the lock until it has seen the script's fate and ended.
    await until(() => host.lockFree());
  });

  test("a user whose sudo needs a password gets the sudo error", async () => {
    const s = host.exec({ sudo: true });
    const err = await hostError(readHost(s, { ruleName: "web" }));
    s.close();
    expect(err.kind).toBe("sudo");
    expect(err.message).toContain("user root needs a password for sudo");
    expect(err.message).toContain("command: dpa-read, exit code 1");
  });
});

describe("dpa-sync through the exec seam: every way it ends", () => {
  test("done (0): applies in two round trips, verifies, commits, persists exactly the live rules; then a no-op in one", async () => {
    const s = spec("web", ["198.18.1.0/24"]);
    const first = await sync(s, "web");
    expect(first.applied).toBe(true);
    expect(first.persisted).toBe(true);
    expect(first.stats).toMatchObject({ connections: 1, roundTrips: 2, commits: 1 });
    expect(host.read("test4")).toBe(host.read("restore4.1"));
    expect(first.live.ipv4).toBe(host.read("save4"));
    expect(planAllowlist({ ipv4: host.read("save4"), ipv6: null }, s, "web").inSync).toBe(true);
    expect(readFileSync(join(host.root, "etc", "rules.v4"), "utf8")).toBe(host.read("save4"));
    expect(host.has("restore4.2")).toBe(false);

    const again = await sync(s, "web");
    expect(again.applied).toBe(false);
    expect(again.stats).toMatchObject({ connections: 1, roundTrips: 1, commits: 0 });
    expect(host.has("restore4.2")).toBe(false);
  });

  test("done (0) with a cut: the live flow of a removed source is deleted, the allowed one kept", async () => {
    await sync(spec("web", ["198.18.1.0/24", "198.18.2.0/24"]), "web");
    const flow = (src: string, sport: number) =>
      `tcp      6 431999 ESTABLISHED src=${src} dst=192.0.2.10 sport=${sport} dport=8080 ` +
      `src=172.17.0.2 dst=${src} sport=80 dport=${sport} [ASSURED] mark=0 use=1`;
    host.write("flows4", [flow("198.18.1.5", 40001), flow("198.18.2.5", 40002)].join("\n") + "\n");
    const r = await sync(spec("web", ["198.18.1.0/24"]), "web");
    expect(r.applied).toBe(true);
    expect(r.conntrackDeleted).toBe(1);
    expect(host.read("deleted")).toBe(
      "-D -f ipv4 -p tcp -s 198.18.2.5 -d 192.0.2.10 --sport 40002 --dport 8080\n",
    );
  });

  describe("flows that cannot be cut are reported, never skipped in silence", () => {
    const flow = (src: string, sport: number) =>
      `tcp      6 431999 ESTABLISHED src=${src} dst=192.0.2.10 sport=${sport} dport=8080 ` +
      `src=172.17.0.2 dst=${src} sport=80 dport=${sport} [ASSURED] mark=0 use=1`;
    const messages = (r: Awaited<ReturnType<typeof sync>>) =>
      conntrackFindings(r, "web").map((f) => f.message);

    test("a delete that fails for a flow still there is counted and becomes a warning", async () => {
      await sync(spec("web", ["198.18.1.0/24", "198.18.2.0/24"]), "web");
      host.write("flows4", flow("198.18.2.5", 40002) + "\n");
      host.write("conntrack-D.fail", "");
      host.write("conntrack-G.present", "");
      const r = await sync(spec("web", ["198.18.1.0/24"]), "web");
      expect(r.applied).toBe(true);
      expect(r.conntrackDeleted).toBe(0);
      expect(r.conntrackUncut).toEqual([{ family: "ipv4", reason: "delete-failed", flows: 1 }]);
      expect(messages(r)).toEqual([
        "1 live flow(s) of sources that DPA-web no longer lets in could not be cut (conntrack -D failed) and go " +
          "on until they end. Fix: on the host, list them with `conntrack -L -f ipv4` and delete them by hand " +
          "(`conntrack -D -f ipv4 -s <source> ...`).",
      ]);
    });

    test("a delete that fails because the flow already ended is no failure", async () => {
      await sync(spec("web", ["198.18.1.0/24", "198.18.2.0/24"]), "web");
      host.write("flows4", flow("198.18.2.5", 40002) + "\n");
      host.write("conntrack-D.fail", "");
      const r = await sync(spec("web", ["198.18.1.0/24"]), "web");
      expect(r.conntrackUncut).toEqual([]);
      expect(messages(r)).toEqual([]);
      expect(host.read("delete-failed")).toContain("-s 198.18.2.5");
    });

    test("a conntrack listing that fails is reported: nothing was cut", async () => {
      host.write("conntrack-L.fail", "");
      const r = await sync(spec("web", ["198.18.1.0/24"]), "web");
      expect(r.conntrackUncut).toEqual([{ family: "ipv4", reason: "list-failed" }]);
      expect(messages(r)[0]).toMatch(/^conntrack -L -f ipv4 failed on the host, so no live flow/);
    });

    test("no conntrack on the host: a warning when access was taken away, none when only added", async () => {
      host.remove();
      host = new StubHost({ without: ["conntrack"] });
      host.write("save4", SAVE4);
      host.write("save6.fail", "ip6tables-save: IPv6 is off on this host");
      const created = await sync(spec("web", ["198.18.1.0/24", "198.18.2.0/24"]), "web");
      expect(created.conntrackUncut).toEqual([{ family: "ipv4", reason: "unavailable" }]);
      // A new allowlist takes access away from everyone it does not list.
      expect(messages(created)).toHaveLength(1);

      const widened = await sync(spec("web", ["198.18.1.0/24", "198.18.2.0/24", "198.18.3.0/24"]), "web");
      expect(widened.conntrackUncut).toEqual([{ family: "ipv4", reason: "unavailable" }]);
      expect(messages(widened)).toEqual([]);

      const narrowed = await sync(spec("web", ["198.18.1.0/24"]), "web");
      expect(narrowed.applied).toBe(true);
      expect(messages(narrowed)).toEqual([
        "conntrack is not installed on the host, so live flows of sources that DPA-web no longer lets in were " +
          "not cut: they go on until they end (new connections are refused). Fix: install conntrack " +
          "(Debian/Ubuntu package `conntrack`, RHEL `conntrack-tools`); the next change applied then cuts them.",
      ]);
    });
  });

  test("a writer that ignores the lock and changes FORWARD once forces one re-plan in the same exec", async () => {
    let calls = 0;
    const s = spec("fwd", ["198.18.200.3"]);
    const r = await sync(s, "fwd", {
      plan: (live) => {
        if (calls++ === 0)
          host.write("save4", addRule(host.read("save4"), "-A FORWARD -s 198.18.99.0/24 -j DROP"));
        return planAllowlist(live, s, "fwd");
      },
    });
    expect(r.replanned).toBe(true);
    expect(calls).toBe(2);
    expect(r.stats).toMatchObject({ connections: 1, roundTrips: 3 });
  });

  test("conflict (10): DOCKER-USER changed before every apply is given up on after maxAttempts plans", async () => {
    let calls = 0;
    const s = spec("busy", ["198.18.200.4"]);
    const err = await hostError(
      sync(s, "busy", {
        maxAttempts: 3,
        plan: (live) => {
          calls++;
          host.write("save4", addRule(host.read("save4"), `-A DOCKER-USER -s 198.18.98.${calls}/32 -j DROP`));
          return planAllowlist(live, s, "busy");
        },
      }),
    );
    expect(calls).toBe(3);
    expect(err.kind).toBe("conflict");
    expect(err.exitCode).toBe(10);
    expect(err.message).toContain(
      "changed between our read and our apply on each of 3 attempts, although we held /run/docker-port-allowlist.lock",
    );
    expect(err.stats).toMatchObject({ connections: 1, roundTrips: 4 });
    expect(host.has("restore4.1")).toBe(false);
  });

  test("test-failed (11): a payload iptables-restore --test rejects changes nothing", async () => {
    host.write("test4.fail", "iptables-restore: line 5 failed");
    const err = await hostError(sync(spec("web", ["198.18.1.0/24"]), "web"));
    expect(err.kind).toBe("command");
    expect(err.exitCode).toBe(11);
    expect(err.message).toContain(
      "iptables-restore --test rejected the planned rules (test-failed 4); nothing was changed",
    );
    expect(err.stderr).toContain("iptables-restore: line 5 failed");
    expect(host.read("save4")).toBe(SAVE4);
    expect(host.has("restore4.1")).toBe(false);
  });

  test("apply-failed (12): IPv6 failing after IPv4 was applied restores IPv4 from its rollback", async () => {
    host.write("save6", SAVE6);
    rmState("save6.fail");
    host.write("restore6.fail.1", "ip6tables-restore: Too many links");
    const err = await hostError(sync(spec("web", ["198.18.1.0/24", "2001:db8:5::/48"]), "web"));
    expect(err.kind).toBe("rolled-back");
    expect(err.exitCode).toBe(12);
    expect(err.message).toContain("applying the rules failed (apply-failed 6); every family was restored");
    expect(err.stderr).toContain("Too many links");
    expect(host.read("restore4.2")).toContain("*filter");
    expect(host.read("save4")).toBe(SAVE4);
    expect(host.read("save6")).toBe(SAVE6);
  });

  test("rollback-failed (16): when the rollback fails too, the error says the host may be half-changed", async () => {
    host.write("save6", SAVE6);
    rmState("save6.fail");
    host.write("restore6.fail.1", "ip6tables-restore: Too many links");
    // The rollback is tried 3 times (1 s apart) before the host's state is called unknown.
    for (const n of [2, 3, 4]) host.write(`restore4.fail.${n}`, "iptables-restore: rollback refused");
    const err = await hostError(sync(spec("web", ["198.18.1.0/24", "2001:db8:5::/48"]), "web"));
    expect(err.kind).toBe("rollback-failed");
    expect(err.exitCode).toBe(16);
    expect(err.message).toContain(
      "applying the rules failed AND rolling back failed too: the host's iptables state for DPA-web is UNKNOWN",
    );
    expect(err.message).toContain("Inspect: `iptables-save -t filter | grep -n -- 'DPA-web';");
    expect(err.stderr).toContain("iptables-restore: rollback refused");
    expect(host.has("restore4.5")).toBe(false);
    // The host says so until a write succeeds; the next sync (the rollback works again) is one.
    expect(readFileSync(join(host.runDir, "unknown.web"), "utf8")).toContain(
      "rollback of families 4 failed 3 times",
    );
    expect((await sync(spec("web", ["198.18.1.0/24", "2001:db8:5::/48"]), "web")).applied).toBe(true);
    expect(readdirSync(host.runDir)).toEqual([]);
  });

  test("apply-failed (12): a rollback that fails once is retried, and the apply failure is reported as such", async () => {
    host.write("save6", SAVE6);
    rmState("save6.fail");
    host.write("restore6.fail.1", "ip6tables-restore: Too many links");
    host.write("restore4.fail.2", "iptables-restore: resource busy");
    const err = await hostError(sync(spec("web", ["198.18.1.0/24", "2001:db8:5::/48"]), "web"));
    expect(err.exitCode).toBe(12);
    expect(host.read("save4")).toBe(SAVE4);
    expect(host.has("restore4.3")).toBe(true);
  });

  test("rolled-back (13): a verification that fails sends rollback and names the difference", async () => {
    const s = spec("vfy", ["198.18.200.0/24"]);
    const err = await hostError(
      sync(s, "vfy", {
        // A payload that writes one rule more than planned: the read-back must catch it.
        plan: planWithExtraRule(s, "198.18.250.0/24"),
      }),
    );
    expect(err.kind).toBe("rolled-back");
    expect(err.exitCode).toBe(13);
    expect(err.message).toContain("did not match the plan");
    expect(err.message).toContain("198.18.250.0/24");
    expect(host.read("save4")).toBe(SAVE4);
  });

  test("rolled-back (13): no commit within commitTimeoutSeconds rolls back on the host by itself", async () => {
    const err = await hostError(
      sync(spec("slow", ["198.18.200.0/24"]), "slow", {
        commitTimeoutSeconds: 1,
        // Hold the commit back until the host has rolled back on its own (its second restore).
        beforeCommit: () => until(() => host.has("restore4.2")),
      }),
    );
    expect(err.kind).toBe("rolled-back");
    expect(err.message).toContain(
      "no commit reached the host in time, so it rolled back to its snapshot (rolled-back no-commit)",
    );
    expect(host.read("save4")).toBe(SAVE4);
  });

  test("a transport lost before the commit fails the call at once; the host rolls back on EOF", async () => {
    let sawApplied = false;
    const err = await hostError(
      sync(spec("cut", ["198.18.200.0/24"]), "cut", {
        beforeCommit: (session: HostExec) => {
          sawApplied = host.read("save4").includes(":DPA-cut");
          session.destroy();
        },
      }),
    );
    expect(sawApplied).toBe(true);
    expect(err.message).toMatch(/SSH connection was lost while "dpa-sync" ran/);
    await until(() => host.has("restore4.2"));
    expect(host.read("save4")).toBe(SAVE4);
    await until(() => host.lockFree());
  });

  test("lock-timeout (15): another writer holding the lock longer than lockWaitSeconds changes nothing", async () => {
    const holder = await host.holdLock();
    try {
      const err = await hostError(sync(spec("waiter", ["198.18.200.7"]), "waiter", { lockWaitSeconds: 1 }));
      expect(err.kind).toBe("conflict");
      expect(err.exitCode).toBe(15);
      expect(err.message).toContain(
        "another writer held /run/docker-port-allowlist.lock for more than lockWaitSeconds=1; nothing was changed",
      );
    } finally {
      await holder.release();
    }
    expect(host.read("save4")).toBe(SAVE4);
  });

  test("a held lock is progress, not silence: who holds it and for how long, then the write goes on", async () => {
    const holder = await host.holdLock();
    // What a writer of ours leaves in the lock file while it holds the lock (sync.sh).
    writeFileSync(host.lockPath, "allowlist=api pid=4242 since=1796650000\n");
    const seen: [string, string][] = [];
    const done = sync(spec("waiter", ["198.18.200.7"]), "waiter", {
      lockWaitSeconds: 10,
      session: { progress: (message, kind) => seen.push([message, kind]) },
    });
    try {
      await until(() => seen.length > 0);
    } finally {
      await holder.release();
    }
    const o = await done;
    expect(o.applied).toBe(true);
    expect(seen[0]).toEqual([
      'waiting for the host lock, held by allowlist "api" (pid 4242): 0 s of lockWaitSeconds=10',
      "wait",
    ]);
    expect(seen.slice(1)).toEqual([
      [`applying ${o.plan.changes.length} rule change(s) in one transaction per family`, "phase"],
      ["applied and verified; committing (then live-flow cut and persist)", "phase"],
    ]);
    // The writer that got the lock says so in the file, for the next one that waits.
    expect(readFileSync(host.lockPath, "utf8")).toMatch(/^allowlist=waiter pid=\d+ since=\d+\n$/);
  });

  test("lockWaitMessage names the holder the lock file names, or says it does not know", () => {
    expect(lockWaitMessage("@@DPA:lock-busy 5 allowlist=web pid=12 since=1", 30)).toBe(
      'waiting for the host lock, held by allowlist "web" (pid 12): 5 s of lockWaitSeconds=30',
    );
    expect(lockWaitMessage("@@DPA:lock-busy 10 guard pid=7 since=1", 30)).toBe(
      "waiting for the host lock, held by the guard (pid 7): 10 s of lockWaitSeconds=30",
    );
    expect(lockWaitMessage("@@DPA:lock-busy 0 ", 3)).toBe(
      "waiting for the host lock, held by a process that did not say who it is: 0 s of lockWaitSeconds=3",
    );
  });

  test("no-plan (17): a plan that does not arrive within planTimeoutSeconds releases the lock and changes nothing", async () => {
    const s = spec("late", ["198.18.200.5"]);
    const err = await hostError(
      sync(s, "late", {
        planTimeoutSeconds: 1,
        plan: async (live) => {
          // Answer only once the host has given up on us and released the lock.
          await until(() => host.lockFree());
          return planAllowlist(live, s, "late");
        },
      }),
    );
    expect(err.kind).toBe("timeout");
    expect(err.exitCode).toBe(17);
    expect(err.message).toContain(
      "the host got no plan within planTimeoutSeconds=1 (no-plan none within 1s)",
    );
    expect(host.has("restore4.1")).toBe(false);
  });

  test("setup failed (20): a lock file that cannot be opened ends the script before it reads anything", async () => {
    rmState("../run");
    mkdirState("../run/docker-port-allowlist.lock");
    const err = await hostError(sync(spec("web", ["198.18.1.0/24"]), "web"));
    expect(err.kind).toBe("command");
    expect(err.exitCode).toBe(20);
    expect(err.message).toContain(
      "the sync step failed (error cannot open /run/docker-port-allowlist.lock); nothing was changed.",
    );
  });

  test("setup failed (20): iptables-save failing in the check before the apply", async () => {
    // The 1st save is the state; the 2nd is the re-read under the lock that the fingerprint checks.
    host.write("save4.fail.2", "iptables-save: resource busy");
    const err = await hostError(sync(spec("web", ["198.18.1.0/24"]), "web"));
    expect(err.kind).toBe("command");
    expect(err.exitCode).toBe(20);
    expect(err.message).toContain("the sync step failed (error iptables-save failed)");
    expect(err.stderr).toContain("iptables-save: resource busy");
  });

  test("flock missing (21): the script refuses before taking any lock", async () => {
    host.remove();
    host = new StubHost({ without: ["flock"] });
    host.write("save4", SAVE4);
    const err = await hostError(sync(spec("web", ["198.18.1.0/24"]), "web"));
    expect(err.kind).toBe("precondition");
    expect(err.exitCode).toBe(21);
    expect(err.message).toContain(
      "flock is not installed, so changes cannot be serialized. Fix: install util-linux.",
    );
  });

  test("where ipset does not work (tool there, kernel's sets not usable), 150 sources are rules with a warning, verified and then in sync", async () => {
    const many = Array.from({ length: 150 }, (_, i) => `10.7.${i >> 8}.${i & 255}`);
    const s = spec("web", many);
    const first = await sync(s, "web");
    expect(first.applied).toBe(true);
    expect(first.plan.findings.map((f) => f.code)).toContain("ipset-unavailable");
    expect(host.read("restore4.1")).not.toContain("--match-set");
    expect(host.read("save4").match(/^-A DPA-web -s /gm)).toHaveLength(150);
    const again = await sync(s, "web");
    expect(again.applied).toBe(false);
  });

  test("the provider's converge goes through the same seam", async () => {
    const s = spec("web", ["198.18.1.0/24"]);
    const base = convergeOptions(s, s);
    const o = await converge(CONN, s, s, {
      connect: host.connect(),
      persist: false,
      plan: host.leadsTo(base.plan),
    });
    expect(o.applied).toBe(true);
    expect(o.stats).toMatchObject({ connections: 1, roundTrips: 2, commits: 1 });
    expect(o.live.ipv4).toContain(":DPA-web ");
  });
});

describe("persist (14): a rules file is never worse than before", () => {
  const OLD = "# the rules saved before\n*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n";
  const etc = () => join(host.root, "etc");
  const rulesFile = () => join(etc(), "rules.v4");
  /** Temp files the persist step left in `dir`. */
  const leftovers = (dir: string) => readdirSync(dir).filter((n) => n.includes(".dpa-tmp."));

  /** A new stub host (`opts`) whose rules file holds OLD. */
  function hostWith(opts: ConstructorParameters<typeof StubHost>[0]): void {
    host.remove();
    host = new StubHost(opts);
    host.write("save4", SAVE4);
    host.write("save6.fail", "ip6tables-save: IPv6 is off on this host");
    writeFileSync(rulesFile(), OLD);
  }

  /** Applies an allowlist that cannot be saved: the rules are live, the save fails with `kind` persist. */
  async function unsaved(hooks: ConvergeHooks = {}) {
    const s = spec("web", ["198.18.1.0/24"]);
    const err = await hostError(sync(s, "web", hooks));
    expect(err.kind).toBe("persist");
    expect(err.exitCode).toBe(14);
    expect(planAllowlist({ ipv4: host.read("save4"), ipv6: null }, s, "web").inSync).toBe(true);
    return err;
  }

  test("a good save is checked by iptables-restore --test, then replaces the file with exactly what it printed", async () => {
    writeFileSync(rulesFile(), OLD);
    host.write("save4.extra", NAT);
    const r = await sync(spec("web", ["198.18.1.0/24"]), "web");
    expect(r.persisted).toBe(true);
    expect(readFileSync(rulesFile(), "utf8")).toBe(host.read("save4") + NAT);
    expect(host.read("filetest4")).toBe(host.read("save4") + NAT);
    expect(leftovers(etc())).toEqual([]);
  });

  test.each([
    [
      "a table cut short (no COMMIT)",
      () => host.write("save4.extra", "*nat\n:PREROUTING ACCEPT [0:0]\n"),
      "iptables-save wrote incomplete rules",
      "*nat ends without COMMIT",
    ],
    [
      "a save iptables-restore --test rejects",
      () => host.write("filetest4.fail", "iptables-restore: line 9 failed"),
      "iptables-restore --test rejected what iptables-save printed, so the file would not load at boot",
      "iptables-restore: line 9 failed",
    ],
  ])("%s is not saved: the old file stays, byte for byte", async (_name, arrange, message, stderr) => {
    writeFileSync(rulesFile(), OLD);
    arrange();
    const err = await unsaved();
    expect(err.message).toContain(`saving them for reboots failed (ipv4, ${rulesFile()}): ${message}`);
    expect(err.message).toContain(`${rulesFile()} was left as it was`);
    expect(err.stderr).toContain(stderr);
    expect(readFileSync(rulesFile(), "utf8")).toBe(OLD);
    expect(leftovers(etc())).toEqual([]);
  });

  test("a full disk (8 KiB tmpfs, a 6 KiB save): the old file stays, the temp file goes, the fix is to free space", async () => {
    hostWith({ etc: { tmpfsBytes: 8192 } });
    host.write("save4.extra", bigNat(6000));
    const err = await unsaved();
    expect(err.message).toContain(
      `the filesystem of ${etc()} is full. Fix: free space in ${etc()} (\`df -h ${etc()}\`), or set ` +
        `rulesV4Path to a writable path this host restores at boot, or persist: false.`,
    );
    expect(err.stderr).toContain("No space left on device");
    expect(readFileSync(rulesFile(), "utf8")).toBe(OLD);
    expect(leftovers(etc())).toEqual([]);
  });

  test("a read-only mount: the old file stays, the fix is to remount or save elsewhere", async () => {
    hostWith({ etc: "read-only" });
    const err = await unsaved();
    expect(err.message).toContain(
      `${etc()} is on a read-only filesystem. Fix: remount it read-write, or set rulesV4Path to a ` +
        `writable path this host restores at boot, or persist: false.`,
    );
    expect(err.stderr).toContain("Read-only file system");
    expect(readFileSync(rulesFile(), "utf8")).toBe(OLD);
    expect(leftovers(etc())).toEqual([]);
  });

  test("no /etc/iptables: nothing is created, the fix is iptables-persistent or the directory", async () => {
    const dir = join(etc(), "iptables");
    const err = await unsaved({ rulesV4Path: join(dir, "rules.v4") });
    expect(err.message).toContain(
      `the rules are LIVE but saving them for reboots failed (ipv4, ${dir}/rules.v4): the directory ${dir} ` +
        `does not exist. Fix: install iptables-persistent (Debian/Ubuntu; it creates /etc/iptables and ` +
        `restores the files at boot) or create ${dir}, or set rulesV4Path`,
    );
    expect(readdirSync(etc())).toEqual([]);
  });

  test("the new file keeps the old one's mode 0600", async () => {
    writeFileSync(rulesFile(), OLD);
    chmodSync(rulesFile(), 0o600);
    await sync(spec("web", ["198.18.1.0/24"]), "web");
    expect(readFileSync(rulesFile(), "utf8")).toBe(host.read("save4"));
    expect(statSync(rulesFile()).mode & 0o7777).toBe(0o600);
  });

  // An unprivileged user namespace maps root alone: another user's file needs the real root.
  (process.getuid?.() === 0 ? test : test.skip)(
    "the new file keeps the old one's owner and group (another user's)",
    async () => {
      hostWith({ realRoot: true });
      chmodSync(rulesFile(), 0o640);
      chownSync(rulesFile(), 4242, 4343);
      await sync(spec("web", ["198.18.1.0/24"]), "web");
      expect(readFileSync(rulesFile(), "utf8")).toBe(host.read("save4"));
      const st = statSync(rulesFile());
      expect([st.mode & 0o7777, st.uid, st.gid]).toEqual([0o640, 4242, 4343]);
    },
  );
});

/** The nat table of a whole `iptables-save`, as the stub prints it after the filter table. */
const NAT = "*nat\n:PREROUTING ACCEPT [0:0]\n:DOCKER - [0:0]\n-A DOCKER -i docker0 -j RETURN\nCOMMIT\n";

/** A nat table of at least `bytes` bytes (one DNAT rule per published port). */
function bigNat(bytes: number): string {
  const lines = ["*nat", ":PREROUTING ACCEPT [0:0]", ":DOCKER - [0:0]"];
  for (let port = 10000; lines.join("\n").length < bytes; port++) {
    lines.push(
      `-A DOCKER ! -i docker0 -p tcp -m tcp --dport ${port} -j DNAT --to-destination 172.17.0.2:${port}`,
    );
  }
  return [...lines, "COMMIT", ""].join("\n");
}

/** A rule line added to the filter table, just before its COMMIT. */
function addRule(save: string, rule: string): string {
  return save.replace(/^COMMIT$/m, `${rule}\nCOMMIT`);
}

function rmState(rel: string): void {
  rmSync(join(host.state, rel), { recursive: true, force: true });
}

function mkdirState(rel: string): void {
  mkdirSync(join(host.state, rel), { recursive: true });
}
