/**
 * The public, user-facing argument shapes of `DockerPortAllowlist`.
 *
 * These are plain data types (no Pulumi, no ssh2) so the pure core, the SSH edge, the dynamic
 * provider and the fleet component all speak the same words. Validation lives in
 * `core/spec.ts` (zod); this file only says what a user may write and what each field means.
 */

import type { Action, Ipv6Mode, Protocol } from "./core/layout";

// The domain's words are defined once, by the core that renders them into rules.
export type { Action, Ipv6Mode, Protocol };

/**
 * How to reach a Docker host over SSH. Shaped like `@pulumi/command`'s `remote.Connection`
 * so the same object can be passed to both; `hostKey` and `sudo` are our additions.
 */
export interface ConnectionArgs {
  /** Address of the host (IP or DNS name). */
  readonly host: string;
  /** SSH port. @default 22 */
  readonly port?: number;
  /** Login user. A user other than root runs iptables through `sudo -n`. @default "root" */
  readonly user?: string;
  /** Password for password authentication. Stored as a secret. */
  readonly password?: string;
  /** PEM/OpenSSH private key text. Stored as a secret. */
  readonly privateKey?: string;
  /** Passphrase of `privateKey`. Stored as a secret. */
  readonly privateKeyPassword?: string;
  /**
   * Path of an ssh-agent socket, tried after `privateKey` and `password`.
   * @default - the agent in `$SSH_AUTH_SOCK` of the `pulumi` command, when set (as `@pulumi/command` does)
   */
  readonly agentSocketPath?: string;
  /** A jump host to connect through (like `ssh -J`). */
  readonly proxy?: ProxyConnectionArgs;
  /** Connection attempts before giving up; -1 means no limit. @default 10 */
  readonly dialErrorLimit?: number;
  /** Seconds one connection attempt may take. @default 15 */
  readonly perDialTimeout?: number;
  /**
   * The host key to pin: an OpenSSH public key line (`ssh-ed25519 AAAA...`) or a SHA256
   * fingerprint (`SHA256:...`). A host presenting another key is refused.
   * @default - no pinning; a warning says so on every operation
   */
  readonly hostKey?: string;
  /**
   * Run iptables through `sudo -n`. @default - true when `user` is not root
   */
  readonly sudo?: boolean;
}

/** A jump host. Same fields as {@link ConnectionArgs} except that it cannot nest. */
export type ProxyConnectionArgs = Omit<ConnectionArgs, "proxy" | "sudo">;

/** The allowlist itself: who may reach one published port (or range) on one host. */
export interface AllowlistArgs {
  /**
   * The published host port (`8080`) or an inclusive range (`"8000-8100"`), i.e. the left side
   * of `docker run -p 8080:80`. Matched with `-m conntrack --ctorigdstport`, so rules survive
   * container re-creation and container IP changes.
   */
  readonly port: number | string;
  /** Protocols of the published port. @default ["tcp"] */
  readonly protocols?: readonly Protocol[];
  /**
   * IPv4/IPv6 addresses and CIDRs allowed to reach the port. Normalised (host bits cleared)
   * and de-duplicated. An empty list lets nobody in (except the Docker-bridge exemption).
   */
  readonly sources: readonly string[];
  /**
   * Only police traffic whose original destination was this host address (`--ctorigdst`),
   * for hosts with several IPs.
   * @default - any destination address
   */
  readonly originalDestination?: string;
  /** What happens to everyone else. @default "DROP" */
  readonly action?: Action;
  /**
   * Let traffic that starts in Docker's own bridges through, so containers' own outbound
   * connections to the same port number keep working. The bridges are those Docker made on the
   * host (docker0, br-<id>, custom names, docker_gwbridge), read from Docker's own chains at each
   * apply, never a name pattern: a host uplink bridge called `br-lan` is not exempted. A Docker
   * network made or removed later shows as drift on `refresh` and is followed by the next `up`.
   * @default true
   */
  readonly exemptDockerBridges?: boolean;
  /**
   * Stable name of what this allowlist owns on the host: its chain is `DPA-<ruleName>` and every
   * rule carries the comment `dpa:<ruleName>`. Letters, digits, `_` and `-`; at most 24 chars.
   * @default - derived from the Pulumi resource name
   */
  readonly ruleName?: string;
  /**
   * IPv6 handling. "auto": police IPv6 too when the host's Docker manages ip6tables.
   * "on": require it (error if the host has no IPv6 Docker chains). "off": IPv4 only.
   * @default "auto"
   */
  readonly ipv6?: Ipv6Mode;
}

/** Where and whether the live rules are saved for reboots. */
export interface PersistenceArgs {
  /** Save the rules after every change. @default true */
  readonly persist?: boolean;
  /** @default "/etc/iptables/rules.v4" */
  readonly rulesV4Path?: string;
  /** @default "/etc/iptables/rules.v6" */
  readonly rulesV6Path?: string;
}

/** Everything `new DockerPortAllowlist(name, args)` takes, before Pulumi's Input wrapping. */
export interface DockerPortAllowlistPlainArgs extends AllowlistArgs, PersistenceArgs {
  /** How to reach the host. Changing `host` or `port` replaces the resource. */
  readonly connection: ConnectionArgs;
}
