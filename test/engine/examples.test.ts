/**
 * examples/single-host and examples/fleet, run as written through the REAL Pulumi CLI against REAL
 * Docker hosts of a lab, judged by real traffic: preview --diff, up, a no-change up, an edit, destroy;
 * for the fleet also the rollout order (canary, then batches) and a failing host that stops the
 * batches after it while the hosts before it keep their rules.
 */
import * as path from "path";

import { startLab, type Lab, type LabHost } from "../../lab";
import { buildPackage, dpaLines, PulumiProject, reach, repoRoot } from "./support";
import { DOCKER_PORT_ALLOWLIST_TYPE } from "../../provider/pulumi/resource";

jest.setTimeout(900_000);

let lab: Lab;

beforeAll(async () => {
  buildPackage(); // the examples import the compiled package by name
  lab = await startLab({ docker: 3, light: 0, clients: 3 });
});

afterAll(async () => {
  await lab?.down();
});

const example = (name: string) => path.join(repoRoot, "examples", name);

describe("examples/single-host", () => {
  let proj: PulumiProject;
  let h: LabHost;

  beforeAll(async () => {
    h = lab.hosts[0];
    const [c0] = lab.clients;
    proj = await PulumiProject.create({
      programDir: example("single-host"),
      projectName: "dpa-single-host",
      config: {
        connection: JSON.stringify({ host: h.ipv4, hostKey: h.hostKey }),
        privateKey: { value: lab.clientKey.privateKey, secret: true },
        sources: JSON.stringify([c0.ipv4, "198.19.128.0/17"]),
      },
    });
  });
  afterAll(async () => {
    await proj?.dispose();
  });

  test("preview --diff shows the exact rule lines and touches nothing", async () => {
    const [c0] = lab.clients;
    const r = await proj.preview();
    expect(r.stdout).toContain(`-A DPA-web -s ${c0.ipv4}/32 -m comment --comment \\"dpa:web\\" -j RETURN`);
    expect(r.stdout).toContain(`-A DPA-web -s 198.19.128.0/17 -m comment --comment \\"dpa:web\\" -j RETURN`);
    expect(r.stdout).toContain(
      `-A DOCKER-USER -p tcp -m conntrack --ctorigdstport 8080 -m comment --comment \\"dpa:web\\" -j DPA-web`,
    );
    expect(await dpaLines(lab, h)).toEqual([]);
  });

  test("up lets only the listed source in; the containers' own traffic still flows", async () => {
    await proj.up();
    const [c0, c1, c2] = lab.clients;
    expect(await reach(lab, h, 8080, "tcp")).toEqual({ [c0.name]: true, [c1.name]: false, [c2.name]: false });
    expect(await lab.containerProbe(h, 8080, "tcp")).toBe(true);
    const outputs = await proj.stackOutputs();
    expect(outputs.chain).toBe("DPA-web");
    expect((outputs.rules as { ipv4: string[] }).ipv4).toContain(
      `-A DPA-web -s ${c0.ipv4}/32 -m comment --comment "dpa:web" -j RETURN`,
    );
  });

  test("a second up changes nothing", async () => {
    await proj.up(["--expect-no-changes"]);
  });

  test("an edit of the sources moves access from one client to another", async () => {
    const [c0, c1, c2] = lab.clients;
    await proj.setConfig("sources", JSON.stringify([c1.ipv4]));
    const preview = await proj.preview();
    expect(preview.stdout).toContain(`-s ${c1.ipv4}/32`);
    await proj.up();
    expect(await reach(lab, h, 8080, "tcp")).toEqual({ [c0.name]: false, [c1.name]: true, [c2.name]: false });
  });

  test("destroy removes every rule it made and opens the port again", async () => {
    await proj.destroy();
    expect(await dpaLines(lab, h)).toEqual([]);
    expect(Object.values(await reach(lab, h, 8080, "tcp"))).toEqual([true, true, true]);
  });
});

