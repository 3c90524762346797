/**
 * Several allowlists on ONE host, applied at the same time, as `pulumi up` does for a fleet with
 * several policies per host. Each operation holds the host lock from its read to its commit, so
 * writers that use the lock never see each other's changes as conflicts: all succeed, none
 * re-plans, and afterwards every allowlist plans in sync against the live rules. They share one
 * SSH connection (the provider process's pool), each with its own exec, against a real sshd
 * (MaxSessions 10).
 */
import { startLab, type Lab } from "../../lab";
import { planAllowlist, validateAllowlist } from "../../provider/core";
import { check, create, type Outputs } from "../../provider/pulumi/lifecycle";

jest.setTimeout(240_000);

let lab: Lab;
beforeAll(async () => {
  lab = await startLab({ docker: 0, light: 1, clients: 0 });
});
afterAll(async () => {
  await lab?.down();
});

const POLICIES = [
  { name: "pa", port: 8080, sources: ["198.18.200.0/24"] },
  { name: "pb", port: 8081, sources: ["198.18.201.0/24", "198.18.202.7"] },
  { name: "pc", port: 5353, sources: ["198.18.203.0/24"] },
  { name: "pd", port: 9000, sources: ["198.18.204.0/24"] },
  { name: "pe", port: 9100, sources: ["198.18.205.0/24"] },
  { name: "pf", port: 9200, sources: ["198.18.206.0/24"] },
];

test("six allowlists created at once on one host all succeed over one SSH connection without re-planning and end in sync", async () => {
  const h = lab.hosts[0];
  const connection = { host: h.ipv4, hostKey: h.hostKey, privateKey: lab.clientKey.privateKey };
  const inputs = POLICIES.map(
    (p) =>
      check(
        {},
        { connection, resourceName: p.name, port: p.port, sources: p.sources, protocols: ["tcp", "udp"] },
      ).inputs!,
  );
  const started = Date.now();
  const settled = await Promise.allSettled(inputs.map((i) => create(i)));
  const wallMs = Date.now() - started;
  const errors = settled.flatMap((s) => (s.status === "rejected" ? [(s.reason as Error).message] : []));
  expect(errors).toEqual([]);
  const outs = settled.map((s) => (s as PromiseFulfilledResult<{ outs: Outputs }>).value.outs);
  process.stdout.write(
    `${POLICIES.length} parallel creates on one host: ${wallMs} ms wall, per operation ` +
      `${outs.map((o) => o.lastOperation.ms).join("/")} ms (lock wait included)\n`,
  );
  for (const o of outs) {
    expect(o.lastOperation).toMatchObject({ roundTrips: 2, applied: true, replanned: false });
  }
  // One operation dialed; the five others ran on its connection.
  expect(outs.map((o) => o.lastOperation.connections).sort()).toEqual([0, 0, 0, 0, 0, 1]);
  expect(outs.map((o) => o.lastOperation.reusedConnections).sort()).toEqual([0, 1, 1, 1, 1, 1]);

  const live4 = (await lab.hostExec(h, "iptables-save -t filter")).stdout;
  const live6 = (await lab.hostExec(h, "ip6tables-save -t filter")).stdout;
  for (const p of POLICIES) {
    const v = validateAllowlist({ port: p.port, sources: p.sources, protocols: ["tcp", "udp"] }, p.name);
    if (!v.ok) throw new Error(JSON.stringify(v.failures));
    const plan = planAllowlist({ ipv4: live4, ipv6: live6 }, v.spec, p.name);
    expect({ name: p.name, inSync: plan.inSync, changes: plan.changes }).toEqual({
      name: p.name,
      inSync: true,
      changes: [],
    });
  }
  // The saved file holds every allowlist: the last writer saved under the lock, after all others.
  const saved = (await lab.hostExec(h, "cat /etc/iptables/rules.v4")).stdout;
  for (const p of POLICIES) expect(saved).toContain(`:DPA-${p.name} `);
});
