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
import type { DockerPortAllowlistPlainArgs, ConnectionArgs } from "../args";
import { dockerPortAllowlistProvider } from "./dynamic";
import type { DockerBridges, OperationReport, RuleLines } from "./lifecycle";

/** Every field may be a Pulumi Input; nested connection fields too. */
export type DockerPortAllowlistArgs = {
  readonly [K in keyof Omit<DockerPortAllowlistPlainArgs, "connection">]: pulumi.Input<
    DockerPortAllowlistPlainArgs[K]
  >;
} & {
  /** How to reach the host. Changing `host` or `port` replaces the resource. */
  readonly connection: pulumi.Input<
    pulumi.Unwrap<ConnectionArgs> | { readonly [K in keyof ConnectionArgs]: pulumi.Input<ConnectionArgs[K]> }
  >;
};

const SECRET_FIELDS = ["password", "privateKey", "privateKeyPassword"] as const;

function carriesSecret(c: Record<string, unknown> | undefined): boolean {
  if (c === undefined) return false;
  return (
    SECRET_FIELDS.some((k) => c[k] !== undefined) ||
    carriesSecret(c.proxy as Record<string, unknown> | undefined)
  );
}

export class DockerPortAllowlist extends pulumi.dynamic.Resource {
  /** The chain this allowlist owns on the host: `DPA-<ruleName>`. */
  declare public readonly chain: pulumi.Output<string>;
  /** The owned name (the given `ruleName`, or one derived from the resource name). */
  declare public readonly ruleName: pulumi.Output<string>;
  /** Our rules per family, exactly as `iptables-save` prints them. */
  declare public readonly rules: pulumi.Output<RuleLines>;
  /** Warnings about the host (fail-open FORWARD chain, foreign rules above ours...). */
  declare public readonly hostFindings: pulumi.Output<string[]>;
  /** False when the live rules are not saved for reboots (the next `up` saves them). */
  declare public readonly persisted: pulumi.Output<boolean>;
  /** Families policed on the host ("ipv4", "ipv6"). */
  declare public readonly families: pulumi.Output<string[]>;
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
    // The whole connection becomes a secret when it carries a credential: the provider process
    // receives plain values, and the engine marks the `connection` output secret again, so
    // neither the state's inputs nor its outputs hold the key or password in plain text.
    const connection = pulumi.output(args.connection).apply((c) => {
      const plain = c as unknown as Record<string, unknown>;
      return carriesSecret(plain) ? pulumi.secret(plain) : pulumi.output(plain);
    });
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
        inSync: undefined,
        lastOperation: undefined,
        dockerBridges: undefined,
        unpolicedPorts: undefined,
        hostKeyFingerprint: undefined,
        proxyHostKeyFingerprint: undefined,
      },
      { ...opts, additionalSecretOutputs: [...(opts?.additionalSecretOutputs ?? []), "connection"] },
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
