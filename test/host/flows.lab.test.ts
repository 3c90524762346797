/**
 * The edge on a real Docker host with real traffic: removing a source cuts its live flow (and
 * would not without the conntrack cut), an IPv6 step that fails at commit time puts IPv4 back,
 * and a host reached without a pinned key is warned about.
 */
import type { ChildProcess } from "child_process";
import { comparableSave, startLab, type Lab, type LabHost } from "../../lab";
import { planAllowlist, validateAllowlist, type AllowlistSpec } from "../../provider/core";
import { HostError, syncHost } from "../../provider/host";
import type { ConnectionArgs } from "../../provider/args";
import { repliesDuring, syncOptions, udpFlow } from "./support";

jest.setTimeout(240_000);

let lab: Lab;
const children: ChildProcess[] = [];
beforeAll(async () => {
  lab = await startLab({ docker: 1, light: 0, clients: 2, ipv6: true });
});
afterAll(async () => {
  // Only the processes this file started, by their own handle (pid).
  for (const c of children) if (c.exitCode === null) c.kill("SIGKILL");
  await lab?.down();
});

function conn(host: LabHost, extra: Partial<ConnectionArgs> = {}): ConnectionArgs {
  return { host: host.ipv4, privateKey: lab.clientKey.privateKey, hostKey: host.hostKey, ...extra };
}

function spec(ruleName: string, port: number, protocols: string[], sources: string[]): AllowlistSpec {
  const v = validateAllowlist({ port, protocols, sources, ruleName }, ruleName);
  if (!v.ok) throw new Error(JSON.stringify(v.failures));
  return v.spec;
}

async function conntrackEntries(host: LabHost, source: string): Promise<number> {
  const r = await lab.hostExec(
    host,
    `conntrack -L -p udp --orig-src ${source} --orig-port-dst 5353 2>/dev/null`,
  );
  return r.stdout.split("\n").filter((l) => l.includes(`src=${source} `)).length;
}

test("removing a source cuts its live UDP flow at once; without the conntrack cut the flow goes on", async () => {
  const h = lab.hosts[0];
  const [c0, c1] = lab.clients;
  const both = spec("flow", 5353, ["udp"], [`${c0.ipv4}/32`, `${c1.ipv4}/32`]);
  const onlyC1 = spec("flow", 5353, ["udp"], [`${c1.ipv4}/32`]);
  expect((await syncHost(conn(h), syncOptions(both))).applied).toBe(true);

  const flow = udpFlow(c0, h, 41000);
  children.push(flow.process);
  expect(await repliesDuring(flow, 1500)).toBeGreaterThan(3);
  expect(await conntrackEntries(h, c0.ipv4)).toBe(1);

  // Control: the same removal without the cut. The ESTABLISHED fast path keeps the flow alive,
  // which is why the cut is needed (and why this test can fail).
  const kept = await syncHost(conn(h), syncOptions(onlyC1, { cutConntrack: false }));
  expect(kept).toMatchObject({ applied: true, conntrackDeleted: 0 });
  expect(await repliesDuring(flow, 1500)).toBeGreaterThan(3);
  expect(await conntrackEntries(h, c0.ipv4)).toBe(1);
  // A new flow from c0 is refused, though: the rules themselves are in place.
  expect(await lab.probe(c0, h, 5353, "udp")).toBe(false);

  // Allowed again, then removed with the cut (the default).
  expect((await syncHost(conn(h), syncOptions(both))).applied).toBe(true);
  expect(await repliesDuring(flow, 1000)).toBeGreaterThan(3);
  const cut = await syncHost(conn(h), syncOptions(onlyC1));
  expect(cut.applied).toBe(true);
  expect(cut.conntrackDeleted).toBeGreaterThanOrEqual(1);
  // Every flow it had to cut was cut: nothing reported as left behind (real conntrack -D/-G).
  expect(cut.conntrackUncut).toEqual([]);
  // Answers already on the way when the flow was cut are counted before the window opens.
  await flow.settled();
  expect(await repliesDuring(flow, 1500)).toBe(0);
  expect(await conntrackEntries(h, c0.ipv4)).toBe(0);
  // c1 was never removed and still gets through.
  expect(await lab.probe(c1, h, 5353, "udp")).toBe(true);
});

