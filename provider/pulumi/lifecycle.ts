/**
 * What the dynamic provider's methods do, in plain async functions (no closure capture).
 *
 * `provider/pulumi/dynamic.ts` only forwards to these; they validate with the core, plan with the core
 * and talk to the host through `converge` / `inspectHost`, over the connection the host already has
 * in this provider process when there is one (../host/pool.ts): one SSH connection per host per
 * `pulumi up`, however many allowlists it holds.
 *
 * State layout: outputs = the checked inputs (so read/delete know how to reach the host and
 * what they own) + computed fields. `rules` is computed in `check` from the declaration, so
 * `pulumi preview --diff` shows rule-level changes; `read` replaces it with the live rules when
 * the host drifted, so the next `up` shows and repairs exactly the drift.
 */
import type { ConnectionArgs } from "../args";
import {
  BRIDGE_NAME,
  dockerBridgesOf,
  planAllowlist,
  ownerOf,
  renderDesiredRules,
  liveSetLines,
  withoutBridgeExemptions,
  validateAllowlist,
  validateConnection,
  chainName,
  tagOf,
  hostText,
  guardDrifted,
  unpolicedFindings,
  unpolicedPorts,
  unpolicedPortText,
  type AllowlistSpec,
  type Claim,
  type ConnectionSpec,
  type Family,
  type Plan,
  type ValidationFailure,
  canonicalNft,
  firewallBackendOf,
  renderNftTable,
  withoutNftBridgeExemptions,
  DEFAULT_DOCKER_BRIDGES,
  type FirewallBackend,
  type LiveState,
} from "../core";
import {
  conntrackFindings,
  converge,
  findingMessages,
  unknownStateFindings,
  guardFindingsOf,
  guardOutcomeFindings,
  guardStepFindings,
} from "../host/converge";
import { HostError } from "../host/errors";
import type { HostKeys, SessionOptions } from "../host/exec";
import type { HostOutcome } from "../host/options";
import { liveOf, type HostSnapshot } from "../host/snapshot";
import { pooledConnect } from "../host/pool";
import { inspectHost } from "../host/sync";
import { pacedProgress } from "./progress";

/** The value Pulumi sends for an input that is not known yet (preview). */
export const UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9";

/**
 * Rules per family, exactly as `iptables-save` prints them: our jumps (DOCKER-USER, then INPUT for
 * the docker-proxy path) first, then our chain.
 */
export interface RuleLines {
  ipv4: string[];
  ipv6: string[];
  /**
   * A host where Docker runs its nftables backend: our table's lines as `nft -s list table`
   * prints them (core's ./nft.ts); `ipv4` and `ipv6` are empty then. Rendered once the host's
   * backend is known (recorded by a refresh, `firewallBackend`); until then a preview shows the
   * iptables lines and the apply writes the nftables table.
   */
  nft?: string[];
}

/** Inputs after `check` (what the resource class sends, plus computed `ruleName` and `rules`). */
export interface CheckedInputs {
  readonly connection: Record<string, unknown>;
  /** The Pulumi resource name, injected by the resource class to derive a default ruleName. */
  readonly resourceName: string;
  /**
   * `<project>/<stack>`, injected by the resource class: with `resourceName`, the owner written
   * on the host. Absent in state written before owners existed.
   */
  readonly stack?: string;
  readonly ruleName: string;
  readonly rules: RuleLines;
  readonly [key: string]: unknown;
}

/** What an operation cost on the host. */
export interface OperationReport {
  operation: "create" | "update" | "delete";
  /**
   * SSH connections this operation dialed: 1, or 0 when it ran on the connection another
   * operation of the same `pulumi up` had opened to the host (`reusedConnections` 1). Summed over
   * a host's allowlists: the connections the `up` made to it (1).
   */
  connections: number;
  reusedConnections: number;
  proxyConnections: number;
  roundTrips: number;
  ms: number;
  applied: boolean;
  replanned: boolean;
  conntrackDeleted: number;
  /**
   * Warnings about this operation itself, as `[family] warning: ...` lines: live flows of
   * sources that lost access that it could not cut (no conntrack on the host, or a failed
   * listing or delete), a chain it took over from another resource of this stack. They stay in
   * `hostFindings` until the next create/update.
   */
  findings: string[];
}

