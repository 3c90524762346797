/**
 * The Pulumi dynamic provider of `DockerPortAllowlist`.
 *
 * Pulumi serializes this object (its functions' source and captured values) into every
 * resource's state and runs it in a separate provider process; `refresh` and `destroy` run the
 * copy stored in state. So it is kept thin: each method finds the implementation at call time
 * and forwards to it. It captures nothing but two strings (the package subpath and the path of
 * the implementation when the state was written) and the loader below: no ssh2, no secrets, no
 * environment values.
 *
 * Finding the implementation, in this order:
 * 1. by package name, `docker-port-allowlist/provider/lifecycle`, resolved from the provider
 *    process's working directory, which the engine sets to the project directory (the same rule
 *    by which the `pulumi-resource-pulumi-nodejs` shim finds `@pulumi/pulumi`): the project's own
 *    node_modules, or the package itself when the project IS this package (its root program,
 *    through Node's package self-reference). So state keeps working after the project moves or is
 *    checked out elsewhere, and after a package upgrade.
 * 2. the absolute path captured when the state was written (projects that load the package by
 *    path, e.g. this repository's engine fixtures).
 * 3. neither: an error that says how to install the package.
 */
import * as path from "path";
import type * as pulumi from "@pulumi/pulumi";

type Impl = typeof import("./lifecycle");

/** The package subpath of the implementation (package.json `exports["./provider/lifecycle"]`). */
const SUBPATH = "docker-port-allowlist/provider/lifecycle";
export const IMPLEMENTATION_EXPORT: string = SUBPATH;

// Compiled package layout: this file is bin/provider/pulumi/dynamic.js, the implementation
// bin/provider/pulumi/lifecycle.js. Captured as a plain string by closure serialization. (Stacks
// made by 0.1.0 captured bin/provider/host/lifecycle; that path stays as a re-export.)
const IMPLEMENTATION: string = path.join(__dirname, "lifecycle");

/** Why one way of finding the implementation did not work, for the final error. */
interface Miss {
  readonly where: string;
  readonly reason: string;
}

/**
 * Loads the implementation: by package name from `projectDir`, else from `captured` (see the
 * module comment). Runs inside the serialized provider, so it `require()`s Node's modules
 * itself instead of capturing them.
 *
 * @param captured absolute path of the implementation (without extension) when the state was written
 * @param projectDir where to resolve the package from: the provider process's working directory
 * @throws Error saying where it looked and to `npm install docker-port-allowlist` in `projectDir`
 */
function load(captured: string, projectDir: string): Impl {
  const { createRequire } = require("module") as typeof import("module");
  const { join } = require("path") as typeof import("path");
  const missed: Miss[] = [];
  // A require "from a file in the project directory": node_modules lookup from there up, and
  // the package's self-reference when the directory is inside the package itself.
  const fromProject = createRequire(join(projectDir, "[docker-port-allowlist provider].js"));
  let file: string | undefined;
  try {
    file = fromProject.resolve(SUBPATH);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    missed.push({
      where: `package "${SUBPATH}" from ${projectDir}`,
      reason:
        code === "ERR_PACKAGE_PATH_NOT_EXPORTED"
          ? "the installed docker-port-allowlist is older than this state (it does not export ./provider/lifecycle)"
          : code === "MODULE_NOT_FOUND"
            ? "not installed there"
            : (err as Error).message,
    });
  }
  if (file === undefined) {
    try {
      file = require.resolve(captured);
    } catch {
      missed.push({
        where: `${captured}.js`,
        reason: "no such file (the project moved, or node_modules was removed)",
      });
    }
  }
  if (file === undefined) {
    throw new Error(
      `docker-port-allowlist: cannot find the provider's implementation. Looked for ` +
        missed.map((m) => `${m.where}: ${m.reason}`).join("; and for ") +
        `. Fix: run \`npm install docker-port-allowlist\` in ${projectDir} (the directory of Pulumi.yaml), ` +
        `then run the command again.`,
    );
  }
  return require(file) as Impl;
}

/**
 * {@link load} for tests. The provider's methods call `load` itself, which is not exported: Pulumi's
 * closure serializer turns a captured function that a module in node_modules exports into
 * `require("<package>/bin/...")`, a deep path the package's `exports` map refuses; a function that
 * is not exported is serialized by its source instead.
 */
export const loadImplementation: (captured: string, projectDir: string) => Impl = (captured, projectDir) =>
  load(captured, projectDir);

/** The provider object passed to `pulumi.dynamic.Resource`. */
export const dockerPortAllowlistProvider: pulumi.dynamic.ResourceProvider = {
  async check(olds, news) {
    return load(IMPLEMENTATION, process.cwd()).check(olds, news);
  },
  async diff(_id, olds, news) {
    return load(IMPLEMENTATION, process.cwd()).diff(olds, news);
  },
  async create(inputs) {
    return load(IMPLEMENTATION, process.cwd()).create(inputs);
  },
  async read(id, props) {
    return load(IMPLEMENTATION, process.cwd()).read(id, props ?? {});
  },
  async update(id, olds, news) {
    return load(IMPLEMENTATION, process.cwd()).update(id, olds, news);
  },
  async delete(id, props) {
    return load(IMPLEMENTATION, process.cwd()).remove(id, props);
  },
};
