/**
 * The host edge: read a host's firewall state and apply a plan to it, over SSH (or, for tests,
 * through the same exec seam on this machine).
 *
 * - ./exec.ts      the seam: what a shell on the host must offer (SshSession, LocalExec)
 * - ./pool.ts      one SSH connection per host shared by the operations of a provider process
 * - ./snapshot.ts  the live state as the scripts report it, and the preconditions to change it
 * - ./dialogue.ts  the wire protocol: command lines, the plan message, the dialogue
 * - ./failure.ts   how the scripts end (exit codes, sudo) -> HostError
 * - ./sync.ts      the operations: readHost, inspectHost, syncHost
 * - ./converge.ts  plan with the core, apply with syncHost: the one converge
 */
export type { Family as FamilyName } from "../core";
export { HostError, type HostErrorKind } from "./errors";
export type {
  Connect,
  ExecChannel,
  ExecOptions,
  ExecResult,
  HostExec,
  HostKeys,
  SessionOptions,
  ProgressKind,
  SessionStats,
} from "./exec";
export { SshSession, fingerprintOfKeyBlob, expectedFingerprint } from "./ssh";
export { SshPool, sshPool, pooledConnect, poolKey, type SshPoolOptions } from "./pool";
export { LocalExec, type LocalExecOptions } from "./local";
export { ExecOutput, DEFAULT_MAX_STDOUT_BYTES, DEFAULT_MAX_STDERR_BYTES, type OutputLimits } from "./output";
export {
  FAMILIES,
  assertChangeable,
  parseSnapshot,
  parseGuardReport,
  type HostBackend,
  type HostSnapshot,
} from "./snapshot";
export {
  PAUSE_POINTS,
  parseConntrackUncut,
  parseGuardOutcome,
  resolveLimits,
  rulesPaths,
  type ApplyLimits,
  type ApplyOptions,
  type ConntrackUncut,
  type GuardOutcome,
  type HostOutcome,
  type HostTarget,
  type PausePoint,
  type PlanLike,
  type ResolvedLimits,
} from "./options";
export { Dialogue, planMessage, readCommand, syncCommand, type Reply } from "./dialogue";
export { HOST_LOCK_PATH } from "./scripts";
export { failure, inspectCommand, sudoError, unknownStateMessage, type Ending } from "./failure";
export { inspectHost, lockWaitMessage, readHost, syncHost } from "./sync";
export {
  converge,
  convergeOptions,
  blockedError,
  conntrackFindings,
  findingMessages,
  guardWanted,
  guardFindingsOf,
  guardOutcomeFindings,
  guardStepFindings,
  unknownStateFindings,
  type ConvergeHooks,
} from "./converge";