export interface Outputs extends CheckedInputs {
  /** `DPA-<ruleName>`. */
  readonly chain: string;
  /** Warnings about the host (fail-open FORWARD, foreign rules above ours...), cause and fix. */
  readonly hostFindings: string[];
  /** False when the live rules are not (yet) saved for reboots; the next `up` saves them. */
  readonly persisted: boolean;
  /** Which families the allowlist polices on this host. */
  readonly families: string[];
  /** Where the allowlist lives on this host: `iptables` (DOCKER-USER) or `nftables` (its own table). */
  readonly firewallBackend?: FirewallBackend;
  /**
   * False when the last refresh found the host off plan (rules changed by hand, FORWARD no
   * longer jumping to DOCKER-USER first...): the next `up` applies the plan again.
   */
  readonly inSync: boolean;
  readonly lastOperation: OperationReport;
  /**
   * The bridges Docker made on the host, per family, as last read from it (create, update,
   * refresh). The chain exempts these when `exemptDockerBridges` is on, and a preview renders
   * its rules with them (see {@link check}).
   */
  readonly dockerBridges: DockerBridges;
  /**
   * The ports Docker publishes on the host that no allowlist polices (any allowlist, of any
   * owner), as of this resource's last create, update or refresh, one line each:
   * `5353/udp ipv4 -> 172.17.0.3:53`, `8080/tcp ipv6 (docker-proxy) -> 172.17.0.2:80` (IPv6
   * clients that docker-proxy serves an IPv4-only container), `8443/tcp ipv4 on 198.18.0.10 -> ...`
   * (published on one address). Empty when every published port is policed.
   *
   * A fact about the whole host, so it can be older than another allowlist's change: where an
   * `up` applies several allowlists to one host, the ones applied first recorded the others'
   * ports as unpoliced, and the first `pulumi refresh` after it brings them up to date (a fleet's
   * per-host `unpolicedPorts` is right at once). For that reason the warning naming them goes to
   * the engine's output of the operation that found them (create, update, refresh), and not into
   * `hostFindings`, which every later `up` would repeat from the state.
   */
  readonly unpolicedPorts: string[];
  /**
   * `SHA256:` fingerprint of the host key seen when this resource first connected, kept current
   * by every operation since (it only changes through a new `connection.hostKey` pin). Where
   * nothing is pinned, later operations refuse a host presenting another key (trust on first use).
   */
  readonly hostKeyFingerprint?: string;
  /** The same for the jump host (`connection.proxy`), when there is one. */
  readonly proxyHostKeyFingerprint?: string;
}

/** Docker's bridges per family, sorted (`dockerBridges` of the core). */
export interface DockerBridges {
  ipv4: string[];
  ipv6: string[];
}

/** Docker's bridges in each family of a live read; none where the family gave no output. */
function bridgesOf(live: LiveState): DockerBridges {
  // Docker's nftables backend names its bridges in its own maps (one list for both families).
  if (firewallBackendOf(live) === "nftables")
    return { ipv4: [...live.nft!.bridges], ipv6: [...live.nft!.bridges] };
  return { ipv4: dockerBridgesOf(live.ipv4, "ipv4"), ipv6: dockerBridgesOf(live.ipv6, "ipv6") };
}

/** The bridges recorded in a state, or undefined where none are (first preview, older state). */
function recordedBridges(state: Record<string, unknown>): DockerBridges | undefined {
  const b = state.dockerBridges as Record<string, unknown> | undefined;
  const names = (v: unknown) =>
    Array.isArray(v) && v.every((n) => typeof n === "string" && BRIDGE_NAME.test(n));
  if (typeof b !== "object" || b === null || !names(b.ipv4) || !names(b.ipv6)) return undefined;
  return { ipv4: b.ipv4 as string[], ipv6: b.ipv6 as string[] };
}

