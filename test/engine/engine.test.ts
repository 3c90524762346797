// The real Pulumi engine (CLI + our language host + the pulumi-nodejs dynamic-provider
// plugin), driven like a user would, on a program whose dynamic resource owns a file.
// Effects are checked on disk and in the exported state, not only in CLI output.
import { createHash } from "crypto";
import { execFileSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { findEngine, PulumiProject, repoRoot } from "./support";

// The jest.config.js per-project testTimeout is ignored by jest 29; each engine call takes seconds.
jest.setTimeout(600_000);

const dynamicType = "pulumi-nodejs:dynamic:Resource";
const sha256 = (s: string) => createHash("sha256").update(s).digest("hex");

describe("the built Pulumi engine", () => {
  it("is the version package.json pins, for the CLI, the language host and the SDK", () => {
    const engine = findEngine();
    const pinned = JSON.parse(fs.readFileSync(path.join(repoRoot, "package.json"), "utf8")).devDependencies[
      "@pulumi/pulumi"
    ];
    const sdk = JSON.parse(
      fs.readFileSync(path.join(repoRoot, "node_modules/@pulumi/pulumi/package.json"), "utf8"),
    );
    expect(engine.version).toBe(pinned);
    expect(sdk.version).toBe(pinned);
    expect(execFileSync(path.join(engine.binDir, "pulumi"), ["version"], { encoding: "utf8" }).trim()).toBe(
      `v${pinned}`,
    );
    expect(
      execFileSync(path.join(engine.binDir, "pulumi-language-nodejs"), ["-version"], {
        encoding: "utf8",
      }).trim(),
    ).toBe(`v${pinned}`);
  });
});

describe("a dynamic resource through preview, up, refresh and destroy", () => {
  let work: string;
  let target: string;
  let proj: PulumiProject;

  beforeAll(async () => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), "dpa-engine-files-"));
    target = path.join(work, "managed.txt");
    proj = await PulumiProject.create({
      programDir: "file-resource",
      config: { path: target, content: "first version\n" },
    });
  });

  afterAll(async () => {
    // Destroy is part of the lifecycle under test; this is only the safety net.
    await proj?.dispose();
    fs.rmSync(work, { recursive: true, force: true });
  });

  it("previews the create with its inputs and changes nothing on disk", async () => {
    const r = await proj.preview();
    expect(r.stdout).toMatch(/\+ pulumi-nodejs:dynamic:Resource: \(create\)/);
    expect(r.stdout).toMatch(new RegExp(`path +: "${target}"`));
    expect(r.stdout).toMatch(/\+ 2 to create/);
    expect(fs.existsSync(target)).toBe(false);
    expect(await proj.resources()).toEqual([]);
  });

  it("creates the file on up and records it in outputs and state", async () => {
    const r = await proj.up();
    expect(r.stdout).toMatch(/\+ 2 created/);
    expect(fs.readFileSync(target, "utf8")).toBe("first version\n");

    const outputs = await proj.stackOutputs();
    expect(outputs).toEqual({ path: target, content: "first version\n", sha256: sha256("first version\n") });

    const [res, ...more] = await proj.resources(dynamicType);
    expect(more).toEqual([]);
    expect(res.id).toBe(target);
    expect(res.outputs).toMatchObject({ path: target, content: "first version\n" });
  });

  it("reports no changes on a second up", async () => {
    const r = await proj.up(["--expect-no-changes"]);
    expect(r.stdout).toMatch(/2 unchanged/);
  });

  it("finds drift on refresh, records it, and up puts the desired content back", async () => {
    fs.writeFileSync(target, "edited by hand\n");

    // A drift check: --preview-only reads without recording, --expect-no-changes fails on drift.
    const check = await proj.run(["refresh", "--preview-only", "--expect-no-changes"]);
    expect(check.code).not.toBe(0);
    expect(check.stdout).toMatch(/~ +pulumi-nodejs:dynamic:Resource managed update \[diff: ~content\]/);
    expect(check.stdout + check.stderr).toContain(
      "no changes were expected for refresh but changes were proposed",
    );
    const [before] = await proj.resources(dynamicType);
    expect(before.outputs).toMatchObject({ content: "first version\n" });

    await proj.refresh();
    const [drifted] = await proj.resources(dynamicType);
    expect(drifted.outputs).toMatchObject({
      content: "edited by hand\n",
      sha256: sha256("edited by hand\n"),
    });

    const preview = await proj.preview();
    expect(preview.stdout).toMatch(/~ pulumi-nodejs:dynamic:Resource: \(update\)/);
    expect(preview.stdout).toContain("edited by hand");
    expect(fs.readFileSync(target, "utf8")).toBe("edited by hand\n");

    await proj.up();
    expect(fs.readFileSync(target, "utf8")).toBe("first version\n");
    await proj.run(["refresh", "--yes", "--expect-no-changes"], { check: true });
  });

  it("notices a deleted file on refresh and recreates it on up", async () => {
    fs.rmSync(target);
    await proj.refresh();
    expect(await proj.resources(dynamicType)).toEqual([]);
    await proj.up();
    expect(fs.readFileSync(target, "utf8")).toBe("first version\n");
  });

  it("shows a config change as an update diff with old and new values, then applies it", async () => {
    await proj.setConfig("content", "second version\n");
    const preview = await proj.preview();
    expect(preview.stdout).toMatch(/~ pulumi-nodejs:dynamic:Resource: \(update\)/);
    // Multi-line strings are shown as a line diff.
    expect(preview.stdout).toMatch(/~ content: *\n *- first version\n *\+ second version\n/);
    expect(fs.readFileSync(target, "utf8")).toBe("first version\n");

    await proj.up();
    expect(fs.readFileSync(target, "utf8")).toBe("second version\n");
    expect((await proj.stackOutputs()).sha256).toBe(sha256("second version\n"));
  });

  it("rejects bad input in check, naming the property, before the provider touches anything", async () => {
    await proj.setConfig("path", "relative/file.txt");
    const r = await proj.run(["up", "--yes"]);
    expect(r.code).not.toBe(0);
    expect(r.stdout + r.stderr).toContain(
      'path must be an absolute file path, got "relative/file.txt"; use e.g. /tmp/x.txt',
    );
    expect(fs.existsSync(path.join(proj.dir, "relative"))).toBe(false);
    expect(fs.readFileSync(target, "utf8")).toBe("second version\n");
    await proj.setConfig("path", target);
  });

  it("fails the run when the program throws, and leaves the resources alone", async () => {
    await proj.setConfig("failProgram", "true");
    const r = await proj.run(["up", "--yes"]);
    expect(r.code).not.toBe(0);
    expect(r.stdout + r.stderr).toContain("fixture asked to fail (config failProgram=true)");
    expect(fs.readFileSync(target, "utf8")).toBe("second version\n");
    expect(await proj.resources(dynamicType)).toHaveLength(1);
    await proj.removeConfig("failProgram");
  });

  it("removes the file on destroy and leaves an empty stack", async () => {
    const r = await proj.destroy();
    expect(r.stdout).toMatch(/- 2 deleted/);
    expect(fs.existsSync(target)).toBe(false);
    expect(await proj.resources()).toEqual([]);
  });
});

