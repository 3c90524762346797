// Runs the REAL Pulumi CLI (built by scripts/engine.sh) on a throwaway project with a local
// file backend, so engine tests see exactly what a user sees: preview, up, refresh, destroy,
// stack outputs and state.
//
// Each project gets its own directory, state backend and PULUMI_HOME, so jest workers and
// parallel projects never share anything but the (read-only) engine binaries.
//
//   const proj = await PulumiProject.create({ programDir: "file-resource", config: { path } });
//   const r = await proj.preview();            // pulumi preview --diff
//   await proj.up();                           // throws PulumiCommandError on failure
//   await proj.dispose();
import { spawn, spawnSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";

import type { Lab, LabHost } from "../../lab";

/** The repository root (where package.json and node_modules are). */
export const repoRoot = path.resolve(__dirname, "..", "..");

/** Fixture programs live here; `programDir` may be given relative to it. */
export const fixturesDir = path.join(__dirname, "fixtures");

/** The engine found on disk by {@link findEngine}. */
export interface Engine {
  /** Pulumi version the engine was built for (from package.json), e.g. "3.248.0". */
  readonly version: string;
  /** Directory holding `pulumi`, `pulumi-language-nodejs`, `pulumi-resource-pulumi-nodejs`. */
  readonly binDir: string;
}

const engineBinaries = ["pulumi", "pulumi-language-nodejs", "pulumi-resource-pulumi-nodejs"] as const;

/**
 * Locates the engine built by scripts/engine.sh, using the same cache path rule:
 * `${DPA_CACHE_DIR:-$HOME/.cache/docker-port-allowlist}/engine/v<version>/bin`, with the
 * version pinned by package.json's `@pulumi/pulumi`.
 *
 * @throws Error naming the missing binaries and the command that builds them.
 */
export function findEngine(): Engine {
  const pkg = JSON.parse(fs.readFileSync(path.join(repoRoot, "package.json"), "utf8")) as {
    devDependencies?: Record<string, string>;
  };
  const version = pkg.devDependencies?.["@pulumi/pulumi"] ?? "";
  if (!/^\d+\.\d+\.\d+$/.test(version)) {
    throw new Error(
      `package.json devDependencies["@pulumi/pulumi"] is ${JSON.stringify(version)}; ` +
        `the engine tests need an exact version such as "3.248.0"`,
    );
  }
  const cacheRoot = process.env.DPA_CACHE_DIR || path.join(os.homedir(), ".cache", "docker-port-allowlist");
  const binDir = path.join(cacheRoot, "engine", `v${version}`, "bin");
  const missing = engineBinaries.filter((b) => !isExecutable(path.join(binDir, b)));
  if (missing.length > 0) {
    throw new Error(
      `Pulumi engine v${version} is not built: missing ${missing.join(", ")} in ${binDir}. ` +
        `Run \`bash scripts/engine.sh\` in ${repoRoot} (cold build: about 8 minutes; then cached), ` +
        `or \`npm run test:engine\`, which does it first.`,
    );
  }
  return { version, binDir };
}

let builtPackageDir: string | undefined;

/**
 * Compiles the package (`npm run build`: tsc into bin/ and the remote scripts beside it) when any
 * provider source is newer than its output, and returns the absolute path of the compiled
 * `bin/provider`.
 *
 * Engine programs must import THIS, not `provider/*.ts`: ts-node is only registered in the
 * program process, while dynamic-provider methods run in the separate `pulumi-nodejs`
 * provider process (plain node), where `require("<repo>/provider/host/...")` of a .ts file
 * fails with "Cannot find module". Serialized providers that `require(path.join(__dirname,
 * ...))` then resolve into bin/, exactly as for a user of the published package.
 *
 * Jest workers may call this at once; a lock file makes them build one at a time.
 */
export function buildPackage(): string {
  if (builtPackageDir !== undefined) {
    return builtPackageDir;
  }
  const outDir = path.join(repoRoot, "bin", "provider");
  const newest = (dir: string, ext: string): number => {
    let t = 0;
    for (const entry of fs.readdirSync(dir, { withFileTypes: true, recursive: true })) {
      if (entry.isFile() && entry.name.endsWith(ext)) {
        t = Math.max(t, fs.statSync(path.join(entry.parentPath, entry.name)).mtimeMs);
      }
    }
    return t;
  };
  const remote = path.join(repoRoot, "provider", "host", "remote");
  const stale = () =>
    !fs.existsSync(path.join(outDir, "index.js")) ||
    !fs.existsSync(path.join(repoRoot, "bin", "index.js")) || // the component entry (package.json main)
    !fs.existsSync(path.join(outDir, "host", "remote")) ||
    Math.max(newest(path.join(repoRoot, "provider"), ".ts"), newest(remote, "")) > newest(outDir, ".js");
  if (stale()) {
    // flock(1) serialises concurrent builds; a second worker then finds bin/ fresh and tsc is quick.
    const r = spawnSync(
      "flock",
      ["-w", "300", path.join(os.tmpdir(), "dpa-package-build.lock"), "npm", "run", "--silent", "build"],
      {
        cwd: repoRoot,
        encoding: "utf8",
      },
    );
    if (r.status !== 0) {
      throw new Error(
        `Command failed with exit code ${r.status}: npm run build (in ${repoRoot}); ` +
          `fix the type errors below, then rerun\n${r.stdout}${r.stderr}`,
        { cause: r.error },
      );
    }
  }
  builtPackageDir = outDir;
  return outDir;
}

function isExecutable(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** Outcome of one CLI invocation. */
export interface RunResult {
  /** The command line, for messages. */
  readonly command: string;
  /** Exit code; -1 if killed by a signal (e.g. on timeout). */
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
  readonly durationMs: number;
}

/** A pulumi command that exited non-zero when success was expected. */
export class PulumiCommandError extends Error {
  constructor(
    readonly result: RunResult,
    options?: { cause?: unknown },
  ) {
    super(
      `Command failed with exit code ${result.code}: ${result.command}\n` +
        `--- stderr ---\n${result.stderr}\n--- stdout ---\n${result.stdout}`,
      options,
    );
    this.name = "PulumiCommandError";
  }
}

/** Options of one {@link PulumiProject.run}. */
export interface RunOptions {
  /**
   * Throw {@link PulumiCommandError} when the command exits non-zero.
   * @default false for `run`, true for the named helpers (`up`, `preview`, ...)
   */
  readonly check?: boolean;
  /** Text written to the command's stdin. @default - stdin is empty (closed) */
  readonly input?: string;
  /** Kill the command (and its process group) after this long. @default 300000 */
  readonly timeoutMs?: number;
  /** Extra environment variables for this command only. @default - none */
  readonly env?: Readonly<Record<string, string>>;
  /**
   * argv that runs the command: the CLI's path and arguments follow it (a wrapper that puts the
   * command into a cgroup to count its CPU, as bench/fleet.ts does). @default - none
   */
  readonly prefix?: readonly string[];
}

/** A config value; `secret: true` stores it encrypted (`pulumi config set --secret`). */
export type ConfigValue = string | { readonly value: string; readonly secret: true };

/** Arguments of {@link PulumiProject.create}; give exactly one of `program` and `programDir`. */
export interface PulumiProjectOptions {
  /**
   * TypeScript source of the program's `index.ts`. To import the package under test use an
   * absolute path, e.g. `import { X } from ${JSON.stringify(path.join(repoRoot, "provider"))}`.
   * @default - use `programDir`
   */
  readonly program?: string;
  /**
   * Directory of an existing program (containing `index.ts`), absolute or relative to
   * test/engine/fixtures. It is run in place (the project's `index.ts` re-exports it), so its
   * relative imports of the repository keep working and tsc/eslint check it like any test.
   * @default - use `program`
   */
  readonly programDir?: string;
  /** Project name; also the namespace of unqualified config keys. @default "dpa-engine-test" */
  readonly projectName?: string;
  /** Stack name. @default "test" */
  readonly stack?: string;
  /** Stack config, keys without a namespace belong to the project. @default - none */
  readonly config?: Readonly<Record<string, ConfigValue>>;
  /**
   * Let ts-node type-check the program on every run (as a default Pulumi project does). Off by
   * default because `tsc --noEmit -p .` already checks fixtures and it costs ~3 s per command.
   * @default false
   */
  readonly typeCheck?: boolean;
  /** Environment for every command of this project. @default - none beyond the engine's */
  readonly env?: Readonly<Record<string, string>>;
  /**
   * Install the compiled package into the project's own `node_modules/docker-port-allowlist`
   * (package.json + bin/provider, as `npm install` would), so the program imports it by name and
   * the copy moves with the project ({@link PulumiProject.move}). The other dependencies are
   * linked one by one from the repository's node_modules.
   * @default false - node_modules is a link to the repository's (no docker-port-allowlist in it)
   */
  readonly installPackage?: boolean;
  /**
   * Install the package from this tarball (see {@link packPackage}) as a user would: `npm install`
   * in the project, with `@pulumi/pulumi` at the engine's version, every dependency from the npm
   * cache or registry and nothing linked from the repository.
   * @default - see `installPackage`
   */
  readonly packageTarball?: string;
  /**
   * A Pulumi YAML program instead: this text is the project's Pulumi.yaml (`runtime: yaml`, its
   * `name` and `packages:` as the test wants them), written as it is, with no package.json,
   * node_modules or index.ts beside it. Needs `pulumi-language-yaml` in the engine (scripts/engine.sh).
   * @default - a Node.js program: see `program`, `programDir`
   */
  readonly yaml?: string;
}

// Never let the developer's or CI's own Pulumi setup leak into a test project.
const scrubbedEnv = [
  "PULUMI_ACCESS_TOKEN",
  "PULUMI_BACKEND_URL",
  "PULUMI_HOME",
  "PULUMI_CONFIG_PASSPHRASE",
  "PULUMI_CONFIG_PASSPHRASE_FILE",
  "PULUMI_STACK",
  "PULUMI_DEBUG_COMMANDS",
  "PULUMI_DEBUG_LANGUAGES",
  "PULUMI_DEBUG_PROVIDERS",
];

/** One temporary Pulumi project + stack on a file backend, driven through the real CLI. */
export class PulumiProject {
  private disposed = false;

  private constructor(
    private currentDir: string,
    readonly stack: string,
    readonly engine: Engine,
    private baseEnv: Readonly<Record<string, string>>,
  ) {}

  /** The project directory (Pulumi.yaml, index.ts, state, PULUMI_HOME); {@link move} changes it. */
  get dir(): string {
    return this.currentDir;
  }

  /** The environment that points the CLI at this project's state and PULUMI_HOME. */
  private static dirEnv(dir: string): Record<string, string> {
    return {
      PULUMI_HOME: path.join(dir, ".pulumi-home"),
      PULUMI_BACKEND_URL: `file://${path.join(dir, ".state")}`,
    };
  }

  /**
   * Moves the whole project directory (program, node_modules, state) to a new path, as a user
   * moving a checkout would; later commands run there. The CLI keys its selected stack by the
   * project's path, so the stack is selected again, as the user would. Returns the new directory.
   */
  async move(): Promise<string> {
    const to = fs.mkdtempSync(path.join(os.tmpdir(), "dpa-engine-moved-"));
    fs.rmdirSync(to);
    fs.renameSync(this.currentDir, to);
    this.currentDir = to;
    this.baseEnv = { ...this.baseEnv, ...PulumiProject.dirEnv(to) };
    await this.run(["stack", "select", this.stack], { check: true });
    return to;
  }

  /** Creates the project directory, initialises the stack and sets its config. */
  static async create(options: PulumiProjectOptions): Promise<PulumiProject> {
    const given = [options.program, options.programDir, options.yaml].filter((o) => o !== undefined);
    if (given.length !== 1) {
      throw new Error(
        "PulumiProject.create: give exactly one of `program` (source), `programDir` (directory) and `yaml` (Pulumi.yaml text)",
      );
    }
    const engine = findEngine();
    const projectName = options.projectName ?? "dpa-engine-test";
    const stack = options.stack ?? "test";
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), `dpa-engine-${projectName}-`));

    try {
      if (options.yaml !== undefined) {
        fs.writeFileSync(path.join(dir, "Pulumi.yaml"), options.yaml);
        fs.mkdirSync(path.join(dir, ".state"));
        fs.mkdirSync(path.join(dir, ".pulumi-home"));
      } else {
        fs.writeFileSync(
          path.join(dir, "Pulumi.yaml"),
          `name: ${projectName}\nruntime:\n  name: nodejs\n  options:\n    typescript: true\nmain: index.ts\n`,
        );
        fs.writeFileSync(
          path.join(dir, "package.json"),
          JSON.stringify(
            {
              name: projectName,
              private: true,
              main: "index.ts",
              dependencies: {
                "@pulumi/pulumi": engine.version,
                ...(options.packageTarball === undefined
                  ? {}
                  : { "docker-port-allowlist": `file:${options.packageTarball}` }),
              },
              // What `pulumi new typescript` puts there: the engine then compiles the program with this
              // TypeScript (its vendored one is 3.x and cannot read the ES2022 settings below).
              ...(options.packageTarball === undefined
                ? {}
                : {
                    devDependencies: {
                      typescript: repoVersion("typescript"),
                      "@types/node": repoVersion("@types/node"),
                    },
                  }),
            },
            null,
            2,
          ) + "\n",
        );
        // ts-node uses this for the program and everything it imports from the repo.
        fs.writeFileSync(
          path.join(dir, "tsconfig.json"),
          JSON.stringify(
            {
              compilerOptions: {
                strict: true,
                target: "ES2022",
                module: "commonjs",
                moduleResolution: "node",
                esModuleInterop: true,
                skipLibCheck: true,
                types: ["node"],
              },
            },
            null,
            2,
          ) + "\n",
        );
        // One copy of @pulumi/pulumi for program, provider package and dynamic-provider host.
        if (options.packageTarball !== undefined) {
          npm(["install", "--prefer-offline", "--no-audit", "--no-fund", "--loglevel=error"], dir);
        } else if (options.installPackage) {
          installPackage(path.join(dir, "node_modules"));
        } else {
          fs.symlinkSync(path.join(repoRoot, "node_modules"), path.join(dir, "node_modules"), "dir");
        }

        if (options.program !== undefined) {
          fs.writeFileSync(path.join(dir, "index.ts"), options.program);
        } else {
          const programDir = path.resolve(fixturesDir, options.programDir!);
          if (!fs.existsSync(path.join(programDir, "index.ts"))) {
            throw new Error(
              `programDir ${programDir} has no index.ts; give a directory with the program's index.ts`,
            );
          }
          // Stack outputs are the entry module's exports: re-export the program's.
          fs.writeFileSync(
            path.join(dir, "index.ts"),
            `export * from ${JSON.stringify(path.join(programDir, "index"))};\n`,
          );
        }
        fs.mkdirSync(path.join(dir, ".state"));
        fs.mkdirSync(path.join(dir, ".pulumi-home"));
      }
    } catch (err) {
      fs.rmSync(dir, { recursive: true, force: true });
      throw err;
    }

    const baseEnv: Record<string, string> = {
      PATH: `${engine.binDir}${path.delimiter}${process.env.PATH ?? ""}`,
      ...PulumiProject.dirEnv(dir),
      PULUMI_CONFIG_PASSPHRASE: "dpa-engine-test",
      PULUMI_SKIP_UPDATE_CHECK: "true",
      PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION: "true",
      PULUMI_NODEJS_TRANSPILE_ONLY: options.typeCheck ? "false" : "true",
      NO_COLOR: "1",
      ...options.env,
    };
    const project = new PulumiProject(dir, stack, engine, baseEnv);
    try {
      await project.run(["stack", "init", stack], { check: true });
      for (const [key, value] of Object.entries(options.config ?? {})) {
        await project.setConfig(key, value);
      }
    } catch (err) {
      await project.dispose();
      throw err;
    }
    return project;
  }

  /**
   * Runs `pulumi <args> --non-interactive --color=never` in the project directory.
   * The command runs in its own process group, which is killed on timeout.
   */
  run(args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
    if (this.disposed) {
      return Promise.reject(new Error(`PulumiProject in ${this.dir} was disposed; create a new one`));
    }
    // Our flags go before a "--" so they are never taken as positional values.
    const dashDash = args.indexOf("--");
    const at = dashDash === -1 ? args.length : dashDash;
    const fullArgs = [...args.slice(0, at), "--non-interactive", "--color=never", ...args.slice(at)];
    const command = `pulumi ${fullArgs.join(" ")}`;
    const env: NodeJS.ProcessEnv = { ...process.env };
    for (const name of scrubbedEnv) {
      delete env[name];
    }
    Object.assign(env, this.baseEnv, options.env);
    const timeoutMs = options.timeoutMs ?? 300_000;
    const started = Date.now();

    return new Promise<RunResult>((resolve, reject) => {
      const argv = [...(options.prefix ?? []), path.join(this.engine.binDir, "pulumi"), ...fullArgs];
      const child = spawn(argv[0], argv.slice(1), {
        cwd: this.dir,
        env,
        detached: true, // own process group: language host, node and providers die with it
        stdio: ["pipe", "pipe", "pipe"],
      });
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      child.stdout.on("data", (b: Buffer) => out.push(b));
      child.stderr.on("data", (b: Buffer) => err.push(b));
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        killGroup(child.pid);
      }, timeoutMs);
      child.on("error", (e) => {
        clearTimeout(timer);
        reject(new Error(`could not start ${command} in ${this.dir}: ${e.message}`, { cause: e }));
      });
      child.on("close", (code) => {
        clearTimeout(timer);
        // Plugins left behind by a crashed engine would hold ports and files: end the group.
        killGroup(child.pid);
        const result: RunResult = {
          command,
          code: code ?? -1,
          stdout: Buffer.concat(out).toString("utf8"),
          stderr:
            Buffer.concat(err).toString("utf8") + (timedOut ? `\n[killed after timeoutMs=${timeoutMs}]` : ""),
          durationMs: Date.now() - started,
        };
        if (options.check && result.code !== 0) {
          reject(new PulumiCommandError(result));
        } else {
          resolve(result);
        }
      });
      child.stdin.end(options.input ?? "");
    });
  }

  /** `pulumi preview --diff` (the exact change a user would review). */
  preview(extraArgs: readonly string[] = [], options: RunOptions = {}): Promise<RunResult> {
    return this.run(["preview", "--diff", ...extraArgs], { check: true, ...options });
  }

  /** `pulumi up --yes` (preview, then update). */
  up(extraArgs: readonly string[] = [], options: RunOptions = {}): Promise<RunResult> {
    return this.run(["up", "--yes", ...extraArgs], { check: true, ...options });
  }

  /** `pulumi refresh --yes`: reads every resource back and records drift in the state. */
  refresh(extraArgs: readonly string[] = [], options: RunOptions = {}): Promise<RunResult> {
    return this.run(["refresh", "--yes", ...extraArgs], { check: true, ...options });
  }

  /** `pulumi destroy --yes`. */
  destroy(extraArgs: readonly string[] = [], options: RunOptions = {}): Promise<RunResult> {
    return this.run(["destroy", "--yes", ...extraArgs], { check: true, ...options });
  }

  /** Sets one config value; the value goes through stdin, so any text (newlines, leading "-") is safe. */
  async setConfig(key: string, value: ConfigValue): Promise<void> {
    const secret = typeof value !== "string";
    const text = typeof value === "string" ? value : value.value;
    // --raw: keep trailing newlines, which pulumi otherwise strips from stdin.
    await this.run(["config", "set", "--raw", ...(secret ? ["--secret"] : []), "--", key], {
      check: true,
      input: text,
    });
  }

  /** Removes one config key. */
  async removeConfig(key: string): Promise<void> {
    await this.run(["config", "rm", "--", key], { check: true });
  }

  /** The stack outputs, secrets shown in plain text. */
  async stackOutputs(): Promise<Record<string, unknown>> {
    const r = await this.run(["stack", "output", "--json", "--show-secrets"], { check: true });
    return JSON.parse(r.stdout) as Record<string, unknown>;
  }

  /** The stack's state (`pulumi stack export --show-secrets`). */
  async exportState(): Promise<StackState> {
    const r = await this.run(["stack", "export", "--show-secrets"], { check: true });
    return JSON.parse(r.stdout) as StackState;
  }

  /** The resources in the state, optionally only those of one type. */
  async resources(type?: string): Promise<StateResource[]> {
    const state = await this.exportState();
    const all = state.deployment.resources ?? [];
    return type === undefined ? all : all.filter((r) => r.type === type);
  }

  /** Replaces the project's `index.ts` (for "edit the program, then up again"). */
  writeProgram(source: string): void {
    fs.writeFileSync(path.join(this.dir, "index.ts"), source);
  }

  /**
   * Deletes the project directory (state included). Resources are NOT destroyed: call
   * `destroy()` first when they matter. Set DPA_KEEP_ENGINE_PROJECTS=1 to keep it for debugging.
   */
  async dispose(): Promise<void> {
    if (this.disposed) {
      return;
    }
    this.disposed = true;
    if (process.env.DPA_KEEP_ENGINE_PROJECTS === "1") {
      process.stderr.write(`keeping Pulumi project ${this.dir} (DPA_KEEP_ENGINE_PROJECTS=1)\n`);
      return;
    }
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * A node_modules directory holding a copy of the compiled package as `docker-port-allowlist`
 * (what `npm install` puts there: package.json and the `files` of package.json) and links to
 * every other dependency in the repository's node_modules.
 */
function installPackage(nodeModules: string): void {
  buildPackage();
  fs.mkdirSync(nodeModules);
  const repoModules = path.join(repoRoot, "node_modules");
  for (const entry of fs.readdirSync(repoModules)) {
    if (entry === "docker-port-allowlist") continue;
    fs.symlinkSync(path.join(repoModules, entry), path.join(nodeModules, entry));
  }
  const pkgDir = path.join(nodeModules, "docker-port-allowlist");
  const pkg = JSON.parse(fs.readFileSync(path.join(repoRoot, "package.json"), "utf8")) as { files: string[] };
  fs.mkdirSync(pkgDir);
  fs.copyFileSync(path.join(repoRoot, "package.json"), path.join(pkgDir, "package.json"));
  for (const f of pkg.files) {
    fs.cpSync(path.join(repoRoot, f), path.join(pkgDir, f), { recursive: true });
  }
}

/** The version of a package installed in the repository's node_modules (so npm finds it in its cache). */
function repoVersion(name: string): string {
  const file = path.join(repoRoot, "node_modules", name, "package.json");
  return (JSON.parse(fs.readFileSync(file, "utf8")) as { version: string }).version;
}

/** Runs npm in `cwd`; throws with its output when it fails. */
function npm(args: readonly string[], cwd: string): string {
  const r = spawnSync("npm", args, { cwd, encoding: "utf8", timeout: 300_000 });
  if (r.status !== 0) {
    throw new Error(
      `Command failed with exit code ${r.status}: npm ${args.join(" ")} (in ${cwd})\n${r.stdout}${r.stderr}`,
      { cause: r.error },
    );
  }
  return r.stdout;
}

/** What {@link packPackage} made. */
export interface PackedPackage {
  /** Absolute path of the `.tgz`. */
  readonly tarball: string;
  /** The paths inside it, as `npm pack` lists them (`package.json`, `bin/provider/index.js`...). */
  readonly files: readonly string[];
  /** Removes the tarball and the copy it was packed from. */
  dispose(): void;
}

/**
 * `npm pack` of the repository as a clean clone would pack it: its files (tracked, and new ones not
 * ignored: what a commit of the working tree would hold) are copied to a temporary directory without
 * bin/, and packed there, so the package's own `prepare` script must build what the tarball ships.
 * node_modules is linked from the repository (the build's compiler and types).
 */
export function packPackage(): PackedPackage {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "dpa-pack-"));
  try {
    const src = path.join(dir, "src");
    const listed = spawnSync("git", ["ls-files", "-z", "--cached", "--others", "--exclude-standard"], {
      cwd: repoRoot,
      encoding: "utf8",
    });
    if (listed.status !== 0) throw new Error(`git ls-files failed in ${repoRoot}: ${listed.stderr}`);
    for (const file of listed.stdout.split("\0").filter((f) => f !== "")) {
      const from = path.join(repoRoot, file);
      if (!fs.existsSync(from)) continue; // deleted in the working tree, not yet committed
      fs.mkdirSync(path.dirname(path.join(src, file)), { recursive: true });
      fs.copyFileSync(from, path.join(src, file));
    }
    fs.symlinkSync(path.join(repoRoot, "node_modules"), path.join(src, "node_modules"), "dir");
    const out = npm(["pack", "--json", "--pack-destination", dir, "--loglevel=error"], src);
    // npm prints the prepare script's output before the JSON.
    const [packed] = JSON.parse(out.slice(out.indexOf("["))) as {
      filename: string;
      files: { path: string }[];
    }[];
    return {
      tarball: path.join(dir, packed.filename),
      files: packed.files.map((f) => f.path).sort(),
      dispose: () => fs.rmSync(dir, { recursive: true, force: true }),
    };
  } catch (err) {
    fs.rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}

