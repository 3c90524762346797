/**
 * Large allowlists in ipsets (issue 12, item 2; provider/core/ipset.ts) on a real Docker 29 host
 * (iptables backend), with real traffic from client namespaces: at the threshold and across it
 * the same clients get in and the same are kept out, whether the sources are rules or a set.
 * Also: an update swaps the set in one step, a kill before the commit puts the set back as it
 * was, the rules file loads at boot without any set, and the guard builds the set again (and
 * refills one emptied by hand).
 *
 * Run: npx jest test/host/ipset.lab.test.ts --selectProjects lab
 */
import { startLab, type Lab, type LabHost } from "../../lab";
import type { ConnectionArgs } from "../../provider/args";
import {
  GUARD_SCRIPT_PATH,
  SET_THRESHOLD,
  guardCopyPath,
  parseCidr,
  setElement,
  validateAllowlist,
  type AllowlistSpec,
} from "../../provider/core";
import { converge } from "../../provider/host";

jest.setTimeout(300_000);

let lab: Lab;
let host: LabHost;
const owner = { name: "lab/ipset/web", via: "lab:22" };
const SET_RULE = '-A DPA-web -m set --match-set dpa4-web src -m comment --comment "dpa:web" -j RETURN';

function conn(h: LabHost): ConnectionArgs {
  return { host: h.ipv4, privateKey: lab.clientKey.privateKey, hostKey: h.hostKey };
}

/** `n` sources in all: the given ones, then addresses of TEST-NET-3 and 2001:db8:ff00::/40 no client has. */
function filler(n: number, family: 4 | 6): string[] {
  return Array.from({ length: n }, (_, i) =>
    family === 4 ? `203.0.${113 + (i >> 8)}.${i & 255}` : `2001:db8:ff00::${i.toString(16)}`,
  );
}

/** An allowlist with exactly `n4` IPv4 and `n6` IPv6 sources, `listed` among them. */
function spec(listed: string[], n4: number, n6: number): AllowlistSpec {
  const v4 = listed.filter((a) => !a.includes(":"));
  const v6 = listed.filter((a) => a.includes(":"));
  const sources = [...v4, ...filler(n4 - v4.length, 4), ...v6, ...filler(n6 - v6.length, 6)];
  const v = validateAllowlist({ port: 8080, protocols: ["tcp"], sources }, "web");
  if (!v.ok) throw new Error(JSON.stringify(v.failures));
  expect(v.spec.sources.ipv4).toHaveLength(n4);
  expect(v.spec.sources.ipv6).toHaveLength(n6);
  return v.spec;
}

function apply(desired: AllowlistSpec | null, hooks: Parameters<typeof converge>[3] = {}) {
  const operation = desired === null ? "delete" : "update";
  return converge(conn(host), desired, desired ?? { ruleName: "web" }, {
    claim: { owner, operation },
    ...hooks,
  });
}

async function sh(cmd: string): Promise<string> {
  const r = await lab.hostExec(host, cmd);
  return r.code === 0 ? r.stdout : `(exit ${r.code}) ${r.stderr}`;
}

/** The elements of a set on the host, sorted; null when it does not exist. */
async function members(name: string): Promise<string[] | null> {
  const r = await lab.hostExec(host, `ipset save ${name}`);
  if (r.code !== 0) return null;
  return r.stdout
    .split("\n")
    .filter((l) => l.startsWith("add "))
    .map((l) => l.split(" ")[2])
    .sort();
}

/** Listed clients get in, others are kept out, over IPv4 and IPv6; containers still reach out. */
async function expectPoliced(allowed: Lab["clients"][number], other: Lab["clients"][number]) {
  for (const family of [4, 6] as const) {
    expect({ family, allowed: await lab.probe(allowed, host, 8080, "tcp", family) }).toEqual({
      family,
      allowed: true,
    });
    expect({ family, other: await lab.probe(other, host, 8080, "tcp", family) }).toEqual({
      family,
      other: false,
    });
  }
  expect(await lab.containerProbe(host, 80, "tcp", 4)).toBe(true);
}

