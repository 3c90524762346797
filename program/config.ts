/**
 * The stack-config schema of the root program: a fleet described entirely in `Pulumi.<stack>.yaml`,
 * for users who do not write TypeScript.
 *
 * Pure: no @pulumi/pulumi, no I/O. The program reads the raw values and hands them to
 * {@link parseStackConfig}; this module returns either the {@link DockerPortAllowlistFleetPlainArgs} to
 * build, or every problem at once, each naming the full config key the way
 * `pulumi config set --path` spells it (`docker-port-allowlist:hosts[1].connection.host`), the bad
 * value, what is allowed and how to fix it. Nothing invalid ever reaches a host.
 *
 * This module owns only the structure: which keys exist (unknown ones are refused), reading the
 * text spellings `pulumi config set --path` stores ("8080", "true", "8000:8100"), and merging the
 * shared `connection` under each host's. Every value is judged by the same code that judges the
 * resource's and the fleet component's arguments: core's leaf validators (core/spec.ts) for each
 * field, core's fleet checks (core/fleet-spec.ts) for names, references and the rollout. So the
 * stack config accepts exactly what the resources accept, and says it in the same words.
 *
 * The documented keys are in ./config-reference.ts.
 */
import { z } from "zod";

import type { ConnectionArgs } from "../provider/args";
import { CONFIG_NAMESPACE, CONFIG_REFERENCE, TOP_LEVEL_KEYS, type ConfigKeyDoc } from "./config-reference";
import {
  ALLOWLIST_LEAVES,
  CONNECTION_LEAVES,
  familyConflicts,
  fleetNameIssues,
  fleetReferenceIssues,
  leafSchema,
  policyOverlaps,
  type Issue,
  type LeafCheck,
} from "../provider/core";
import type {
  DockerPortAllowlistFleetPlainArgs,
  FleetHostPlainArgs,
  FleetPolicyPlainArgs,
} from "../provider/pulumi/fleet";

export { CONFIG_NAMESPACE } from "./config-reference";

/** One problem in the stack config. */
export interface ConfigIssue {
  /** The full key, e.g. `docker-port-allowlist:hosts[1].connection.host`. */
  readonly key: string;
  /** What is wrong, the bad value, what is allowed, the fix. */
  readonly reason: string;
}

/** Raised by {@link loadStackConfig}; lists every problem, one per line. */
export class ConfigError extends Error {
  override readonly name = "ConfigError";
  constructor(
    readonly issues: readonly ConfigIssue[],
    options?: { cause?: unknown },
  ) {
    super(
      `The stack configuration has ${issues.length} problem${issues.length === 1 ? "" : "s"}:\n` +
        issues.map((i) => `  ${i.key}: ${i.reason}`).join("\n"),
      options,
    );
  }
  /** True for a ConfigError even when two copies of this package are loaded. */
  static isInstance(e: unknown): e is ConfigError {
    return e instanceof Error && e.name === "ConfigError";
  }
}

// ---------------------------------------------------------------------------------------------
// Structure. `pulumi config set --path` stores a value as text unless it looks like a number or a
// boolean; the readers below turn such text into the value it spells and leave anything else to
// the leaf validator, which refuses it with the field's own message.

/** `"22"` -> 22, `"2.5"` -> 2.5; anything else unchanged. */
const asNumber = (v: unknown): unknown =>
  typeof v === "string" && /^\s*-?\d+(\.\d+)?\s*$/.test(v) ? Number(v) : v;

/** `"true"` / `"false"` -> the boolean; anything else unchanged. */
const asBoolean = (v: unknown): unknown => (v === "true" ? true : v === "false" ? false : v);

/** `"8080"` -> 8080; `"8000:8100"` (docker's `-p` spelling) and `" 8000 - 8100 "` -> `"8000-8100"`. */
const asPort = (v: unknown): unknown => {
  const m = typeof v === "string" ? /^\s*(\d+)\s*(?:[-:]\s*(\d+)\s*)?$/.exec(v) : null;
  return m === null ? v : m[2] === undefined ? Number(m[1]) : `${m[1]}-${m[2]}`;
};

/**
 * A required key judged by core's leaf validator `check`, after `read`. It yields the value as read
 * (the fleet passes it on to the resource, which normalises it itself) unless `out` says otherwise.
 * `.optional()` makes the key optional.
 */
