/**
 * The package as a Pulumi component package: `Allowlist` and `AllowlistFleet`, for programs in
 * any language (Pulumi YAML, Python, Go, C#...), which `pulumi package add` reaches through the
 * schema Pulumi's analyser derives from the classes and interfaces below (PulumiPlugin.yaml at
 * the package root; the entry is the root `index.ts`).
 *
 * Why a second set of classes: the analyser of `@pulumi/pulumi` 3.248
 * (provider/experimental/analyzer.ts) accepts interfaces, `T[]`, `Input<Input<T>[]>`, optional
 * nested interfaces, index-signature maps and enums, and refuses unions (`number | string`,
 * `"tcp" | "udp"`), `readonly T[]`, `Omit<>`, mapped types, object type aliases and class members
 * that are not Outputs; one refused component fails the whole schema. The TypeScript API
 * (`DockerPortAllowlist`, `DockerPortAllowlistFleet`) keeps its richer types; these classes only
 * translate their arguments ({@link toAllowlistArgs}, {@link toFleetArgs}) and wrap one of them.
 * Validation stays where it is (core/spec.ts, core/fleet-spec.ts): an error names the field as
 * the TypeScript API names it, which these arguments share.
 *
 * Everything the analyser reads is declared in this file (the TSDoc becomes the schema's
 * descriptions), so that the schema is the same from a checkout and from the npm package, which
 * ships this source beside the compiled code.
 */
import * as pulumi from "@pulumi/pulumi";

import type * as args from "../args";
import { DockerPortAllowlistFleet, type DockerPortAllowlistFleetArgs, type FleetHostArgs } from "./fleet";
import { DockerPortAllowlist, type DockerPortAllowlistArgs } from "./resource";

/** A transport protocol Docker can publish. */
export enum Protocol {
  /** TCP. */
  Tcp = "tcp",
  /** UDP. */
  Udp = "udp",
}

/** What happens to a packet for the port whose source is not allowed. */
export enum Action {
  /** Drop it silently. */
  Drop = "DROP",
  /** Refuse it with an ICMP port-unreachable. */
  Reject = "REJECT",
}

/** Whether an allowlist polices IPv6 too. */
export enum Ipv6Mode {
  /** Police IPv6 wherever ip6tables works on the host. */
  Auto = "auto",
  /** Police IPv6 and require ip6tables on the host. */
  On = "on",
  /** IPv4 only. */
  Off = "off",
}

// The enums' values are the core's words, checked at compile time so that the two cannot drift.
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
export const ENUMS_MATCH_CORE: [
  Same<`${Protocol}`, args.Protocol>,
  Same<`${Action}`, args.Action>,
  Same<`${Ipv6Mode}`, NonNullable<args.AllowlistArgs["ipv6"]>>,
] = [true, true, true];

/** The login to an SSH server: everything but its address, shared by a host and its jump host. */
export interface SshLogin {
  /** SSH port. Default: 22. */
  port?: pulumi.Input<number>;
  /** Login user. A user other than root runs iptables through `sudo -n`. Default: "root". */
  user?: pulumi.Input<string>;
  /** Password for password authentication. Stored as a secret. */
  password?: pulumi.Input<string>;
  /** OpenSSH/PEM private key text. Stored as a secret. */
  privateKey?: pulumi.Input<string>;
  /** Passphrase of `privateKey`. Stored as a secret. */
  privateKeyPassword?: pulumi.Input<string>;
  /**
   * Path of an ssh-agent socket, tried after `privateKey` and `password`. Default: the agent in
   * `$SSH_AUTH_SOCK` of the `pulumi` command, when set.
   */
  agentSocketPath?: pulumi.Input<string>;
  /** Connection attempts before giving up; -1 means no limit. Default: 10. */
  dialErrorLimit?: pulumi.Input<number>;
  /** Seconds one connection attempt may take. Default: 15. */
  perDialTimeout?: pulumi.Input<number>;
  /**
   * The host key to pin: an OpenSSH public key line (`ssh-ed25519 AAAA...`) or a SHA256
   * fingerprint (`SHA256:...`); another key is refused. Default: the key seen at the first
   * connection is recorded and another one refused later (a warning says so on every operation).
   */
  hostKey?: pulumi.Input<string>;
}

