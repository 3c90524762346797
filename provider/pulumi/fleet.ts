/**
 * `DockerPortAllowlistFleet`: one or more allowlist policies applied to many Docker hosts, rolled out
 * canary first and then in batches.
 *
 * The fleet is a thin orchestration layer. It makes one {@link DockerPortAllowlist} per (host, policy)
 * and wires `dependsOn` between batches; everything that touches a host happens inside those
 * resources. The batching itself is the pure function {@link planRollout} so that its guarantees
 * (every host exactly once, canaries first, batch sizes respected, stable order) can be tested
 * without an engine.
 *
 * Why `dependsOn` and not custom sequencing: the Pulumi engine already stops scheduling the
 * dependents of a failed resource, so a failing host in batch N leaves batches N+1.. untouched and
 * the hosts that succeeded keep their new rules. Inside one batch nothing is ordered, so
 * `pulumi up --parallel N` keeps its usual meaning.
 */
import * as pulumi from "@pulumi/pulumi";

import type { AllowlistArgs, ConnectionArgs, PersistenceArgs } from "../args";
import {
  fleetIssues,
  propertyPath,
  rolloutIssues,
  type FirewallBackend,
  type Issue,
  type RolloutArgs,
} from "../core";
import type { InputOf, InputsOf } from "./inputs";
import { DockerPortAllowlist } from "./resource";

export type { RolloutArgs } from "../core";

/**
 * Connection fields as the fleet takes them: each may be a Pulumi Input (e.g. `pulumi.secret(key)`),
 * the jump host's fields too.
 */
export type FleetConnectionArgs = InputsOf<Partial<ConnectionArgs>>;

/**
 * A named allowlist policy. Its name is also the rule name on every host (chain `DPA-<name>`). Its
 * other fields may be Pulumi Inputs at every level (`sources: [eip.publicIp]`).
 */
export interface FleetPolicyArgs extends InputsOf<Omit<AllowlistArgs, "ruleName">> {
  /**
   * Name of the policy. Becomes the `ruleName` on every host, so it must follow the same rules:
   * letters, digits, `_` and `-`, at most 24 characters, unique within the fleet.
   */
  readonly name: string;
}

/** One host of the fleet and how it differs from the rest. */
export interface FleetHostArgs {
  /**
   * Short, unique name of the host inside the fleet (letters, digits, `.`, `_`, `-`; at most
   * 63 characters). Used in resource names and in rollout's `canaries`.
   */
  readonly name: string;
  /**
   * How to reach this host. Merged field by field over the fleet's {@link
   * DockerPortAllowlistFleetArgs.connection}, so a host only states what differs (at least `host`).
   */
  readonly connection: FleetConnectionArgs & { readonly host: pulumi.Input<string> };
  /**
   * Names of the fleet policies that apply to this host.
   * @default - every policy of the fleet
   */
  readonly policies?: readonly string[];
  /**
   * Sources allowed on this host in addition to a policy's own `sources`, keyed by policy name.
   * Each list, and each source in it, may be a Pulumi Input.
   * @default - none
   */
  readonly extraSources?: Readonly<Record<string, InputOf<readonly string[]>>>;
}

/** Everything `new DockerPortAllowlistFleet(name, args)` takes. */
export interface DockerPortAllowlistFleetArgs {
  /** The policies. At least one. */
  readonly policies: readonly FleetPolicyArgs[];
  /** The hosts, in rollout order. */
  readonly hosts: readonly FleetHostArgs[];
  /**
   * Connection settings shared by every host (user, keys, host-key pinning, sudo, proxy...).
   * A host's own `connection` fields win.
   * @default - each host's `connection` must be complete on its own
   */
  readonly connection?: Omit<FleetConnectionArgs, "host">;
  /** @default - no canaries, all hosts in one batch */
  readonly rollout?: RolloutArgs;
  /** Persistence settings for every host. @default - persist to /etc/iptables/rules.v4 and rules.v6 */
  readonly persistence?: InputsOf<PersistenceArgs>;
}

/** {@link FleetPolicyArgs} with plain values only. */
export interface FleetPolicyPlainArgs extends Omit<AllowlistArgs, "ruleName"> {
  readonly name: string;
}