function leaf<O = unknown, T = unknown>(
  check: LeafCheck<T>,
  read: (v: unknown) => unknown = (v) => v,
  out: (value: T, input: unknown) => O = (_value, input) => input as O,
) {
  return z
    .unknown()
    .transform((v, ctx) => {
      // Reported as a missing key (see describe), not as the leaf's "(missing) is not ...".
      if (v === undefined) {
        ctx.issues.push({ code: "invalid_type", expected: "nonoptional", input: v });
        return z.NEVER;
      }
      return read(v);
    })
    .pipe(leafSchema(check, out));
}

const C = CONNECTION_LEAVES;
const L = ALLOWLIST_LEAVES;

/** Text readers of the connection fields that are not strings. */
const CONNECTION_READERS: Partial<Record<keyof typeof C, (v: unknown) => unknown>> = {
  port: asNumber,
  dialErrorLimit: asNumber,
  perDialTimeout: asNumber,
  sudo: asBoolean,
};

/** Every connection field (`host` required), each judged by its core leaf. */
function connectionKeys() {
  return Object.fromEntries(
    Object.entries(C).map(([key, check]) => {
      const schema = leaf(check as LeafCheck<unknown>, CONNECTION_READERS[key as keyof typeof C]);
      return [key, key === "host" ? schema : schema.optional()];
    }),
  ) as Record<keyof typeof C, ReturnType<typeof leaf<unknown>>>;
}

/** A jump host: a connection without `proxy` and `sudo`. */
const proxySchema = z.strictObject(connectionKeys()).omit({ sudo: true });
const hostConnectionSchema = z.strictObject({ ...connectionKeys(), proxy: proxySchema.optional() });
/** The shared defaults: every host has its own address. */
const sharedConnectionSchema = hostConnectionSchema.omit({ host: true });

const policySchema = z.strictObject({
  // A string; its pattern and uniqueness are fleet checks (core/fleet-spec.ts).
  name: z.string(),
  port: leaf(L.port, asPort, ({ from, to }): number | string => (from === to ? from : `${from}-${to}`)),
  protocols: leaf(L.protocols).optional(),
  sources: leaf<string[]>(L.sources),
  action: leaf(L.action).optional(),
  exemptDockerBridges: leaf(L.exemptDockerBridges, asBoolean).optional(),
  originalDestination: leaf(L.originalDestination).optional(),
  ipv6: leaf(L.ipv6).optional(),
});

const hostSchema = z.strictObject({
  name: z.string(),
  connection: hostConnectionSchema,
  policies: z.array(z.string()).optional(),
  extraSources: z.record(z.string(), leaf<string[]>(L.sources)).optional(),
});

// The rollout's values are fleet checks (core/fleet-spec.ts); here only their types.
const rolloutSchema = z.strictObject({
  canaries: z
    .unknown()
    .transform(asNumber)
    .pipe(z.union([z.number(), z.array(z.string())]))
    .optional(),
  batchSize: z.unknown().transform(asNumber).pipe(z.number()).optional(),
});

const persistenceSchema = z.strictObject({
  persist: leaf<boolean>(L.persist, asBoolean).optional(),
  rulesV4Path: leaf<string>(L.rulesV4Path).optional(),
  rulesV6Path: leaf<string>(L.rulesV6Path).optional(),
});

const stackSchema = z.strictObject({
  // A stack that manages no host is a mistake in the config (the component itself allows none).
  hosts: z.array(hostSchema).min(1, { message: "is empty; list at least one host" }),
  policies: z.array(policySchema),
  connection: sharedConnectionSchema.optional(),
  rollout: rolloutSchema.optional(),
  persistence: persistenceSchema.optional(),
});

type StackInput = z.output<typeof stackSchema>;

const show = (v: unknown): string => (typeof v === "string" ? JSON.stringify(v) : String(JSON.stringify(v)));

/** `["hosts", 1, "connection"]` -> `docker-port-allowlist:hosts[1].connection`. */
export function configKey(path: readonly PropertyKey[], namespace = CONFIG_NAMESPACE): string {
  let out = `${namespace}:`;
  path.forEach((seg, i) => {
    if (typeof seg === "number") out += `[${seg}]`;
    else out += i === 0 ? String(seg) : `.${String(seg)}`;
  });
  return out;
}