function killGroup(pid: number | undefined): void {
  if (pid === undefined) {
    return;
  }
  try {
    process.kill(-pid, "SIGKILL");
  } catch {
    // ESRCH: the group is already gone, which is the normal case.
  }
}

/** A packed package installed by npm outside the repository, as a user's copy of it. */
export interface InstalledPackage {
  /** The installed package: `<dir>/node_modules/docker-port-allowlist`. */
  readonly packageDir: string;
  /** Removes the whole install. */
  dispose(): void;
}

/**
 * `npm install <tarball> @pulumi/pulumi@<engine version>` in a new directory outside the
 * repository (dependencies from the npm cache or registry, nothing linked from the repository):
 * the package as a Pulumi YAML user gets it for `packages:` or `pulumi package add`.
 */
export function installPackedPackage(tarball: string): InstalledPackage {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "dpa-installed-"));
  try {
    fs.writeFileSync(
      path.join(dir, "package.json"),
      JSON.stringify({
        name: "dpa-installed",
        private: true,
        dependencies: { "@pulumi/pulumi": findEngine().version, "docker-port-allowlist": `file:${tarball}` },
      }) + "\n",
    );
    npm(["install", "--prefer-offline", "--no-audit", "--no-fund", "--loglevel=error"], dir);
    return {
      packageDir: path.join(dir, "node_modules", "docker-port-allowlist"),
      dispose: () => fs.rmSync(dir, { recursive: true, force: true }),
    };
  } catch (err) {
    fs.rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}