/**
 * The host's published ports that no allowlist polices (`unpolicedPorts`), from the filter
 * tables of a read (after the change, for create/update) and the nat tables of the same host (a
 * change of ours never touches nat), with the warnings that name them (see {@link
 * Outputs.unpolicedPorts} for where those go).
 */
function unpolicedOf(
  live: LiveState,
  snapshot: Pick<HostSnapshot, "nat" | "nft" | "nftJumps">,
): { lines: string[]; findings: string[] } {
  // Our own table as it is now (after a change) beside every allowlist's as read.
  const nftJumps = `${snapshot.nftJumps}\n${live.nft?.listing ?? ""}`;
  const ports = unpolicedPorts({
    filter: { ipv4: live.ipv4, ipv6: live.ipv6 },
    nat: snapshot.nat,
    nft: snapshot.nft,
    nftJumps,
  });
  return { lines: ports.map(unpolicedPortText), findings: findingMessages(unpolicedFindings(ports)) };
}

/** Keys of the user's declaration (and check's computed ones) that an update must apply. */
const INPUT_KEYS = [
  "connection",
  "port",
  "protocols",
  "sources",
  "originalDestination",
  "action",
  "exemptDockerBridges",
  "ruleName",
  "stack",
  "ipv6",
  "persist",
  "rulesV4Path",
  "rulesV6Path",
  "rules",
] as const;

function containsUnknown(value: unknown): boolean {
  if (value === UNKNOWN) return true;
  if (Array.isArray(value)) return value.some(containsUnknown);
  if (typeof value === "object" && value !== null) return Object.values(value).some(containsUnknown);
  return false;
}

/**
 * `check`: validation failures, or the inputs plus the rendered rules. A preview cannot reach the
 * host, so the bridge exemptions are rendered for the Docker bridges recorded by the last
 * refresh (`olds` are the old inputs, where `read` records them and from where each check carries
 * them on); before any refresh, for Docker's default bridge alone. The apply always exempts the
 * bridges it reads from the host, and a refresh reports a chain whose bridges changed as drift.
 */
export function check(
  olds: Record<string, unknown>,
  news: Record<string, unknown>,
): { inputs?: Record<string, unknown>; failures?: ValidationFailure[] } {
  const failures: ValidationFailure[] = [];
  const resourceName = typeof news.resourceName === "string" ? news.resourceName : "allowlist";
  const { connection, ...rest } = news;
  if (!containsUnknown(connection)) {
    const c = validateConnection(connection);
    if (!c.ok) failures.push(...c.failures);
  }
  // During preview parts of the declaration may be unknown; then the rules are unknown too.
  if (containsUnknown(rest)) {
    return failures.length > 0 ? { failures } : { inputs: { ...news } };
  }
  const a = validateAllowlist(rest, resourceName);
  if (!a.ok) failures.push(...a.failures);
  if (failures.length > 0 || !a.ok) return { failures };
  const spec = a.spec;
  const bridges = recordedBridges(olds);
  // The owner line names the connection; while the host is not known yet (preview of a host
  // that another resource creates), the preview shows the rules without it.
  const c = containsUnknown(connection) ? undefined : validateConnection(connection);
  const owner = c?.ok === true ? ownerOf(stackOf(news), resourceName, c.spec.host, c.spec.port) : undefined;
  return {
    inputs: {
      ...news,
      ruleName: spec.ruleName,
      rules:
        olds.firewallBackend === "nftables"
          ? { ipv4: [], ipv6: [], nft: renderNftTable(spec, bridges?.ipv4 ?? DEFAULT_DOCKER_BRIDGES, owner) }
          : {
              ipv4: renderDesiredRules(spec, "ipv4", bridges?.ipv4, owner),
              ipv6: renderDesiredRules(spec, "ipv6", bridges?.ipv6, owner),
            },
      ...(bridges === undefined ? {} : { dockerBridges: bridges }),
      ...(olds.firewallBackend === "nftables" ? { firewallBackend: "nftables" } : {}),
    },
  };
}