/** `["hosts", 1, "extraSources", "web"]` -> `hosts[].extraSources.<policy>`. */
function genericKey(path: readonly PropertyKey[]): string {
  return path
    .map((seg, i) => {
      if (typeof seg === "number") return "[]";
      const name = path[i - 1] === "extraSources" ? "<policy>" : String(seg);
      return i === 0 ? name : `.${name}`;
    })
    .join("");
}

/** Where a generic key is documented: connection fields live under `hosts[].connection` only. */
function canonicalKey(generic: string): string {
  const k = generic.startsWith("connection.") ? `hosts[].${generic}` : generic;
  return k.replace(/^hosts\[\]\.connection\.proxy\./, "hosts[].connection.");
}

/** The reference entry for a concrete path. */
function docFor(path: readonly PropertyKey[]): ConfigKeyDoc | undefined {
  const key = canonicalKey(genericKey(path));
  return CONFIG_REFERENCE.find((d) => d.key === key);
}

const typeName = (v: unknown): string =>
  v === null
    ? "null"
    : Array.isArray(v)
      ? "a list"
      : typeof v === "object"
        ? "an object"
        : `${typeof v} ${show(v)}`;

/** Turns one zod issue into our wording. Custom issues already carry their full message. */
function describe(issue: z.core.$ZodIssue, namespace: string): ConfigIssue[] {
  const path = issue.path;
  const doc = docFor(path);
  const key = configKey(path, namespace);
  switch (issue.code) {
    case "unrecognized_keys": {
      const allowed = allowedKeysAt(path);
      return issue.keys.map((k) => ({
        key: configKey([...path, k], namespace),
        reason: `is not a known key; allowed here: ${allowed.join(", ")}. Check the spelling or remove it.`,
      }));
    }
    case "invalid_type": {
      if (issue.input === undefined) {
        const example = doc?.example ? `, e.g. \`pulumi config set --path '${key}' ${doc.example}\`` : "";
        return [
          {
            key,
            reason: `is required (${(doc?.doc ?? "see the config reference").replace(/\.$/, "")}). Set it${example}`,
          },
        ];
      }
      return [{ key, reason: `is ${typeName(issue.input)}; it must be ${doc?.type ?? issue.expected}` }];
    }
    case "invalid_value":
      return [
        {
          key,
          reason: `is ${show(issue.input)}; allowed: ${issue.values.map((v) => show(v)).join(", ")}`,
        },
      ];
    case "invalid_union": {
      // Our unions are "number or string" style: if the value had an acceptable type, a branch
      // produced a custom message; report that one.
      const custom = issue.errors.flat().find((e) => e.code === "custom");
      if (custom) return [{ key, reason: custom.message }];
      return [{ key, reason: `is ${typeName(issue.input)}; it must be ${doc?.type ?? "another type"}` }];
    }
    default:
      return [{ key, reason: issue.message }];
  }
}

