/**
 * The package as a new user gets it, through the REAL Pulumi CLI: `npm pack` of a clean copy of the
 * repository (its `prepare` script must build the code), `npm install` of that tarball into a fresh
 * program directory outside the repository, then preview, up, a connection edit, a stack of 0.1.x
 * (the old type token) moved by `up`, and destroy, against a light lab host. Also what the engine
 * stores and shows for the connection: credentials secret, the other fields readable in the diff.
 */
import * as fs from "fs";
import * as path from "path";
import { startLab, type Lab, type LabHost } from "../../lab";
import { packPackage, PulumiProject, repoRoot, type PackedPackage } from "./support";

jest.setTimeout(600_000);

const NEW_TYPE = "pulumi-nodejs:dynamic/docker-port-allowlist:DockerPortAllowlist";
const OLD_TYPE = "pulumi-nodejs:dynamic:Resource";

// Written as a user would, with the Inputs the issue asked for: an Output among the sources, a
// connection field from config, a fleet whose policy sources and host extras are Outputs.
const PROGRAM = `import * as pulumi from "@pulumi/pulumi";
import {
  DOCKER_PORT_ALLOWLIST_TYPE,
  DockerPortAllowlist,
  DockerPortAllowlistFleet,
  type ConnectionArgs,
} from "docker-port-allowlist";

const config = new pulumi.Config();
const connection = {
  host: config.require("host"),
  hostKey: config.require("hostKey"),
  privateKey: config.requireSecret("privateKey"),
  perDialTimeout: config.requireNumber("perDialTimeout"),
};
const web = new DockerPortAllowlist("web", {
  connection,
  port: 8080,
  sources: [pulumi.output("198.18.200.0/24"), "2001:db8:200::/48"],
});
const { host: _host, ...shared } = connection;
new DockerPortAllowlistFleet("edge", {
  connection: shared,
  policies: [{ name: "dns", port: 5353, protocols: ["udp"], sources: [pulumi.output("198.18.201.1")] }],
  hosts: [{ name: "h1", connection: { host: connection.host }, extraSources: { dns: [pulumi.output("198.18.201.2")] } }],
});
const typed: ConnectionArgs = { host: "unused" };
export const chain = web.chain;
export const type = DOCKER_PORT_ALLOWLIST_TYPE + (typed.host === "unused" ? "" : "?");
`;

let packed: PackedPackage;
let lab: Lab;
let h: LabHost;
let proj: PulumiProject;
const took: Record<string, number> = {};

async function timed<T>(what: string, f: () => Promise<T> | T): Promise<T> {
  const t0 = Date.now();
  try {
    return await f();
  } finally {
    took[what] = Date.now() - t0;
  }
}

async function ourLines(): Promise<string[]> {
  const r = await lab.hostExec(h, "iptables-save -t filter");
  expect(r.code).toBe(0);
  return r.stdout.split("\n").filter((l) => l.includes("dpa:"));
}

beforeAll(async () => {
  [packed, lab] = await Promise.all([
    timed("npm pack (prepare builds)", () => packPackage()),
    timed("lab (1 light host)", () => startLab({ docker: 0, light: 1, clients: 0 })),
  ]);
  h = lab.hosts[0];
  proj = await timed("npm install of the tarball + stack init", () =>
    PulumiProject.create({
      program: PROGRAM,
      packageTarball: packed.tarball,
      config: {
        host: h.ipv4,
        hostKey: h.hostKey,
        perDialTimeout: "15",
        privateKey: { value: lab.clientKey.privateKey, secret: true },
      },
    }),
  );
});

afterAll(async () => {
  process.stdout.write(`package.test.ts timings (ms): ${JSON.stringify(took)}\n`);
  await proj?.dispose();
  await lab?.down();
  packed?.dispose();
});

