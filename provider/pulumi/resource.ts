/**
 * `DockerPortAllowlist`: who may reach one port Docker publishes on one host.
 *
 * ```ts
 * new DockerPortAllowlist("web", {
 *   connection: { host: "198.18.0.10", privateKey, hostKey: "ssh-ed25519 AAAA..." },
 *   port: 8080,
 *   protocols: ["tcp"],
 *   sources: ["198.18.1.0/24", "2001:db8:1::/64"],
 * });
 * ```
 *
 * `pulumi preview --diff` shows the exact iptables-save lines that will be added or removed
 * (the `rules` property); `pulumi up` applies them atomically over one SSH connection;
 * `pulumi refresh` finds rules changed by hand and a FORWARD chain that no longer jumps to
 * DOCKER-USER first (`hostFindings`).
 */
import * as pulumi from "@pulumi/pulumi";
import type { DockerPortAllowlistPlainArgs, ConnectionArgs, ProxyConnectionArgs } from "../args";
import { dockerPortAllowlistProvider } from "./dynamic";
import type { InputOf, InputsOf } from "./inputs";
import type { DockerBridges, OperationReport, RuleLines } from "./lifecycle";
import type { FirewallBackend } from "../core";

/**
 * Every field may be a Pulumi Input, at every level: `sources: [eip.publicIp, "198.18.1.0/24"]`,
 * `connection: { host: server.ipv4, privateKey: cfg.requireSecret("key") }`. A connection written
 * for `@pulumi/command`'s `remote.Command` is accepted as it is.
 */
export type DockerPortAllowlistArgs = InputsOf<DockerPortAllowlistPlainArgs>;

// The module and type arguments of `dynamic.Resource`: they make the token below.
const MODULE = "docker-port-allowlist";
const TYPE = "DockerPortAllowlist";

/**
 * The type token of every allowlist in previews, state and policy packs:
 * `pulumi-nodejs:dynamic/docker-port-allowlist:DockerPortAllowlist`, i.e. Pulumi's dynamic-provider
 * package (the engine runs every dynamic resource through it), this package's name and the class name.
 */
export const DOCKER_PORT_ALLOWLIST_TYPE = `pulumi-nodejs:dynamic/${MODULE}:${TYPE}`;

/** The token of allowlists made by 0.1.x, the same for every dynamic resource: an alias of the new one. */
const UNNAMED_DYNAMIC_TYPE = "pulumi-nodejs:dynamic:Resource";

/** The credentials of a connection (and of its jump host): kept secret in state and in diffs. */
const SECRET_FIELDS = ["password", "privateKey", "privateKeyPassword"] as const;

type Connection = InputOf<ConnectionArgs>;

function isOutputOrPromise(v: unknown): boolean {
  return pulumi.Output.isInstance(v) || v instanceof Promise;
}

function carriesSecret(c: Record<string, unknown> | undefined): boolean {
  if (c === undefined || c === null) return false;
  return (
    SECRET_FIELDS.some((k) => c[k] !== undefined) ||
    carriesSecret(c.proxy as Record<string, unknown> | undefined)
  );
}

/** `value` as a secret when it is set; unset stays unset (no secret `null` reaches the provider). */
function secretIfSet(value: pulumi.Input<string> | undefined): pulumi.Input<string> | undefined {
  if (value === undefined) return undefined;
  return pulumi.output(value).apply((v) => (v === undefined || v === null ? v : pulumi.secret(v)));
}

/**
 * The connection with its credentials secret, field by field, so that a change of a non-secret
 * field (`host`, `port`, `user`, `hostKey`...) shows in `pulumi preview --diff` by name while keys
 * and passwords stay `[secret]` (the engine carries each field's secrecy into the outputs). A
 * connection given as one Output or Promise cannot be taken apart before it resolves: it becomes
 * one secret when it carries a credential.
 */
function withSecretCredentials(
  c: Connection | InputOf<ProxyConnectionArgs> | undefined,
): pulumi.Input<unknown> {
  if (c === undefined) return undefined;
  if (isOutputOrPromise(c)) {
    return pulumi.output(c).apply((plain) => {
      const fields = plain as unknown as Record<string, unknown>;
      return carriesSecret(fields) ? pulumi.secret(fields) : fields;
    });
  }
  const fields = { ...(c as Record<string, unknown>) };
  for (const k of SECRET_FIELDS) {
    if (fields[k] !== undefined) fields[k] = secretIfSet(fields[k] as pulumi.Input<string>);
  }
  if (fields.proxy !== undefined) fields.proxy = withSecretCredentials(fields.proxy as Connection);
  return fields;
}

