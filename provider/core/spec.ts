/**
 * Validation of everything a user declares, before any of it reaches a host.
 *
 * Pure functions only (no I/O). Two layers:
 * - Leaf validators ({@link ALLOWLIST_LEAVES}, {@link CONNECTION_LEAVES}, {@link ruleNameLeaf}):
 *   one function per field, `(value) => Leaf<T>`, the only place where a field's rule (its
 *   pattern, its limits, its default) is written. The resource (below) and the root program's
 *   stack-config schema (program/config.ts) both call them, so the two can never disagree.
 * - {@link validateAllowlist} and {@link validateConnection}: the resource's object structure
 *   (zod; unknown keys ignored) around those leaves, plus the checks between fields.
 *
 * Guarantees:
 * - Every string that can reach a shell or an iptables command is matched against a strict
 *   pattern (no spaces, quotes, `$`, backticks, `;`, newlines...). Addresses are re-printed from
 *   their parsed value, so even an accepted string never reaches a host verbatim.
 * - A leaf's {@link Issue} reason reads after the field's name (`70000 (number) is not
 *   allowed...`) and names the bad value, what is allowed and the fix; each caller puts its own
 *   name in front (`connection.port`, or a config key).
 * - One failure per bad field, as `{ property, reason }` with `property` a path such as
 *   `sources[2]` or `connection.host`, 1:1 with zod's issues (they become Pulumi check failures),
 *   and `reason` = property + the leaf's reason.
 * - Secrets (`password`, `privateKey`, `privateKeyPassword`) are never quoted in a reason.
 */
import { createHash } from "crypto";
import { z } from "zod";
import { compareCidr, formatCidr, parseAddress, parseCidr, type Cidr } from "./ip";
import {
  RULE_NAME_MAX,
  RULE_NAME_PATTERN,
  type Action,
  type AllowlistSpec,
  type Ipv6Mode,
  type PortRange,
  type Protocol,
} from "./layout";

/** A Pulumi check failure: `property` is a path like `sources[2]`. */
export interface ValidationFailure {
  readonly property: string;
  readonly reason: string;
}

export type Validated<T> =
  { readonly ok: true; readonly spec: T } | { readonly ok: false; readonly failures: ValidationFailure[] };

/**
 * One refused value. `path` is relative to what was checked (`[2]` for the third source);
 * `reason` reads after the field's name: the bad value, what is allowed, the fix.
 */
export interface Issue {
  readonly path: readonly (string | number)[];
  readonly reason: string;
}

/** A leaf validator's verdict: the normalised value, or why the value is refused. */
export type Leaf<T> =
  { readonly ok: true; readonly value: T } | { readonly ok: false; readonly issues: readonly Issue[] };

/** A leaf validator: one field's rule. `undefined` means "not set" and yields the default. */
export type LeafCheck<T> = (value: unknown) => Leaf<T>;

export const DEFAULT_RULES_V4_PATH = "/etc/iptables/rules.v4";
export const DEFAULT_RULES_V6_PATH = "/etc/iptables/rules.v6";

/** Shows a user's value in a message: JSON-quoted (newlines stay visible) and cut short. */
function show(value: unknown): string {
  if (typeof value === "string") {
    const text = JSON.stringify(value.length > 80 ? `${value.slice(0, 80)}...` : value);
    return text;
  }
  if (value === undefined) return "(missing)";
  if (value === null) return "null";
  if (Array.isArray(value)) {
    const text = JSON.stringify(value) ?? "[]";
    return text.length > 80 ? `${text.slice(0, 80)}...]` : text;
  }
  if (typeof value === "object") return "an object";
  return `${String(value)} (${typeof value})`;
}

const pass = <T>(value: T): Leaf<T> => ({ ok: true, value });
const refuse = (reason: string, path: (string | number)[] = []): Leaf<never> => ({
  ok: false,
  issues: [{ path, reason }],
});

/** Turns a zod path into Pulumi's property path: `sources[2]`, `connection.proxy.host`. */
export function propertyPath(path: readonly PropertyKey[]): string {
  let out = "";
  for (const key of path) {
    if (typeof key === "number") out += `[${key}]`;
    else out += out === "" ? String(key) : `.${String(key)}`;
  }
  return out;
}

