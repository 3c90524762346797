/**
 * Docker's nftables firewall backend with real traffic (issue 10, items 3-4): Docker 29 run with
 * `"firewall-backend": "nftables"` (no DOCKER-USER at all). Each allowlist is its own table `inet
 * dpa-<ruleName>` (provider/core/nft.ts), converged exactly as the provider does
 * (provider/host/converge.ts): one `nft -f` transaction, verified against nft's own listing.
 *
 * Two legs: Docker with IPv6 (both families DNATed, policed in FORWARD) and Docker with its
 * default IPv6 off (IPv6 clients reach IPv4-only containers through docker-proxy on `[::]`, the
 * INPUT path). Clients send real TCP and UDP; a foreign nftables table stays byte for byte.
 *
 * Run: npx jest test/host/nft.lab.test.ts --selectProjects lab
 */
import { startLab, type Lab, type LabHost } from "../../lab";
import type { ConnectionArgs } from "../../provider/args";
import {
  GUARD_SCRIPT_PATH,
  guardCopyPath,
  nftTableRef,
  validateAllowlist,
  type AllowlistSpec,
} from "../../provider/core";
import { converge } from "../../provider/host";
import { repliesDuring, udpFlow } from "./support";

jest.setTimeout(300_000);

let lab: Lab;
let host: LabHost;
const owner = { name: "lab/nft/web", via: "lab:22" };

function conn(h: LabHost): ConnectionArgs {
  return { host: h.ipv4, privateKey: lab.clientKey.privateKey, hostKey: h.hostKey };
}

function spec(sources: string[], extra: Record<string, unknown> = {}): AllowlistSpec {
  const v = validateAllowlist({ port: 8080, protocols: ["tcp"], sources, ...extra }, "web");
  if (!v.ok) throw new Error(JSON.stringify(v.failures));
  return v.spec;
}

function apply(desired: AllowlistSpec | null, ruleName = "web") {
  const operation = desired === null ? "delete" : "update";
  const who = { ...owner, name: `lab/nft/${ruleName}` };
  return converge(conn(host), desired, desired ?? { ruleName }, { claim: { owner: who, operation } });
}

async function nft(cmd: string): Promise<string> {
  const r = await lab.hostExec(host, `nft ${cmd}`);
  return r.code === 0 ? r.stdout : `(exit ${r.code}) ${r.stderr}`;
}

const FOREIGN = `table inet site {
	chain input {
		type filter hook input priority filter; policy accept;
		tcp dport 9999 drop
	}
}`;

