/**
 * The stack-config schema of the root program: a fleet described entirely in `Pulumi.<stack>.yaml`,
 * for users who do not write TypeScript.
 *
 * Pure: no @pulumi/pulumi, no I/O. The program reads the raw values and hands them to
 * {@link parseStackConfig}; this module validates them with zod and returns either the
 * {@link DockerPortAllowlistFleetArgs} to build, or every problem at once, each naming the full config
 * key the way `pulumi config set --path` spells it (`docker-port-allowlist:hosts[1].connection.host`),
 * the bad value, what is allowed and how to fix it. Nothing invalid ever reaches a host: domain
 * checks (addresses, CIDRs, ports, names, cross references, overlapping policies) happen here too.
 *
 * {@link CONFIG_REFERENCE} documents every key; the README's config reference is checked against it.
 */
import { isIP } from "node:net";

import { z } from "zod";

import type { ConnectionArgs } from "./args";
import { validateAllowlist, validateConnection } from "./core";
import type { DockerPortAllowlistFleetArgs, FleetHostArgs, FleetPolicyArgs } from "./fleet";

/** The config namespace: the project name of the root `Pulumi.yaml`. */
export const CONFIG_NAMESPACE = "docker-port-allowlist";

/** One documented config key. `key` uses `[]` for "any index" and `<policy>` for a policy name. */
export interface ConfigKeyDoc {
  readonly key: string;
  readonly type: string;
  /** What happens when the key is not set; `undefined` for required keys. */
  readonly default?: string;
  readonly doc: string;
  /** A value for `pulumi config set --path`, used in "missing" messages. */
  readonly example?: string;
}

/**
 * Connection fields, documented once under `hosts[].connection`. The same fields are accepted in
 * `connection` (shared defaults, without `host`) and in `*.proxy` (a jump host, without `proxy` and
 * `sudo`); {@link canonicalKey} maps those places here.
 */
const connectionDocs = (prefix: string): ConfigKeyDoc[] => [
  {
    key: `${prefix}.host`,
    type: "string",
    doc: "Address (IP or DNS name) of the host's SSH server.",
    example: "198.18.0.10",
  },
  { key: `${prefix}.port`, type: "integer 1-65535", default: "22", doc: "SSH port.", example: "22" },
  {
    key: `${prefix}.user`,
    type: "string",
    default: '"root"',
    doc: "Login user. Any other user runs iptables through `sudo -n` (passwordless sudo needed).",
    example: "deploy",
  },
  {
    key: `${prefix}.privateKey`,
    type: "string (secret)",
    default: "none",
    doc: "OpenSSH/PEM private key text. Set it with `--secret`.",
  },
  {
    key: `${prefix}.privateKeyPassword`,
    type: "string (secret)",
    default: "none",
    doc: "Passphrase of `privateKey`. Set it with `--secret`.",
  },
  {
    key: `${prefix}.password`,
    type: "string (secret)",
    default: "none",
    doc: "Password for password authentication. Set it with `--secret`.",
  },
  {
    key: `${prefix}.agentSocketPath`,
    type: "string",
    default: "none",
    doc: "Path of an ssh-agent socket (e.g. the value of `$SSH_AUTH_SOCK`).",
  },
  {
    key: `${prefix}.hostKey`,
    type: "string",
    default: "no pinning (a warning on every operation)",
    doc: "Host key to pin: `ssh-ed25519 AAAA...` or `SHA256:...`. Another key is refused.",
    example: "SHA256:...",
  },
  {
    key: `${prefix}.dialErrorLimit`,
    type: "integer >= -1",
    default: "10",
    doc: "Connection attempts before giving up; -1 means no limit.",
  },
  {
    key: `${prefix}.perDialTimeout`,
    type: "number > 0 (seconds)",
    default: "15",
    doc: "Seconds one connection attempt may take.",
  },
  {
    key: `${prefix}.sudo`,
    type: "boolean",
    default: "true when user is not root",
    doc: "Run iptables through `sudo -n`.",
  },
  {
    key: `${prefix}.proxy`,
    type: "object",
    default: "direct connection",
    doc: "A jump host (like `ssh -J`): the same fields as a connection except `proxy` and `sudo`.",
  },
];