describe("Docker 29, iptables backend: sources in an ipset from the threshold on", () => {
  beforeAll(async () => {
    lab = await startLab({ docker: 1, light: 0, clients: 2, ipv6: true, dockerVersion: "29" });
    host = lab.hosts[0];
  });
  afterAll(async () => {
    await lab?.down();
  });

  test(`${SET_THRESHOLD - 1} sources: one rule each, no set; the same clients in and out`, async () => {
    const [allowed, other] = lab.clients;
    const o = await apply(spec([allowed.ipv4, allowed.ipv6!], SET_THRESHOLD - 1, SET_THRESHOLD - 1));
    expect(o.applied).toBe(true);
    const save = await sh("iptables-save -t filter");
    expect(save.match(/^-A DPA-web -s /gm)).toHaveLength(SET_THRESHOLD - 1);
    expect(save).not.toContain("--match-set");
    expect(await sh("ipset list -n")).not.toMatch(/dpa/);
    await expectPoliced(allowed, other);
  });

  test(`${SET_THRESHOLD} sources: one set per family matched by one rule, built before it; the same clients in and out`, async () => {
    const [allowed, other] = lab.clients;
    const wanted = spec([allowed.ipv4, allowed.ipv6!], SET_THRESHOLD, SET_THRESHOLD);
    const o = await apply(wanted);
    expect(o.applied).toBe(true);
    expect(o.stats.roundTrips).toBe(2);
    expect(o.plan.changes).toContain(`+ [ipv4] ${SET_RULE}`);
    expect(o.plan.changes).toContain(`+ [ipv4] add dpa4-web ${allowed.ipv4}`);
    const save = await sh("iptables-save -t filter");
    expect(save).not.toMatch(/^-A DPA-web -s /m);
    expect(save).toContain(SET_RULE);
    expect(await sh("ip6tables-save -t filter")).toContain("--match-set dpa6-web src");
    expect(await members("dpa4-web")).toHaveLength(SET_THRESHOLD);
    expect(await members("dpa4-web")).toContain(allowed.ipv4);
    // As ipset prints it (the lab writes the client's address in a longer form).
    expect(await members("dpa6-web")).toContain(setElement(parseCidr(allowed.ipv6!)!));
    expect(await members("dpa4+web")).toBeNull();
    await expectPoliced(allowed, other);
    // No change: one round trip, nothing applied (the rules file compares equal to the live rules).
    const same = await apply(wanted);
    expect({ applied: same.applied, roundTrips: same.stats.roundTrips }).toEqual({
      applied: false,
      roundTrips: 1,
    });
  });

  test("adding a source swaps the new list in; removing it again keeps it out; only the set changes", async () => {
    const [allowed, other] = lab.clients;
    const before = await sh("iptables-save -t filter | grep -- '-A DPA-web'");
    const added = await apply(
      spec([allowed.ipv4, allowed.ipv6!, other.ipv4], SET_THRESHOLD + 1, SET_THRESHOLD),
    );
    expect(added.applied).toBe(true);
    expect(added.plan.changes).toEqual([`+ [ipv4] add dpa4-web ${other.ipv4}`]);
    expect(await lab.probe(other, host, 8080, "tcp", 4)).toBe(true);
    expect(await lab.probe(other, host, 8080, "tcp", 6)).toBe(false);
    expect(await sh("iptables-save -t filter | grep -- '-A DPA-web'")).toBe(before);
    expect(await members("dpa4+web")).toBeNull();

    const removed = await apply(spec([allowed.ipv4, allowed.ipv6!], SET_THRESHOLD, SET_THRESHOLD));
    expect(removed.plan.changes).toEqual([`- [ipv4] add dpa4-web ${other.ipv4}`]);
    await expectPoliced(allowed, other);
  });

  test("SIGKILL of the script's process group while it awaits the commit: the watchdog puts the old set back", async () => {
    const [allowed, other] = lab.clients;
    const before = await members("dpa4-web");
    const dir = (await sh("mktemp -d /run/dpa-pause.XXXXXX")).trim();
    expect(await sh(`touch '${dir}/awaiting-commit'`)).toBe("");
    const until = async (check: string) => {
      while ((await lab.hostExec(host, check)).code !== 0) await new Promise((r) => setImmediate(r));
    };
    let killed = false;
    let during: string[] | null = null;
    const err = await apply(
      spec([allowed.ipv4, allowed.ipv6!, other.ipv4], SET_THRESHOLD + 1, SET_THRESHOLD),
      {
        pauseDir: dir,
        beforeCommit: async () => {
          await until(`grep -q . '${dir}/awaiting-commit.reached'`);
          const pid = (await sh(`cat '${dir}/awaiting-commit.reached'`)).trim();
          during = await members("dpa4-web");
          const pgid = (await sh(`awk '{ print $5 }' /proc/${pid}/stat`)).trim();
          expect(await sh(`bash -c 'kill -KILL -- -${pgid}'`)).toBe("");
          killed = true;
        },
      },
    ).catch((e: Error) => e);
    expect({ killed, err: String(err) }).toMatchObject({
      killed: true,
      err: expect.stringMatching(/killed.* before the commit/),
    });
    // Swapped in, not committed: the new source was in the live set.
    expect(during).toContain(other.ipv4);
    await until("flock -n /run/docker-port-allowlist.lock true");
    expect(await members("dpa4-web")).toEqual(before);
    expect(await members("dpa4+web")).toBeNull();
    expect(await lab.probe(other, host, 8080, "tcp", 4)).toBe(false);
    await sh(`rm -rf '${dir}'`);
  });

  test("the rules file holds the set written out per source; after a reboot it loads without any set, and the guard builds the set again", async () => {
    const [allowed, other] = lab.clients;
    const wanted = spec([allowed.ipv4, allowed.ipv6!], SET_THRESHOLD, SET_THRESHOLD);
    await apply(wanted);
    const file = await sh("cat /etc/iptables/rules.v4");
    expect(file).not.toContain("--match-set");
    expect(file).toContain(`-A DPA-web -s ${allowed.ipv4} -m comment --comment "dpa:web" -j RETURN`);
    expect(file.match(/^-A DPA-web -s /gm)).toHaveLength(SET_THRESHOLD);
    const copy = await sh(`cat ${guardCopyPath("web", "ipv4")}`);
    expect(copy).toContain(SET_RULE);
    expect(copy).toContain("create dpa4-web hash:net family inet\n");

    // A reboot: rules and sets gone, the rules files restored (per source), dockerd started.
    await lab.reboot(host);
    expect(await members("dpa4-web")).toBeNull();
    expect((await sh("iptables-save -t filter")).match(/^-A DPA-web -s /gm)).toHaveLength(SET_THRESHOLD);
    expect(await lab.probe(other, host, 8080, "tcp", 4)).toBe(false);
    expect(await lab.probe(allowed, host, 8080, "tcp", 4)).toBe(true);
    // The guard's service (After=docker.service): the sets first, then the chain that matches them.
    const g = await lab.hostExec(host, `bash ${GUARD_SCRIPT_PATH} --once`);
    expect({ code: g.code, stderr: g.stderr }).toEqual({ code: 0, stderr: "" });
    expect(g.stdout).toContain("dpa-guard: restored (ipset): dpa4-web");
    expect(g.stdout).toContain("dpa-guard: restored (ipset): dpa6-web");
    expect(await members("dpa4-web")).toHaveLength(SET_THRESHOLD);
    expect(await sh("iptables-save -t filter")).toContain(SET_RULE);
    await expectPoliced(allowed, other);
    const same = await apply(wanted);
    expect(same.applied).toBe(false);

    // A set emptied by hand keeps everyone out (fail closed); the guard adds its elements back.
    expect(await sh("ipset flush dpa4-web")).toBe("");
    expect(await lab.probe(allowed, host, 8080, "tcp", 4)).toBe(false);
    const g2 = await lab.hostExec(host, `bash ${GUARD_SCRIPT_PATH} --once`);
    expect({ code: g2.code, stdout: g2.stdout, stderr: g2.stderr }).toEqual({
      code: 0,
      stdout: `dpa-guard: restored (ipset): ${SET_THRESHOLD} element(s) of dpa4-web\n`,
      stderr: "",
    });
    await expectPoliced(allowed, other);
    expect((await apply(wanted)).applied).toBe(false);
  });

  test(`back to ${SET_THRESHOLD - 1} sources: rules per source again, the set destroyed after them; delete leaves nothing`, async () => {
    const [allowed, other] = lab.clients;
    const o = await apply(spec([allowed.ipv4, allowed.ipv6!], SET_THRESHOLD - 1, SET_THRESHOLD));
    expect(o.applied).toBe(true);
    expect(o.plan.changes).toContain("- [ipv4] destroy dpa4-web");
    expect(await members("dpa4-web")).toBeNull();
    expect(await members("dpa6-web")).toHaveLength(SET_THRESHOLD);
    expect((await sh("iptables-save -t filter")).match(/^-A DPA-web -s /gm)).toHaveLength(SET_THRESHOLD - 1);
    await expectPoliced(allowed, other);

    const gone = await apply(null);
    expect(gone.applied).toBe(true);
    expect(await sh("ipset list -n")).not.toMatch(/dpa/);
    expect(await sh("iptables-save; ip6tables-save")).not.toContain("dpa:");
    expect(await lab.probe(other, host, 8080, "tcp", 4)).toBe(true);
  });
});