/** {@link FleetHostArgs} with plain values only. */
export interface FleetHostPlainArgs extends Omit<FleetHostArgs, "connection" | "extraSources"> {
  readonly connection: Partial<ConnectionArgs> & { readonly host: string };
  readonly extraSources?: Readonly<Record<string, readonly string[]>>;
}

/**
 * {@link DockerPortAllowlistFleetArgs} with plain values only, e.g. as read from stack config (the
 * root program); every such value is also a valid {@link DockerPortAllowlistFleetArgs}.
 */
export interface DockerPortAllowlistFleetPlainArgs extends Omit<
  DockerPortAllowlistFleetArgs,
  "policies" | "hosts" | "connection" | "persistence"
> {
  readonly policies: readonly FleetPolicyPlainArgs[];
  readonly hosts: readonly FleetHostPlainArgs[];
  readonly connection?: Omit<Partial<ConnectionArgs>, "host">;
  readonly persistence?: PersistenceArgs;
}

/** Raised for a fleet description that cannot be rolled out (names, references, rollout). */
export class FleetError extends Error {
  override readonly name = "FleetError";
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
  /** True for a FleetError even when two copies of this package are loaded. */
  static isInstance(e: unknown): e is FleetError {
    return e instanceof Error && e.name === "FleetError";
  }
}

/** Throws the first issue (core/fleet-spec.ts) as a FleetError: its path, then its reason. */
function throwFirst(issues: readonly Issue[]): void {
  const first = issues[0];
  if (first !== undefined) throw new FleetError(`${propertyPath(first.path)} ${first.reason}`);
}

/**
 * Splits hosts into rollout batches: the canaries first (in host-list order), then the remaining hosts
 * in list order, `batchSize` at a time.
 *
 * Guarantees (tested as properties): every host appears in exactly one batch; no batch is empty;
 * the canary batch, when there is one, comes first and holds exactly the canaries; every other batch
 * holds at most `batchSize` hosts and only the last may hold fewer; hosts keep their relative list
 * order within and across the non-canary batches. Pure: same input, same output.
 *
 * @throws FleetError for duplicate host names, unknown or duplicate canaries, a canary count out of
 *   range or a batch size that is not a positive integer.
 */
export function planRollout(hostNames: readonly string[], rollout: RolloutArgs = {}): string[][] {
  throwFirst(rolloutIssues(hostNames, rollout));
  const { batchSize, canaries: c } = rollout;
  const canaries = new Set(c === undefined ? [] : typeof c === "number" ? hostNames.slice(0, c) : c);
  const batches: string[][] = [];
  const canaryBatch = hostNames.filter((h) => canaries.has(h));
  if (canaryBatch.length > 0) batches.push(canaryBatch);

  const rest = hostNames.filter((h) => !canaries.has(h));
  const size = batchSize ?? Math.max(rest.length, 1);
  for (let i = 0; i < rest.length; i += size) batches.push(rest.slice(i, i + size));
  return batches;
}

/**
 * A policy's sources followed by a host's extra ones. Plain lists stay plain lists (their elements
 * may be Inputs), so a preview still sees each known source; a list that is itself an Output or a
 * Promise makes the result one Output.
 */
function concatSources(
  own: InputOf<readonly string[]>,
  extra: InputOf<readonly string[]> | undefined,
): InputOf<readonly string[]> {
  if (extra === undefined) return own;
  if (Array.isArray(own) && Array.isArray(extra))
    return [...(own as unknown[]), ...(extra as unknown[])] as InputOf<readonly string[]>;
  return pulumi.all([own, extra]).apply(([a, b]) => [...a, ...b]);
}

/**
 * Applies named allowlist policies to many Docker hosts, canary first and then in batches.
 *
 * Creates one {@link DockerPortAllowlist} per (host, policy), named `<fleet>-<host>-<policy>`, with
 * `ruleName` = the policy name. Every resource of a batch depends on every resource of the batch
 * before it.
 */
/**
 * The lines every list holds, in the first list's order: the ports no allowlist of a host polices,
 * from what each of its allowlists reported. Each reports them as of its own last operation, and
 * right after its change its own port is policed; so a port one allowlist of the host polices is
 * never in the result, even while the others' reports are older than its create.
 */
