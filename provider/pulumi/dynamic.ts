/**
 * The Pulumi dynamic provider of `DockerPortAllowlist`.
 *
 * Pulumi serializes this object (its functions' source and captured values) into every
 * resource's state and runs it in a separate provider process. So it is kept thin: each method
 * `require()`s the implementation by absolute path at call time and forwards to it. It captures
 * nothing but that path: no ssh2, no secrets, no environment values.
 */
import * as path from "path";
import type * as pulumi from "@pulumi/pulumi";

// Compiled package layout: this file is bin/provider/pulumi/dynamic.js, the implementation
// bin/provider/pulumi/lifecycle.js. Captured as a plain string by closure serialization. (Stacks
// made by 0.1.0 captured bin/provider/host/lifecycle; that path stays as a re-export.)
const IMPLEMENTATION: string = path.join(__dirname, "lifecycle");

type Impl = typeof import("./lifecycle");

/** The provider object passed to `pulumi.dynamic.Resource`. */
export const dockerPortAllowlistProvider: pulumi.dynamic.ResourceProvider = {
  async check(olds, news) {
    const impl: Impl = require(IMPLEMENTATION);
    return impl.check(olds, news);
  },
  async diff(_id, olds, news) {
    const impl: Impl = require(IMPLEMENTATION);
    return impl.diff(olds, news);
  },
  async create(inputs) {
    const impl: Impl = require(IMPLEMENTATION);
    return impl.create(inputs);
  },
  async read(id, props) {
    const impl: Impl = require(IMPLEMENTATION);
    return impl.read(id, props ?? {});
  },
  async update(id, olds, news) {
    const impl: Impl = require(IMPLEMENTATION);
    return impl.update(id, olds, news);
  },
  async delete(id, props) {
    const impl: Impl = require(IMPLEMENTATION);
    return impl.remove(id, props);
  },
};
