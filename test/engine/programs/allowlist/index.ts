// A Pulumi program declaring DockerPortAllowlists from stack config, for the engine tests.
//
// Config (namespace = project name):
//   packageDir  absolute path of the COMPILED package (bin/provider): the dynamic provider's
//               methods run in a plain-node provider process that cannot load .ts files
//   privateKey  (secret) the SSH key put into every connection (and proxy) that has none
//   allowlists  JSON: [{ "name": "web", "args": { connection: {...}, port, sources, ... } }]
import * as pulumi from "@pulumi/pulumi";
import type * as dpa from "../../../../provider";

const config = new pulumi.Config();
const pkg = require(config.require("packageDir")) as typeof dpa;
const privateKey = config.getSecret("privateKey");

interface Declared {
  readonly name: string;
  readonly args: dpa.DockerPortAllowlistPlainArgs;
}

const declared = config.requireObject<Declared[]>("allowlists");

export const allowlists: Record<string, Record<string, pulumi.Output<unknown>>> = {};
for (const { name, args } of declared) {
  const { proxy, ...connection } = args.connection;
  const withKey = <T extends { privateKey?: string; password?: string }>(c: T) =>
    c.privateKey === undefined && c.password === undefined && privateKey !== undefined
      ? { ...c, privateKey }
      : c;
  const r = new pkg.DockerPortAllowlist(name, {
    ...args,
    connection: { ...withKey(connection), ...(proxy === undefined ? {} : { proxy: withKey(proxy) }) },
  });
  allowlists[name] = {
    chain: r.chain,
    rules: r.rules,
    hostFindings: r.hostFindings,
    persisted: r.persisted,
    families: r.families,
    firewallBackend: r.firewallBackend,
    lastOperation: r.lastOperation,
  };
}
