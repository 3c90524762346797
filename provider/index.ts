/**
 * docker-port-allowlist: declare which sources may reach each port Docker publishes.
 *
 * Public API: the {@link DockerPortAllowlist} resource, its argument types, and the pieces
 * other tools may reuse (the pure core and the SSH edge's error class).
 */
export {
  DockerPortAllowlist,
  DOCKER_PORT_ALLOWLIST_TYPE,
  type DockerPortAllowlistArgs,
} from "./pulumi/resource";
export type { InputOf, InputsOf } from "./pulumi/inputs";
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
  type DockerPortAllowlistFleetPlainArgs,
  type FleetConnectionArgs,
  type FleetHostArgs,
  type FleetHostPlainArgs,
  type FleetPolicyArgs,
  type FleetPolicyPlainArgs,
  type RolloutArgs,
} from "./pulumi/fleet";