/** Every key of the stack config, in the order the README lists them. */
export const CONFIG_REFERENCE: readonly ConfigKeyDoc[] = [
  {
    key: "hosts",
    type: "list of objects",
    doc: "The Docker hosts, in rollout order. At least one.",
  },
  {
    key: "hosts[].name",
    type: "string",
    doc: "Unique short name (letters, digits, `.`, `_`, `-`; at most 63). Used in resource names and `rollout.canaries`.",
    example: "web-1",
  },
  {
    key: "hosts[].connection",
    type: "object",
    doc: "How to reach the host; merged field by field over `connection`. Needs at least `host`.",
  },
  ...connectionDocs("hosts[].connection"),
  {
    key: "hosts[].policies",
    type: "list of policy names",
    default: "every policy",
    doc: "The policies that apply to this host.",
  },
  {
    key: "hosts[].extraSources.<policy>",
    type: "list of IP/CIDR strings",
    default: "none",
    doc: "Sources allowed on this host in addition to the policy's `sources` (a per-host override).",
  },
  {
    key: "policies",
    type: "list of objects",
    doc: "The allowlists. At least one.",
  },
  {
    key: "policies[].name",
    type: "string",
    doc: "Unique name; also the rule name on each host (chain `DPA-<name>`, comment `dpa:<name>`). Letters, digits, `_`, `-`; at most 24.",
    example: "web",
  },
  {
    key: "policies[].port",
    type: 'integer 1-65535 or "FROM-TO"',
    doc: "The published host port (left side of `-p 8080:80`) or an inclusive range.",
    example: "8080",
  },
  {
    key: "policies[].protocols",
    type: 'list of "tcp" | "udp"',
    default: '["tcp"]',
    doc: "Protocols of the published port.",
  },
  {
    key: "policies[].sources",
    type: "list of IP/CIDR strings",
    doc: "Who may connect. IPv4 and IPv6; host bits are cleared. An empty list lets nobody in.",
    example: '["198.18.7.0/24"]',
  },
  {
    key: "policies[].action",
    type: '"DROP" | "REJECT"',
    default: '"DROP"',
    doc: "What happens to everyone else.",
  },
  {
    key: "policies[].exemptDockerBridges",
    type: "boolean",
    default: "true",
    doc: "Let connections that start in Docker's bridges (containers' own outbound traffic) through.",
  },
  {
    key: "policies[].originalDestination",
    type: "IP address",
    default: "any destination",
    doc: "Only police traffic originally sent to this host address (`--ctorigdst`).",
  },
  {
    key: "policies[].ipv6",
    type: '"auto" | "on" | "off"',
    default: '"auto"',
    doc: "auto: police IPv6 where Docker manages ip6tables; on: require it; off: IPv4 only.",
  },
  {
    key: "connection",
    type: "object",
    default: "none",
    doc: "Connection fields shared by every host (all connection fields except `host`); a host's own fields win.",
  },
  {
    key: "rollout.canaries",
    type: "list of host names, or an integer",
    default: "no canary batch",
    doc: "Hosts changed first, alone; a number N means the first N hosts.",
  },
  {
    key: "rollout.batchSize",
    type: "integer >= 1",
    default: "all remaining hosts in one batch",
    doc: "Hosts changed together after the canaries; each batch waits for the one before it.",
  },
  {
    key: "persistence.persist",
    type: "boolean",
    default: "true",
    doc: "Save the rules after every change so they survive reboots (needs iptables-persistent or equivalent).",
  },
  {
    key: "persistence.rulesV4Path",
    type: "absolute path",
    default: '"/etc/iptables/rules.v4"',
    doc: "Where IPv4 rules are saved (`/etc/sysconfig/iptables` on RHEL-like hosts).",
  },
  {
    key: "persistence.rulesV6Path",
    type: "absolute path",
    default: '"/etc/iptables/rules.v6"',
    doc: "Where IPv6 rules are saved.",
  },
];

/** The top-level keys (after `docker-port-allowlist:`). */
export const TOP_LEVEL_KEYS = ["hosts", "policies", "connection", "rollout", "persistence"] as const;

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
// Value checks shared by several keys. Pulumi stores `config set --path` values as strings unless
// they look like numbers/booleans, so numeric and boolean keys also accept their string spelling.