describe("examples/fleet", () => {
  const hostsConfig = (overrides: Record<number, object> = {}) =>
    JSON.stringify(
      lab.hosts.map((h, i) => ({
        name: `edge-${i + 1}`,
        host: h.ipv4,
        hostKey: h.hostKeyFingerprint,
        ...(i === 2 ? { extraWebSources: [`${lab.clients[2].ipv4}/32`] } : {}),
        ...overrides[i],
      })),
    );
  const fleetConfig = (hosts: string, extra: Record<string, string> = {}) => ({
    hosts,
    privateKey: { value: lab.clientKey.privateKey, secret: true as const },
    webSources: JSON.stringify([lab.clients[0].ipv4]),
    dnsSources: JSON.stringify([lab.clients[1].ipv4]),
    ...extra,
  });

  describe("rolled out canary first, then two at a time", () => {
    let proj: PulumiProject;
    beforeAll(async () => {
      proj = await PulumiProject.create({
        programDir: example("fleet"),
        projectName: "dpa-fleet",
        config: fleetConfig(hostsConfig()),
      });
    });
    afterAll(async () => {
      await proj?.dispose();
    });

    test("preview --diff lists one allowlist per host and policy with its rule lines", async () => {
      const r = await proj.preview();
      for (const host of ["edge-1", "edge-2", "edge-3"]) {
        for (const policy of ["web", "dns"]) expect(r.stdout).toContain(`edge-${host}-${policy}`);
      }
      // The override (client 3 on edge-3 only) is in the preview; the outputs below show where.
      expect(r.stdout).toContain(
        `-A DPA-web -s ${lab.clients[2].ipv4}/32 -m comment --comment \\"dpa:web\\" -j RETURN`,
      );
    });

    test("up runs the canary batch to the end before the next batch starts", async () => {
      const r = await proj.up();
      const lines = r.stdout.split("\n");
      const at = (name: string, what: "creating" | "created") =>
        lines.findIndex((l) => l.includes(` ${name} `) && l.includes(`${what} (`));
      const canaryDone = Math.max(at("edge-edge-1-web", "created"), at("edge-edge-1-dns", "created"));
      const nextStart = Math.min(
        ...["edge-2", "edge-3"].flatMap((h) => ["web", "dns"].map((p) => at(`edge-${h}-${p}`, "creating"))),
      );
      expect(canaryDone).toBeGreaterThan(-1);
      expect(nextStart).toBeGreaterThan(canaryDone);
      const outputs = await proj.stackOutputs();
      expect(outputs.batches).toEqual([["edge-1"], ["edge-2", "edge-3"]]);
      const rules = outputs.rules as Record<string, Record<string, { ipv4: string[] }>>;
      const override = `-A DPA-web -s ${lab.clients[2].ipv4}/32 -m comment --comment "dpa:web" -j RETURN`;
      expect(["edge-1", "edge-2", "edge-3"].map((h) => rules[h].web.ipv4.includes(override))).toEqual([
        false,
        false,
        true,
      ]);
    });

    test("traffic follows the policies and the per-host override on every host", async () => {
      const [c0, c1, c2] = lab.clients;
      for (const [i, h] of lab.hosts.entries()) {
        expect([i, await reach(lab, h, 8080, "tcp")]).toEqual([
          i,
          { [c0.name]: true, [c1.name]: false, [c2.name]: i === 2 },
        ]);
        expect([i, await reach(lab, h, 5353, "udp")]).toEqual([
          i,
          { [c0.name]: false, [c1.name]: true, [c2.name]: false },
        ]);
      }
    });

    test("a second up changes nothing, and destroy leaves no rule behind", async () => {
      await proj.up(["--expect-no-changes"]);
      await proj.destroy();
      for (const h of lab.hosts) expect(await dpaLines(lab, h)).toEqual([]);
    });
  });

  test("a failing host stops the batches after it; the hosts before it keep their rules", async () => {
    // edge-2 points at a closed port: its SSH dial fails; one host per batch after the canary.
    const proj = await PulumiProject.create({
      programDir: example("fleet"),
      projectName: "dpa-fleet",
      stack: "failing",
      config: fleetConfig(hostsConfig({ 1: { port: 2, dialErrorLimit: 1 } }), {
        rollout: JSON.stringify({ canaries: 1, batchSize: 1 }),
      }),
    });
    try {
      const r = await proj.run(["up", "--yes", "--skip-preview"]);
      expect(r.code).not.toBe(0);
      expect(r.stdout + r.stderr).toContain("edge-edge-2-");
      const [h1, h2, h3] = lab.hosts;
      expect(await dpaLines(lab, h1)).not.toEqual([]);
      expect(await dpaLines(lab, h2)).toEqual([]);
      expect(await dpaLines(lab, h3)).toEqual([]);
      const created = (await proj.resources(DOCKER_PORT_ALLOWLIST_TYPE)).map((x) => x.urn.split("::").pop());
      expect(created.sort()).toEqual(["edge-edge-1-dns", "edge-edge-1-web"]);
      await proj.destroy();
      expect(await dpaLines(lab, h1)).toEqual([]);
    } finally {
      await proj.dispose();
    }
  });
});
