/**
 * `DockerPortAllowlist` as a Pulumi program sees it (Pulumi mocks): its type token, Inputs at every
 * level, credentials kept secret, and a connection written for `@pulumi/command`'s `remote.Command`
 * accepted as it is. That last part is checked at compile time against `@pulumi/command`'s published
 * types: ts-jest and `tsc --noEmit -p .` refuse this file when the assignments below stop
 * type-checking, and the `@ts-expect-error` lines fail it when our types become too loose to catch
 * anything. What the real engine stores and shows (per-field secrets in state and in `preview
 * --diff`, the alias moving 0.1.x state) is in test/engine/package.test.ts.
 */
import type { remote, types } from "@pulumi/command";
import * as pulumi from "@pulumi/pulumi";

import type { FleetConnectionArgs } from "../../provider/pulumi/fleet";
import {
  DOCKER_PORT_ALLOWLIST_TYPE,
  DockerPortAllowlist,
  type DockerPortAllowlistArgs,
} from "../../provider/pulumi/resource";
import { recordRegistrations, type Registered } from "./support/mocks";

let registered: Registered[] = [];
beforeAll(() => {
  registered = recordRegistrations();
});

/** The inputs the engine would receive for `resource`, once it is registered. */
async function inputsOf(resource: DockerPortAllowlist, name: string): Promise<Record<string, unknown>> {
  await new Promise((resolve) => resource.id.apply(resolve));
  return registered.find((r) => r.name === name)!.inputs;
}

// ---------------------------------------------------------------------------------------------
// Compile time: @pulumi/command's connection types are ours.

type CommandConnection = types.input.remote.ConnectionArgs;

const key = pulumi.secret("-----BEGIN OPENSSH PRIVATE KEY-----");
/** Written for remote.Command, every field used, Inputs where a user would have them. */
const commandConnection: CommandConnection = {
  host: pulumi.output("198.18.0.10"),
  port: 2222,
  user: "deploy",
  privateKey: key,
  privateKeyPassword: pulumi.secret("phrase"),
  password: undefined,
  agentSocketPath: "/run/user/1000/ssh-agent.sock",
  dialErrorLimit: pulumi.output(3),
  perDialTimeout: 5,
  hostKey: "SHA256:k3Yexample",
  proxy: { host: "198.18.0.1", user: "jump", privateKey: key, hostKey: pulumi.output("SHA256:jumpexample") },
};
const commandArgs: remote.CommandArgs = { connection: commandConnection, create: "iptables-save" };

// The same object, and remote.CommandArgs' own `connection` (an Input of it), are our connection.
const asOurs: DockerPortAllowlistArgs["connection"] = commandConnection;
const asOursFromArgs: DockerPortAllowlistArgs["connection"] = commandArgs.connection;
// And, without `host` (given per host), the fleet's shared connection.
const { host: _host, ...shared } = commandConnection;
const asFleet: FleetConnectionArgs = shared;

// Our types still catch mistakes (they are not `any`).
// @ts-expect-error `port` is a number, not a string
const badPort: DockerPortAllowlistArgs["connection"] = { host: "198.18.0.10", port: "22" };
// @ts-expect-error a connection needs `host`
const noHost: DockerPortAllowlistArgs["connection"] = { user: "deploy" };
// @ts-expect-error `sources` holds strings
const badSources: DockerPortAllowlistArgs["sources"] = [pulumi.output(42)];