describe("the packed package", () => {
  test("holds the compiled code, its types, the remote scripts, the documents and the component plugin, and nothing else", () => {
    const files = packed.files;
    for (const f of [
      "package.json",
      "README.md",
      "LICENSE",
      "CHANGELOG.md",
      "bin/provider/index.js",
      "bin/provider/index.d.ts",
      "bin/provider/pulumi/lifecycle.js",
      // Stacks written by 0.1.0 captured this path in their state.
      "bin/provider/host/lifecycle.js",
      "bin/provider/host/remote/sync.sh",
    ]) {
      expect(files).toContain(f);
    }
    const sources = fs
      .readdirSync(path.join(__dirname, "..", "..", "provider", "host", "remote"))
      .map((f) => `bin/provider/host/remote/${f}`);
    expect(files).toEqual(expect.arrayContaining(sources));
    // The component plugin (test/engine/yaml.test.ts): its manifest, entry, and the source and
    // tsconfig.json Pulumi's schema analyser reads.
    const plugin = [
      "PulumiPlugin.yaml",
      "bin/index.js",
      "index.ts",
      "provider/pulumi/component.ts",
      "tsconfig.json",
    ];
    const outside = files.filter(
      (f) =>
        !f.startsWith("bin/provider/") &&
        !["package.json", "README.md", "LICENSE", "CHANGELOG.md", ...plugin].includes(f),
    );
    expect(outside).toEqual([]);
    expect(files).toEqual(expect.arrayContaining(plugin));
    expect(files.filter((f) => f.endsWith(".ts") && !f.endsWith(".d.ts"))).toEqual([
      "index.ts",
      "provider/pulumi/component.ts",
    ]);
  });

  test("installed from the tarball outside the repository, the program type-checks against its declarations and applies", async () => {
    expect(proj.dir.startsWith(repoRoot)).toBe(false);
    const installed = path.join(proj.dir, "node_modules", "docker-port-allowlist");
    expect(fs.lstatSync(installed).isSymbolicLink()).toBe(false);
    // Type-checked as `pulumi new typescript` does it, by the program's own TypeScript: every import
    // resolves in the program directory, i.e. to the installed package's .d.ts files.
    const preview = await timed("preview, type-checking the program", () =>
      proj.preview([], { env: { PULUMI_NODEJS_TRANSPILE_ONLY: "false" } }),
    );
    expect(preview.stdout + preview.stderr).not.toContain("TSError");
    expect(preview.stdout).toContain(`+ ${NEW_TYPE}`);
    expect(preview.stdout).not.toContain(OLD_TYPE);
    await timed("up", () => proj.up());
    expect(await proj.stackOutputs()).toMatchObject({ chain: "DPA-web", type: NEW_TYPE });
    const lines = await ourLines();
    expect(lines.some((l) => l.includes("-A DPA-web -s 198.18.200.0/24"))).toBe(true);
    expect(lines.some((l) => l.includes("-A DPA-dns -s 198.18.201.2/32"))).toBe(true);
    expect((await proj.resources(NEW_TYPE)).map((r) => r.urn.split("::").pop()).sort()).toEqual([
      "edge-h1-dns",
      "web",
    ]);
  });

  test("state keeps the key secret and the rest of the connection readable", async () => {
    const exported = await proj.run(["stack", "export"], { check: true });
    const keyBody = lab.clientKey.privateKey.split("\n")[1];
    expect(exported.stdout).not.toContain(keyBody);
    type Side = { connection: { host?: unknown; perDialTimeout?: unknown; privateKey?: unknown } };
    type Exported = { deployment: { resources: { urn: string; inputs?: Side; outputs?: Side }[] } };
    const web = (JSON.parse(exported.stdout) as Exported).deployment.resources.find((r) =>
      r.urn.endsWith("::web"),
    )!;
    for (const side of [web.inputs!, web.outputs!]) {
      expect(side.connection.host).toBe(h.ipv4);
      expect(side.connection.perDialTimeout).toBe(15);
      expect(side.connection.privateKey).toHaveProperty("ciphertext");
    }
  });

  test("a connection edit shows in preview --diff by field name, and the key stays [secret]", async () => {
    await proj.setConfig("perDialTimeout", "20");
    const preview = await timed("preview of the edit", () => proj.preview());
    const text = preview.stdout + preview.stderr;
    // For the record in the test log: what a user sees for the connection.
    const shown = text.split("\n").filter((l) => /connection|perDialTimeout|privateKey|host\s*:/.test(l));
    process.stdout.write(`preview --diff of a connection edit:\n${shown.join("\n")}\n`);
    expect(text).toMatch(/perDialTimeout\s*:\s*15 => 20/);
    expect(text).not.toContain(lab.clientKey.privateKey.split("\n")[1]);
    expect(text).not.toMatch(/connection\s*:\s*\[secret\] => \[secret\]/);
    // An update, not a replacement.
    expect(text).not.toMatch(/replace/);
    await timed("up of the edit", () => proj.up());
  });

  test("a stack made by 0.1.x (the old type token) moves to the new one with up, replacing nothing", async () => {
    // What 0.1.x left: the same state, every allowlist under the generic dynamic-resource token.
    const exported = await proj.run(["stack", "export"], { check: true });
    expect(exported.stdout).toContain(NEW_TYPE);
    const old = exported.stdout.split(NEW_TYPE).join(OLD_TYPE);
    const file = path.join(proj.dir, "old-state.json");
    fs.writeFileSync(file, old);
    await proj.run(["stack", "import", "--file", file], { check: true });
    expect(await proj.resources(NEW_TYPE)).toEqual([]);
    expect((await proj.resources(OLD_TYPE)).length).toBe(2);
    const before = await ourLines();

    // `up` previews first and prints that plan too: an allowlist created again (no alias) or
    // replaced would show there and in the update.
    const up = await timed("up of the old stack", () => proj.up());
    expect(up.stdout).not.toMatch(/\b(creat|delet|replac)\w*/);
    expect(await proj.resources(OLD_TYPE)).toEqual([]);
    expect((await proj.resources(NEW_TYPE)).length).toBe(2);
    expect(await ourLines()).toEqual(before);
    await timed("up --expect-no-changes", () => proj.up(["--expect-no-changes"]));
  });

  test("destroy leaves the host without a rule of ours", async () => {
    await timed("destroy", () => proj.destroy());
    expect(await ourLines()).toEqual([]);
  });
});
