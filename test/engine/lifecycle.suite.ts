/**
 * The whole life of DockerPortAllowlists through the REAL Pulumi CLI against a REAL Docker host
 * (dockerd in a lab namespace, reached over SSH), judged by real traffic from client namespaces:
 * preview --diff shows rule lines, up, no-change up, drift by hand found by refresh and repaired
 * by up, an edit that moves access from one client to another, a list grown past the ipset
 * threshold (preview of the set's lines, the sources in an ipset) and back, destroy back to the original
 * DOCKER-USER. TCP and UDP, IPv4 and IPv6 (IPv6 clients of IPv4-only containers, through
 * docker-proxy), root and a sudo user; a foreign rule survives it all and the persisted rules file
 * equals the live rules after every step. The sudo user's three allowlists share one SSH
 * connection per command; root's has its own.
 *
 * One suite, run against each Docker by its own file: lifecycle.test.ts (Docker 29, the Docker
 * people run) and lifecycle-docker20.test.ts (20.10, the compatibility leg). Docker 29's nftables
 * backend has its own: nftables.test.ts.
 */
import { comparableSave, startLab, type DockerVersion, type Lab, type LabHost } from "../../lab";
import { SET_THRESHOLD, formatCidr, parseAddress, parseCidr, setElement } from "../../provider/core";
import { allowlistProject, buildPackage, PulumiProject, reachWebAndDns, webAndDns } from "./support";