export function samePorts(lists: readonly (readonly string[] | undefined)[]): string[] {
  const known = lists.filter((l): l is readonly string[] => l !== undefined);
  if (known.length === 0) return [];
  return known[0].filter((line) => known.every((l) => l.includes(line)));
}

export class DockerPortAllowlistFleet extends pulumi.ComponentResource {
  /** Host names per batch, in rollout order (the canary batch first). */
  public readonly batches: readonly (readonly string[])[];
  /** The allowlists, by host name and policy name. */
  public readonly allowlists: Readonly<Record<string, Readonly<Record<string, DockerPortAllowlist>>>>;
  /**
   * Per host: the ports Docker publishes there that no allowlist polices (each allowlist's
   * `unpolicedPorts`, see {@link samePorts}); empty for a host that applies no policy (nothing
   * reads it). Accurate once an `up` that adds or changes allowlists ends; a port an `up` stops
   * policing (an allowlist removed from the host) shows after the next `pulumi refresh`.
   */
  public readonly unpolicedPorts: Readonly<Record<string, pulumi.Output<string[]>>>;
  /**
   * Per host: the firewall its allowlists are written to, `iptables` (chains jumped to from
   * DOCKER-USER) or `nftables` (a table per allowlist, where Docker runs its nftables backend), as
   * of their last create, update or refresh; undefined for a host that applies no policy.
   */
  public readonly firewallBackends: Readonly<Record<string, pulumi.Output<FirewallBackend | undefined>>>;

  constructor(name: string, args: DockerPortAllowlistFleetArgs, opts?: pulumi.ComponentResourceOptions) {
    super("docker-port-allowlist:index:Fleet", name, {}, opts);
    // Names and references (core/fleet-spec.ts, shared with the root program's stack config);
    // each allowlist's own fields are validated by its resource, before anything reaches a host.
    throwFirst(fleetIssues(args));
    const batches = planRollout(
      args.hosts.map((h) => h.name),
      args.rollout,
    );
    const byName = new Map(args.hosts.map((h) => [h.name, h]));
    const allowlists: Record<string, Record<string, DockerPortAllowlist>> = {};

    let previous: DockerPortAllowlist[] = [];
    for (const batch of batches) {
      const current: DockerPortAllowlist[] = [];
      for (const hostName of batch) {
        const host = byName.get(hostName)!;
        // Field by field, so a host that only states `host` inherits user, keys, pinning, proxy.
        const connection = { ...args.connection, ...host.connection };
        allowlists[hostName] = {};
        for (const policy of args.policies) {
          if (host.policies && !host.policies.includes(policy.name)) continue;
          const { name: policyName, ...allowlist } = policy;
          const resource = new DockerPortAllowlist(
            `${name}-${hostName}-${policyName}`,
            {
              ...allowlist,
              ...args.persistence,
              sources: concatSources(policy.sources, host.extraSources?.[policyName]),
              ruleName: policyName,
              connection,
            },
            // dependsOn the whole previous batch: the engine starts this batch only when that one
            // succeeded, and starts nothing after a failure.
            { parent: this, dependsOn: previous },
          );
          allowlists[hostName][policyName] = resource;
          current.push(resource);
        }
      }
      // A batch whose hosts apply no policy adds nothing to wait for; keep the previous barrier.
      if (current.length > 0) previous = current;
    }

    this.batches = batches;
    this.allowlists = allowlists;
    this.unpolicedPorts = Object.fromEntries(
      Object.entries(allowlists).map(([host, byPolicy]) => [
        host,
        pulumi.all(Object.values(byPolicy).map((r) => r.unpolicedPorts)).apply(samePorts),
      ]),
    );
    this.firewallBackends = Object.fromEntries(
      Object.entries(allowlists).map(([host, byPolicy]) => [
        host,
        // One firewall per host: its allowlists all report the same (the first that knows).
        pulumi
          .all(Object.values(byPolicy).map((r) => r.firewallBackend))
          .apply((all) => all.find((b) => b !== undefined)),
      ]),
    );
    this.registerOutputs({ batches });
  }
}
