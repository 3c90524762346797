/**
 * The bridge exemption on a real Docker host whose own uplink is a Linux bridge named `br-lan`
 * (as on hosts that also run VMs, or with netplan/ifupdown bridges): every outside client arrives
 * through it. The chain must exempt the bridges Docker made, not every `br-*`: a client not in
 * the allowlist is kept out, a listed one gets in, and the containers' own traffic (outbound to
 * the policed port, and between containers of a user-defined network) still flows. A Docker
 * network made or removed later shows as drift and is followed by the next apply. And a source
 * removed from the list loses its live flow: the conntrack cut keeps the flows of the exempted
 * bridges' subnets, which must not include the uplink's (the clients' own subnet).
 */
import { startLab, type Lab, type LabHost } from "../../lab";
import { planAllowlist, validateAllowlist, type AllowlistSpec } from "../../provider/core";
import { inspectHost, syncHost } from "../../provider/host";
import type { ConnectionArgs } from "../../provider/args";
import { repliesDuring, syncOptions, udpFlow, type UdpFlow } from "./support";

jest.setTimeout(240_000);

let lab: Lab;
let h: LabHost;
const flows: UdpFlow[] = [];
beforeAll(async () => {
  lab = await startLab({ docker: 1, light: 0, clients: 2 });
  h = lab.hosts[0];
  // The host's uplink becomes a bridge called br-lan: eth0 is enslaved to it and the host's
  // address moves over (sshd keeps listening on it; the lab's /24 is on-link, no routes).
  await sh(
    `ip link add br-lan type bridge && ip link set br-lan up && ip link set eth0 master br-lan` +
      ` && ip addr del ${h.ipv4}/24 dev eth0 && ip addr add ${h.ipv4}/24 dev br-lan`,
  );
  // A user-defined network with two containers serving 8080 (the policed port) to each other.
  await sh(`docker network create --subnet 172.30.0.0/16 appnet >/dev/null`);
  for (const name of ["peer1", "peer2"]) {
    await sh(
      `docker run -d --init --pull never --name ${name} --network appnet dpa-lab/busybox:1 /bin/httpd -f -p 8080 -h /www >/dev/null`,
    );
  }
});
afterAll(async () => {
  // Only the processes this file started, by their own handle (pid).
  for (const f of flows) if (f.process.exitCode === null) f.process.kill("SIGKILL");
  await lab?.down();
});

/** Runs `cmd` on the host; fails the test with its output when it fails. */
async function sh(cmd: string): Promise<string> {
  const r = await lab.hostExec(h, cmd);
  if (r.code !== 0) throw new Error(`${cmd}: exit ${r.code}\n${r.stdout}${r.stderr}`);
  return r.stdout;
}

/** Whether `nc` inside a container reaches `address:port` (a TCP connection is accepted). */
async function fromContainer(container: string, address: string, port: number): Promise<boolean> {
  const r = await lab.hostExec(h, `docker exec ${container} nc -w 2 ${address} ${port} </dev/null`);
  return r.code === 0;
}

function conn(): ConnectionArgs {
  return { host: h.ipv4, privateKey: lab.clientKey.privateKey, hostKey: h.hostKey };
}

function spec(sources: string[]): AllowlistSpec {
  const v = validateAllowlist({ port: 8080, protocols: ["tcp"], sources, ruleName: "web" }, "web");
  if (!v.ok) throw new Error(JSON.stringify(v.failures));
  return v.spec;
}

async function liveV4(): Promise<{ ipv4: string | null; ipv6: string | null }> {
  const { snapshot } = await inspectHost(conn(), { ruleName: "web" });
  return { ipv4: snapshot.ipv4, ipv6: snapshot.ipv6 };
}

/** Packets our chain let through by `-i <iface>` (iptables' counter on that exemption). */
async function exempted(iface: string): Promise<number> {
  const out = await sh(`iptables -t filter -L DPA-web -v -x -n`);
  const row = out.split("\n").find((l) => l.trim().split(/\s+/)[5] === iface);
  return row === undefined ? -1 : Number(row.trim().split(/\s+/)[0]);
}