function allowedKeysAt(path: readonly PropertyKey[]): string[] {
  const generic = genericKey(path);
  if (generic === "") return [...TOP_LEVEL_KEYS];
  const prefix = generic === "connection" ? "hosts[].connection" : canonicalKey(generic);
  const keys = CONFIG_REFERENCE.map((d) => d.key)
    .filter((k) => k.startsWith(`${prefix}.`))
    .map((k) => k.slice(prefix.length + 1).split(/[.[]/)[0]!);
  // The shared defaults have no `host`; a jump host cannot nest or sudo.
  const excluded = generic === "connection" ? ["host"] : generic.endsWith(".proxy") ? ["proxy", "sudo"] : [];
  return [...new Set(keys)].filter((k) => !excluded.includes(k));
}

/** What the checks take from the environment the program (and so the provider) runs in. */
export interface StackConfigEnv {
  /**
   * `$SSH_AUTH_SOCK`: where set, a connection without a credential logs in with that ssh-agent, as
   * with `@pulumi/command`. @default - unset: every host needs a credential
   */
  readonly sshAuthSock?: string;
}

/**
 * Validates the raw stack config (keys without the namespace, values as Pulumi returns them) and builds
 * the fleet arguments. Never throws; see {@link loadStackConfig}.
 */
export function parseStackConfig(
  raw: Readonly<Record<string, unknown>>,
  namespace = CONFIG_NAMESPACE,
  env: StackConfigEnv = {},
): { ok: true; fleet: DockerPortAllowlistFleetPlainArgs } | { ok: false; issues: ConfigIssue[] } {
  const parsed = stackSchema.safeParse(raw, { reportInput: true });
  if (!parsed.success) {
    return { ok: false, issues: parsed.error.issues.flatMap((i) => describe(i, namespace)) };
  }
  const fleet = toFleetArgs(parsed.data);
  const issues = fleetNameIssues(fleet);
  // Names first: with a bad or repeated name, references to it would only repeat the problem.
  if (issues.length === 0) {
    issues.push(
      ...fleetReferenceIssues(fleet),
      ...(env.sshAuthSock ? [] : loginIssues(fleet)),
      ...policyOverlaps(fleet),
      ...sourceFamilyIssues(fleet),
    );
  }
  if (issues.length > 0) {
    return {
      ok: false,
      issues: issues.map((i) => ({ key: configKey(i.path, namespace), reason: i.reason })),
    };
  }
  return { ok: true, fleet };
}

/** Like {@link parseStackConfig} but throws a {@link ConfigError} listing every problem. */
export function loadStackConfig(
  raw: Readonly<Record<string, unknown>>,
  namespace = CONFIG_NAMESPACE,
  env: StackConfigEnv = {},
): DockerPortAllowlistFleetPlainArgs {
  const result = parseStackConfig(raw, namespace, env);
  if (!result.ok) throw new ConfigError(result.issues);
  return result.fleet;
}

/** A host whose merged connection has no credential cannot log in. */
function loginIssues(fleet: DockerPortAllowlistFleetPlainArgs): Issue[] {
  const issues: Issue[] = [];
  fleet.hosts.forEach((host, h) => {
    const c = { ...fleet.connection, ...host.connection };
    if (c.password === undefined && c.privateKey === undefined && c.agentSocketPath === undefined) {
      issues.push({
        path: ["hosts", h, "connection"],
        reason:
          "has no way to log in: set privateKey or password (with --secret) or agentSocketPath, " +
          `here or for every host in ${CONFIG_NAMESPACE}:connection (or run with an ssh-agent in $SSH_AUTH_SOCK)`,
      });
    }
  });
  return issues;
}

/**
 * Core's checks between a policy's fields (ipv6 and sources against originalDestination), for
 * each policy and for each host's extra sources of it.
 */
function sourceFamilyIssues(fleet: DockerPortAllowlistFleetPlainArgs): Issue[] {
  const destination = (p: FleetPolicyPlainArgs) => {
    const d = L.originalDestination(p.originalDestination);
    return d.ok ? d.value : undefined;
  };
  const issues: Issue[] = [];
  fleet.policies.forEach((policy, p) => {
    for (const i of familyConflicts(destination(policy), policy.ipv6 ?? "auto", policy.sources)) {
      issues.push({ path: ["policies", p, ...i.path], reason: i.reason });
    }
  });
  fleet.hosts.forEach((host, h) => {
    for (const [name, extra] of Object.entries(host.extraSources ?? {})) {
      const policy = fleet.policies.find((p) => p.name === name);
      if (policy === undefined) continue; // an unknown policy: fleetReferenceIssues reports it
      // "auto": the policy's own ipv6 was checked above; here only the extra sources' family.
      for (const i of familyConflicts(destination(policy), "auto", extra)) {
        issues.push({ path: ["hosts", h, "extraSources", name, ...i.path.slice(1)], reason: i.reason });
      }
    }
  });
  return issues;
}

function toFleetArgs(cfg: StackInput): DockerPortAllowlistFleetPlainArgs {
  const policies = cfg.policies.map((p) => ({ ...p })) as FleetPolicyPlainArgs[];
  const hosts: FleetHostPlainArgs[] = cfg.hosts.map((h) => ({
    name: h.name,
    connection: h.connection as Partial<ConnectionArgs> & { host: string },
    ...(h.policies ? { policies: h.policies } : {}),
    ...(h.extraSources ? { extraSources: h.extraSources } : {}),
  }));
  return {
    policies,
    hosts,
    ...(cfg.connection ? { connection: cfg.connection as Omit<ConnectionArgs, "host"> } : {}),
    ...(cfg.rollout ? { rollout: cfg.rollout } : {}),
    ...(cfg.persistence ? { persistence: cfg.persistence } : {}),
  };
}