/**
 * A zod schema that runs a leaf validator; its issues become zod issues at their relative paths
 * with the leaf's reason as message. `out` picks what the schema yields (default: the leaf's
 * normalised value; the stack config keeps the user's input instead).
 */
export function leafSchema<T, O = T>(check: LeafCheck<T>, out?: (value: T, input: unknown) => O) {
  return z
    .unknown()
    .optional()
    .transform((input, ctx): O => {
      const result = check(input);
      if (result.ok) return out === undefined ? (result.value as unknown as O) : out(result.value, input);
      for (const issue of result.issues) {
        ctx.addIssue({ code: "custom", message: issue.reason, path: [...issue.path] });
      }
      return z.NEVER;
    });
}

// ---------------------------------------------------------------------------------------------
// Allowlist leaves

const PORT_TEXT = /^([0-9]{1,5})(?:-([0-9]{1,5}))?$/;

/**
 * A port (`8080`, `"8080"`) or an inclusive range (`"8000-8100"`). A one-port range
 * `"443-443"` is that port (the README's "inclusive range"); only a range that ends before it
 * starts is refused.
 */
function portLeaf(value: unknown): Leaf<PortRange> {
  const allowed = `Allowed: a published host port 1-65535 (8080) or an inclusive range "8000-8100"`;
  let from: number;
  let to: number;
  if (typeof value === "number") {
    from = to = value;
  } else if (typeof value === "string" && PORT_TEXT.test(value)) {
    const m = PORT_TEXT.exec(value)!;
    from = Number(m[1]);
    to = m[2] === undefined ? from : Number(m[2]);
  } else {
    return refuse(`${show(value)} is not a port or port range. ${allowed}.`);
  }
  for (const p of [from, to]) {
    if (!Number.isInteger(p) || p < 1 || p > 65535) {
      return refuse(
        `${show(value)} is out of range: ${p} is not a port. ${allowed}. Fix: use the host side of "docker run -p HOST:CONTAINER".`,
      );
    }
  }
  if (from > to) {
    return refuse(`${show(value)} is a range that ends before it starts. ${allowed}; write "${to}-${from}".`);
  }
  return pass({ from, to });
}

function protocolsLeaf(value: unknown): Leaf<Protocol[]> {
  if (value === undefined) return pass(["tcp"]);
  if (!Array.isArray(value) || value.length === 0) {
    return refuse(`${show(value)} is not a non-empty list. Allowed: ["tcp"], ["udp"] or ["tcp", "udp"].`);
  }
  const out = new Set<Protocol>();
  const issues: Issue[] = [];
  value.forEach((p, i) => {
    if (p === "tcp" || p === "udp") out.add(p);
    else
      issues.push({
        path: [i],
        reason: `${show(p)} is not a protocol. Allowed: "tcp" or "udp" (lower case).`,
      });
  });
  return issues.length > 0 ? { ok: false, issues } : pass([...out].sort());
}

/** Allowed sources by family, parsed, de-duplicated and sorted. */
export interface SourceSets {
  readonly ipv4: Cidr[];
  readonly ipv6: Cidr[];
}

function sourcesLeaf(value: unknown): Leaf<SourceSets> {
  if (!Array.isArray(value)) {
    return refuse(
      `${show(value)} is not a list. Allowed: a list of IPv4/IPv6 addresses and CIDRs, e.g. ["198.18.1.0/24", "2001:db8::/48"]; [] lets nobody in.`,
    );
  }
  const seen = new Map<string, Cidr>();
  const issues: Issue[] = [];
  value.forEach((item, i) => {
    const cidr = typeof item === "string" ? parseCidr(item) : undefined;
    if (cidr === undefined) {
      issues.push({
        path: [i],
        reason: `${show(item)} is not an IPv4/IPv6 address or CIDR. Allowed: 198.18.1.7, 198.18.1.0/24, 2001:db8::7 or 2001:db8::/48 (prefix 0-32 for IPv4, 0-128 for IPv6). Fix: correct or remove it.`,
      });
      return;
    }
    seen.set(formatCidr(cidr), cidr);
  });
  if (issues.length > 0) return { ok: false, issues };
  const all = [...seen.values()];
  return pass({
    ipv4: all.filter((c) => c.family === "ipv4").sort(compareCidr),
    ipv6: all.filter((c) => c.family === "ipv6").sort(compareCidr),
  });
}

