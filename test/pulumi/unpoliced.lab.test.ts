/**
 * `unpolicedPorts` on a real Docker host (issue 11, item 5): the lab host publishes 8080/tcp and
 * 5353/udp; with an allowlist for 8080 only, a create and a refresh name exactly 5353/udp, over
 * IPv4 (DNAT) and IPv6 (dockerd keeps Docker's default IPv6 off, so docker-proxy serves the
 * IPv4-only containers on `[::]`), and real packets agree: 5353/udp is open to a client no
 * allowlist lists, 8080/tcp is not. Once an allowlist covers 5353/udp too, none is named.
 *
 * Two legs: Docker 20.10 (no ip6tables chains at all) and Docker 29 (iptables backend); and a
 * refresh on Docker 29 with its nftables backend, where every published port is named.
 *
 * Run: flock /work/lab.lock npx jest test/pulumi/unpoliced.lab.test.ts --selectProjects lab
 */
import { startLab, type DockerVersion, type Lab } from "../../lab";
import { check, create, read, remove, type Outputs } from "../../provider/pulumi/lifecycle";
import { captureStderr } from "../host/support";

jest.setTimeout(240_000);

const LEGS: DockerVersion[] = ["20.10", "29"];

let lab: Lab;

describe.each(LEGS)("Docker %s", (dockerVersion) => {
  beforeAll(async () => {
    lab = await startLab({ docker: 1, light: 0, clients: 1, ipv6: true, dockerIpv6: false, dockerVersion });
  });
  afterAll(async () => {
    await lab?.down();
  });

  test("an allowlist for one of two published ports: the output names exactly the other, until it has one too", async () => {
    const host = lab.hosts[0];
    const [client] = lab.clients;
    const connection = { host: host.ipv4, hostKey: host.hostKey, privateKey: lab.clientKey.privateKey };
    const declare = (resourceName: string, args: Record<string, unknown>) =>
      check({}, { connection, resourceName, persist: false, ...args }).inputs!;
    const stderr = captureStderr();

    // The client is in no allowlist: it gets in wherever none polices.
    const web = await create(declare("web", { port: 8080, sources: ["198.51.100.0/24"] }));
    const dns5353 = /^5353\/udp ipv4 -> 172\.17\.0\.\d+:53$/;
    const proxied = /^5353\/udp ipv6 \(docker-proxy\) -> 172\.17\.0\.\d+:53$/;
    expect(web.outs.unpolicedPorts).toEqual([expect.stringMatching(dns5353), expect.stringMatching(proxied)]);
    // The warnings of the create, on the engine's output (not in hostFindings: see Outputs).
    expect(stderr.filter((f) => f.includes("no allowlist polices"))).toEqual([
      expect.stringMatching(/\(create\): \[ipv4\] warning: Docker publishes a port .*: 5353\/udp ipv4 -> /),
      expect.stringMatching(/\(create\): \[ipv6\] warning: .*: 5353\/udp ipv6 \(docker-proxy\) -> /),
    ]);
    for (const family of [4, 6] as const) {
      expect(await lab.probe(client, host, 5353, "udp", family)).toBe(true);
      expect(await lab.probe(client, host, 8080, "tcp", family)).toBe(false);
    }
    const refreshed = await read(web.id, web.outs as unknown as Record<string, unknown>);
    expect(refreshed.props.unpolicedPorts).toEqual(web.outs.unpolicedPorts);

    const dns = await create(
      declare("dns", { port: 5353, protocols: ["udp"], sources: ["198.51.100.0/24"] }),
    );
    expect(dns.outs.unpolicedPorts).toEqual([]);
    for (const family of [4, 6] as const)
      expect(await lab.probe(client, host, 5353, "udp", family)).toBe(false);
    stderr.length = 0;
    const later = await read(web.id, refreshed.props as unknown as Record<string, unknown>);
    expect((later.props as Outputs).unpolicedPorts).toEqual([]);
    expect(stderr.join("")).not.toContain("no allowlist polices");

    await remove(dns.id, dns.outs as unknown as Record<string, unknown>);
    await remove(web.id, web.outs as unknown as Record<string, unknown>);
    jest.restoreAllMocks();
  });
});

describe("Docker 29 with its nftables firewall backend", () => {
  beforeAll(async () => {
    lab = await startLab({
      docker: 1,
      light: 0,
      clients: 1,
      ipv6: true,
      dockerIpv6: false,
      dockerVersion: "29",
      firewallBackend: "nftables",
    });
  });
  afterAll(async () => {
    await lab?.down();
  });

  test("a refresh names every published port: no allowlist can police this host (no DOCKER-USER)", async () => {
    const host = lab.hosts[0];
    const [client] = lab.clients;
    const connection = { host: host.ipv4, hostKey: host.hostKey, privateKey: lab.clientKey.privateKey };
    // The state of an allowlist made while the host still ran the iptables backend.
    const props = check(
      {},
      { connection, resourceName: "web", port: 8080, sources: ["198.51.100.0/24"] },
    ).inputs!;
    const stderr = captureStderr();
    const refreshed = await read(`${host.ipv4}:22/web`, props);
    expect(refreshed.props.unpolicedPorts).toEqual([
      expect.stringMatching(/^8080\/tcp ipv4 -> 172\.17\.0\.\d+:80$/),
      expect.stringMatching(/^5353\/udp ipv4 -> 172\.17\.0\.\d+:53$/),
      expect.stringMatching(/^8080\/tcp ipv6 \(docker-proxy\) -> 172\.17\.0\.\d+:80$/),
      expect.stringMatching(/^5353\/udp ipv6 \(docker-proxy\) -> 172\.17\.0\.\d+:53$/),
    ]);
    expect(stderr.join("")).toContain("(read): [ipv4] warning: Docker publishes 2 ports on this host");
    // And they are open: the client is in no allowlist.
    for (const family of [4, 6] as const) {
      expect(await lab.probe(client, host, 8080, "tcp", family)).toBe(true);
      expect(await lab.probe(client, host, 5353, "udp", family)).toBe(true);
    }
    jest.restoreAllMocks();
  });
});
