/**
 * One SSH connection per host per `pulumi up`, through the provider's own lifecycle functions
 * (what the engine calls, concurrently, in its one provider process) over REAL SSH: ssh2 servers
 * on loopback (../host/ssh2host.ts) whose execs run the real host scripts on a stub host that
 * already holds every allowlist, so each operation is one read that finds it in sync.
 */
import { readFileSync } from "fs";
import { join } from "path";
import { planAllowlist, validateAllowlist } from "../../provider/core";
import { check, create, read, type Outputs } from "../../provider/pulumi/lifecycle";
import { applyPayload } from "../core/support/simulate";
import { StubHost } from "../host/stubhost";
import { ed25519, startSsh2Host, type Ssh2Host } from "../host/ssh2host";

jest.setTimeout(60_000);

const SAVE4 = readFileSync(
  join(__dirname, "..", "core", "fixtures", "docker29", "iptables-save.v4.txt"),
  "utf8",
);
const CLIENT_KEY = ed25519().private;
const POLICIES = [
  { resourceName: "web", port: 8080, sources: ["198.18.1.0/24"] },
  { resourceName: "api", port: 8081, sources: ["198.18.2.7"] },
  { resourceName: "dns", port: 5353, protocols: ["udp"], sources: ["198.18.3.0/24"] },
];

let stub: StubHost;
const servers: Ssh2Host[] = [];

beforeEach(() => {
  stub = new StubHost();
  // The host holds the three allowlists already.
  let save4 = SAVE4;
  for (const p of POLICIES) {
    const v = validateAllowlist({ ...p, persist: false, ipv6: "off" }, p.resourceName);
    if (!v.ok) throw new Error(JSON.stringify(v.failures));
    save4 = applyPayload(
      save4,
      planAllowlist({ ipv4: save4, ipv6: null }, v.spec, p.resourceName).families.ipv4!.payload,
      "ipv4",
    );
  }
  stub.write("save4", save4);
  stub.write("save6.fail", "ip6tables-save: IPv6 is off on this host");
});

afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
  stub.remove();
});

async function host(): Promise<Ssh2Host> {
  const s = await startSsh2Host({ shell: stub.shell() });
  servers.push(s);
  return s;
}

function inputs(server: Ssh2Host, policy: (typeof POLICIES)[number]): Record<string, unknown> {
  const connection = {
    host: "127.0.0.1",
    port: server.port,
    hostKey: server.hostKey,
    privateKey: CLIENT_KEY,
  };
  const r = check({}, { ...policy, persist: false, ipv6: "off", connection });
  if (r.inputs === undefined) throw new Error(JSON.stringify(r.failures));
  return r.inputs;
}

const total = (outs: Outputs[]) => ({
  connections: outs.reduce((n, o) => n + o.lastOperation.connections, 0),
  reusedConnections: outs.reduce((n, o) => n + o.lastOperation.reusedConnections, 0),
});

test("three allowlists on one host, created at once, make one SSH connection; the refresh after it reuses it", async () => {
  const server = await host();
  const outs = (await Promise.all(POLICIES.map((p) => create(inputs(server, p))))).map((r) => r.outs);
  expect(server.connections).toBe(1);
  expect(total(outs)).toEqual({ connections: 1, reusedConnections: 2 });
  // Each still its own exec under the host lock: at most two round trips (the guard is sent).
  for (const o of outs) expect(o.lastOperation.roundTrips).toBeLessThanOrEqual(2);
  const refreshed = await Promise.all(outs.map((o) => read("id", o as unknown as Record<string, unknown>)));
  for (const r of refreshed) expect(r.props.hostKeyFingerprint).toBe(server.hostKeyFingerprint);
  expect(server.connections).toBe(1);
});

test("two hosts with three allowlists each: one connection per host", async () => {
  const [a, b] = [await host(), await host()];
  const outs = (
    await Promise.all([a, b].flatMap((server) => POLICIES.map((p) => create(inputs(server, p)))))
  ).map((r) => r.outs);
  expect([a.connections, b.connections]).toEqual([1, 1]);
  expect(total(outs)).toEqual({ connections: 2, reusedConnections: 4 });
});