/** The parts of `pulumi stack export` the tests read. */
export interface StackState {
  readonly version: number;
  readonly deployment: {
    readonly resources?: StateResource[];
  };
}

/** One resource in the exported state. */
export interface StateResource {
  readonly urn: string;
  readonly type: string;
  readonly id?: string;
  readonly inputs?: Record<string, unknown>;
  readonly outputs?: Record<string, unknown>;
}

/** Our lines in a lab host's filter table (a `dpa:` tag or a DPA- chain). */
export async function dpaLines(lab: Lab, h: LabHost): Promise<string[]> {
  const r = await lab.hostExec(h, "iptables-save -t filter");
  if (r.code !== 0)
    throw new Error(`iptables-save -t filter failed on ${h.name} (exit ${r.code}): ${r.stderr}`);
  return r.stdout
    .split("\n")
    .filter((l) => l.includes('"dpa:') || l.startsWith(":DPA-") || l.startsWith("-A DPA-"));
}

/** client name -> reachable?, for one lab host and port, by real traffic from every client. */
export async function reach(
  lab: Lab,
  h: LabHost,
  port: number,
  proto: "tcp" | "udp",
): Promise<Record<string, boolean>> {
  const out: Record<string, boolean> = {};
  for (const c of lab.clients) out[c.name] = await lab.probe(c, h, port, proto);
  return out;
}