/** A jump host to connect through (like `ssh -J`). */
export interface SshProxy extends SshLogin {
  /** Address (IP or DNS name) of the jump host's SSH server. */
  host: pulumi.Input<string>;
}

/** How to reach a Docker host over SSH. */
export interface SshConnection extends SshLogin {
  /**
   * Address (IP or DNS name) of the host's SSH server. Required for an `Allowlist`; in a fleet,
   * each host states its own.
   */
  host?: pulumi.Input<string>;
  /** A jump host to connect through (like `ssh -J`). */
  proxy?: pulumi.Input<SshProxy>;
  /** Run iptables through `sudo -n`. Default: true when `user` is not root. */
  sudo?: pulumi.Input<boolean>;
}

/** Who may reach one published port (or range): an allowlist without its host and name. */
export interface PortPolicy {
  /**
   * The published host port, the left side of `docker run -p 8080:80`. Give this or `portRange`.
   */
  port?: pulumi.Input<number>;
  /** An inclusive range of published host ports, e.g. "8000-8100". Give this or `port`. */
  portRange?: pulumi.Input<string>;
  /** Protocols of the published port. Default: ["tcp"]. */
  protocols?: pulumi.Input<pulumi.Input<Protocol>[]>;
  /**
   * IPv4/IPv6 addresses and CIDRs allowed to reach the port (host bits are cleared). An empty
   * list lets nobody in.
   */
  sources: pulumi.Input<pulumi.Input<string>[]>;
  /** Only police traffic originally sent to this host address. Default: any destination. */
  originalDestination?: pulumi.Input<string>;
  /** What happens to everyone else. Default: "DROP". */
  action?: pulumi.Input<Action>;
  /**
   * Let connections that start in Docker's own bridges (containers' outbound traffic) through.
   * Default: true.
   */
  exemptDockerBridges?: pulumi.Input<boolean>;
  /** IPv6 handling: "auto", "on" or "off". Default: "auto". */
  ipv6?: pulumi.Input<Ipv6Mode>;
}

/** Where and whether the live rules are saved for reboots. */
export interface Persistence {
  /** Save the rules after every change so that they survive reboots. Default: true. */
  persist?: pulumi.Input<boolean>;
  /** Where IPv4 rules are saved. Default: "/etc/iptables/rules.v4". */
  rulesV4Path?: pulumi.Input<string>;
  /** Where IPv6 rules are saved. Default: "/etc/iptables/rules.v6". */
  rulesV6Path?: pulumi.Input<string>;
}

/** The arguments of an {@link Allowlist}. */
export interface AllowlistArgs extends PortPolicy, Persistence {
  /** How to reach the host. Changing `host` or `port` replaces the allowlist. */
  connection: pulumi.Input<SshConnection>;
  /**
   * Name of what this allowlist owns on the host: chain `DPA-<ruleName>`, comment
   * `dpa:<ruleName>`. Letters, digits, `_` and `-`; at most 24. Default: from the resource name.
   */
  ruleName?: pulumi.Input<string>;
}

/** Rule lines per address family, exactly as `iptables-save` and `ip6tables-save` print them. */
export interface RuleLinesByFamily {
  /** The IPv4 lines. */
  ipv4: string[];
  /** The IPv6 lines. */
  ipv6: string[];
}

/** A named allowlist policy of a fleet. */
export interface FleetPolicy extends PortPolicy {
  /**
   * Name of the policy, also its rule name on every host (chain `DPA-<name>`). Letters, digits,
   * `_` and `-`; at most 24; unique in the fleet.
   */
  name: string;
}