function stackOf(inputs: Record<string, unknown>): string | undefined {
  return typeof inputs.stack === "string" ? inputs.stack : undefined;
}

/** Who an operation acts as (see core's owner.ts). */
function claimOf(
  operation: Claim["operation"],
  inputs: Record<string, unknown>,
  conn: ConnectionSpec,
  olds?: Record<string, unknown>,
): Claim {
  const name = typeof inputs.resourceName === "string" ? inputs.resourceName : "allowlist";
  const owner = ownerOf(stackOf(inputs), name, conn.host, conn.port);
  if (olds === undefined) return { owner, operation };
  const oc = validateConnection(olds.connection);
  const oldName = typeof olds.resourceName === "string" ? olds.resourceName : name;
  const previous = oc.ok ? ownerOf(stackOf(olds), oldName, oc.spec.host, oc.spec.port)?.name : undefined;
  return previous === undefined ? { owner, operation } : { owner, operation, previous };
}

/**
 * The new declaration's lines as an nftables host gets them, when the old state says the host is
 * one but the new inputs were rendered without knowing it (a preview before any refresh renders
 * the iptables lines): so the state of a create on such a host compares with the same
 * declaration. Undefined otherwise.
 */
function nftRulesOf(olds: Record<string, unknown>, news: Record<string, unknown>): RuleLines | undefined {
  const r = news.rules as Partial<RuleLines> | undefined;
  if (olds.firewallBackend !== "nftables" || r?.nft !== undefined || containsUnknown(news)) return undefined;
  const { connection: _c, ...rest } = news;
  const name = typeof news.resourceName === "string" ? news.resourceName : "allowlist";
  const a = validateAllowlist(rest, name);
  if (!a.ok) return undefined;
  const c = validateConnection(news.connection);
  const owner = c.ok ? ownerOf(stackOf(news), name, c.spec.host, c.spec.port) : undefined;
  return { ipv4: [], ipv6: [], nft: renderNftTable(a.spec, [], owner) };
}

