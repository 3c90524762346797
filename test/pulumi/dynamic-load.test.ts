/**
 * How the serialized provider finds its implementation at call time (portable state): by package
 * name from the project directory, else by the path captured in state, else an error that says
 * how to install the package. Real directories with real package.json `exports`; the loader runs
 * in a plain node process (jest's module system resolves `exports` its own way), and the provider
 * is serialized and evaluated the way the engine's dynamic-provider host does it.
 */
import { spawnSync } from "child_process";
import { mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from "fs";
import { tmpdir } from "os";
import { join } from "path";
import * as pulumi from "@pulumi/pulumi";
import * as ts from "typescript";
import { IMPLEMENTATION_EXPORT, dockerPortAllowlistProvider } from "../../provider/pulumi/dynamic";

let root: string;
beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), "dpa-load-"));
});
afterEach(() => rmSync(root, { recursive: true, force: true }));

/** A lifecycle module that says where it was loaded from. */
const FAKE_LIFECYCLE =
  "exports.whoami = () => __filename;\n" +
  "exports.read = async (id) => ({ id, props: { loadedFrom: __filename }, inputs: {} });\n";

/** Writes a package `docker-port-allowlist` into `dir` with the given exports and a fake lifecycle. */
function fakePackage(dir: string, exportsField: Record<string, unknown>): string {
  const impl = join(dir, "bin", "provider", "pulumi");
  mkdirSync(impl, { recursive: true });
  writeFileSync(
    join(dir, "package.json"),
    JSON.stringify({ name: "docker-port-allowlist", version: "9.9.9", exports: exportsField }),
  );
  writeFileSync(join(impl, "lifecycle.js"), FAKE_LIFECYCLE);
  writeFileSync(join(dir, "bin", "provider", "index.js"), "");
  return join(impl, "lifecycle.js");
}

const EXPORTS = {
  ".": "./bin/provider/index.js",
  "./provider/lifecycle": {
    types: "./bin/provider/pulumi/lifecycle.d.ts",
    default: "./bin/provider/pulumi/lifecycle.js",
  },
};

/** A project directory with `node_modules/docker-port-allowlist` installed. */
function project(
  name: string,
  exportsField: Record<string, unknown> = EXPORTS,
): { dir: string; impl: string } {
  const dir = join(root, name);
  mkdirSync(dir);
  writeFileSync(join(dir, "Pulumi.yaml"), "name: p\nruntime: nodejs\n");
  const impl = fakePackage(join(dir, "node_modules", "docker-port-allowlist"), exportsField);
  return { dir, impl };
}

/** provider/pulumi/dynamic.ts as plain node runs it (compiled once per test, into the temp dir). */
function compiledLoader(): string {
  const source = readFileSync(join(__dirname, "..", "..", "provider", "pulumi", "dynamic.ts"), "utf8");
  const js = ts.transpileModule(source, {
    compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022 },
  }).outputText;
  const file = join(root, "dynamic.js");
  writeFileSync(file, js);
  return file;
}

/** `loadImplementation(captured, dir).whoami()` in a plain node process: the file it loaded. */
function load(captured: string, dir: string): { whoami(): string } {
  const code =
    `try { process.stdout.write("ok " + require(${JSON.stringify(compiledLoader())})` +
    `.loadImplementation(${JSON.stringify(captured)}, ${JSON.stringify(dir)}).whoami()); }` +
    ` catch (e) { process.stdout.write("error " + e.message); }`;
  const r = spawnSync(process.execPath, ["-e", code], { encoding: "utf8", cwd: root });
  if (r.status !== 0) throw new Error(`node failed: ${r.stderr}`);
  const [kind, ...rest] = r.stdout.split(" ");
  if (kind !== "ok") throw new Error(rest.join(" "));
  return { whoami: () => rest.join(" ") };
}