const HOST_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;
const POLICY_NAME = /^[A-Za-z0-9_-]{1,24}$/;

const show = (v: unknown): string => (typeof v === "string" ? JSON.stringify(v) : String(JSON.stringify(v)));

const intLike = (min: number, max: number, what: string) =>
  z.union([z.number(), z.string()]).transform((v, ctx) => {
    const n = typeof v === "number" ? v : /^-?\d+$/.test(v.trim()) ? Number(v.trim()) : NaN;
    if (!Number.isInteger(n) || n < min || n > max) {
      ctx.issues.push({ code: "custom", input: v, message: `is ${show(v)}; ${what}` });
      return z.NEVER;
    }
    return n;
  });

const boolLike = z.union([z.boolean(), z.string()]).transform((v, ctx) => {
  if (typeof v === "boolean") return v;
  if (v === "true" || v === "false") return v === "true";
  ctx.issues.push({ code: "custom", input: v, message: `is ${show(v)}; must be true or false` });
  return z.NEVER;
});

const nonEmpty = (what: string) =>
  z.string().refine((s) => s.trim().length > 0, { message: `is empty; ${what}` });

/** `1.2.3.4`, `1.2.3.0/24`, `2001:db8::/32`: an address with an optional prefix length of its family. */
export function cidrProblem(value: string): string | undefined {
  const [addr, prefix, extra] = value.split("/");
  const family = isIP(addr ?? "");
  if (extra !== undefined || family === 0) {
    return `is ${show(value)}, not an IP address or CIDR; write an address ("198.18.0.7", "2001:db8::7") or a network ("198.18.0.0/24", "2001:db8::/48")`;
  }
  if (prefix !== undefined) {
    const max = family === 4 ? 32 : 128;
    if (!/^\d{1,3}$/.test(prefix) || Number(prefix) > max) {
      return `is ${show(value)}; the prefix length of an IPv${family} network must be 0-${max}`;
    }
  }
  return undefined;
}

const cidr = z.string().superRefine((v, ctx) => {
  const problem = cidrProblem(v);
  if (problem) ctx.addIssue({ code: "custom", message: problem });
});

const sourceList = z.array(cidr);

/** A port or an inclusive range, normalised to a number or `"FROM-TO"`. */
const portSpec = z.union([z.number(), z.string()]).transform((v, ctx) => {
  const bad = (why: string) => {
    ctx.issues.push({
      code: "custom",
      input: v,
      message: `is ${show(v)}; ${why}. Write a published host port (8080) or an inclusive range ("8000-8100")`,
    });
    return z.NEVER;
  };
  const s = String(v).trim();
  const single = /^\d+$/.exec(s);
  if (single) {
    const n = Number(s);
    return n >= 1 && n <= 65535 ? n : bad("a port must be 1-65535");
  }
  const range = /^(\d+)\s*[-:]\s*(\d+)$/.exec(s);
  if (!range) return bad("that is not a port number or range");
  const [from, to] = [Number(range[1]), Number(range[2])];
  if (from < 1 || to > 65535) return bad("ports must be 1-65535");
  if (from >= to) return bad("a range must go from a lower to a higher port");
  return `${from}-${to}`;
});

const proxySchema = z.strictObject({
  host: nonEmpty("set the jump host's address"),
  port: intLike(1, 65535, "an SSH port must be a whole number 1-65535").optional(),
  user: nonEmpty("set a login user or remove the key (default root)").optional(),
  password: z.string().optional(),
  privateKey: z.string().optional(),
  privateKeyPassword: z.string().optional(),
  agentSocketPath: nonEmpty("set the ssh-agent socket path or remove the key").optional(),
  dialErrorLimit: intLike(-1, 1_000_000, "must be a whole number, -1 for no limit").optional(),
  perDialTimeout: z
    .union([z.number(), z.string()])
    .transform((v, ctx) => {
      const n = Number(v);
      if (!(Number.isFinite(n) && n > 0)) {
        ctx.issues.push({
          code: "custom",
          input: v,
          message: `is ${show(v)}; must be a number of seconds > 0`,
        });
        return z.NEVER;
      }
      return n;
    })
    .optional(),
  hostKey: z
    .string()
    .refine(
      (k) => /^(ssh-|ecdsa-|sk-)\S+ \S+/.test(k.trim()) || /^SHA256:[A-Za-z0-9+/]{43}=?$/.test(k.trim()),
      {
        message:
          "is not a host key; write an OpenSSH public key line (`ssh-ed25519 AAAA...`, as in known_hosts " +
          "without the host name) or a fingerprint (`SHA256:` + 43 base64 characters, from `ssh-keygen -lf`)",
      },
    )
    .optional(),
});

