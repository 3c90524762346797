/**
 * The read/apply edge against real iptables in lab hosts over real SSH: one connection and two
 * round trips, old-or-new under a killed connection, serialized concurrent writers, rollback on
 * a failed verify, persistence equal to the live rules, and clear refusals (sudo, no DOCKER-USER,
 * backend mismatch, unreachable host, jump host).
 *
 * Two legs, the same tests: hosts with Docker 20.10's chain layout (light hosts, the layout
 * captured from Debian's dockerd) and real Docker 29 daemons with the iptables backend
 * (DOCKER-FORWARD, DOCKER-BRIDGE, an empty DOCKER-USER).
 */
import { comparableSave, startLab, type Lab, type LabHost, type StartLabOptions } from "../../lab";
import {
  planAllowlist,
  validateAllowlist,
  verifyApplied,
  fingerprint,
  type AllowlistSpec,
} from "../../provider/core";
import { SshSession, inspectHost, syncHost } from "../../provider/host";
import type { ConnectionArgs } from "../../provider/args";
import { hostError, planWithExtraRule, syncOptions } from "./support";

jest.setTimeout(180_000);

const LEGS: [string, StartLabOptions][] = [
  ["Docker 20.10 layout", { docker: 0, light: 4, clients: 1, lightLayout: "docker20" }],
  ["Docker 29, iptables backend", { docker: 4, light: 0, clients: 1, dockerVersion: "29" }],
];

let lab: Lab;

function conn(host: LabHost, extra: Partial<ConnectionArgs> = {}): ConnectionArgs {
  return { host: host.ipv4, privateKey: lab.clientKey.privateKey, hostKey: host.hostKey, ...extra };
}

function spec(ruleName: string, sources: string[], extra: Record<string, unknown> = {}): AllowlistSpec {
  const v = validateAllowlist(
    { port: 8080, protocols: ["tcp", "udp"], sources, ruleName, ...extra },
    ruleName,
  );
  if (!v.ok) throw new Error(JSON.stringify(v.failures));
  return v.spec;
}

/** `iptables-save` of every table without comments and counters: what a restore would rebuild. */
async function saved(host: LabHost, cmd = "iptables-save"): Promise<string> {
  const r = await lab.hostExec(host, cmd);
  expect(r.code).toBe(0);
  return comparableSave(r.stdout);
}
async function filterTable(host: LabHost): Promise<string> {
  return comparableSave((await lab.hostExec(host, "iptables-save -t filter")).stdout);
}

async function eventually(check: () => Promise<boolean>, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await check()) return true;
    await new Promise((r) => setTimeout(r, 200));
  }
  return check();
}