describe("loadImplementation", () => {
  test("the package installed in the project wins over the captured path, even when both exist", () => {
    const old = project("old");
    const moved = project("moved");
    expect(load(old.impl.replace(/\.js$/, ""), moved.dir).whoami()).toBe(moved.impl);
  });

  test("a project moved away from its captured path still finds the package by name", () => {
    const p = project("before");
    const captured = p.impl.replace(/\.js$/, "");
    renameSync(p.dir, join(root, "after"));
    expect(load(captured, join(root, "after")).whoami()).toBe(
      join(
        root,
        "after",
        "node_modules",
        "docker-port-allowlist",
        "bin",
        "provider",
        "pulumi",
        "lifecycle.js",
      ),
    );
  });

  test("a subdirectory of the project (a program in program/) finds the package up the tree", () => {
    const p = project("tree");
    mkdirSync(join(p.dir, "program"));
    expect(load("/nonexistent/lifecycle", join(p.dir, "program")).whoami()).toBe(p.impl);
  });

  test("inside the package itself (the repository's root program) the package's self-reference resolves", () => {
    const pkg = join(root, "checkout");
    const impl = fakePackage(pkg, EXPORTS);
    expect(load("/nonexistent/lifecycle", pkg).whoami()).toBe(impl);
  });

  test("without the package in the project, the captured path is used", () => {
    const elsewhere = fakePackage(join(root, "elsewhere"), EXPORTS);
    const bare = join(root, "bare");
    mkdirSync(bare);
    expect(load(elsewhere.replace(/\.js$/, ""), bare).whoami()).toBe(elsewhere);
  });

  test("an installed version without the export falls back to the captured path", () => {
    const p = project("oldpkg", { ".": "./bin/provider/index.js" });
    const elsewhere = fakePackage(join(root, "elsewhere"), EXPORTS);
    expect(load(elsewhere.replace(/\.js$/, ""), p.dir).whoami()).toBe(elsewhere);
  });

  test("neither: the error names both places and says how to install the package", () => {
    const bare = join(root, "bare");
    mkdirSync(bare);
    expect(() => load(join(root, "gone", "lifecycle"), bare)).toThrow(
      `docker-port-allowlist: cannot find the provider's implementation. Looked for package ` +
        `"${IMPLEMENTATION_EXPORT}" from ${bare}: not installed there; and for ${join(root, "gone", "lifecycle")}.js: ` +
        `no such file (the project moved, or node_modules was removed). Fix: run \`npm install ` +
        `docker-port-allowlist\` in ${bare} (the directory of Pulumi.yaml), then run the command again.`,
    );
  });

  test("an installed version too old for this state is named as such", () => {
    const p = project("tooold", { ".": "./bin/provider/index.js" });
    expect(() => load(join(root, "gone", "lifecycle"), p.dir)).toThrow(
      "the installed docker-port-allowlist is older than this state (it does not export ./provider/lifecycle)",
    );
  });
});

describe("the serialized provider, evaluated like the engine's dynamic-provider host", () => {
  test("captures only the loader and finds the package from the working directory at call time", async () => {
    const serialized = await pulumi.runtime.serializeFunction(() => dockerPortAllowlistProvider, {
      allowSecrets: true,
    });
    // The loader travels as its source, never as a deep require of the package (which the
    // package's exports map refuses: the engine failed so when the package sat in node_modules).
    expect(serialized.text).toContain("function /*load*/(captured, projectDir)");
    expect(serialized.text).not.toContain("docker-port-allowlist/bin");
    expect(serialized.text).not.toMatch(/ssh2|privateKey|process\.env/);
    // What the host does: requireFromString(text) -> module paths from the working directory.
    const p = project("serialized");
    const cwd = process.cwd();
    process.chdir(p.dir);
    try {
      const requireFromString = require("require-from-string") as (code: string) => {
        handler(): pulumi.dynamic.ResourceProvider;
      };
      const provider = requireFromString(serialized.text).handler();
      const r = await provider.read!("id-1", {});
      expect(r).toEqual({ id: "id-1", props: { loadedFrom: p.impl }, inputs: {} });
    } finally {
      process.chdir(cwd);
    }
  });
});
