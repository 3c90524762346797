/**
 * The package as a component package, used from Pulumi YAML (examples/yaml) through the REAL
 * Pulumi CLI, its YAML language host and our Node.js language host (RunPlugin), against REAL Docker
 * hosts of a lab, judged by real traffic. The package is packed and installed by npm outside the
 * repository, as a user gets it, and the example's `packages:` points there; the YAML project has
 * no node_modules, so the dynamic resources run only through the dynamic-provider plugin's
 * fallback to the project's local packages (pulumi/pulumi#5455).
 *
 * Also `pulumi package get-schema` of that copy: every property of the schema is described.
 */
import * as fs from "fs";
import * as path from "path";

import { startLab, type Lab, type LabHost } from "../../lab";
import {
  dpaLines,
  installPackedPackage,
  packPackage,
  PulumiProject,
  reach,
  repoRoot,
  type InstalledPackage,
  type PackedPackage,
} from "./support";

jest.setTimeout(900_000);

const ALLOWLIST_TYPE = "docker-port-allowlist:index:Allowlist";
const FLEET_TYPE = "docker-port-allowlist:index:AllowlistFleet";

let packed: PackedPackage;
let installed: InstalledPackage;
let lab: Lab;
let proj: PulumiProject;
let a: LabHost;
let b: LabHost;

/** examples/yaml/Pulumi.yaml with its package path pointing at the installed copy. */
function exampleYaml(packageDir: string): string {
  const text = fs.readFileSync(path.join(repoRoot, "examples", "yaml", "Pulumi.yaml"), "utf8");
  const line = "  docker-port-allowlist: ../..\n";
  if (!text.includes(line)) throw new Error(`examples/yaml/Pulumi.yaml no longer holds the line ${line}`);
  return text.replace(line, `  docker-port-allowlist: ${packageDir}\n`);
}

beforeAll(async () => {
  packed = packPackage();
  installed = installPackedPackage(packed.tarball);
  lab = await startLab({ docker: 2, light: 0, clients: 2 });
  [a, b] = lab.hosts;
  const [c0, c1] = lab.clients;
  proj = await PulumiProject.create({
    yaml: exampleYaml(installed.packageDir),
    projectName: "dpa-yaml",
    // The key itself is in no config: the program reads the file and makes it secret (fn::secret).
    config: {
      hostA: a.ipv4,
      hostAKey: a.hostKey,
      hostB: b.ipv4,
      hostBKey: b.hostKey,
      sshKeyFile: lab.clientKey.privateKeyPath,
      webSource: c0.ipv4,
      dnsSource: c1.ipv4,
    },
  });
});

afterAll(async () => {
  await proj?.dispose();
  await lab?.down();
  installed?.dispose();
  packed?.dispose();
});

describe("pulumi package get-schema of the installed package", () => {
  test("names both components and describes every property", async () => {
    const r = await proj.run(["package", "get-schema", installed.packageDir], { check: true });
    interface Property {
      description?: string;
    }
    interface Described {
      description?: string;
      properties?: Record<string, Property>;
      inputProperties?: Record<string, Property>;
      enum?: ({ name: string } & Property)[];
    }
    const schema = JSON.parse(r.stdout) as {
      name: string;
      resources: Record<string, Described>;
      types: Record<string, Described>;
    };
    expect(schema.name).toBe("docker-port-allowlist");
    expect(Object.keys(schema.resources).sort()).toEqual([ALLOWLIST_TYPE, FLEET_TYPE]);
    const undescribed: string[] = [];
    let described = 0;
    const check = (where: string, p: Property) => {
      if (p.description === undefined || p.description.trim() === "") undescribed.push(where);
      else described++;
    };
    for (const [kind, entries] of [
      ["resources", schema.resources],
      ["types", schema.types],
    ] as const) {
      for (const [token, def] of Object.entries(entries)) {
        // @pulumi/pulumi 3.248's schema generator drops the TSDoc of types (not of their properties).
        if (kind === "resources") check(`${kind}.${token}`, def);
        for (const [name, p] of Object.entries(def.properties ?? {})) check(`${token}.properties.${name}`, p);
        for (const [name, p] of Object.entries(def.inputProperties ?? {}))
          check(`${token}.inputProperties.${name}`, p);
        for (const v of def.enum ?? []) check(`${token}.enum.${v.name}`, v);
      }
    }
    expect(undescribed).toEqual([]);
    // A schema without these would pass the check above vacuously.
    expect(Object.keys(schema.resources[ALLOWLIST_TYPE].inputProperties ?? {})).toEqual(
      expect.arrayContaining(["connection", "port", "portRange", "protocols", "sources"]),
    );
    expect(described).toBeGreaterThan(60);
  });
});