function enumLeaf<T extends string>(values: readonly T[], fallback: T): LeafCheck<T> {
  return (value) => {
    if (value === undefined) return pass(fallback);
    if (typeof value === "string" && (values as readonly string[]).includes(value)) return pass(value as T);
    return refuse(
      `${show(value)} is not allowed. Allowed: ${values.map((v) => JSON.stringify(v)).join(", ")} (default ${JSON.stringify(fallback)}).`,
    );
  };
}

function booleanLeaf(fallback: boolean): LeafCheck<boolean> {
  return (value) => {
    if (value === undefined) return pass(fallback);
    if (typeof value === "boolean") return pass(value);
    return refuse(`${show(value)} is not a boolean. Allowed: true or false (default ${fallback}).`);
  };
}

/** Absolute path of safe characters: nothing a shell would interpret, no `..` segments. */
export const SAFE_PATH = /^\/(?:[A-Za-z0-9._+-]+\/?)*$/;

function pathLeaf(fallback?: string): LeafCheck<string | undefined> {
  return (value) => {
    if (value === undefined) return pass(fallback);
    if (
      typeof value === "string" &&
      value.length <= 4096 &&
      SAFE_PATH.test(value) &&
      !/(^|\/)\.\.(\/|$)/.test(value)
    ) {
      return pass(value);
    }
    return refuse(
      `${show(value)} is not a safe absolute path. Allowed: "/" followed by letters, digits and . _ + - / (no spaces, quotes, "..", or shell characters).`,
    );
  };
}

/**
 * Derives a ruleName from a Pulumi resource name: kept when already valid; otherwise unsafe
 * characters become "-" and a long name is cut to 17 characters plus "-" and a 6-hex hash of the
 * full name, so two long names sharing a prefix still own different chains.
 */
export function deriveRuleName(resourceName: string): string {
  const cleaned = resourceName.replace(/[^A-Za-z0-9_-]/g, "-");
  if (cleaned === resourceName && RULE_NAME_PATTERN.test(cleaned)) return cleaned;
  const hash = createHash("sha256").update(resourceName).digest("hex").slice(0, 6);
  return `${cleaned.slice(0, RULE_NAME_MAX - 7)}-${hash}`;
}

/** `ruleName`; when not set, derived from `resourceName` ({@link deriveRuleName}). */
export function ruleNameLeaf(resourceName: string): LeafCheck<string> {
  return (value) => {
    if (value === undefined) return pass(deriveRuleName(resourceName));
    if (typeof value === "string" && RULE_NAME_PATTERN.test(value)) return pass(value);
    const tooLong = typeof value === "string" && value.length > RULE_NAME_MAX;
    return refuse(
      `${show(value)} is ${tooLong ? `too long (${(value as string).length} characters)` : "not allowed"}. Allowed: 1-${RULE_NAME_MAX} letters, digits, "_" or "-" (the chain DPA-<ruleName> must fit iptables' 28 characters). Fix: pick a shorter name, or omit it to derive one from the resource name.`,
    );
  };
}

function originalDestinationLeaf(value: unknown): Leaf<Cidr | undefined> {
  if (value === undefined) return pass(undefined);
  const address = typeof value === "string" ? parseAddress(value) : undefined;
  if (address !== undefined) return pass(address);
  return refuse(
    `${show(value)} is not a single IPv4 or IPv6 address. Allowed: one of the host's own addresses, e.g. 198.18.0.10 or 2001:db8::10 (no prefix). Fix: use the address clients connect to, or omit it to police every address.`,
  );
}

/** The allowlist's leaf validators by field (`ruleName` needs the resource name: {@link ruleNameLeaf}). */
export const ALLOWLIST_LEAVES = {
  port: portLeaf,
  protocols: protocolsLeaf,
  sources: sourcesLeaf,
  originalDestination: originalDestinationLeaf,
  action: enumLeaf<Action>(["DROP", "REJECT"], "DROP"),
  exemptDockerBridges: booleanLeaf(true),
  ipv6: enumLeaf<Ipv6Mode>(["auto", "on", "off"], "auto"),
  persist: booleanLeaf(true),
  rulesV4Path: pathLeaf(DEFAULT_RULES_V4_PATH),
  rulesV6Path: pathLeaf(DEFAULT_RULES_V6_PATH),
} as const;