describe.each([true, false])("Docker 29, nftables backend, Docker IPv6 %s", (dockerIpv6) => {
  beforeAll(async () => {
    lab = await startLab({
      docker: 1,
      light: 0,
      clients: 2,
      ipv6: true,
      dockerIpv6,
      dockerVersion: "29",
      firewallBackend: "nftables",
    });
    host = lab.hosts[0];
    const r = await lab.hostExec(host, `printf '%s\\n' '${FOREIGN}' | nft -f -`);
    expect(r.code).toBe(0);
  });
  afterAll(async () => {
    await lab?.down();
  });

  test("the host runs Docker's nftables backend: no DOCKER-USER, Docker's docker-bridges tables", async () => {
    expect(host).toMatchObject({ dockerVersion: "29", firewallBackend: "nftables" });
    expect((await lab.hostExec(host, "iptables-save -t filter")).stdout).not.toMatch(/^:DOCKER-USER /m);
    expect(await nft("list tables")).toContain("table ip docker-bridges");
  });

  test("create keeps unlisted clients out (IPv4 and IPv6), lets listed ones in, containers still reach out; foreign table intact", async () => {
    const [allowed, other] = lab.clients;
    const foreign = await nft("-s list table inet site");
    for (const family of [4, 6] as const)
      expect(await lab.probe(other, host, 8080, "tcp", family)).toBe(true);

    const created = await apply(spec([allowed.ipv4, allowed.ipv6!]));
    expect(created.applied).toBe(true);
    expect(created.plan.backend).toBe("nftables");
    expect(created.stats.roundTrips).toBe(2);
    expect(created.plan.changes).toContain(`+ [nft] table ${nftTableRef("web")} {`);
    for (const family of [4, 6] as const) {
      expect(await lab.probe(allowed, host, 8080, "tcp", family)).toBe(true);
      expect(await lab.probe(other, host, 8080, "tcp", family)).toBe(false);
    }
    // Another published port stays as it was (udp 5353 is not this allowlist's).
    expect(await lab.probe(other, host, 5353, "udp", 4)).toBe(true);
    expect(await lab.containerProbe(host, 80, "tcp", 4)).toBe(true);
    expect(await nft("-s list table inet site")).toBe(foreign);
    // No iptables rule was written.
    expect((await lab.hostExec(host, "iptables-save; ip6tables-save")).stdout).not.toContain("dpa:");
  });

  test("no change is one round trip and applies nothing; adding a source lets it in", async () => {
    const [allowed, other] = lab.clients;
    const same = await apply(spec([allowed.ipv4, allowed.ipv6!]));
    expect(same.applied).toBe(false);
    expect(same.stats.roundTrips).toBe(1);

    const added = await apply(spec([allowed.ipv4, allowed.ipv6!, other.ipv4]));
    expect(added.applied).toBe(true);
    expect(added.plan.changes).toEqual([`+ [nft] ${other.ipv4}`]);
    expect(await lab.probe(other, host, 8080, "tcp", 4)).toBe(true);
    expect(await lab.probe(other, host, 8080, "tcp", 6)).toBe(false);
  });

  test("drift: a table deleted by hand is found and put back by the next operation", async () => {
    const [allowed, other] = lab.clients;
    const wanted = spec([allowed.ipv4, allowed.ipv6!]);
    await apply(wanted);
    expect((await lab.hostExec(host, `nft delete table ${nftTableRef("web")}`)).code).toBe(0);
    expect(await lab.probe(other, host, 8080, "tcp", 4)).toBe(true);
    const repaired = await apply(wanted);
    expect(repaired.applied).toBe(true);
    expect(await lab.probe(other, host, 8080, "tcp", 4)).toBe(false);
    expect(await lab.probe(allowed, host, 8080, "tcp", 4)).toBe(true);
  });

  test("a table another stack holds is refused by name and left alone", async () => {
    const theirs = await converge(conn(host), spec([]), spec([]), {
      claim: { owner: { name: "other/stack/web", via: "x:22" }, operation: "update" },
    }).catch((e: Error) => e);
    expect(theirs).toBeInstanceOf(Error);
    expect((theirs as Error).message).toContain(
      `nftables table ${nftTableRef("web")} on this host is held by lab/nft/web`,
    );
    expect(await lab.probe(lab.clients[0], host, 8080, "tcp", 4)).toBe(true);
  });

  test("removing a source cuts its live UDP flow at once (conntrack), other flows go on", async () => {
    const [c0, c1] = lab.clients;
    const dns = (sources: string[]) => {
      const v = validateAllowlist({ port: 5353, protocols: ["udp"], sources }, "dns");
      if (!v.ok) throw new Error(JSON.stringify(v.failures));
      return v.spec;
    };
    await apply(dns([c0.ipv4, c1.ipv4]), "dns");
    const cut = udpFlow(c0, host, 41200);
    const kept = udpFlow(c1, host, 41201);
    try {
      expect(await repliesDuring(cut, 1500)).toBeGreaterThan(3);
      expect(await repliesDuring(kept, 1500)).toBeGreaterThan(3);
      const o = await apply(dns([c1.ipv4]), "dns");
      expect(o.applied).toBe(true);
      expect(o.conntrackDeleted).toBeGreaterThan(0);
      await cut.settled();
      expect(await repliesDuring(cut, 1500)).toBe(0);
      expect(await repliesDuring(kept, 1500)).toBeGreaterThan(3);
    } finally {
      cut.process.kill();
      kept.process.kill();
      await apply(null, "dns");
    }
  });

  test("SIGKILL of the script's process group while it awaits the commit: the watchdog puts the table back as it was", async () => {
    const [allowed, other] = lab.clients;
    await apply(spec([allowed.ipv4]));
    const before = await nft(`-s list table ${nftTableRef("web")}`);
    const dir = (await lab.hostExec(host, "mktemp -d /run/dpa-pause.XXXXXX")).stdout.trim();
    expect((await lab.hostExec(host, `touch '${dir}/awaiting-commit'`)).code).toBe(0);
    const until = async (check: string) => {
      while ((await lab.hostExec(host, check)).code !== 0) await new Promise((r) => setImmediate(r));
    };
    let killed = false;
    let during = "";
    const err = await converge(conn(host), spec([allowed.ipv4, other.ipv4]), spec([]), {
      claim: { owner, operation: "update" },
      pauseDir: dir,
      beforeCommit: async () => {
        await until(`grep -q . '${dir}/awaiting-commit.reached'`);
        const pid = (await lab.hostExec(host, `cat '${dir}/awaiting-commit.reached'`)).stdout.trim();
        during = await nft(`-s list table ${nftTableRef("web")}`);
        const pgid = (await lab.hostExec(host, `awk '{ print $5 }' /proc/${pid}/stat`)).stdout.trim();
        expect((await lab.hostExec(host, `bash -c 'kill -KILL -- -${pgid}'`)).code).toBe(0);
        killed = true;
      },
    }).catch((e: Error) => e);
    expect({ killed, err: String(err) }).toMatchObject({
      killed: true,
      err: expect.stringMatching(/killed.* before the commit/),
    });
    // It was applied, not committed: the new source was in the live table.
    expect(during).toContain(other.ipv4);
    // The watchdog holds the host lock until it has rolled back.
    await until("flock -n /run/docker-port-allowlist.lock true");
    expect(await nft(`-s list table ${nftTableRef("web")}`)).toBe(before);
    expect(await lab.probe(other, host, 8080, "tcp", 4)).toBe(false);
    await lab.hostExec(host, `rm -rf '${dir}'`);
  });

  test("the guard holds the table and puts it back after a flush and after a reboot", async () => {
    const [allowed, other] = lab.clients;
    const wanted = spec([allowed.ipv4, allowed.ipv6!]);
    await apply(wanted);
    const copy = await lab.hostExec(host, `cat ${guardCopyPath("web", "nft")}`);
    expect(copy.stdout.split("\n")[0]).toBe(`table ${nftTableRef("web")} {`);
    const guardOnce = async () => {
      const r = await lab.hostExec(host, `bash ${GUARD_SCRIPT_PATH} --once`);
      expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: "" });
      return r.stdout;
    };
    expect(await guardOnce()).toBe("");

    // Debian's nftables.service starts, reloads and stops with `flush ruleset`: Docker's tables go
    // too; a dockerd restart makes them again, the guard's timer round puts ours back.
    expect((await lab.hostExec(host, `nft delete table ${nftTableRef("web")}`)).code).toBe(0);
    expect(await lab.probe(other, host, 8080, "tcp", 4)).toBe(true);
    expect(await guardOnce()).toBe(`dpa-guard: restored (nft): table ${nftTableRef("web")}\n`);
    expect(await lab.probe(other, host, 8080, "tcp", 4)).toBe(false);
    expect(await lab.probe(allowed, host, 8080, "tcp", 4)).toBe(true);

    // A reboot: every nftables table is gone, dockerd builds its own again; then the guard's
    // service (After=docker.service) runs.
    await lab.reboot(host);
    expect(await nft("list tables")).not.toContain("dpa-web");
    expect(await lab.probe(other, host, 8080, "tcp", 4)).toBe(true);
    expect(await guardOnce()).toContain("restored (nft)");
    for (const family of [4, 6] as const) {
      expect(await lab.probe(other, host, 8080, "tcp", family)).toBe(false);
      expect(await lab.probe(allowed, host, 8080, "tcp", family)).toBe(true);
    }
    const same = await apply(wanted);
    expect(same.applied).toBe(false);
    // The foreign table went with the reboot; put it back for the next test.
    expect((await lab.hostExec(host, `printf '%s\\n' '${FOREIGN}' | nft -f -`)).code).toBe(0);
  });

  test("delete removes the table and nothing else: everyone gets in again, the foreign table is intact", async () => {
    const foreign = await nft("-s list table inet site");
    const gone = await apply(null);
    expect(gone.applied).toBe(true);
    expect(await nft(`list table ${nftTableRef("web")}`)).toMatch(/^\(exit 1\)/);
    for (const family of [4, 6] as const)
      expect(await lab.probe(lab.clients[1], host, 8080, "tcp", family)).toBe(true);
    expect(await nft("-s list table inet site")).toBe(foreign);
    // The last allowlist of the host went: so did the guard and its copy.
    expect((await lab.hostExec(host, `test -e ${GUARD_SCRIPT_PATH} || echo gone`)).stdout).toBe("gone\n");
  });
});