describe("examples/yaml through the real CLI", () => {
  test("preview --diff shows the exact rule lines of both components, the key [secret], and touches nothing", async () => {
    const [c0, c1] = lab.clients;
    const r = await proj.preview();
    expect(r.stdout).toContain(`+ ${ALLOWLIST_TYPE}: (create)`);
    expect(r.stdout).toContain(`+ ${FLEET_TYPE}: (create)`);
    expect(r.stdout).toContain(`-A DPA-web -s ${c0.ipv4}/32 -m comment --comment \\"dpa:web\\" -j RETURN`);
    expect(r.stdout).toContain(`-A DPA-dns -s ${c1.ipv4}/32 -m comment --comment \\"dpa:dns\\" -j RETURN`);
    expect(r.stdout).toContain(
      `-A DOCKER-USER -p udp -m conntrack --ctorigdstport 5353 -m comment --comment \\"dpa:dns\\" -j DPA-dns`,
    );
    expect(r.stdout).toContain("privateKey: [secret]");
    expect(r.stdout).not.toContain(lab.clientKey.privateKey.split("\n")[1]);
    expect(await dpaLines(lab, a)).toEqual([]);
    expect(await dpaLines(lab, b)).toEqual([]);
  });

  test("up lets in only the allowed client: 8080/tcp on host A for one, 5353/udp on both hosts for the other", async () => {
    await proj.up();
    const [c0, c1] = lab.clients;
    expect(await reach(lab, a, 8080, "tcp")).toEqual({ [c0.name]: true, [c1.name]: false });
    expect(await reach(lab, a, 5353, "udp")).toEqual({ [c0.name]: false, [c1.name]: true });
    expect(await reach(lab, b, 5353, "udp")).toEqual({ [c0.name]: false, [c1.name]: true });
    // Host B has no web allowlist: its 8080 stays open to everyone.
    expect(await reach(lab, b, 8080, "tcp")).toEqual({ [c0.name]: true, [c1.name]: true });
    const outputs = await proj.stackOutputs();
    expect(outputs.edgeBatches).toEqual([["a"], ["b"]]);
    expect(outputs.unpolicedPorts).toMatchObject({
      b: expect.arrayContaining([expect.stringMatching(/^8080\/tcp/)]),
    });
    // Docker 29 with its default (iptables) backend on both hosts.
    expect(outputs.firewallBackends).toEqual({ a: "iptables", b: "iptables" });
  });

  test("a second up changes nothing", async () => {
    const r = await proj.up(["--expect-no-changes"]);
    expect(r.stdout).not.toMatch(/[+~-] +pulumi-nodejs:dynamic/);
  });

  test("the state holds the key only as a secret", async () => {
    const exported = await proj.run(["stack", "export"], { check: true });
    for (const line of lab.clientKey.privateKey.split("\n").filter((l) => l.length > 20)) {
      expect(exported.stdout).not.toContain(line);
    }
    type Side = { connection?: { privateKey?: unknown } };
    type Exported = { deployment: { resources: { type: string; inputs?: Side; outputs?: Side }[] } };
    const allowlists = (JSON.parse(exported.stdout) as Exported).deployment.resources.filter((r) =>
      r.type.startsWith("pulumi-nodejs:dynamic/"),
    );
    expect(allowlists).toHaveLength(3); // web, edge-a-dns, edge-b-dns
    for (const r of allowlists) {
      for (const side of [r.inputs!, r.outputs!])
        expect(side.connection?.privateKey).toHaveProperty("ciphertext");
    }
  });

  test("destroy removes every rule from both hosts", async () => {
    await proj.destroy();
    expect(await dpaLines(lab, a)).toEqual([]);
    expect(await dpaLines(lab, b)).toEqual([]);
    const [c0, c1] = lab.clients;
    expect(await reach(lab, a, 8080, "tcp")).toEqual({ [c0.name]: true, [c1.name]: true });
  });
});