/** One host of a fleet and how it differs from the rest. */
export interface FleetHost {
  /**
   * Short, unique name of the host in the fleet (letters, digits, `.`, `_`, `-`; at most 63).
   * Used in resource names and in `rollout.canaries`.
   */
  name: string;
  /** How to reach this host (at least `host`), merged field by field over the fleet's `connection`. */
  connection: SshConnection;
  /** Names of the fleet's policies that apply to this host. Default: every policy. */
  policies?: string[];
  /** Sources allowed on this host in addition to a policy's own, keyed by policy name. */
  extraSources?: { [policy: string]: pulumi.Input<pulumi.Input<string>[]> };
}

/** The order in which a fleet's hosts are changed. */
export interface FleetRollout {
  /** Hosts changed first, alone, before any other. Default: no canary batch. */
  canaries?: string[];
  /** How many other hosts are changed together, each batch after the one before. Default: all. */
  batchSize?: number;
}

/** The arguments of an {@link AllowlistFleet}. */
export interface AllowlistFleetArgs {
  /** The policies. At least one. */
  policies: FleetPolicy[];
  /** The hosts, in rollout order. At least one. */
  hosts: FleetHost[];
  /** Connection settings shared by every host (all but `host`); a host's own fields win. */
  connection?: SshConnection;
  /** Canaries and batch size. Default: all hosts in one batch. */
  rollout?: FleetRollout;
  /** Persistence settings for every host. Default: persist to the iptables-persistent files. */
  persistence?: Persistence;
}

/** The published port from `port` or `portRange`: the TypeScript API takes either in `port`. */
function portOf(
  where: string,
  p: { port?: pulumi.Input<number>; portRange?: pulumi.Input<string> },
): pulumi.Input<number | string> {
  if (p.port !== undefined && p.portRange !== undefined) {
    throw new Error(
      `${where}port and ${where}portRange are both set. Fix: give one of them: port for one port (8080), ` +
        `portRange for a range ("8000-8100").`,
    );
  }
  // Neither: the allowlist's own validation reports `port` as required.
  return (p.port ?? p.portRange) as pulumi.Input<number | string>;
}

/** {@link AllowlistArgs} as the TypeScript API's {@link DockerPortAllowlistArgs}. */
export function toAllowlistArgs(a: AllowlistArgs): DockerPortAllowlistArgs {
  const { port: _port, portRange: _portRange, ...rest } = a;
  return { ...rest, port: portOf("", a) } as DockerPortAllowlistArgs;
}

/** {@link AllowlistFleetArgs} as the TypeScript API's {@link DockerPortAllowlistFleetArgs}. */
export function toFleetArgs(a: AllowlistFleetArgs): DockerPortAllowlistFleetArgs {
  return {
    policies: (a.policies ?? []).map((p, i) => {
      const { port: _port, portRange: _portRange, ...rest } = p;
      return { ...rest, port: portOf(`policies[${i}].`, p) };
    }),
    hosts: (a.hosts ?? []) as FleetHostArgs[],
    connection: a.connection,
    rollout: a.rollout,
    persistence: a.persistence,
  } as DockerPortAllowlistFleetArgs;
}

/**
 * Who may reach one port Docker publishes on one host: one `DockerPortAllowlist` (its own
 * chain `DPA-<ruleName>` in the host's DOCKER-USER and INPUT chains), applied over SSH.
 */
