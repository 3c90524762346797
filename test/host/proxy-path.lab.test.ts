/**
 * The docker-proxy path with real traffic (issue 8, item 1): a Docker host whose namespace and
 * clients have IPv6 addresses but whose dockerd keeps Docker's default IPv6 off, so containers
 * are IPv4-only and docker-proxy serves 8080 on `[::]`. An IPv6 client's connection then ends in
 * docker-proxy through ip6tables INPUT and never passes DOCKER-USER; the allowlist's INPUT jumps
 * must keep it out exactly like IPv4, and deleting the allowlist must give everything back.
 *
 * Two legs: Docker 20.10 (which then builds no ip6tables chains at all) and Docker 29 with the
 * iptables backend (ip6tables on by default: its ip6tables chains exist, but the docker-proxy
 * path still passes INPUT only).
 *
 * Run: npx jest test/host/proxy-path.lab.test.ts --selectProjects lab
 */
import { startLab, type DockerVersion, type Lab, type LabHost } from "../../lab";
import { validateAllowlist, type AllowlistSpec } from "../../provider/core";
import type { ConnectionArgs } from "../../provider/args";
import { syncHost } from "../../provider/host";
import { syncOptions } from "./support";

jest.setTimeout(240_000);

/** Per Docker version: whether its daemon, IPv6 off, still makes Docker chains in ip6tables. */
const LEGS: [DockerVersion, boolean][] = [
  ["20.10", false],
  ["29", true],
];

let lab: Lab;
let host: LabHost;

function conn(h: LabHost): ConnectionArgs {
  return { host: h.ipv4, privateKey: lab.clientKey.privateKey, hostKey: h.hostKey };
}

function spec(sources: string[]): AllowlistSpec {
  const v = validateAllowlist({ port: 8080, sources }, "proxy");
  if (!v.ok) throw new Error(JSON.stringify(v.failures));
  return v.spec;
}

/** ip6tables' INPUT and every ip6tables chain header, as the host prints them. */
async function input6(): Promise<string[]> {
  const r = await lab.hostExec(host, "ip6tables-save -t filter");
  expect(r.code).toBe(0);
  return r.stdout.split("\n").filter((l) => l.startsWith("-A INPUT ") || l.startsWith(":"));
}

describe.each(LEGS)("Docker %s", (dockerVersion, v6DockerChains) => {
  beforeAll(async () => {
    lab = await startLab({ docker: 1, light: 0, clients: 2, ipv6: true, dockerIpv6: false, dockerVersion });
    host = lab.hosts[0];
  });
  afterAll(async () => {
    await lab?.down();
  });

  test(`the lab host serves 8080 over IPv6 through docker-proxy, ${v6DockerChains ? "with" : "with no"} Docker chains in ip6tables`, async () => {
    expect(host).toMatchObject({ dockerIpv6: false, dockerVersion });
    const v6 = await lab.hostExec(host, "ip6tables-save -t filter");
    expect(/^:DOCKER/m.test(v6.stdout)).toBe(v6DockerChains);
    const listening = await lab.hostExec(host, "ss -Hltn 'sport = :8080'");
    expect(listening.stdout).toMatch(/\[::\]:8080|\*:8080/);
  });

  test("IPv4-only sources keep an IPv6 client out over both families; its IPv6 address lets it in; delete restores", async () => {
    const [allowed, other] = lab.clients;
    const before = await input6();
    // The probes can fail and succeed: before any allowlist, everyone gets in, over both families.
    for (const family of [4, 6] as const)
      expect(await lab.probe(other, host, 8080, "tcp", family)).toBe(true);

    // Only IPv4 sources: the IPv6 path is policed too, and lets no IPv6 client in (fail closed).
    const v4only = spec([allowed.ipv4]);
    const created = await syncHost(conn(host), syncOptions(v4only));
    expect(created.applied).toBe(true);
    const jump = '-A INPUT ! -i lo -p tcp -m tcp --dport 8080 -m comment --comment "dpa:proxy" -j DPA-proxy';
    expect((await input6()).filter((l) => l.startsWith("-A INPUT "))[0]).toBe(jump);
    expect(await lab.probe(allowed, host, 8080, "tcp", 4)).toBe(true);
    expect(await lab.probe(other, host, 8080, "tcp", 4)).toBe(false);
    expect(await lab.probe(other, host, 8080, "tcp", 6)).toBe(false);
    expect(await lab.probe(allowed, host, 8080, "tcp", 6)).toBe(false);

    // The allowed client's IPv6 address in the sources: it gets in over IPv6, the other does not.
    const both = spec([allowed.ipv4, allowed.ipv6!]);
    expect((await syncHost(conn(host), syncOptions(both))).applied).toBe(true);
    expect(await lab.probe(allowed, host, 8080, "tcp", 6)).toBe(true);
    expect(await lab.probe(other, host, 8080, "tcp", 6)).toBe(false);
    expect(await lab.probe(allowed, host, 8080, "tcp", 4)).toBe(true);
    expect(await lab.probe(other, host, 8080, "tcp", 4)).toBe(false);

    // Delete: INPUT exactly as before, nothing of ours left, everyone back in over both families.
    expect((await syncHost(conn(host), syncOptions("proxy"))).applied).toBe(true);
    expect(await input6()).toEqual(before);
    const v6 = await lab.hostExec(host, "ip6tables-save -t filter");
    const v4 = await lab.hostExec(host, "iptables-save -t filter");
    expect(v6.stdout + v4.stdout).not.toContain("dpa:");
    for (const family of [4, 6] as const)
      expect(await lab.probe(other, host, 8080, "tcp", family)).toBe(true);
  });
});