export function lifecycleSuite(dockerVersion: DockerVersion): void {
  jest.setTimeout(900_000);

  let lab: Lab;
  let proj: PulumiProject;
  let h: LabHost;
  const FOREIGN = "-A DOCKER-USER -s 198.18.254.0/24 -j DROP";

  /** Allowlists of the sudo user that no traffic test looks at: with dns, three on one connection. */
  const QUIET = [
    { name: "mail", port: 2525, protocols: ["tcp"] },
    { name: "ntp", port: 1123, protocols: ["udp"] },
  ];

  function declare(allowed: { web: string[]; dns: string[] }): string {
    const connection = { host: h.ipv4, hostKey: h.hostKey };
    return JSON.stringify([
      ...QUIET.map(({ name, ...args }) => ({
        name,
        args: {
          connection: { ...connection, user: lab.users.sudo },
          ...args,
          sources: ["198.18.250.0/24"],
          ipv6: "off",
        },
      })),
      ...webAndDns(lab, h, allowed, { ipv6: "off" }),
    ]);
  }

  async function filterTable(cmd: "iptables-save" | "ip6tables-save"): Promise<string> {
    const r = await lab.hostExec(h, `${cmd} -t filter`);
    expect(r.code).toBe(0);
    return comparableSave(r.stdout);
  }

  /** The saved rules equal the live rules (all tables, ignoring counters and comments). */
  async function expectPersisted(): Promise<void> {
    for (const [save, file] of [
      ["iptables-save", "/etc/iptables/rules.v4"],
      ["ip6tables-save", "/etc/iptables/rules.v6"],
    ]) {
      const live = comparableSave((await lab.hostExec(h, save)).stdout);
      const saved = comparableSave((await lab.hostExec(h, `cat ${file}`)).stdout);
      expect(saved).toBe(live);
    }
  }

  /** Which of (client, family, proto) reach the host's published ports. */
  const reach = () => reachWebAndDns(lab, h);
  /** What `reach` finds when only c1 is allowed (web over IPv4 and IPv6, dns over IPv4). */
  const C1_ONLY = {
    "c0 tcp4": false,
    "c0 tcp6": false,
    "c0 udp4": false,
    "c1 tcp4": true,
    "c1 tcp6": true,
    "c1 udp4": true,
    "container tcp out": true,
    "container udp out": true,
  };

  /** An address as iptables-save prints it as a source (canonical, with prefix length). */
  function src(address: string): string {
    const c = parseAddress(address);
    if (c === undefined) throw new Error(`not an address: ${address}`);
    return formatCidr(c);
  }

  let before4: string;
  let before6: string;

  beforeAll(async () => {
    const packageDir = buildPackage();
    // Docker's defaults, as most hosts run: the clients have IPv6 addresses, the containers are
    // IPv4-only, so IPv6 clients end in docker-proxy through ip6tables INPUT (the path that used to
    // walk around the allowlist); they must be kept out and let in exactly like IPv4 ones. Docker's
    // own IPv6 (DNAT through ip6tables DOCKER-USER) is covered by test/host/flows.lab.test.ts.
    lab = await startLab({ docker: 1, light: 0, clients: 2, ipv6: true, dockerIpv6: false, dockerVersion });
    expect(lab.hosts[0].dockerVersion).toBe(dockerVersion);
    h = lab.hosts[0];
    // A rule someone made by hand before the stack existed: it must survive everything.
    expect(
      (
        await lab.hostExec(
          h,
          `iptables ${FOREIGN.replace("-A", "-I").replace("DOCKER-USER", "DOCKER-USER 1")}`,
        )
      ).code,
    ).toBe(0);
    before4 = await filterTable("iptables-save");
    before6 = await filterTable("ip6tables-save");
    const [c0] = lab.clients;
    proj = await allowlistProject(lab, packageDir, declare({ web: [c0.ipv4, c0.ipv6!], dns: [c0.ipv4] }));
  });

  afterAll(async () => {
    await proj?.dispose();
    await lab?.down();
  });

  describe(`DockerPortAllowlist through the real engine on a real Docker ${dockerVersion} host`, () => {
    test("everything is open before the stack exists", async () => {
      expect(await reach()).toEqual({
        "c0 tcp4": true,
        "c0 tcp6": true,
        "c0 udp4": true,
        "c1 tcp4": true,
        "c1 tcp6": true,
        "c1 udp4": true,
        "container tcp out": true,
        "container udp out": true,
      });
    });

    test("preview --diff shows the exact rule lines and changes nothing", async () => {
      const [c0] = lab.clients;
      const r = await proj.preview();
      expect(r.stdout).toContain(
        `-A DPA-web -s ${src(c0.ipv4)} -m comment --comment \\"dpa:web\\" -j RETURN`,
      );
      expect(r.stdout).toContain(
        `-A DPA-web -s ${src(c0.ipv6!)} -m comment --comment \\"dpa:web\\" -j RETURN`,
      );
      expect(r.stdout).toContain(
        `-A DOCKER-USER -p udp -m conntrack --ctorigdstport 5353 -m comment --comment \\"dpa:dns\\" -j DPA-dns`,
      );
      expect(await filterTable("iptables-save")).toBe(before4);
    });

    test("up applies with one SSH connection per host and user, at most two round trips per resource; traffic follows", async () => {
      await proj.up();
      const outputs = (await proj.stackOutputs()).allowlists as Record<
        string,
        { lastOperation: Record<string, number> & { applied: boolean; replanned: boolean } }
      >;
      const sudoers = ["dns", ...QUIET.map((q) => q.name)];
      for (const name of ["web", ...sudoers]) {
        // All run in parallel on the same host: the host lock, held from read to commit, queues
        // them, so none has to re-plan.
        expect(outputs[name].lastOperation).toMatchObject({ roundTrips: 2, applied: true, replanned: false });
        process.stdout.write(`up on ${h.ipv4} for ${name}: ${JSON.stringify(outputs[name].lastOperation)}\n`);
      }
      // root's allowlist dials its own connection; the sudo user's three share one: in this up,
      // one of them dialed it and the two others ran on it.
      expect(outputs.web.lastOperation).toMatchObject({ connections: 1, reusedConnections: 0 });
      const sum = (k: "connections" | "reusedConnections") =>
        sudoers.reduce((n, name) => n + outputs[name].lastOperation[k], 0);
      expect({ connections: sum("connections"), reusedConnections: sum("reusedConnections") }).toEqual({
        connections: 1,
        reusedConnections: 2,
      });
      expect(await reach()).toEqual({
        "c0 tcp4": true,
        "c0 tcp6": true,
        "c0 udp4": true,
        "c1 tcp4": false,
        "c1 tcp6": false,
        "c1 udp4": false,
        "container tcp out": true,
        "container udp out": true,
      });
      expect(await filterTable("iptables-save")).toContain(FOREIGN);
      await expectPersisted();
    });

    test("the state holds no credential in plain text", async () => {
      const r = await proj.run(["stack", "export"], { check: true });
      const keyBody = lab.clientKey.privateKey.split("\n")[1];
      expect(r.stdout).not.toContain(keyBody);
      expect(r.stdout).toContain("4dabf18193072939515e22adb298388d"); // Pulumi's secret signature
    });

    test("up and refresh right after find nothing to change", async () => {
      await proj.up(["--expect-no-changes"]);
      await proj.refresh(["--expect-no-changes"]);
    });

    test("refresh records Docker's bridges in the state's inputs, from where the next preview renders them", async () => {
      const r = await proj.run(["stack", "export"], { check: true });
      const resources = (
        JSON.parse(r.stdout) as {
          deployment: {
            resources: { urn: string; inputs?: Record<string, unknown>; outputs?: Record<string, unknown> }[];
          };
        }
      ).deployment.resources;
      const web = resources.find((x) => x.urn.endsWith("::web"))!;
      // Docker's defaults: docker0 in IPv4; no Docker chains (so no bridge) in ip6tables. The first
      // preview guessed docker0 in both; the up and refresh above found nothing to change all the same.
      const bridges = { ipv4: ["docker0"], ipv6: [] };
      expect(web.outputs?.dockerBridges).toEqual(bridges);
      expect(web.inputs?.dockerBridges).toEqual(bridges);
    });

    test("a rule deleted by hand is found by refresh and repaired by up", async () => {
      const [c0] = lab.clients;
      const line = `-s ${src(c0.ipv4)} -m comment --comment dpa:web -j RETURN`;
      expect((await lab.hostExec(h, `iptables -D DPA-web ${line}`)).code).toBe(0);
      expect(await lab.probe(c0, h, 8080, "tcp", 4)).toBe(false);
      const refresh = await proj.refresh(["--diff"]);
      expect(refresh.stdout).toContain(`-A DPA-web -s ${src(c0.ipv4)}`);
      const preview = await proj.preview();
      expect(preview.stdout).toMatch(/~ 1 to update|1 to update/);
      expect(preview.stdout).toContain(`-A DPA-web -s ${src(c0.ipv4)}`);
      await proj.up();
      expect(await lab.probe(c0, h, 8080, "tcp", 4)).toBe(true);
      await proj.up(["--expect-no-changes"]);
      await expectPersisted();
    });

    test("an edit previews exactly the added and removed source, then moves access", async () => {
      const [c0, c1] = lab.clients;
      await proj.setConfig("allowlists", declare({ web: [c1.ipv4, c1.ipv6!], dns: [c1.ipv4] }));
      const preview = await proj.preview();
      process.stdout.write(`--- pulumi preview --diff of the edit ---\n${preview.stdout}\n`);
      for (const c of [c0, c1]) {
        expect(preview.stdout).toContain(`-A DPA-web -s ${src(c.ipv4)}`);
        expect(preview.stdout).toContain(`-A DPA-web -s ${src(c.ipv6!)}`);
        expect(preview.stdout).toContain(`-A DPA-dns -s ${src(c.ipv4)}`);
      }
      expect(preview.stdout).toContain("2 to update");
      await proj.up();
      expect(await reach()).toEqual(C1_ONLY);
      await expectPersisted();
    });

    test(`a list grown to ${SET_THRESHOLD} sources: the preview shows the ipset's lines, up moves the sources into it, traffic unchanged`, async () => {
      const [, c1] = lab.clients;
      const filler = Array.from({ length: SET_THRESHOLD - 1 }, (_, i) => `203.0.113.${i}`);
      const small = { web: [c1.ipv4, c1.ipv6!], dns: [c1.ipv4] };
      await proj.setConfig("allowlists", declare({ ...small, web: [...small.web, ...filler] }));
      const preview = await proj.preview();
      expect(preview.stdout).toContain("-A DPA-web -m set --match-set dpa4-web src");
      expect(preview.stdout).toContain("create dpa4-web hash:net family inet");
      expect(preview.stdout).toContain(`add dpa4-web ${setElement(parseCidr(c1.ipv4)!)}`);
      expect(preview.stdout).toContain("add dpa4-web 203.0.113.98");
      await proj.up();
      const save = await filterTable("iptables-save");
      expect(save).toContain("--match-set dpa4-web src");
      expect(save).not.toMatch(/^-A DPA-web -s /m);
      expect((await lab.hostExec(h, "ipset save dpa4-web | grep -c '^add '")).stdout.trim()).toBe(
        String(SET_THRESHOLD),
      );
      // The rules file holds the set's rule written out per source (it loads at boot without sets).
      const file = (await lab.hostExec(h, "cat /etc/iptables/rules.v4")).stdout;
      expect(file.match(/^-A DPA-web -s /gm)).toHaveLength(SET_THRESHOLD);
      expect(await reach()).toEqual(C1_ONLY);
      await proj.up(["--expect-no-changes"]);
      await proj.refresh(["--expect-no-changes"]);
      // Back to the short list: rules per source, the set destroyed.
      await proj.setConfig("allowlists", declare(small));
      await proj.up();
      expect((await lab.hostExec(h, "ipset list -n")).stdout).not.toContain("dpa4-web");
      await expectPersisted();
    });

    test("refresh reports a FORWARD chain that reaches DOCKER-USER too late (fail-open) and up repairs it", async () => {
      const [c0] = lab.clients;
      // As after a Docker restart with DOCKER-USER restored at boot: Docker's jump lands last,
      // after Docker's own ACCEPT rules, and the allowlist silently stops filtering.
      expect(
        (await lab.hostExec(h, "iptables -D FORWARD -j DOCKER-USER && iptables -A FORWARD -j DOCKER-USER"))
          .code,
      ).toBe(0);
      expect(await lab.probe(c0, h, 8080, "tcp", 4)).toBe(true);
      const refresh = await proj.refresh(["--diff"]);
      expect(refresh.stdout).toContain("fail-open");
      expect(refresh.stdout).toMatch(/inSync\s*: true => false/);
      const up = await proj.up();
      expect(up.stdout).toMatch(/4 updated/);
      expect(await lab.probe(c0, h, 8080, "tcp", 4)).toBe(false);
      const forward = (await lab.hostExec(h, "iptables -S FORWARD")).stdout.split("\n");
      expect(forward[1]).toBe('-A FORWARD -m comment --comment "dpa::forward" -j DOCKER-USER');
      await expectPersisted();
      await proj.refresh(["--expect-no-changes"]);
      // Put Docker's own jump back in front (as a Docker restart would), so destroy can be
      // compared with the original layout.
      expect(
        (await lab.hostExec(h, "iptables -D FORWARD -j DOCKER-USER && iptables -I FORWARD 2 -j DOCKER-USER"))
          .code,
      ).toBe(0);
    });

    test("destroy puts DOCKER-USER back as it was, foreign rule included, and saves that", async () => {
      await proj.destroy();
      expect(await filterTable("iptables-save")).toBe(before4);
      expect(await filterTable("ip6tables-save")).toBe(before6);
      await expectPersisted();
      expect((await reach())["c1 tcp4"]).toBe(true);
    });
  });
}