export class Allowlist extends pulumi.ComponentResource {
  /** The chain this allowlist owns on the host: `DPA-<ruleName>`. */
  public readonly chain: pulumi.Output<string>;
  /** The owned name (the given `ruleName`, or one derived from the resource name). */
  public readonly ruleName: pulumi.Output<string>;
  /** Its rules per family, exactly as `iptables-save` prints them. */
  public readonly rules: pulumi.Output<RuleLinesByFamily>;
  /** Warnings about the host (a fail-open FORWARD chain, foreign rules above ours...). */
  public readonly hostFindings: pulumi.Output<string[]>;
  /** Ports Docker publishes on the host that no allowlist polices, as of the last operation. */
  public readonly unpolicedPorts: pulumi.Output<string[]>;
  /** False when the last refresh found the host off plan; the next `up` repairs it. */
  public readonly inSync: pulumi.Output<boolean>;
  /** `SHA256:` fingerprint of the host's SSH key, recorded at the first connection. */
  public readonly hostKeyFingerprint: pulumi.Output<string>;
  /**
   * The firewall the allowlist is written to on the host: `iptables` (a chain jumped to from
   * DOCKER-USER) or `nftables` (its own table, where Docker runs its nftables backend).
   */
  public readonly firewallBackend: pulumi.Output<string>;

  constructor(name: string, args: AllowlistArgs, opts?: pulumi.ComponentResourceOptions) {
    super("docker-port-allowlist:index:Allowlist", name, {}, opts);
    const allowlist = new DockerPortAllowlist(name, toAllowlistArgs(args), { parent: this });
    this.chain = allowlist.chain;
    this.ruleName = allowlist.ruleName;
    this.rules = allowlist.rules;
    this.hostFindings = allowlist.hostFindings;
    this.unpolicedPorts = allowlist.unpolicedPorts;
    this.inSync = allowlist.inSync;
    this.hostKeyFingerprint = allowlist.hostKeyFingerprint;
    this.firewallBackend = allowlist.firewallBackend;
    this.registerOutputs({
      chain: this.chain,
      ruleName: this.ruleName,
      rules: this.rules,
      hostFindings: this.hostFindings,
      unpolicedPorts: this.unpolicedPorts,
      inSync: this.inSync,
      hostKeyFingerprint: this.hostKeyFingerprint,
      firewallBackend: this.firewallBackend,
    });
  }
}

/**
 * Named allowlist policies applied to many Docker hosts, canaries first and then in batches: one
 * `DockerPortAllowlistFleet`, i.e. one `DockerPortAllowlist` per (host, policy), named
 * `<fleet>-<host>-<policy>`.
 */
export class AllowlistFleet extends pulumi.ComponentResource {
  /** Host names per batch, in rollout order (the canary batch first). */
  public readonly batches: pulumi.Output<string[][]>;
  /** Per host: the ports Docker publishes there that no allowlist polices. */
  public readonly unpolicedPorts: pulumi.Output<{ [host: string]: string[] }>;
  /** Per host and policy: the rule lines, exactly as `iptables-save` prints them. */
  public readonly rules: pulumi.Output<{ [host: string]: { [policy: string]: RuleLinesByFamily } }>;
  /** Per host: the firewall its allowlists are written to, `iptables` or `nftables`. */
  public readonly firewallBackends: pulumi.Output<{ [host: string]: string }>;

  constructor(name: string, args: AllowlistFleetArgs, opts?: pulumi.ComponentResourceOptions) {
    super("docker-port-allowlist:index:AllowlistFleet", name, {}, opts);
    const fleet = new DockerPortAllowlistFleet(name, toFleetArgs(args), { parent: this });
    this.batches = pulumi.output(fleet.batches.map((b) => [...b]));
    this.unpolicedPorts = pulumi.all(fleet.unpolicedPorts);
    this.rules = pulumi.all(
      Object.fromEntries(
        Object.entries(fleet.allowlists).map(([host, byPolicy]) => [
          host,
          pulumi.all(Object.fromEntries(Object.entries(byPolicy).map(([p, r]) => [p, r.rules]))),
        ]),
      ),
    );
    this.firewallBackends = pulumi.all(fleet.firewallBackends).apply((byHost) => {
      const known: { [host: string]: string } = {};
      for (const [host, backend] of Object.entries(byHost)) if (backend !== undefined) known[host] = backend;
      return known;
    });
    this.registerOutputs({
      batches: this.batches,
      unpolicedPorts: this.unpolicedPorts,
      rules: this.rules,
      firewallBackends: this.firewallBackends,
    });
  }
}
