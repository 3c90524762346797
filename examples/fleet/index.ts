/**
 * Several Docker hosts, two policies, a canary then batches, and a per-host override.
 *
 *   hosts:      [{ name, host, hostKey?, port?, extraWebSources? }, ...]   (rollout order)
 *   privateKey: secret, the SSH key every host accepts
 *   webSources / dnsSources: who may reach 8080/tcp and 5353/udp
 *   rollout:    optional, default { canaries: 1, batchSize: 2 }
 *
 * Inside this repository "docker-port-allowlist" resolves to the compiled package (`npm run build`).
 */
import * as pulumi from "@pulumi/pulumi";

import { DockerPortAllowlistFleet, type RolloutArgs } from "docker-port-allowlist";

interface HostConfig {
  readonly name: string;
  readonly host: string;
  readonly hostKey?: string;
  readonly port?: number;
  /** The per-host override: sources allowed on 8080 on this host only. */
  readonly extraWebSources?: string[];
  /** Connection attempts before this host counts as failed. */
  readonly dialErrorLimit?: number;
}

const config = new pulumi.Config();
const hosts = config.requireObject<HostConfig[]>("hosts");

const fleet = new DockerPortAllowlistFleet("edge", {
  // Shared by every host; each host adds its address (and may override any field).
  connection: { user: config.get("user") ?? "root", privateKey: config.requireSecret("privateKey") },
  policies: [
    { name: "web", port: 8080, protocols: ["tcp"], sources: config.requireObject<string[]>("webSources") },
    {
      name: "dns",
      port: 5353,
      protocols: ["udp"],
      sources: config.requireObject<string[]>("dnsSources"),
      action: "REJECT",
    },
  ],
  hosts: hosts.map((h) => ({
    name: h.name,
    connection: {
      host: h.host,
      ...(h.hostKey ? { hostKey: h.hostKey } : {}),
      ...(h.port ? { port: h.port } : {}),
      ...(h.dialErrorLimit ? { dialErrorLimit: h.dialErrorLimit } : {}),
    },
    ...(h.extraWebSources ? { extraSources: { web: h.extraWebSources } } : {}),
  })),
  // The first host alone (canary), then two at a time; each batch waits for the one before.
  rollout: config.getObject<RolloutArgs>("rollout") ?? { canaries: 1, batchSize: 2 },
});

/** Host names per batch, in rollout order. */
export const batches = fleet.batches;
/** The chain and rule lines per host and policy. */
export const rules = Object.fromEntries(
  Object.entries(fleet.allowlists).map(([host, byPolicy]) => [
    host,
    Object.fromEntries(Object.entries(byPolicy).map(([policy, r]) => [policy, r.rules])),
  ]),
);