function same(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/** `diff`: which inputs changed; a different host, SSH port or ruleName is a new resource. */
export function diff(
  olds: Record<string, unknown>,
  news: Record<string, unknown>,
): { changes: boolean; replaces: string[]; deleteBeforeReplace: boolean } {
  const oc = (olds.connection ?? {}) as Record<string, unknown>;
  const nc = (news.connection ?? {}) as Record<string, unknown>;
  const replaces: string[] = [];
  if (!same(oc.host, nc.host)) replaces.push("connection.host");
  if (!same(oc.port ?? 22, nc.port ?? 22)) replaces.push("connection.port");
  if (!same(olds.ruleName, news.ruleName)) replaces.push("ruleName");
  // The bridge exemptions in `rules` are the host's fact, not the declaration: a preview renders
  // them from the last refresh (or guesses docker0), and a bridge added or removed on the host is
  // drift that read reports as inSync: false. So they never make a change by themselves.
  const declaredRules = (v: unknown) => {
    const r = v as Partial<RuleLines> | undefined;
    return {
      ipv4: withoutBridgeExemptions(r?.ipv4 ?? []),
      ipv6: withoutBridgeExemptions(r?.ipv6 ?? []),
      nft: withoutNftBridgeExemptions(r?.nft ?? []),
    };
  };
  const changed = INPUT_KEYS.filter((k) =>
    k === "rules"
      ? !same(declaredRules(olds[k]), declaredRules(nftRulesOf(olds, news) ?? news[k]))
      : !same(olds[k], news[k]),
  );
  // A failed save leaves `persisted: false` in state; the next `up` must save again.
  const unsaved = olds.persisted === false && news.persist !== false;
  // Drift outside our own lines (e.g. a fail-open FORWARD chain) shows in hostFindings only;
  // read() records it as inSync: false so that the next `up` repairs it.
  const offPlan = olds.inSync === false;
  return {
    changes: changed.length > 0 || unsaved || offPlan || replaces.length > 0,
    replaces,
    // Create the new allowlist first, then delete the old: never a moment with neither (two
    // chains on one port intersect, which at worst keeps someone out for a moment). Where the old
    // and new resource are the same host reached under two names, the create takes the chain
    // over (same owner, another `via`) and the old resource's delete then leaves it alone.
    deleteBeforeReplace: false,
  };
}

function specOf(inputs: Record<string, unknown>): { spec: AllowlistSpec; conn: ConnectionSpec } {
  const { connection, ...rest } = inputs;
  const resourceName = typeof inputs.resourceName === "string" ? inputs.resourceName : "allowlist";
  const a = validateAllowlist(rest, resourceName);
  const c = validateConnection(connection);
  const failures = [...(a.ok ? [] : a.failures), ...(c.ok ? [] : c.failures)];
  if (!a.ok || !c.ok) {
    // check() already refused these; reaching here means state from an incompatible version.
    throw new Error(
      `invalid DockerPortAllowlist inputs: ${failures.map((f) => `${f.property}: ${f.reason}`).join("; ")}`,
    );
  }
  return { spec: a.spec, conn: c.spec };
}

function toConnectionArgs(c: ConnectionSpec): ConnectionArgs {
  return c;
}

type Operation = OperationReport["operation"] | "read";

/**
 * The transport options of one operation: the host keys recorded in `state` (trusted on first
 * use where nothing is pinned, and only for the same endpoint), and warnings and paced progress
 * (./progress.ts) written to the provider's stderr, which the engine shows live in the output of
 * every command, `refresh` and `destroy` included (the program does not run there).
 */
function sessionOf(
  operation: Operation,
  inputs: Record<string, unknown>,
  conn: ConnectionSpec,
  state: Record<string, unknown>,
): SessionOptions {
  const old = (state.connection ?? {}) as Record<string, unknown>;
  const oldProxy = (old.proxy ?? undefined) as Record<string, unknown> | undefined;
  const sameEndpoint = (
    a: Record<string, unknown> | undefined,
    b: { host: string; port?: number } | undefined,
  ) => a !== undefined && b !== undefined && a.host === b.host && (a.port ?? 22) === (b.port ?? 22);
  const recorded = (key: string) =>
    typeof state[key] === "string" && state[key] !== "" ? state[key] : undefined;
  const trusted: { host?: string; proxy?: string } = {};
  if (sameEndpoint(old, conn)) trusted.host = recorded("hostKeyFingerprint");
  if (sameEndpoint(oldProxy, conn.proxy)) trusted.proxy = recorded("proxyHostKeyFingerprint");
  const name = typeof inputs.resourceName === "string" ? inputs.resourceName : "allowlist";
  return {
    trustedHostKeys: trusted,
    warn: (message) => {
      process.stderr.write(`warning: DockerPortAllowlist "${name}" (${operation}): ${message}\n`);
    },
    progress: pacedProgress(`DockerPortAllowlist "${name}" (${operation})`, {
      write: (line) => process.stderr.write(line),
    }),
  };
}

/** The host-key outputs: only the keys that were seen (no `undefined` values in outputs). */
function hostKeyOutputs(keys: HostKeys): Pick<Outputs, "hostKeyFingerprint" | "proxyHostKeyFingerprint"> {
  return {
    ...(keys.host === undefined ? {} : { hostKeyFingerprint: keys.host }),
    ...(keys.proxy === undefined ? {} : { proxyHostKeyFingerprint: keys.proxy }),
  };
}

function report(
  operation: OperationReport["operation"],
  o: HostOutcome<Plan>,
  ruleName: string,
): OperationReport {
  return {
    operation,
    connections: o.stats.connections,
    reusedConnections: o.stats.reusedConnections,
    proxyConnections: o.stats.proxyConnections,
    roundTrips: o.stats.roundTrips,
    ms: o.stats.ms,
    applied: o.applied,
    replanned: o.replanned,
    conntrackDeleted: o.conntrackDeleted,
    findings: findingMessages([
      ...conntrackFindings(o, ruleName),
      // A chain taken over from another resource of this stack: true only at this moment.
      ...o.plan.findings.filter((f) => f.code === "owner-taken-over"),
    ]),
  };
}

/** `outs`, after its operation's own warnings went to the engine's output (not only into state). */
function told(session: SessionOptions, outs: Outputs, unpoliced: readonly string[] = []): Outputs {
  for (const m of [...outs.lastOperation.findings, ...unpoliced]) session.warn?.(m);
  return outs;
}

function policedFamilies(spec: AllowlistSpec, live: LiveState): string[] {
  if (firewallBackendOf(live) === "nftables") {
    if (live.nft?.listing == null) return [];
    return (["ipv4", "ipv6"] as const).filter((f) => live.nft!.listing!.includes(`set allow${f.slice(3)} {`));
  }
  const out: string[] = [];
  for (const f of ["ipv4", "ipv6"] as const) {
    const text = live[f];
    if (text !== null && text.includes(`:${chainName(spec.ruleName)} `)) out.push(f);
  }
  return out;
}

function outputs(
  inputs: Record<string, unknown>,
  spec: AllowlistSpec,
  o: HostOutcome<Plan>,
  operation: OperationReport["operation"],
  persisted: boolean,
  claim: Claim,
  unpoliced: { lines: string[] },
): Outputs {
  const { __provider: _ignored, ...rest } = inputs;
  // The guard as this write left it, and what its guard step could not do (issue 9).
  const guard = guardOutcomeFindings(o, spec, spec, claim.owner);
  const done = report(operation, o, spec.ruleName);
  const lastOperation = { ...done, findings: [...done.findings, ...findingMessages(guard.operation)] };
  return {
    ...(rest as CheckedInputs),
    chain: chainName(spec.ruleName),
    // From the state after the change, as `read` computes it, so a refresh right after an up
    // finds nothing new ("docker-user-created" and the like belong to the change only). Only
    // what concerns other chains differs: refresh alone reports orphans and overlaps within the
    // stack, which during an up are the old half of a replacement about to be deleted.
    hostFindings: [
      ...findingMessages(planAllowlist(o.live, spec, spec.ruleName, claim).findings),
      ...findingMessages(guard.host),
      ...lastOperation.findings,
    ],
    persisted,
    families: policedFamilies(spec, o.live),
    firewallBackend: o.plan.backend,
    // On an nftables host, the table's lines as verified on the host (check rendered the
    // iptables lines when it did not know the backend yet).
    ...(o.plan.backend === "nftables"
      ? { rules: { ipv4: [], ipv6: [], nft: [...o.plan.nftExpected].map(hostText) } }
      : {}),
    // A guard step that failed leaves the guard off plan: the next `up` tries again.
    inSync: !guardDrifted(guard.host),
    lastOperation,
    dockerBridges: bridgesOf(o.live),
    unpolicedPorts: unpoliced.lines,
    ...hostKeyOutputs(o.hostKeys),
  };
}

/**
 * A create/update whose rules went live but could not be saved: tell the engine the resource
 * exists (with `persisted: false`) instead of losing it, so the next `up` saves again.
 */
function partial(
  err: HostError,
  id: string,
  inputs: Record<string, unknown>,
  spec: AllowlistSpec,
  operation: OperationReport["operation"],
): Error {
  const e = new Error(err.message, { cause: err }) as Error & {
    id: string;
    properties: unknown;
    reasons: string[];
  };
  e.id = id;
  const { __provider: _ignored, ...rest } = inputs;
  e.properties = {
    ...rest,
    chain: chainName(spec.ruleName),
    hostFindings: [],
    persisted: false,
    families: [],
    inSync: true,
    lastOperation: {
      operation,
      connections: err.stats?.connections ?? 0,
      reusedConnections: err.stats?.reusedConnections ?? 0,
      proxyConnections: err.stats?.proxyConnections ?? 0,
      roundTrips: err.stats?.roundTrips ?? 0,
      ms: err.stats?.ms ?? 0,
      applied: true,
      replanned: false,
      conntrackDeleted: 0,
      findings: [],
    },
  };
  e.reasons = [err.message];
  return e;
}

function idOf(conn: ConnectionSpec, ruleName: string): string {
  return `${conn.host}:${conn.port}/${ruleName}`;
}

export async function create(inputs: Record<string, unknown>): Promise<{ id: string; outs: Outputs }> {
  const { spec, conn } = specOf(inputs);
  const id = idOf(conn, spec.ruleName);
  const claim = claimOf("create", inputs, conn);
  try {
    // First use: nothing recorded yet, so an unpinned host's key is recorded from this connection.
    const session = sessionOf("create", inputs, conn, {});
    const o = await converge(toConnectionArgs(conn), spec, spec, { session, claim, connect: pooledConnect });
    const unpoliced = unpolicedOf(o.live, o.snapshot);
    const outs = outputs(inputs, spec, o, "create", true, claim, unpoliced);
    return { id, outs: told(session, outs, unpoliced.findings) };
  } catch (err) {
    if (HostError.isInstance(err) && err.kind === "persist") throw partial(err, id, inputs, spec, "create");
    throw err;
  }
}

export async function update(
  id: string,
  olds: Record<string, unknown>,
  news: Record<string, unknown>,
): Promise<{ outs: Outputs }> {
  const { spec, conn } = specOf(news);
  const claim = claimOf("update", news, conn, olds);
  try {
    const session = sessionOf("update", news, conn, olds);
    const o = await converge(toConnectionArgs(conn), spec, spec, { session, claim, connect: pooledConnect });
    const unpoliced = unpolicedOf(o.live, o.snapshot);
    return {
      outs: told(session, outputs(news, spec, o, "update", true, claim, unpoliced), unpoliced.findings),
    };
  } catch (err) {
    if (HostError.isInstance(err) && err.kind === "persist") throw partial(err, id, news, spec, "update");
    throw err;
  }
}

/**
 * `delete`: removes everything the allowlist owns from the live host. A host that cannot save
 * its rules files (full disk, read-only, no /etc/iptables) does not make the delete fail: the
 * rules are gone, and a failed delete would keep the resource in the state and fail the same way
 * at every later `destroy`. Pulumi's delete returns nothing, so the failed save becomes a warning
 * on the provider's stderr (which the engine shows, like the unpinned-host-key warning): the
 * saved file still holds the deleted rules and brings them back at the next boot until it is
 * saved again.
 */
export async function remove(_id: string, props: Record<string, unknown>): Promise<void> {
  const { spec, conn } = specOf(props);
  const session = sessionOf("delete", props, conn, props);
  try {
    const o = await converge(toConnectionArgs(conn), null, spec, {
      session,
      claim: claimOf("delete", props, conn),
      connect: pooledConnect,
    });
    // A saved copy the guard still holds would bring the deleted rules back: say so.
    for (const m of findingMessages(guardStepFindings(o.guard.failed))) session.warn?.(m);
  } catch (err) {
    if (!HostError.isInstance(err) || err.kind !== "persist") throw err;
    session.warn?.(
      `the rules were deleted from the live host, but the saved rules could not be updated: a saved copy ` +
        `that still holds them brings them back at the next boot. ${err.message}\nOnce that is fixed, save the live rules on the host again: ` +
        `\`netfilter-persistent save\` (iptables-persistent), or \`iptables-save > ${spec.rulesV4Path}\` and ` +
        `\`ip6tables-save > ${spec.rulesV6Path}\`.`,
    );
  }
}

/**
 * Our lines in a live save text, in the order {@link renderDesiredRules} renders them, as
 * printable text: they land in the state and in `pulumi preview --diff`, and a line someone put
 * into our chain may hold any bytes.
 */
export function ownedLines(saveText: string | null, ruleName: string): string[] {
  if (saveText === null) return [];
  const chain = chainName(ruleName);
  const tag = `--comment "${tagOf(ruleName)}"`;
  const lines = saveText.split("\n");
  const jumpsIn = (from: string) =>
    lines.filter((l) => l.startsWith(`-A ${from} `) && l.endsWith(` -j ${chain}`) && l.includes(tag));
  const rules = lines.filter((l) => l.startsWith(`-A ${chain} `));
  return [...jumpsIn("DOCKER-USER"), ...jumpsIn("INPUT"), ...rules].map(hostText);
}

/** `read` (refresh): the live rules where they drifted, fail-open and other findings. */
export async function read(
  id: string,
  props: Record<string, unknown>,
): Promise<{ id: string; props: Outputs; inputs: Record<string, unknown> }> {
  const { spec, conn } = specOf(props);
  const session = sessionOf("read", props, conn, props);
  const { snapshot, hostKeys } = await inspectHost(toConnectionArgs(conn), spec, session, pooledConnect);
  const live = liveOf(snapshot);
  const claim = claimOf("read", props, conn);
  const plan = planAllowlist(live, spec, spec.ruleName, claim);
  // Whether the guard is installed, enabled and current (issue 9); a stale one is drift.
  const guard = guardFindingsOf(spec, spec, snapshot, snapshot.guard, claim.owner);
  const old = props as unknown as Outputs;
  const rules: RuleLines =
    plan.backend === "nftables"
      ? {
          ipv4: [],
          ipv6: [],
          nft: old.rules?.nft ?? renderNftTable(spec, live.nft?.bridges ?? [], claim.owner),
        }
      : { ipv4: [...(old.rules?.ipv4 ?? [])], ipv6: [...(old.rules?.ipv6 ?? [])] };
  // Recorded in the inputs too (below): check renders the next preview's exemptions with them.
  const dockerBridges = bridgesOf(live);
  if (!plan.inSync) {
    // Only families that really differ take the live lines: a family the host does not police
    // (ipv6 "auto" on a host without IPv6 Docker chains) must not look like drift forever.
    const drifted: Family[] = plan.blocked ? ["ipv4", "ipv6"] : (Object.keys(plan.families) as Family[]);
    if (plan.backend === "nftables") {
      rules.nft = canonicalNft(live.nft?.listing ?? "").map(hostText);
    } else {
      for (const f of drifted) {
        rules[f] = [...ownedLines(live[f], spec.ruleName), ...liveSetLines(live.ipsets, spec.ruleName, f)];
      }
    }
  }
  const persisted =
    !spec.persist ||
    (["ipv4", "ipv6"] as const).every(
      (f) => live[f] === null || snapshot.persisted[f] === snapshot.liveFingerprint[f],
    );
  const unpoliced = unpolicedOf(live, snapshot);
  // The last operation's own warnings (flows it could not cut) stay until the next one.
  const hostFindings = [
    // A rollback that failed for good (issue 9): the host's state is unknown until a write succeeds.
    ...findingMessages(unknownStateFindings(snapshot, spec.ruleName)),
    ...findingMessages(plan.findings),
    ...findingMessages(guard),
    ...(old.lastOperation?.findings ?? []),
  ];
  const { __provider: _ignored, ...rest } = props;
  const next: Outputs = {
    ...(rest as unknown as Outputs),
    rules,
    persisted,
    hostFindings,
    inSync: plan.inSync && !guardDrifted(guard) && snapshot.unknownState === undefined,
    dockerBridges,
    unpolicedPorts: unpoliced.lines,
    ...hostKeyOutputs(hostKeys),
  };
  for (const m of unpoliced.findings) session.warn?.(m);
  const inputs: Record<string, unknown> = {};
  for (const k of [...INPUT_KEYS, "resourceName"]) if (props[k] !== undefined) inputs[k] = props[k];
  inputs.rules = rules;
  inputs.dockerBridges = dockerBridges;
  // Recorded like the bridges: check renders the next preview's lines for this backend.
  inputs.firewallBackend = plan.backend;
  return { id, props: next, inputs };
}