test("a new allowlist cuts the live flows it does not allow, and deleting it cuts nothing", async () => {
  const h = lab.hosts[0];
  const [c0, c1] = lab.clients;
  const onlyC1 = spec("newcut", 5353, ["udp"], [`${c1.ipv4}/32`]);
  // No allowlist on the port (the test above leaves one): c0's flow is open and established.
  await syncHost(conn(h), syncOptions("flow"));
  const flow = udpFlow(c0, h, 41100);
  children.push(flow.process);
  expect(await repliesDuring(flow, 1500)).toBeGreaterThan(3);
  expect(await conntrackEntries(h, c0.ipv4)).toBeGreaterThanOrEqual(1);

  const created = await syncHost(conn(h), syncOptions(onlyC1));
  expect(created.applied).toBe(true);
  expect(created.conntrackDeleted).toBeGreaterThanOrEqual(1);
  // Answers already on the way when the flow was cut are counted before the window opens.
  await flow.settled();
  expect(await repliesDuring(flow, 1500)).toBe(0);
  expect(await lab.probe(c1, h, 5353, "udp")).toBe(true);
  // Containers' own outbound flows on the same port are not inbound connections: kept.
  expect(await lab.containerProbe(h, 5353, "udp")).toBe(true);

  // Deleting lets everyone in: no flow is cut, and c0 gets through again.
  const deleted = await syncHost(conn(h), syncOptions("newcut"));
  expect(deleted).toMatchObject({ applied: true, conntrackDeleted: 0 });
  expect(await lab.probe(c0, h, 5353, "udp")).toBe(true);
});

test("an IPv6 step that passes --test but fails at commit restores IPv4 too: host, traffic and saved files as before", async () => {
  const h = lab.hosts[0];
  const [c0] = lab.clients;
  const filter = async (cmd: string) => comparableSave((await lab.hostExec(h, `${cmd} -t filter`)).stdout);
  const before4 = await filter("iptables-save");
  const before6 = await filter("ip6tables-save");
  const files = async () =>
    (await lab.hostExec(h, "cat /etc/iptables/rules.v4 /etc/iptables/rules.v6 2>&1")).stdout;
  const filesBefore = await files();
  expect(await lab.probe(c0, h, 8080, "tcp")).toBe(true);

  const s = spec("v6fail", 8080, ["tcp"], ["198.18.250.0/24", "2001:db8:ff::/64"]);
  let sawBothFamilies = false;
  const err = await syncHost(
    conn(h),
    syncOptions(s, {
      plan: (live) => {
        const p = planAllowlist(live, s, "v6fail");
        sawBothFamilies = p.families.ipv4 !== undefined && p.families.ipv6 !== undefined;
        const v6 = p.families.ipv6!;
        // A jump back into DOCKER-USER makes a chain loop: iptables-restore --test accepts it
        // (it never asks the kernel), the kernel refuses the real commit with ELOOP. IPv4 has
        // already been applied by then, so only the rollback can put it back.
        const loop = '-A DPA-v6fail -m comment --comment "dpa:v6fail" -j DOCKER-USER\nCOMMIT\n';
        return {
          ...p,
          families: { ...p.families, ipv6: { ...v6, payload: v6.payload.replace(/COMMIT\s*$/, loop) } },
        };
      },
    }),
  ).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(sawBothFamilies).toBe(true);
  expect(HostError.isInstance(err)).toBe(true);
  const he = err as HostError;
  expect(he.kind).toBe("rolled-back");
  expect(he.message).toContain("applying the rules failed (apply-failed 6); every family was restored");
  expect(he.stderr).toMatch(/Too many links|loop/i);
  expect(await filter("iptables-save")).toBe(before4);
  expect(await filter("ip6tables-save")).toBe(before6);
  expect(await files()).toBe(filesBefore);
  // Had IPv4 stayed applied, c0 (not in 198.18.250.0/24) would now be dropped.
  expect(await lab.probe(c0, h, 8080, "tcp")).toBe(true);
});

test("an operation on a host without a pinned key warns, naming the host and the fix", async () => {
  const h = lab.hosts[0];
  const warnings: string[] = [];
  const s = spec("warned", 9999, ["tcp"], ["198.18.251.0/24"]);
  const r = await syncHost(
    conn(h, { hostKey: undefined }),
    syncOptions(s, { session: { warn: (m) => warnings.push(m) } }),
  );
  expect(r.applied).toBe(true);
  expect(warnings).toEqual([
    `connection.hostKey is not pinned for root@${h.ipv4}:22: whatever key it presents now is trusted on ` +
      `first use (a man in the middle right now would go unnoticed) and recorded in the state as ` +
      `hostKeyFingerprint; later operations refuse any other key. Fix: check the host's key out of band ` +
      `(ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub on the host) and set connection.hostKey to its ` +
      `"ssh-ed25519 AAAA..." line or SHA256 fingerprint.`,
  ]);
  expect(r.hostKeys).toEqual({ host: h.hostKeyFingerprint });
  // Pinned: no warning.
  const pinned: string[] = [];
  await syncHost(conn(h), syncOptions(s, { session: { warn: (m) => pinned.push(m) } }));
  expect(pinned).toEqual([]);
});
