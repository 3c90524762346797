/**
 * Findings: what the parser and planner noticed about a host, with a stable `code` so the
 * provider, tests and users can match on it, and a message that says the cause and the fix.
 */
import type { Family } from "./ip";

export type FindingCode =
  /** No DOCKER-USER chain: Docker not running, Docker's nftables backend, or the other iptables backend. */
  | "docker-user-missing"
  /** ip6tables has Docker's chains but no DOCKER-USER (Docker 20.10); the plan creates it. */
  | "docker-user-created"
  /** DOCKER-USER exists but FORWARD never jumps to it: everything in it is inert (fail-open). */
  | "forward-jump-missing"
  /** FORWARD's first rule is not the jump to DOCKER-USER: earlier rules may accept first. */
  | "forward-jump-not-first"
  /** A rule carrying our tag that does not have the shape we write (edited by hand?). */
  | "owned-rule-damaged"
  /** The same owned rule more than once. */
  | "duplicate-owned-rule"
  /** A foreign rule sits above one of our jumps in DOCKER-USER or INPUT, so it decides first. */
  | "foreign-rule-precedes-jump"
  /** A foreign rule jumps into our chain; the chain cannot be deleted while it does. */
  | "foreign-reference-to-owned-chain"
  /** iptables-nft reports that iptables-legacy tables exist too; those rules still filter. */
  | "legacy-tables-present"
  /** A line the parser does not understand; kept verbatim, never deleted. */
  | "unparsed-line"
  /** ipv6 "on" but the host gave no ip6tables-save output (no ip6tables, or not allowed). */
  | "ipv6-unavailable"
  /**
   * ipv6 "off" on a host where ip6tables works: docker-proxy may serve the port on the host's
   * IPv6 addresses, a path this allowlist then leaves unpoliced.
   */
  | "proxy-path-unpoliced"
  /** No iptables output for a family the allowlist needs. */
  | "iptables-unavailable"
  /** After an apply, the host does not show what the plan meant to write. */
  | "verify-mismatch"
  /**
   * Live flows of sources that lost access could not be cut after the apply (no conntrack on
   * the host, its listing failed, or `conntrack -D` failed): they go on until they end.
   */
  | "conntrack-cut-incomplete"
  /** The allowlist's chain is held by another owner (another stack, program or resource): nothing is changed. */
  | "owned-by-another"
  /** A create took the chain over from another resource of the same stack (a renamed resource?). */
  | "owner-taken-over"
  /** Another owner's allowlist polices the same port: a source must be on both lists to get in. */
  | "overlapping-allowlist"
  /**
   * A chain of this tool that nobody manages any more: left behind under an earlier ruleName of
   * this resource, without an owner line, or with no jump into it.
   */
  | "orphan-chain"
  /** The host has no systemd: the guard is installed but nothing runs it (see ./guard.ts). */
  | "guard-not-running"
  /** The guard script is missing on the host. */
  | "guard-not-installed"
  /** The guard's systemd units are not installed as rendered, enabled and running. */
  | "guard-not-enabled"
  /** The guard script or this allowlist's saved copy differs from what the provider installs. */
  | "guard-stale"
  /** A write could not install or update the guard (its saved copy, script or units). */
  | "guard-install-failed"
  /**
   * A rollback of this allowlist failed after every retry (the host keeps a marker until a write
   * succeeds): its chains may be half-changed.
   */
  | "host-state-unknown"
  /** Docker publishes a port on the host that no allowlist (of any owner) polices (./published.ts). */
  | "published-port-unpoliced"
  /**
   * Docker's nftables backend: a refresh found the allowlist's table missing (its port is open to
   * everyone) or not as planned (./nft.ts).
   */
  | "nft-table-missing"
  | "nft-table-drifted"
  /**
   * A family with enough sources for an ipset (./ipset.ts) on a host without the ipset tool: its
   * sources stay one rule each.
   */
  | "ipset-unavailable";

export type Severity = "error" | "warning";

export interface Finding {
  readonly code: FindingCode;
  readonly severity: Severity;
  readonly family: Family;
  /** Cause and fix, for a person. */
  readonly message: string;
  /** The iptables-save line concerned, when there is one. */
  readonly rule?: string;
}

export function finding(
  code: FindingCode,
  severity: Severity,
  family: Family,
  message: string,
  rule?: string,
): Finding {
  return rule === undefined ? { code, severity, family, message } : { code, severity, family, message, rule };
}

/** `iptables` or `ip6tables`, for messages that tell a person what to run. */
export function tool(family: Family): string {
  return family === "ipv4" ? "iptables" : "ip6tables";
}