const familyWord = (f: "ipv4" | "ipv6") => (f === "ipv4" ? "IPv4" : "IPv6");

/**
 * What `originalDestination` rules out: an `ipv6` mode of the other family, and sources of the
 * other family (they would sit in a chain no packet of that family ever reaches). `sources` are
 * the raw (already leaf-validated) entries, so each issue's path is the entry's index.
 */
export function familyConflicts(
  originalDestination: Cidr | undefined,
  ipv6: Ipv6Mode,
  sources: readonly unknown[],
): Issue[] {
  const issues: Issue[] = [];
  const family = originalDestination?.family;
  if (family === undefined) return issues;
  if (family === "ipv4" && ipv6 === "on") {
    issues.push({
      path: ["ipv6"],
      reason: `"on" cannot apply: originalDestination ${formatCidr(originalDestination!).replace(/\/32$/, "")} is an IPv4 address, so only IPv4 traffic is matched. Fix: set ipv6 to "auto" or "off", or declare a second allowlist for the IPv6 address.`,
    });
  }
  if (family === "ipv6" && ipv6 === "off") {
    issues.push({
      path: ["ipv6"],
      reason: `"off" contradicts originalDestination, an IPv6 address. Fix: set ipv6 to "auto" or "on", or use an IPv4 originalDestination.`,
    });
  }
  sources.forEach((item, i) => {
    const cidr = typeof item === "string" ? parseCidr(item) : undefined;
    if (cidr !== undefined && cidr.family !== family) {
      issues.push({
        path: ["sources", i],
        reason: `${show(item)} is an ${familyWord(cidr.family)} source, but originalDestination is an ${familyWord(family)} address, so it could never match. Fix: remove it, or declare a second allowlist for the other family.`,
      });
    }
  });
  return issues;
}

/** Issues as Pulumi check failures: property = prefix + path; reason = property + the leaf's reason. */
function toFailures(issues: readonly Issue[], prefix: readonly PropertyKey[] = []): ValidationFailure[] {
  return issues.map((issue) => {
    const property = propertyPath([...prefix, ...issue.path]);
    return { property, reason: `${property} ${issue.reason}` };
  });
}

const fromZod = (issues: readonly z.core.$ZodIssue[]): Issue[] =>
  issues.map((i) => ({ path: i.path as (string | number)[], reason: i.message }));

/**
 * The allowlist's schema, built once: zod compiles a schema on its first parse, which cost more
 * than the parse itself when each call built its own (bench/fleet.ts's profile: a third of a
 * second of the provider process for 50 resources). A missing ruleName stays undefined here;
 * {@link validateAllowlist} derives it from the resource name.
 */
const ALLOWLIST_SCHEMA = z.object({
  ...schemasOf(ALLOWLIST_LEAVES),
  ruleName: leafSchema((value) => (value === undefined ? pass(undefined) : ruleNameLeaf("")(value))),
});

/**
 * Validates and normalises the allowlist part of a resource's inputs (every key except
 * `connection`; unknown keys are ignored). `resourceName` seeds the default ruleName.
 */
export function validateAllowlist(input: unknown, resourceName: string): Validated<AllowlistSpec> {
  if (typeof input !== "object" || input === null || Array.isArray(input)) {
    return {
      ok: false,
      failures: [{ property: "", reason: `The allowlist arguments must be an object, got ${show(input)}.` }],
    };
  }
  const result = ALLOWLIST_SCHEMA.safeParse(input);
  if (!result.success) return { ok: false, failures: toFailures(fromZod(result.error.issues)) };
  const v = result.data;
  const conflicts = familyConflicts(
    v.originalDestination,
    v.ipv6,
    (input as { sources?: unknown }).sources as unknown[],
  );
  if (conflicts.length > 0) return { ok: false, failures: toFailures(conflicts) };
  const spec: AllowlistSpec = {
    ruleName: v.ruleName ?? deriveRuleName(resourceName),
    ports: v.port,
    protocols: v.protocols,
    sources: v.sources,
    ...(v.originalDestination === undefined ? {} : { originalDestination: v.originalDestination }),
    action: v.action,
    exemptDockerBridges: v.exemptDockerBridges,
    ipv6: v.ipv6,
    persist: v.persist,
    rulesV4Path: v.rulesV4Path!,
    rulesV6Path: v.rulesV6Path!,
  };
  return { ok: true, spec };
}