/**
 * The two allowlists the lifecycle tests declare on `h` (config `allowlists` of
 * programs/allowlist): `web` (8080/tcp, as root) and `dns` (5353/udp, as the lab's sudo user),
 * with the given sources; `dns` takes `dnsArgs` too.
 */
export function webAndDns(
  lab: Lab,
  h: LabHost,
  allowed: { web: string[]; dns: string[] },
  dnsArgs: Record<string, unknown> = {},
): { name: string; args: Record<string, unknown> }[] {
  const connection = { host: h.ipv4, hostKey: h.hostKey };
  return [
    { name: "web", args: { connection, port: 8080, protocols: ["tcp"], sources: allowed.web } },
    {
      name: "dns",
      args: {
        connection: { ...connection, user: lab.users.sudo },
        port: 5353,
        protocols: ["udp"],
        sources: allowed.dns,
        ...dnsArgs,
      },
    },
  ];
}

/**
 * Which of (client, tcp4 8080, tcp6 8080, udp4 5353) reach `h`, by real traffic from every client,
 * and whether a container still reaches out over TCP (and UDP, with `containerUdp`).
 */
export async function reachWebAndDns(
  lab: Lab,
  h: LabHost,
  containerUdp = true,
): Promise<Record<string, boolean>> {
  const out: Record<string, boolean> = {};
  for (const c of lab.clients) {
    out[`${c.name} tcp4`] = await lab.probe(c, h, 8080, "tcp", 4);
    out[`${c.name} tcp6`] = await lab.probe(c, h, 8080, "tcp", 6);
    out[`${c.name} udp4`] = await lab.probe(c, h, 5353, "udp", 4);
  }
  out["container tcp out"] = await lab.containerProbe(h, 8080, "tcp");
  if (containerUdp) out["container udp out"] = await lab.containerProbe(h, 5353, "udp");
  return out;
}

/**
 * A project running programs/allowlist (the package at `packageDir`, one `DockerPortAllowlist`
 * per entry of `allowlists`, config `allowlists`, a JSON array of `{ name, args }`), logging in
 * with the lab's client key, kept as a secret.
 */
export function allowlistProject(
  lab: Lab,
  packageDir: string,
  allowlists: string,
  options: Pick<PulumiProjectOptions, "projectName" | "stack"> = {},
): Promise<PulumiProject> {
  return PulumiProject.create({
    programDir: "../programs/allowlist",
    ...options,
    config: {
      packageDir,
      privateKey: { value: lab.clientKey.privateKey, secret: true },
      allowlists,
    },
  });
}