export class DockerPortAllowlist extends pulumi.dynamic.Resource {
  /** The chain this allowlist owns on the host: `DPA-<ruleName>`. */
  declare public readonly chain: pulumi.Output<string>;
  /** The owned name (the given `ruleName`, or one derived from the resource name). */
  declare public readonly ruleName: pulumi.Output<string>;
  /**
   * Our rules per family, exactly as `iptables-save` prints them; on a host where Docker runs its
   * nftables backend, `nft` holds the allowlist's table as `nft -s list table` prints it.
   */
  declare public readonly rules: pulumi.Output<RuleLines>;
  /** Warnings about the host (fail-open FORWARD chain, foreign rules above ours...). */
  declare public readonly hostFindings: pulumi.Output<string[]>;
  /** False when the live rules are not saved for reboots (the next `up` saves them). */
  declare public readonly persisted: pulumi.Output<boolean>;
  /** Families policed on the host ("ipv4", "ipv6"). */
  declare public readonly families: pulumi.Output<string[]>;
  /**
   * Where the allowlist lives on the host: `iptables` (a chain jumped to from DOCKER-USER) or
   * `nftables` (its own table, where Docker runs its nftables firewall backend), as of the last
   * create, update or refresh.
   */
  declare public readonly firewallBackend: pulumi.Output<FirewallBackend>;
  /** False when the last refresh found the host off plan; the next `up` repairs it. */
  declare public readonly inSync: pulumi.Output<boolean>;
  /** SSH connections, command round trips and time of the last create/update. */
  declare public readonly lastOperation: pulumi.Output<OperationReport>;
  /**
   * The bridges Docker made on the host, per family, as last read (create, update, refresh): the
   * ones `exemptDockerBridges` exempts.
   */
  declare public readonly dockerBridges: pulumi.Output<DockerBridges>;
  /**
   * Ports Docker publishes on the host that no allowlist polices, as of this resource's last
   * create, update or refresh (`8080/tcp ipv4 -> 172.17.0.2:80`), each also a warning of that
   * operation. Another allowlist applied to the host later in the same `up` shows at the next
   * `pulumi refresh`.
   */
  declare public readonly unpolicedPorts: pulumi.Output<string[]>;
  /**
   * `SHA256:` fingerprint of the host's SSH key, recorded at the first connection and kept by
   * every operation since. With no `connection.hostKey` pinned, a host presenting another key is
   * refused (trust on first use); a pin always wins.
   */
  declare public readonly hostKeyFingerprint: pulumi.Output<string>;
  /** The same for the jump host (`connection.proxy`); undefined without one. */
  declare public readonly proxyHostKeyFingerprint: pulumi.Output<string | undefined>;

  constructor(name: string, args: DockerPortAllowlistArgs, opts?: pulumi.CustomResourceOptions) {
    // Credentials are secret in the state's inputs and outputs; the rest of the connection is not.
    const connection = withSecretCredentials(args.connection);
    const pins = pulumi.output(args.connection).apply((c) => {
      const conn = c as ConnectionArgs;
      return {
        host: conn.hostKey,
        proxy: conn.proxy === undefined ? null : (conn.proxy.hostKey ?? undefined),
      };
    });
    super(
      dockerPortAllowlistProvider,
      name,
      {
        ...args,
        connection,
        resourceName: name,
        // With the resource name, the owner written on the host (core's owner.ts): another
        // stack or program using the same ruleName there is refused instead of overwritten.
        stack: `${pulumi.getProject()}/${pulumi.getStack()}`,
        ruleName: args.ruleName,
        rules: undefined,
        chain: undefined,
        hostFindings: undefined,
        persisted: undefined,
        families: undefined,
        firewallBackend: undefined,
        inSync: undefined,
        lastOperation: undefined,
        dockerBridges: undefined,
        unpolicedPorts: undefined,
        hostKeyFingerprint: undefined,
        proxyHostKeyFingerprint: undefined,
      },
      // Allowlists made by 0.1.x carry the generic token: the alias moves them without a replacement.
      { ...opts, aliases: [...(opts?.aliases ?? []), { type: UNNAMED_DYNAMIC_TYPE }] },
      MODULE,
      TYPE,
    );
    // Findings about the host (fail-open FORWARD chain, foreign rules deciding before ours...)
    // become warnings of this resource, so `pulumi up` shows them, not only the state.
    this.hostFindings.apply((findings) => {
      for (const f of findings ?? []) void pulumi.log.warn(f, this);
    });
    // The provider says the same on every operation (refresh and destroy included, where this
    // program does not run); here it becomes a warning of this resource in preview and up.
    pins.apply((p) => {
      const unpinned = [
        p.host === undefined ? "connection.hostKey" : undefined,
        p.proxy === undefined ? "connection.proxy.hostKey" : undefined,
      ].filter((f) => f !== undefined);
      for (const field of unpinned) {
        void pulumi.log.warn(
          `${field} is not set: the SSH host key is not pinned, only trusted on first use (the key seen at ` +
            `the first connection is recorded in the state and another one is refused later; a man in the ` +
            `middle at that first connection would go unnoticed). Fix: set ${field} to the host's ` +
            `"ssh-ed25519 AAAA..." line (or SHA256 fingerprint), checked out of band.`,
          this,
        );
      }
    });
  }
}
