/**
 * The provider methods (what the engine calls) against a real lab host, for the paths the
 * engine tests do not reach: a save that fails after the commit is recorded as a resource that
 * exists with `persisted: false` (not lost, not silently fine), and the next update saves.
 */
import { startLab, type Lab } from "../../lab";
import { check, create, diff, read, update } from "../../provider/pulumi/lifecycle";

jest.setTimeout(180_000);

let lab: Lab;
beforeAll(async () => {
  lab = await startLab({ docker: 0, light: 1, clients: 0 });
});
afterAll(async () => {
  await lab?.down();
});

test("a failed save after the commit keeps the resource with persisted: false, and the next update saves", async () => {
  const h = lab.hosts[0];
  const connection = { host: h.ipv4, hostKey: h.hostKey, privateKey: lab.clientKey.privateKey };
  const declared = {
    connection,
    resourceName: "keep",
    port: 8080,
    sources: ["198.18.200.0/24"],
    rulesV4Path: "/etc/iptables/nope/rules.v4",
  };
  const inputs = check({}, declared).inputs!;
  let thrown: (Error & { id?: string; properties?: Record<string, unknown> }) | undefined;
  try {
    await create(inputs);
  } catch (err) {
    thrown = err as typeof thrown;
  }
  expect(thrown?.message).toContain("the rules are LIVE but saving them for reboots failed");
  expect(thrown?.id).toBe(`${h.ipv4}:22/keep`);
  expect(thrown?.properties?.persisted).toBe(false);
  expect(thrown?.properties?.lastOperation).toMatchObject({
    operation: "create",
    connections: 1,
    roundTrips: 2,
  });
  expect(JSON.stringify(thrown?.message)).not.toContain(lab.clientKey.privateKey.split("\n")[1]);

  // The next `up`: diff sees the unsaved state, update saves (rules are already in place).
  const fixed = check(inputs, { ...declared, rulesV4Path: "/etc/iptables/rules.v4" }).inputs!;
  expect(diff(thrown!.properties!, fixed).changes).toBe(true);
  const u = await update(thrown!.id!, thrown!.properties!, fixed);
  expect(u.outs.persisted).toBe(true);
  expect(u.outs.lastOperation).toMatchObject({ roundTrips: 2, applied: false });
  // The connection the create opened, unless it went idle meanwhile: one of the two, never both.
  const { connections, reusedConnections } = u.outs.lastOperation;
  expect(connections + reusedConnections).toBe(1);
  const saved = await lab.hostExec(h, "cat /etc/iptables/rules.v4");
  expect(saved.stdout).toContain('-A DPA-keep -s 198.18.200.0/24 -m comment --comment "dpa:keep" -j RETURN');

  // Refresh agrees: in sync and saved; it records the host's Docker bridges (docker0 in IPv4,
  // none in this host's IPv6) and the next preview finds nothing to change.
  const r = await read(thrown!.id!, u.outs as unknown as Record<string, unknown>);
  expect(r.props.persisted).toBe(true);
  expect(r.props.inSync).toBe(true);
  expect(r.props.rules).toEqual(u.outs.rules);
  expect(r.props.dockerBridges).toEqual({ ipv4: ["docker0"], ipv6: [] });
  const next = check(r.inputs, { ...declared, rulesV4Path: "/etc/iptables/rules.v4" }).inputs!;
  expect(diff(r.props as unknown as Record<string, unknown>, next).changes).toBe(false);
});