describe("a connection written for @pulumi/command's remote.Command", () => {
  test("type-checks as ours (above) and reaches the provider unchanged", async () => {
    expect([badPort, noHost, badSources]).toHaveLength(3); // used, so the checks above are kept
    expect(asFleet).not.toHaveProperty("host");
    const a = new DockerPortAllowlist("cmd-a", { connection: asOurs, port: 8080, sources: [] });
    const b = new DockerPortAllowlist("cmd-b", { connection: asOursFromArgs, port: 8080, sources: [] });
    const expected = {
      host: "198.18.0.10",
      port: 2222,
      user: "deploy",
      privateKey: "-----BEGIN OPENSSH PRIVATE KEY-----",
      privateKeyPassword: "phrase",
      agentSocketPath: "/run/user/1000/ssh-agent.sock",
      dialErrorLimit: 3,
      perDialTimeout: 5,
      hostKey: "SHA256:k3Yexample",
      proxy: {
        host: "198.18.0.1",
        user: "jump",
        privateKey: "-----BEGIN OPENSSH PRIVATE KEY-----",
        hostKey: "SHA256:jumpexample",
      },
    };
    for (const [r, name] of [
      [a, "cmd-a"],
      [b, "cmd-b"],
    ] as const) {
      const connection = (await inputsOf(r, name)).connection;
      expect(pulumi.runtime.isRpcSecret(connection)).toBe(true);
      expect(pulumi.runtime.unwrapRpcSecret(connection)).toEqual(expected);
    }
  });
});

describe("DockerPortAllowlist", () => {
  const PIN = "SHA256:pinned"; // pinned host keys: no trust-on-first-use warning in the test output
  test("has a type token that names the product", async () => {
    const r = new DockerPortAllowlist("token", {
      connection: { host: "198.18.0.10", hostKey: PIN },
      port: 8080,
      sources: ["198.18.1.0/24"],
    });
    await inputsOf(r, "token");
    expect(DOCKER_PORT_ALLOWLIST_TYPE).toBe(
      "pulumi-nodejs:dynamic/docker-port-allowlist:DockerPortAllowlist",
    );
    expect(registered.find((x) => x.name === "token")!.type).toBe(DOCKER_PORT_ALLOWLIST_TYPE);
    // Without a credential nothing is secret: a preview shows the whole connection.
    expect(pulumi.runtime.isRpcSecret((await inputsOf(r, "token")).connection)).toBe(false);
  });

  test("takes Inputs at every level: each source, each protocol, each connection field", async () => {
    const r = new DockerPortAllowlist("inputs", {
      connection: { host: pulumi.output("198.18.0.10"), port: Promise.resolve(2222), hostKey: PIN },
      port: pulumi.output(8080),
      protocols: [pulumi.output("udp" as const), "tcp"],
      sources: [pulumi.output("198.18.1.7"), Promise.resolve("198.18.2.0/24"), "2001:db8::/64"],
      persist: pulumi.output(false),
    });
    expect(await inputsOf(r, "inputs")).toMatchObject({
      connection: { host: "198.18.0.10", port: 2222 },
      port: 8080,
      protocols: ["udp", "tcp"],
      sources: ["198.18.1.7", "198.18.2.0/24", "2001:db8::/64"],
      persist: false,
    });
  });

  test("keeps a credential given in plain text secret", async () => {
    const r = new DockerPortAllowlist("plain-key", {
      connection: {
        host: "198.18.0.10",
        password: "hunter2",
        hostKey: PIN,
        proxy: { host: "198.18.0.1", hostKey: PIN },
      },
      port: 8080,
      sources: [],
    });
    const connection = (await inputsOf(r, "plain-key")).connection;
    expect(pulumi.runtime.isRpcSecret(connection)).toBe(true);
    expect(pulumi.runtime.unwrapRpcSecret(connection)).toEqual({
      host: "198.18.0.10",
      password: "hunter2",
      hostKey: PIN,
      proxy: { host: "198.18.0.1", hostKey: PIN },
    });
  });

  test("leaves a credential Input that resolves to nothing unset, not a secret null", async () => {
    const r = new DockerPortAllowlist("no-key", {
      connection: {
        host: "198.18.0.10",
        privateKey: pulumi.output<string | undefined>(undefined),
        hostKey: PIN,
      },
      port: 8080,
      sources: [],
    });
    const connection = (await inputsOf(r, "no-key")).connection;
    expect(connection).toEqual({ host: "198.18.0.10", hostKey: PIN });
  });
});