const connectionFields = proxySchema.extend({
  sudo: boolLike.optional(),
  proxy: proxySchema.optional(),
});

const defaultConnectionSchema = connectionFields.omit({ host: true });
const hostConnectionSchema = connectionFields;

const policySchema = z.strictObject({
  name: z.string().regex(POLICY_NAME, {
    message: "must be 1-24 letters, digits, `_` or `-` (it becomes the chain DPA-<name> on every host)",
  }),
  port: portSpec,
  protocols: z
    .array(z.enum(["tcp", "udp"]))
    .min(1, { message: 'is empty; list at least one of "tcp", "udp" (or remove the key for ["tcp"])' })
    .refine((l) => new Set(l).size === l.length, { message: "lists a protocol twice; list each once" })
    .optional(),
  sources: sourceList,
  action: z.enum(["DROP", "REJECT"]).optional(),
  exemptDockerBridges: boolLike.optional(),
  originalDestination: z
    .string()
    .refine((v) => isIP(v) !== 0, { message: "must be one IP address of the host (no prefix length)" })
    .optional(),
  ipv6: z.enum(["auto", "on", "off"]).optional(),
});

const hostSchema = z.strictObject({
  name: z.string().regex(HOST_NAME, {
    message: "must be 1-63 letters, digits, `.`, `_` or `-`, starting with a letter or digit",
  }),
  connection: hostConnectionSchema,
  policies: z.array(z.string()).optional(),
  extraSources: z.record(z.string(), sourceList).optional(),
});

const rolloutSchema = z.strictObject({
  canaries: z.union([intLike(0, 1_000_000, "must be a whole number >= 0"), z.array(z.string())]).optional(),
  batchSize: intLike(1, 1_000_000, "must be a whole number of hosts, 1 or more").optional(),
});

const persistenceSchema = z.strictObject({
  persist: boolLike.optional(),
  rulesV4Path: z.string().startsWith("/", { message: "must be an absolute path" }).optional(),
  rulesV6Path: z.string().startsWith("/", { message: "must be an absolute path" }).optional(),
});

const stackSchema = z.strictObject({
  hosts: z.array(hostSchema).min(1, { message: "is empty; list at least one host" }),
  policies: z.array(policySchema).min(1, { message: "is empty; list at least one policy" }),
  connection: defaultConnectionSchema.optional(),
  rollout: rolloutSchema.optional(),
  persistence: persistenceSchema.optional(),
});

type StackInput = z.output<typeof stackSchema>;

// ---------------------------------------------------------------------------------------------

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

/**
 * Validates the raw stack config (keys without the namespace, values as Pulumi returns them) and builds
 * the fleet arguments. Never throws; see {@link loadStackConfig}.
 */
export function parseStackConfig(
  raw: Readonly<Record<string, unknown>>,
  namespace = CONFIG_NAMESPACE,
): { ok: true; fleet: DockerPortAllowlistFleetArgs } | { ok: false; issues: ConfigIssue[] } {
  const parsed = stackSchema.safeParse(raw, { reportInput: true });
  if (!parsed.success) {
    return { ok: false, issues: parsed.error.issues.flatMap((i) => describe(i, namespace)) };
  }
  const found = crossCheck(parsed.data);
  // The core validates again what each resource will receive: a safety net that only fires where
  // this schema is looser than the core's, and then still names the config key.
  if (found.length === 0) found.push(...coreCheck(parsed.data));
  const issues = found.map((i) => ({ key: configKey(i.path, namespace), reason: i.reason }));
  if (issues.length > 0) return { ok: false, issues };
  return { ok: true, fleet: toFleetArgs(parsed.data) };
}