describe.each(LEGS)("%s", (_leg, labOptions) => {
  beforeAll(async () => {
    lab = await startLab(labOptions);
  });
  afterAll(async () => {
    await lab?.down();
  });

  describe("syncHost on a real host", () => {
    test("applies with one connection and two round trips, persists exactly the live rules, then is a one-round-trip no-op", async () => {
      const h = lab.hosts[0];
      const s = spec("web", ["198.18.200.0/24", "198.18.201.7"]);
      const first = await syncHost(conn(h), syncOptions(s));
      expect(first.applied).toBe(true);
      expect(first.stats).toMatchObject({ connections: 1, roundTrips: 2, proxyConnections: 0 });
      expect(
        verifyApplied((await lab.hostExec(h, "iptables-save -t filter")).stdout, s, "web", "ipv4"),
      ).toEqual([]);
      // The saved file is the live ruleset (all tables), nothing more or less.
      const file = comparableSave((await lab.hostExec(h, "cat /etc/iptables/rules.v4")).stdout);
      expect(file).toBe(await saved(h));
      expect(file).toContain('-A DPA-web -s 198.18.201.7/32 -m comment --comment "dpa:web" -j RETURN');

      const again = await syncHost(conn(h), syncOptions(s));
      expect(again.applied).toBe(false);
      expect(again.stats).toMatchObject({ connections: 1, roundTrips: 1 });
    });

    test("computes on the host (awk + sha256sum) the same fingerprint as the core", async () => {
      const h = lab.hosts[0];
      const { snapshot } = await inspectHost(conn(h), { ruleName: "web" });
      // The read reports the "saved" scope (what is compared with the rules file).
      expect(snapshot.liveFingerprint.ipv4).toBe(fingerprint(snapshot.ipv4 ?? "", "web", "saved"));
      expect(snapshot.liveFingerprint.ipv4).toMatch(/^[0-9a-f]{64}$/);
      expect(snapshot.persisted.ipv4).toBe(snapshot.liveFingerprint.ipv4);
      expect(snapshot.backend).toBe("nf_tables");
    });

    test("a connection killed before the commit leaves the host exactly as before (rollback on the host)", async () => {
      const h = lab.hosts[1];
      const before = await filterTable(h);
      const fileBefore = (await lab.hostExec(h, "cat /etc/iptables/rules.v4 2>&1")).stdout;
      let sawApplied = false;
      const err = await hostError(
        syncHost(
          conn(h),
          syncOptions(spec("cut", ["198.18.200.0/24"]), {
            beforeCommit: async (session: SshSession) => {
              // The new rules are live at this point; then the connection dies without "commit".
              sawApplied = (await filterTable(h)).includes(":DPA-cut");
              session.destroy();
            },
          }),
        ),
      );
      expect(sawApplied).toBe(true);
      expect(err.message).toMatch(/SSH connection was lost while "dpa-sync" ran/);
      expect(await eventually(async () => (await filterTable(h)) === before, 10_000)).toBe(true);
      expect((await lab.hostExec(h, "cat /etc/iptables/rules.v4 2>&1")).stdout).toBe(fileBefore);
    });

    test("no commit within the timeout rolls back by itself", async () => {
      const h = lab.hosts[1];
      const before = await filterTable(h);
      const err = await hostError(
        syncHost(
          conn(h),
          syncOptions(spec("slow", ["198.18.200.0/24"]), {
            commitTimeoutSeconds: 1,
            // Hold the commit back until the host has rolled back on its own (the event, not a guess
            // at how long a loaded machine takes).
            beforeCommit: async () => {
              expect(await eventually(async () => (await filterTable(h)) === before, 30_000)).toBe(true);
            },
          }),
        ),
      );
      expect(err.kind).toBe("rolled-back");
      expect(err.message).toContain("no commit reached the host in time");
      expect(await filterTable(h)).toBe(before);
    });

    test("a failed verification restores the snapshot and names the difference", async () => {
      const h = lab.hosts[1];
      const s = spec("vfy", ["198.18.200.0/24"]);
      const before = await filterTable(h);
      const err = await hostError(
        syncHost(conn(h), {
          ...syncOptions(s),
          // A payload that writes one rule more than planned: the read-back must catch it.
          plan: planWithExtraRule(s, "198.18.250.0/24"),
        }),
      );
      expect(err.kind).toBe("rolled-back");
      expect(err.message).toContain("did not match the plan");
      expect(err.message).toContain("198.18.250.0/24");
      expect(await filterTable(h)).toBe(before);
    });

    test("two writers at once queue on the host lock from read to commit: the second reads the first's result, nobody re-plans", async () => {
      const h = lab.hosts[2];
      const sa = spec("wa", ["198.18.200.1"]);
      const sb = spec("wb", ["198.18.200.2"]);
      let aHoldsLock!: () => void;
      const aPlanning = new Promise<void>((r) => (aHoldsLock = r));
      let bSawA: boolean | undefined;
      const a = syncHost(conn(h), {
        ...syncOptions(sa),
        plan: async (live) => {
          aHoldsLock();
          // B starts now and must wait: A holds the lock from its read until its commit. Go on only
          // once B's exec runs on the host (so it really queues behind us). "[w]b" keeps the pattern
          // from matching the shell that runs pgrep.
          const bWaits = async () => (await lab.hostExec(h, "pgrep -f 'dpa-sync [w]b '")).code === 0;
          expect(await eventually(bWaits, 30_000)).toBe(true);
          return planAllowlist(live, sa, "wa");
        },
      });
      await aPlanning;
      const b = syncHost(conn(h), {
        ...syncOptions(sb),
        plan: (live) => {
          bSawA = (live.ipv4 ?? "").includes(":DPA-wa ");
          return planAllowlist(live, sb, "wb");
        },
      });
      const [ra, rb] = await Promise.all([a, b]);
      expect(bSawA).toBe(true);
      expect([ra.replanned, rb.replanned]).toEqual([false, false]);
      expect(ra.stats).toMatchObject({ connections: 1, roundTrips: 2, commits: 1 });
      expect(rb.stats).toMatchObject({ connections: 1, roundTrips: 2, commits: 1 });
      const live = (await lab.hostExec(h, "iptables-save -t filter")).stdout;
      expect(verifyApplied(live, sa, "wa", "ipv4")).toEqual([]);
      expect(verifyApplied(live, sb, "wb", "ipv4")).toEqual([]);
      expect(comparableSave((await lab.hostExec(h, "cat /etc/iptables/rules.v4")).stdout)).toBe(
        await saved(h),
      );
    });

    test("a writer that ignores the lock, changing DOCKER-USER before every apply, is given up on after maxAttempts plans", async () => {
      const h = lab.hosts[2];
      const s = spec("busy", ["198.18.200.4"]);
      const before = await filterTable(h);
      let calls = 0;
      const err = await hostError(
        syncHost(conn(h), {
          ...syncOptions(s),
          maxAttempts: 3,
          plan: async (live) => {
            calls++;
            const p = planAllowlist(live, s, "busy");
            // After our read, a foreign rule appears (and stays): the plan's fingerprint is stale.
            expect(
              (await lab.hostExec(h, `iptables -A DOCKER-USER -s 198.18.98.${calls} -j DROP`)).code,
            ).toBe(0);
            return p;
          },
        }),
      );
      expect(calls).toBe(3);
      expect(err.kind).toBe("conflict");
      expect(err.message).toContain("changed between our read and our apply on each of 3 attempts");
      expect(err.stats).toMatchObject({ connections: 1, roundTrips: 4 });
      for (let i = 1; i <= 3; i++) await lab.hostExec(h, `iptables -D DOCKER-USER -s 198.18.98.${i} -j DROP`);
      expect(await filterTable(h)).toBe(before);
    });

    test("a plan that does not arrive in time releases the lock and changes nothing", async () => {
      const h = lab.hosts[2];
      const s = spec("late", ["198.18.200.5"]);
      const before = await filterTable(h);
      const err = await hostError(
        syncHost(conn(h), {
          ...syncOptions(s),
          planTimeoutSeconds: 1,
          plan: async (live) => {
            // Answer only once the host has given up on us and released the lock.
            const free = async () =>
              (await lab.hostExec(h, "flock -n /run/docker-port-allowlist.lock true")).code === 0;
            expect(await eventually(free, 30_000)).toBe(true);
            return planAllowlist(live, s, "late");
          },
        }),
      );
      expect(err.kind).toBe("timeout");
      expect(err.message).toContain("the host got no plan within planTimeoutSeconds=1");
      expect(await filterTable(h)).toBe(before);
      // The lock is free again: a writer that waits at most 1 s for it gets it.
      const ok = await syncHost(conn(h), { ...syncOptions(s), lockWaitSeconds: 1 });
      expect(ok.applied).toBe(true);
    });

    test("waiting longer than lockWaitSeconds for the lock is a clear error and changes nothing", async () => {
      const h = lab.hosts[2];
      const holder = spec("holder", ["198.18.200.6"]);
      const waiter = spec("waiter", ["198.18.200.7"]);
      let holding!: () => void;
      const held = new Promise<void>((r) => (holding = r));
      let waiterEnded!: () => void;
      const ended = new Promise<void>((r) => (waiterEnded = r));
      const a = syncHost(conn(h), {
        ...syncOptions(holder),
        plan: async (live) => {
          holding();
          // Keep the lock until the waiter has given up.
          await ended;
          return planAllowlist(live, holder, "holder");
        },
      });
      await held;
      const err = await hostError(
        syncHost(conn(h), { ...syncOptions(waiter), lockWaitSeconds: 1 }).finally(waiterEnded),
      );
      expect(err.kind).toBe("conflict");
      expect(err.message).toContain(
        "another writer held /run/docker-port-allowlist.lock for more than lockWaitSeconds=1; nothing was changed",
      );
      expect((await a).applied).toBe(true);
      expect(await filterTable(h)).not.toContain(":DPA-waiter");
    });

    test("a FORWARD change between read and apply (which the plan may touch) also forces a re-plan", async () => {
      const h = lab.hosts[2];
      const s = spec("fwd", ["198.18.200.3"]);
      let calls = 0;
      const r = await syncHost(conn(h), {
        ...syncOptions(s),
        plan: async (live) => {
          // Only FORWARD changes here; DOCKER-USER and our chain stay as read.
          if (calls++ === 0)
            expect((await lab.hostExec(h, "iptables -A FORWARD -s 198.18.99.0/24 -j DROP")).code).toBe(0);
          return planAllowlist(live, s, "fwd");
        },
      });
      expect(r.replanned).toBe(true);
      expect(calls).toBe(2);
      expect(r.stats).toMatchObject({ connections: 1, roundTrips: 3 });
    });

    test("a failed save after the commit is an error that says the rules are live but not saved", async () => {
      const h = lab.hosts[2];
      const s = spec("nosave", ["198.18.200.0/24"]);
      const err = await hostError(
        syncHost(conn(h), syncOptions(s, { rulesV4Path: "/etc/iptables/missing-dir/rules.v4" })),
      );
      expect(err.kind).toBe("persist");
      expect(err.message).toContain("the rules are LIVE but saving them for reboots failed");
      expect(err.message).toContain("directory /etc/iptables/missing-dir does not exist");
      expect(
        verifyApplied((await lab.hostExec(h, "iptables-save -t filter")).stdout, s, "nosave", "ipv4"),
      ).toEqual([]);
      // The next read sees the saved file lagging behind the live rules.
      const { snapshot } = await inspectHost(conn(h), {
        ruleName: "nosave",
        rulesV4Path: "/etc/iptables/missing-dir/rules.v4",
      });
      expect(snapshot.persisted.ipv4).toBe("missing");
    });

    test("deleting removes only what the allowlist owns and keeps a foreign rule", async () => {
      const h = lab.hosts[3];
      await lab.hostExec(h, "iptables -I DOCKER-USER 1 -s 198.18.77.0/24 -j DROP");
      const before = await filterTable(h);
      const s = spec("gone", ["198.18.200.0/24"]);
      await syncHost(conn(h), syncOptions(s));
      expect(await filterTable(h)).not.toBe(before);
      const del = await syncHost(conn(h), {
        ...syncOptions(s),
        requireDockerUser: false,
        plan: (live) => planAllowlist(live, null, "gone"),
        verify: (family, text) => verifyApplied(text, null, "gone", family).map((f) => f.message),
      });
      expect(del.applied).toBe(true);
      expect(await filterTable(h)).toBe(before);
    });
  });

  describe("refusals before anything changes", () => {
    test("a sudo user works through sudo -n", async () => {
      const h = lab.hosts[3];
      const s = spec("sudo1", ["198.18.200.0/24"]);
      const r = await syncHost(conn(h, { user: lab.users.sudo }), syncOptions(s));
      expect(r.applied).toBe(true);
      expect(r.snapshot.uid).toBe(0);
    });

    test("a user whose sudo needs a password gets a clear error", async () => {
      const h = lab.hosts[3];
      const before = await filterTable(h);
      const err = await hostError(
        syncHost(conn(h, { user: lab.users.sudoPassword }), syncOptions(spec("sudo2", []))),
      );
      expect(err.kind).toBe("sudo");
      expect(err.message).toContain(`user ${lab.users.sudoPassword} needs a password for sudo`);
      expect(err.message).toContain("command: dpa-sync, exit code 1");
      expect(await filterTable(h)).toBe(before);
    });

    test("a host without DOCKER-USER is refused with cause and fix", async () => {
      const h = lab.hosts[3];
      await lab.hostExec(
        h,
        "iptables -D FORWARD -j DOCKER-USER; iptables -F DOCKER-USER; iptables -X DOCKER-USER",
      );
      const before = await filterTable(h);
      const err = await hostError(syncHost(conn(h), syncOptions(spec("nodu", ["198.18.200.0/24"]))));
      expect(err.kind).toBe("precondition");
      expect(err.message).toMatch(/^host 198\.18\.\d+\.\d+: the iptables chain DOCKER-USER does not exist/);
      expect(err.message).toContain("Fix: start Docker");
      expect(await filterTable(h)).toBe(before);
    });

    test("Docker's chains in the other iptables backend are reported as a backend mismatch", async () => {
      const h = lab.hosts[3];
      // DOCKER-USER is gone from nft (previous test); give legacy Docker's chains, as a host whose
      // dockerd uses iptables-legacy would have them.
      await lab.hostExec(h, "iptables-legacy -N DOCKER && iptables-legacy -N DOCKER-USER");
      const err = await hostError(syncHost(conn(h), syncOptions(spec("mism", ["198.18.200.0/24"]))));
      expect(err.kind).toBe("precondition");
      expect(err.message).toContain("iptables backend mismatch: `iptables` here is nf_tables");
      expect(err.message).toContain("iptables-legacy-save");
      await lab.hostExec(h, "iptables-legacy -X DOCKER; iptables-legacy -X DOCKER-USER");
    });

    test("Docker's nftables tables without the chains its nftables backend makes: refused with the cause", async () => {
      const h = lab.hosts[3];
      // An empty `ip docker-bridges` (left by a dockerd that stopped half way, or made by hand): no
      // DNAT chain, so not a host whose Docker runs its nftables backend (that one is supported:
      // test/host/nft.lab.test.ts), and no DOCKER-USER either. Nothing is written.
      expect((await lab.hostExec(h, "nft add table ip docker-bridges")).code).toBe(0);
      const err = await hostError(syncHost(conn(h), syncOptions(spec("nft29", ["198.18.200.0/24"]))));
      expect(err.kind).toBe("precondition");
      expect(err.message).toContain(
        "DOCKER-USER does not exist and Docker's nftables tables do but hold no DNAT chain",
      );
      expect((await lab.hostExec(h, "nft list tables")).stdout).not.toContain("dpa-");
      await lab.hostExec(h, "nft delete table ip docker-bridges");
    });

    test("an address where no host answers fails after the configured attempts, with backoff", async () => {
      const absent = lab.hosts[0].ipv4.replace(/\.\d+$/, ".190");
      const started = Date.now();
      const err = await hostError(
        SshSession.open(
          { host: absent, privateKey: lab.clientKey.privateKey, dialErrorLimit: 2, perDialTimeout: 2 },
          { retryBaseDelayMs: 300 },
        ),
      );
      expect(err.kind).toBe("connect");
      expect(err.message).toContain(`could not connect to root@${absent}:22 after 2 attempt(s)`);
      expect(Date.now() - started).toBeLessThan(15_000);
    });

    test("reaches a host through another lab host as jump host", async () => {
      const [jump, target] = [lab.hosts[0], lab.hosts[2]];
      const { snapshot, stats } = await inspectHost(
        conn(target, {
          proxy: { host: jump.ipv4, privateKey: lab.clientKey.privateKey, hostKey: jump.hostKey },
        }),
        { ruleName: "wa" },
      );
      expect(snapshot.ipv4).toContain(":DPA-wa ");
      expect(stats).toMatchObject({ connections: 1, proxyConnections: 1, roundTrips: 1 });
    });
  });
});