// ---------------------------------------------------------------------------------------------
// Connection

/** A validated connection; secrets are passed through untouched (never shown in messages). */
export interface ConnectionSpec {
  readonly host: string;
  readonly port: number;
  readonly user: string;
  readonly password?: string;
  readonly privateKey?: string;
  readonly privateKeyPassword?: string;
  readonly agentSocketPath?: string;
  readonly proxy?: Omit<ConnectionSpec, "proxy" | "sudo">;
  readonly dialErrorLimit: number;
  readonly perDialTimeout: number;
  readonly hostKey?: string;
  readonly sudo: boolean;
}

const DNS_NAME =
  /^(?=.{1,253}\.?$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$/;
/** A DNS name whose last label has a letter, so "0" or "1.2.3.999" are not taken for names. */
function isDnsName(value: string): boolean {
  const labels = value.replace(/\.$/, "").split(".");
  return DNS_NAME.test(value) && /[A-Za-z]/.test(labels[labels.length - 1]);
}

export const POSIX_USER = /^[A-Za-z_][A-Za-z0-9_.-]{0,31}$/;
const KEY_TYPES = [
  "ssh-ed25519",
  "ssh-rsa",
  "ecdsa-sha2-nistp256",
  "ecdsa-sha2-nistp384",
  "ecdsa-sha2-nistp521",
  "sk-ssh-ed25519@openssh.com",
  "sk-ecdsa-sha2-nistp256@openssh.com",
];
/**
 * A host-key pin written as an OpenSSH public key line: a known key type, the base64 key blob
 * (group 1), optional comment words. The one definition; the SSH edge reads the blob with it.
 */
export const HOST_KEY_LINE = new RegExp(
  `^(?:${KEY_TYPES.map((t) => t.replace(/[.]/g, "\\.")).join("|")}) ([A-Za-z0-9+/]+={0,2})(?: [A-Za-z0-9@._:+=/-]+)*$`,
);
/** A host-key pin written as `ssh-keygen -lf` prints it: `SHA256:` + 43 base64 characters. */
export const HOST_KEY_FINGERPRINT = /^SHA256:[A-Za-z0-9+/]{43}=?$/;

function hostLeaf(value: unknown): Leaf<string> {
  if (typeof value === "string" && (parseAddress(value) !== undefined || isDnsName(value))) {
    // Print an IPv6 literal as given; ssh2 takes any valid spelling.
    return pass(value);
  }
  return refuse(
    `${show(value)} is not an IP address or DNS name. Allowed: 198.18.0.10, 2001:db8::10 or docker1.example.com (letters, digits, "-" and "." only).`,
  );
}

function intLeaf(min: number, max: number, fallback: number, what: string): LeafCheck<number> {
  return (value) => {
    if (value === undefined) return pass(fallback);
    if (typeof value === "number" && Number.isInteger(value) && value >= min && value <= max)
      return pass(value);
    return refuse(
      `${show(value)} is not allowed. Allowed: ${what}, an integer ${min}-${max} (default ${fallback}).`,
    );
  };
}

function dialErrorLimitLeaf(value: unknown): Leaf<number> {
  if (value === undefined) return pass(10);
  if (typeof value === "number" && Number.isInteger(value) && value >= -1 && value <= 1000)
    return pass(value);
  return refuse(
    `${show(value)} is not allowed. Allowed: an integer 1-1000, or -1 for no limit (default 10).`,
  );
}

function secretLeaf(value: unknown): Leaf<string | undefined> {
  if (value === undefined || typeof value === "string") return pass(value);
  // Never echo the value: it may be a secret given in the wrong shape.
  return refuse(`must be a string (value not shown: it is a secret). Fix: pass the text itself.`);
}

function userLeaf(value: unknown): Leaf<string> {
  if (value === undefined) return pass("root");
  if (typeof value === "string" && POSIX_USER.test(value)) return pass(value);
  return refuse(
    `${show(value)} is not a POSIX user name. Allowed: a letter or "_" then up to 31 letters, digits, "_", "." or "-" (default "root").`,
  );
}

function hostKeyLeaf(value: unknown): Leaf<string | undefined> {
  if (value === undefined) return pass(undefined);
  if (typeof value === "string" && (HOST_KEY_LINE.test(value) || HOST_KEY_FINGERPRINT.test(value))) {
    return pass(value);
  }
  return refuse(
    `${show(value)} is not allowed. Allowed: an OpenSSH public key line ("ssh-ed25519 AAAA...", as in the host's /etc/ssh/ssh_host_ed25519_key.pub) or a fingerprint "SHA256:..." (ssh-keygen -lf).`,
  );
}

/**
 * The connection's leaf validators by field. A jump host (`proxy`) takes the same fields except
 * `proxy` and `sudo`. `sudo`'s real default follows the user (see {@link validateConnection}).
 */
export const CONNECTION_LEAVES = {
  host: hostLeaf,
  port: intLeaf(1, 65535, 22, "an SSH port"),
  user: userLeaf,
  password: secretLeaf,
  privateKey: secretLeaf,
  privateKeyPassword: secretLeaf,
  agentSocketPath: pathLeaf(),
  dialErrorLimit: dialErrorLimitLeaf,
  perDialTimeout: intLeaf(1, 3600, 15, "seconds per connection attempt"),
  hostKey: hostKeyLeaf,
  sudo: booleanLeaf(false),
} as const;

type LeafValue<C> = C extends LeafCheck<infer T> ? T : never;

/** One {@link leafSchema} per field of a record of leaf validators. */
function schemasOf<R extends Record<string, LeafCheck<unknown>>>(leaves: R) {
  return Object.fromEntries(Object.entries(leaves).map(([k, check]) => [k, leafSchema(check)])) as {
    [K in keyof R]: ReturnType<typeof leafSchema<LeafValue<R[K]>>>;
  };
}

function proxyFields() {
  const { sudo: _sudo, ...fields } = CONNECTION_LEAVES;
  return schemasOf(fields);
}

/** Built once, on first use (see ALLOWLIST_SCHEMA): the jump host's fields, and the connection's. */
const PROXY_SCHEMA = once(() => z.object(proxyFields()));
const CONNECTION_SCHEMA = once(() =>
  z.object({
    ...proxyFields(),
    proxy: leafSchema(proxyLeaf),
    sudo: leafSchema(CONNECTION_LEAVES.sudo),
  }),
);

function once<T>(make: () => T): () => T {
  let value: T | undefined;
  return () => (value ??= make());
}

function proxyLeaf(value: unknown): Leaf<Omit<ConnectionSpec, "proxy" | "sudo"> | undefined> {
  if (value === undefined) return pass(undefined);
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return refuse(`${show(value)} is not an object. Allowed: { host, port?, user?, ... } like connection.`);
  }
  const issues: Issue[] = [];
  if ((value as { proxy?: unknown }).proxy !== undefined) {
    issues.push({
      path: ["proxy"],
      reason: `is not supported: a jump host cannot nest. Fix: use one proxy.`,
    });
  }
  const result = PROXY_SCHEMA().safeParse(value);
  if (!result.success) issues.push(...fromZod(result.error.issues));
  if (issues.length > 0) return { ok: false, issues };
  return pass(stripUndefined(result.data!) as Omit<ConnectionSpec, "proxy" | "sudo">);
}

/** Whether the host scripts run through `sudo -n`: as asked, else for every user but root. */
export function usesSudo(conn: { readonly user?: string; readonly sudo?: boolean }): boolean {
  return conn.sudo ?? (conn.user ?? "root") !== "root";
}

/**
 * Validates `connection`. `property` is the path failures are reported under
 * (default `"connection"`).
 */
export function validateConnection(input: unknown, property = "connection"): Validated<ConnectionSpec> {
  if (typeof input !== "object" || input === null || Array.isArray(input)) {
    return {
      ok: false,
      failures: [
        {
          property,
          reason: `${property} ${show(input)} is not an object. Allowed: { host, port?, user?, privateKey?, ... }.`,
        },
      ],
    };
  }
  const result = CONNECTION_SCHEMA().safeParse(input);
  if (!result.success) return { ok: false, failures: toFailures(fromZod(result.error.issues), [property]) };
  const d = result.data;
  const sudo = usesSudo({
    user: d.user,
    sudo: (input as { sudo?: unknown }).sudo === undefined ? undefined : d.sudo,
  });
  const spec: ConnectionSpec = stripUndefined({ ...d, sudo });
  return { ok: true, spec };
}

function stripUndefined<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
}