/** Like {@link parseStackConfig} but throws a {@link ConfigError} listing every problem. */
export function loadStackConfig(
  raw: Readonly<Record<string, unknown>>,
  namespace = CONFIG_NAMESPACE,
): DockerPortAllowlistFleetArgs {
  const result = parseStackConfig(raw, namespace);
  if (!result.ok) throw new ConfigError(result.issues);
  return result.fleet;
}

interface PathIssue {
  readonly path: readonly PropertyKey[];
  readonly reason: string;
}

/** Checks that need more than one key: uniqueness, references, auth, overlapping policies. */
function crossCheck(cfg: StackInput): PathIssue[] {
  const issues: PathIssue[] = [];
  const policyNames = cfg.policies.map((p) => p.name);
  const hostNames = cfg.hosts.map((h) => h.name);

  const firstIndex = (list: readonly string[], i: number) => list.indexOf(list[i]!);
  policyNames.forEach((name, i) => {
    const first = firstIndex(policyNames, i);
    if (first !== i) {
      issues.push({
        path: ["policies", i, "name"],
        reason: `is ${show(name)}, already used by policies[${first}]; policy names must be unique (each owns the chain DPA-<name>)`,
      });
    }
  });
  hostNames.forEach((name, i) => {
    const first = firstIndex(hostNames, i);
    if (first !== i) {
      issues.push({
        path: ["hosts", i, "name"],
        reason: `is ${show(name)}, already used by hosts[${first}]; host names must be unique`,
      });
    }
  });

  const known = `known policies: ${policyNames.join(", ")}`;
  cfg.hosts.forEach((host, h) => {
    host.policies?.forEach((p, j) => {
      if (!policyNames.includes(p)) {
        issues.push({ path: ["hosts", h, "policies", j], reason: `is ${show(p)}, not a policy; ${known}` });
      }
    });
    const applied = host.policies ?? policyNames;
    for (const p of Object.keys(host.extraSources ?? {})) {
      if (!applied.includes(p)) {
        issues.push({
          path: ["hosts", h, "extraSources", p],
          reason: policyNames.includes(p)
            ? `adds sources to policy ${show(p)}, which hosts[${h}].policies does not apply to this host; add it there or remove these sources`
            : `names ${show(p)}, not a policy; ${known}`,
        });
      }
    }
    const c = { ...cfg.connection, ...host.connection };
    if (c.password === undefined && c.privateKey === undefined && c.agentSocketPath === undefined) {
      issues.push({
        path: ["hosts", h, "connection"],
        reason:
          "has no way to log in: set privateKey or password (with --secret) or agentSocketPath, " +
          `here or for every host in ${CONFIG_NAMESPACE}:connection`,
      });
    }
    overlapIssues(cfg, h, applied, issues);
  });

  const canaries = cfg.rollout?.canaries;
  if (typeof canaries === "number" && canaries > hostNames.length) {
    issues.push({
      path: ["rollout", "canaries"],
      reason: `is ${canaries}, more than the ${hostNames.length} hosts; use 0-${hostNames.length}`,
    });
  } else if (Array.isArray(canaries)) {
    canaries.forEach((name, i) => {
      if (!hostNames.includes(name)) {
        issues.push({
          path: ["rollout", "canaries", i],
          reason: `is ${show(name)}, not a host; known hosts: ${hostNames.join(", ")}`,
        });
      } else if (canaries.indexOf(name) !== i) {
        issues.push({
          path: ["rollout", "canaries", i],
          reason: `lists ${show(name)} twice; list each canary once`,
        });
      }
    });
  }
  return issues;
}

