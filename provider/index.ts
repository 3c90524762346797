/**
 * docker-port-allowlist: declare which sources may reach each port Docker publishes.
 *
 * Public API: the {@link DockerPortAllowlist} resource, its argument types, and the pieces
 * other tools may reuse (the pure core and the SSH edge's error class).
 */
export { DockerPortAllowlist, type DockerPortAllowlistArgs } from "./pulumi/resource";
export type {
  ConnectionArgs,
  ProxyConnectionArgs,
  AllowlistArgs,
  PersistenceArgs,
  DockerPortAllowlistPlainArgs,
  Protocol,
  Action,
} from "./args";
export { dockerPortAllowlistProvider } from "./pulumi/dynamic";
export { HostError, type HostErrorKind } from "./host/errors";
export type { DockerBridges, OperationReport, RuleLines } from "./pulumi/lifecycle";
export {
  DockerPortAllowlistFleet,
  FleetError,
  planRollout,
  type DockerPortAllowlistFleetArgs,
  type FleetConnectionArgs,
  type FleetHostArgs,
  type FleetPolicyArgs,
  type RolloutArgs,
} from "./pulumi/fleet";