describe("a program given as source, type-checked by ts-node like a default project", () => {
  it("runs, and a type error stops it before any resource is registered", async () => {
    const proj = await PulumiProject.create({
      typeCheck: true,
      program: [
        `import * as pulumi from "@pulumi/pulumi";`,
        `const n: number = new pulumi.Config().requireNumber("n");`,
        `export const doubled = n * 2;`,
        ``,
      ].join("\n"),
      config: { n: "21" },
    });
    try {
      await proj.up();
      expect(await proj.stackOutputs()).toEqual({ doubled: 42 });

      proj.writeProgram(`const n: number = "not a number";\nexport const doubled = n;\n`);
      const r = await proj.run(["up", "--yes"]);
      expect(r.code).not.toBe(0);
      expect(r.stdout + r.stderr).toMatch(/TS2322: Type 'string' is not assignable to type 'number'/);
      expect(await proj.stackOutputs()).toEqual({ doubled: 42 });
    } finally {
      await proj.dispose();
    }
  });

  it("passes secret config as secret and shows the program's console output", async () => {
    const proj = await PulumiProject.create({
      program: [
        `import * as pulumi from "@pulumi/pulumi";`,
        `const config = new pulumi.Config();`,
        `console.log("program says " + config.require("greeting"));`,
        `export const token = config.requireSecret("token");`,
        `export const tokenLength = config.requireSecret("token").apply((t) => t.length);`,
        ``,
      ].join("\n"),
      config: { greeting: "hi", token: { value: "s3cr3t-value", secret: true } },
    });
    try {
      const up = await proj.up(["--skip-preview"]);
      expect(up.stdout).toContain("program says hi");
      expect(up.stdout).not.toContain("s3cr3t-value");
      const shown = await proj.run(["stack", "output", "--json"], { check: true });
      expect(JSON.parse(shown.stdout)).toEqual({ token: "[secret]", tokenLength: "[secret]" });
      expect(await proj.stackOutputs()).toEqual({ token: "s3cr3t-value", tokenLength: 12 });
      expect(fs.readFileSync(path.join(proj.dir, "Pulumi.test.yaml"), "utf8")).not.toContain("s3cr3t-value");
    } finally {
      await proj.dispose();
    }
  });

  it("cannot load .ts files inside dynamic-provider methods, which is why buildPackage() exists", async () => {
    const helper = path.join(__dirname, "fixtures", "ts-only", "helper");
    const proj = await PulumiProject.create({
      program: [
        `import * as pulumi from "@pulumi/pulumi";`,
        `const provider: pulumi.dynamic.ResourceProvider = {`,
        `  async create() {`,
        `    const h = require(${JSON.stringify(helper)});`,
        `    return { id: "greeting", outs: { text: h.greet("engine") } };`,
        `  },`,
        `};`,
        `class Greeting extends pulumi.dynamic.Resource {`,
        `  constructor(name: string) { super(provider, name, { text: undefined }, {}); }`,
        `}`,
        `new Greeting("g");`,
        ``,
      ].join("\n"),
    });
    try {
      // The program process (ts-node) would load helper.ts; the provider process does not.
      const r = await proj.run(["up", "--yes", "--skip-preview"]);
      expect(r.code).not.toBe(0);
      expect(r.stdout + r.stderr).toContain(`Cannot find module '${helper}'`);
    } finally {
      await proj.dispose();
    }
  });

  it("reports the node runtime and the program's dependencies through pulumi about", async () => {
    const proj = await PulumiProject.create({ program: "export const x = 1;\n" });
    try {
      const r = await proj.run(["about"], { check: true });
      expect(r.stdout).toContain(
        `This project is written in nodejs: executable='${process.execPath}' version='${process.versions.node}'`,
      );
      expect(r.stdout).toMatch(new RegExp(`@pulumi/pulumi\\s+${findEngine().version.replace(/\./g, "\\.")}`));
    } finally {
      await proj.dispose();
    }
  });
});
