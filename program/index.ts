/**
 * The root program (`Pulumi.yaml` at the repository root): builds a {@link DockerPortAllowlistFleet}
 * from stack config, so a fleet can be managed without writing TypeScript.
 *
 * Every key of the `docker-port-allowlist:` namespace is read here, including misspelt ones, and
 * validated as a whole by ./config.ts (with core's validators) before any resource exists:
 * a bad config fails the preview with every problem listed under its full key, and nothing
 * reaches a host.
 */
import * as pulumi from "@pulumi/pulumi";

// The fleet comes from the compiled package (`npm run build` makes bin/provider; this repository's
// package.json names it, so Node resolves the name from here): its dynamic provider runs in a
// plain-node process that cannot load .ts sources. The config schema is pure and read from source.
import { DockerPortAllowlistFleet } from "docker-port-allowlist";

import { ConfigError, loadStackConfig } from "./config";
import { CONFIG_NAMESPACE } from "./config-reference";

/** The namespace's raw values: objects and lists arrive as JSON text, scalars as plain text. */
function rawConfig(): Record<string, unknown> {
  const raw: Record<string, unknown> = {};
  for (const [fullKey, text] of Object.entries(pulumi.runtime.allConfig())) {
    const colon = fullKey.indexOf(":");
    if (fullKey.slice(0, colon) !== CONFIG_NAMESPACE) continue;
    let value: unknown = text;
    try {
      value = JSON.parse(text);
    } catch {
      // A plain string (e.g. `pulumi config set docker-port-allowlist:hosts web-1`): the schema
      // reports it with the type it expected.
    }
    raw[fullKey.slice(colon + 1)] = value;
  }
  return raw;
}

function load() {
  try {
    return loadStackConfig(rawConfig(), undefined, { sshAuthSock: process.env.SSH_AUTH_SOCK });
  } catch (e) {
    // RunError: Pulumi prints the message alone, without a stack trace of this program.
    if (ConfigError.isInstance(e)) throw new pulumi.RunError(e.message);
    throw e;
  }
}

// Credentials from config arrive as plain text inside the parsed objects; the resource marks every
// connection that carries one as secret, so they stay encrypted in state.
const fleet = new DockerPortAllowlistFleet(pulumi.getStack(), load());

/** Host names per batch, in rollout order. */
export const batches = fleet.batches;
/** Per host and policy: the chain and the rule lines now on the host. */
export const allowlists = Object.fromEntries(
  Object.entries(fleet.allowlists).map(([host, byPolicy]) => [
    host,
    Object.fromEntries(
      Object.entries(byPolicy).map(([policy, r]) => [policy, { chain: r.chain, rules: r.rules }]),
    ),
  ]),
);
/**
 * Per host: the ports Docker publishes that no allowlist polices (e.g. `5353/udp ipv4 ->
 * 172.17.0.3:53`), as the host's allowlists last read it; `pulumi refresh` brings it up to date.
 */
export const unpolicedPorts = fleet.unpolicedPorts;
/** Per host: the firewall its allowlists are written to, `iptables` or `nftables` (Docker's backend there). */
export const firewallBackends = fleet.firewallBackends;