/** Runs the core's own validation on every (host, policy) the fleet will create. */
function coreCheck(cfg: StackInput): PathIssue[] {
  const issues: PathIssue[] = [];
  const seen = new Set<string>();
  const add = (path: PropertyKey[], reason: string) => {
    const id = `${configKey(path)}\u0000${reason}`;
    if (!seen.has(id)) issues.push({ path, reason });
    seen.add(id);
  };
  const propertyToPath = (property: string): PropertyKey[] =>
    property
      .split(/\.|(?=\[)/)
      .filter((p) => p !== "")
      .map((p) => (/^\[\d+\]$/.test(p) ? Number(p.slice(1, -1)) : p));

  cfg.hosts.forEach((host, h) => {
    const merged = { ...cfg.connection, ...host.connection };
    const conn = validateConnection(merged);
    if (!conn.ok) {
      for (const f of conn.failures) {
        const [, field] = propertyToPath(f.property);
        const fromHost = field !== undefined && field in host.connection;
        const rest = propertyToPath(f.property).slice(1);
        add(
          fromHost || cfg.connection === undefined
            ? ["hosts", h, "connection", ...rest]
            : ["connection", ...rest],
          f.reason,
        );
      }
    }
    const applied = host.policies ?? cfg.policies.map((p) => p.name);
    cfg.policies.forEach((policy, p) => {
      if (!applied.includes(policy.name)) return;
      const { name, ...allowlist } = policy;
      const extra = host.extraSources?.[name] ?? [];
      const result = validateAllowlist(
        { ...allowlist, sources: [...policy.sources, ...extra], ruleName: name, ...cfg.persistence },
        name,
      );
      if (result.ok) return;
      for (const f of result.failures) {
        const path = propertyToPath(f.property);
        const [field, index] = path;
        if (field === "sources" && typeof index === "number" && index >= policy.sources.length) {
          add(["hosts", h, "extraSources", name, index - policy.sources.length], f.reason);
        } else if (field === "persist" || field === "rulesV4Path" || field === "rulesV6Path") {
          add(["persistence", ...path], f.reason);
        } else {
          add(["policies", p, ...path], f.reason);
        }
      }
    });
  });
  return issues;
}

const portRange = (p: number | string): [number, number] => {
  if (typeof p === "number") return [p, p];
  const [a, b] = p.split("-").map(Number);
  return [a!, b!];
};

/**
 * Two policies on one host that police the same port and protocol would chain their drops: a source
 * allowed by one is dropped by the other. Refuse that and say how to fix it.
 */
function overlapIssues(cfg: StackInput, h: number, applied: readonly string[], issues: PathIssue[]): void {
  const onHost = cfg.policies.map((p, i) => ({ p, i })).filter(({ p }) => applied.includes(p.name));
  for (let a = 0; a < onHost.length; a++) {
    for (let b = a + 1; b < onHost.length; b++) {
      const [pa, pb] = [onHost[a]!.p, onHost[b]!.p];
      const [a1, a2] = portRange(pa.port);
      const [b1, b2] = portRange(pb.port);
      const protoA = pa.protocols ?? ["tcp"];
      const shared = (pb.protocols ?? ["tcp"]).filter((x) => protoA.includes(x));
      const sameDest = (pa.originalDestination ?? "*") === (pb.originalDestination ?? "*");
      if (a1 <= b2 && b1 <= a2 && shared.length > 0 && sameDest) {
        issues.push({
          path: ["policies", onHost[b]!.i, "port"],
          reason:
            `overlaps policy ${show(pa.name)} (${String(pa.port)}/${shared.join(",")}) on host ${show(cfg.hosts[h]!.name)}: ` +
            "a source allowed by one would be dropped by the other. Merge their sources into one policy, " +
            "or apply them to different hosts with hosts[].policies",
        });
      }
    }
  }
}

function toFleetArgs(cfg: StackInput): DockerPortAllowlistFleetArgs {
  const policies: FleetPolicyArgs[] = cfg.policies.map((p) => ({ ...p }));
  const hosts: FleetHostArgs[] = cfg.hosts.map((h) => ({
    name: h.name,
    connection: h.connection as Partial<ConnectionArgs> & { host: string },
    ...(h.policies ? { policies: h.policies } : {}),
    ...(h.extraSources ? { extraSources: h.extraSources } : {}),
  }));
  return {
    policies,
    hosts,
    ...(cfg.connection ? { connection: cfg.connection } : {}),
    ...(cfg.rollout ? { rollout: cfg.rollout } : {}),
    ...(cfg.persistence ? { persistence: cfg.persistence } : {}),
  };
}