test("a client arriving through the host's br-lan uplink is kept out unless listed; containers' own traffic still flows", async () => {
  const [outsider, listed] = lab.clients;
  // Before: the port is open to both clients, and they arrive on br-lan.
  expect(await lab.probe(outsider, h, 8080, "tcp")).toBe(true);
  expect(await lab.probe(listed, h, 8080, "tcp")).toBe(true);

  const s = spec([listed.ipv4]);
  expect((await syncHost(conn(), syncOptions(s))).applied).toBe(true);
  expect(await lab.probe(outsider, h, 8080, "tcp")).toBe(false);
  expect(await lab.probe(listed, h, 8080, "tcp")).toBe(true);

  const chain = await sh(`iptables-save -t filter | grep -- '-A DPA-web '`);
  expect(chain).not.toMatch(/-i br-lan|-i br-\+/);
  const appBridge = (await sh(`docker network inspect -f '{{.Id}}' appnet`)).trim().slice(0, 12);
  expect(chain).toContain(`-A DPA-web -i br-${appBridge} `);
  expect(chain).toContain(`-A DPA-web -i docker0 `);

  // Containers' own outbound connections to remote port 8080 (the policed port: the jump's
  // --ctorigdstport has no direction), from docker0 and from the user-defined network, pass
  // by their bridge's exemption; and containers of one network still reach each other.
  expect(await lab.containerProbe(h, 8080, "tcp")).toBe(true);
  expect(await fromContainer("peer1", lab.outside.ipv4, 8080)).toBe(true);
  expect(await exempted(`br-${appBridge}`)).toBeGreaterThan(0);
  expect(await exempted("docker0")).toBeGreaterThan(0);
  const peer2 = (await sh(`docker inspect -f '{{.NetworkSettings.Networks.appnet.IPAddress}}' peer2`)).trim();
  expect(await fromContainer("peer1", peer2, 8080)).toBe(true);
});

test("a Docker network made or removed later is drift, and the next apply follows it", async () => {
  const s = spec([lab.clients[1].ipv4]);
  expect(planAllowlist(await liveV4(), s, "web").inSync).toBe(true);

  await sh(`docker network create --subnet 172.31.0.0/16 laternet >/dev/null`);
  const id = (await sh(`docker network inspect -f '{{.Id}}' laternet`)).trim().slice(0, 12);
  const added = planAllowlist(await liveV4(), s, "web");
  expect(added.inSync).toBe(false);
  expect(added.changes).toEqual([`+ [ipv4] -A DPA-web -i br-${id} -m comment --comment "dpa:web" -j RETURN`]);
  expect((await syncHost(conn(), syncOptions(s))).applied).toBe(true);
  expect(planAllowlist(await liveV4(), s, "web").inSync).toBe(true);

  await sh(`docker network rm laternet >/dev/null`);
  const removed = planAllowlist(await liveV4(), s, "web");
  expect(removed.changes).toEqual([
    `- [ipv4] -A DPA-web -i br-${id} -m comment --comment "dpa:web" -j RETURN`,
  ]);
  expect((await syncHost(conn(), syncOptions(s))).applied).toBe(true);
  expect(planAllowlist(await liveV4(), s, "web").inSync).toBe(true);
  // The outsider stays out throughout.
  expect(await lab.probe(lab.clients[0], h, 8080, "tcp")).toBe(false);
});

test("removing a source cuts its live flow: the uplink's subnet is not a Docker bridge's", async () => {
  const [c0, c1] = lab.clients;
  const udp = (sources: string[]) => {
    const v = validateAllowlist({ port: 5353, protocols: ["udp"], sources, ruleName: "dns" }, "dns");
    if (!v.ok) throw new Error(JSON.stringify(v.failures));
    return v.spec;
  };
  expect((await syncHost(conn(), syncOptions(udp([c0.ipv4, c1.ipv4])))).applied).toBe(true);
  const flow = udpFlow(c0, h, 41200);
  flows.push(flow);
  expect(await repliesDuring(flow, 1500)).toBeGreaterThan(3);

  const cut = await syncHost(conn(), syncOptions(udp([c1.ipv4])));
  expect(cut.applied).toBe(true);
  expect(cut.conntrackDeleted).toBeGreaterThanOrEqual(1);
  // Answers already on the way when the flow was cut are counted before the window opens.
  await flow.settled();
  expect(await repliesDuring(flow, 1500)).toBe(0);
  expect(await lab.probe(c1, h, 5353, "udp")).toBe(true);
});
