/**
 * The pure rule engine of docker-port-allowlist: validate -> parse -> plan -> render.
 *
 * Nothing under `provider/core/` imports ssh2, @pulumi/pulumi, fs or child_process; every
 * function is a pure function of its arguments (node's crypto is the only import), so the
 * engine is tested without hosts and the SSH edge (`provider/host/`) stays thin.
 */
export type { Family, Cidr } from "./ip";
export { parseCidr, parseAddress, formatCidr, compareCidr } from "./ip";
export type { AllowlistSpec, Protocol, Action, Ipv6Mode, PortRange } from "./layout";
export {
  RULE_NAME_MAX,
  RULE_NAME_PATTERN,
  DOCKER_USER,
  FORWARD_TAG,
  INPUT,
  chainName,
  tagOf,
  declaresFamily,
  renderDesiredRules,
  withoutBridgeExemptions,
  renderChainRules,
  renderJumps,
  renderInputJumps,
  renderForwardJump,
  DEFAULT_DOCKER_BRIDGES,
} from "./layout";
export type {
  ValidationFailure,
  Validated,
  ConnectionSpec,
  Issue,
  Leaf,
  LeafCheck,
  SourceSets,
} from "./spec";
export {
  validateAllowlist,
  validateConnection,
  deriveRuleName,
  propertyPath,
  leafSchema,
  ruleNameLeaf,
  familyConflicts,
  ALLOWLIST_LEAVES,
  CONNECTION_LEAVES,
  HOST_KEY_LINE,
  HOST_KEY_FINGERPRINT,
  usesSudo,
  DEFAULT_RULES_V4_PATH,
  DEFAULT_RULES_V6_PATH,
} from "./spec";
export type { FleetShape, PolicyPorts, RolloutArgs } from "./fleet-spec";
export {
  fleetIssues,
  fleetNameIssues,
  fleetReferenceIssues,
  rolloutIssues,
  policyOverlaps,
  appliedPolicies,
  HOST_NAME_PATTERN,
} from "./fleet-spec";
export type { Finding, FindingCode, Severity } from "./findings";
export type { FilterTable, ChainModel, ParsedRule, Negatable, RuleCommand, Backend } from "./parse";
export {
  parseFilterTable,
  parseNatTable,
  getChain,
  hasDockerChains,
  dockerBridges,
  dockerBridgesOf,
  BRIDGE_NAME,
  canonicalRule,
  parseRuleCommand,
} from "./parse";
export {
  fingerprint,
  fingerprintLines,
  FINGERPRINT_AWK,
  FINGERPRINT_CHAINS,
  type FingerprintScope,
} from "./fingerprint";
export { printable, hostText, bytesOf } from "./text";
export type { Owner, Claim, Standing } from "./owner";
export { ownerOf, ownerComment, parseOwnerComment, standing, stackOf } from "./owner";
export type { Plan, FamilyPlan, FirewallBackend, LiveState } from "./plan";
export { planAllowlist, verifyApplied, foreignChanges, policedPaths, firewallBackendOf } from "./plan";
export type { NftLive, NftPlan } from "./nft";
export {
  SET_THRESHOLD,
  keepsSet,
  liveSetLines,
  ownSetNames,
  parseIpsetSave,
  planSets,
  renderSetLines,
  setElement,
  setName,
  tmpSetName,
  usesSet,
} from "./ipset";
export type { LiveSet, SetPlan } from "./ipset";
export {
  NFT_FAMILY,
  NFT_TABLE_PREFIX,
  canonicalNft,
  dockerNftBridges,
  nftTableName,
  nftTableRef,
  renderNftTable,
  verifyNft,
  withoutNftBridgeExemptions,
  nftClaim,
  nftText,
} from "./nft";
export type { GuardReport, GuardWanted, GuardUpdate, PolicedPaths } from "./guard";
export {
  GUARD_DIR,
  GUARD_SCRIPT_PATH,
  GUARD_COPIES_DIR,
  GUARD_UNIT,
  GUARD_SERVICE,
  GUARD_TIMER,
  GUARD_LISTENER,
  GUARD_UNIT_DIR,
  GUARD_INTERVAL_SECONDS,
  guardCopyPath,
  renderGuardCopy,
  renderGuardService,
  renderGuardTimer,
  renderGuardListener,
  guardUpdate,
  guardUpdateEmpty,
  guardFindings,
  guardCopyOwner,
  guardAfter,
  guardDrifted,
  sha256,
} from "./guard";
export { RestoreBuilder } from "./restore";
export { renderRollback } from "./rollback";
export type { PolicedPort } from "./conntrack";
export { conntrackPolicyOf, conntrackPolicy, allowedSources, policedPorts } from "./conntrack";
export type { PublishedPort, UnpolicedPort, PublishedState } from "./published";
export {
  DOCKER_NAT_CHAIN,
  DOCKER_NFT_TABLE,
  DOCKER_NFT_NAT_CHAIN,
  DOCKER_NFT_BRIDGE_MAP,
  publishedPorts,
  publishedPortsNft,
  unpolicedPorts,
  unpolicedPortText,
  unpolicedFindings,
} from "./published";
