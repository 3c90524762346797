/**
 * Validation of everything a user declares, with zod, before any of it reaches a host.
 *
 * Pure functions only (no I/O). Guarantees:
 * - Every string that can reach a shell or an iptables command is matched against a strict
 *   pattern (no spaces, quotes, `$`, backticks, `;`, newlines...). Addresses are re-printed from
 *   their parsed value, so even an accepted string never reaches a host verbatim.
 * - One failure per bad field, as `{ property, reason }` with `property` a path such as
 *   `sources[2]` or `connection.host`, 1:1 with zod's issues (they become Pulumi check failures).
 *   A reason names the field, the bad value, what is allowed and the fix.
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
  type Protocol,
} from "./layout";

/** A Pulumi check failure: `property` is a path like `sources[2]`. */
export interface ValidationFailure {
  readonly property: string;
  readonly reason: string;
}

export type Validated<T> =
  { readonly ok: true; readonly spec: T } | { readonly ok: false; readonly failures: ValidationFailure[] };

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

type Ctx = z.core.$RefinementCtx;

function fail(ctx: Ctx, message: string, path: (string | number)[] = []): typeof z.NEVER {
  ctx.addIssue({ code: "custom", message, path });
  return z.NEVER;
}

/** Turns a zod path into Pulumi's property path: `sources[2]`, `connection.proxy.host`. */
export function propertyPath(path: readonly PropertyKey[]): string {
  let out = "";
  for (const key of path) {
    if (typeof key === "number") out += `[${key}]`;
    else out += out === "" ? String(key) : `.${String(key)}`;
  }
  return out;
}

const PORT_TEXT = /^([0-9]{1,5})(?:-([0-9]{1,5}))?$/;

function portSchema(field: string) {
  return z
    .unknown()
    .optional()
    .transform((value, ctx) => {
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
        return fail(ctx, `${field} ${show(value)} is not a port or port range. ${allowed}.`);
      }
      for (const p of [from, to]) {
        if (!Number.isInteger(p) || p < 1 || p > 65535) {
          return fail(
            ctx,
            `${field} ${show(value)} is out of range: ${p} is not a port. ${allowed}. Fix: use the host side of "docker run -p HOST:CONTAINER".`,
          );
        }
      }
      if (from > to) {
        return fail(
          ctx,
          `${field} ${show(value)} is a range that ends before it starts. ${allowed}; write "${to}-${from}".`,
        );
      }
      return { from, to };
    });
}

const protocolsSchema = z
  .unknown()
  .optional()
  .transform((value, ctx): Protocol[] => {
    if (value === undefined) return ["tcp"];
    if (!Array.isArray(value) || value.length === 0) {
      return fail(
        ctx,
        `protocols ${show(value)} is not a non-empty list. Allowed: ["tcp"], ["udp"] or ["tcp", "udp"].`,
      );
    }
    const out = new Set<Protocol>();
    value.forEach((p, i) => {
      if (p === "tcp" || p === "udp") out.add(p);
      else
        fail(ctx, `protocols[${i}] ${show(p)} is not a protocol. Allowed: "tcp" or "udp" (lower case).`, [i]);
    });
    return [...out].sort();
  });

function sourcesSchema() {
  return z
    .unknown()
    .optional()
    .transform((value, ctx) => {
      if (!Array.isArray(value)) {
        return fail(
          ctx,
          `sources ${show(value)} is not a list. Allowed: a list of IPv4/IPv6 addresses and CIDRs, e.g. ["198.18.1.0/24", "2001:db8::/48"]; [] lets nobody in.`,
        );
      }
      const seen = new Map<string, Cidr>();
      value.forEach((item, i) => {
        const cidr = typeof item === "string" ? parseCidr(item) : undefined;
        if (cidr === undefined) {
          fail(
            ctx,
            `sources[${i}] ${show(item)} is not an IPv4/IPv6 address or CIDR. Allowed: 198.18.1.7, 198.18.1.0/24, 2001:db8::7 or 2001:db8::/48 (prefix 0-32 for IPv4, 0-128 for IPv6). Fix: correct or remove it.`,
            [i],
          );
          return;
        }
        seen.set(formatCidr(cidr), cidr);
      });
      const all = [...seen.values()];
      return {
        ipv4: all.filter((c) => c.family === "ipv4").sort(compareCidr),
        ipv6: all.filter((c) => c.family === "ipv6").sort(compareCidr),
      };
    });
}

function enumSchema<T extends string>(field: string, values: readonly T[], fallback: T) {
  return z
    .unknown()
    .optional()
    .transform((value, ctx): T => {
      if (value === undefined) return fallback;
      if (typeof value === "string" && (values as readonly string[]).includes(value)) return value as T;
      return fail(
        ctx,
        `${field} ${show(value)} is not allowed. Allowed: ${values.map((v) => JSON.stringify(v)).join(", ")} (default ${JSON.stringify(fallback)}).`,
      );
    });
}

function booleanSchema(field: string, fallback: boolean) {
  return z
    .unknown()
    .optional()
    .transform((value, ctx): boolean => {
      if (value === undefined) return fallback;
      if (typeof value === "boolean") return value;
      return fail(
        ctx,
        `${field} ${show(value)} is not a boolean. Allowed: true or false (default ${fallback}).`,
      );
    });
}

/** Absolute path of safe characters: nothing a shell would interpret, no `..` segments. */
export const SAFE_PATH = /^\/(?:[A-Za-z0-9._+-]+\/?)*$/;

function pathSchema(field: string, fallback?: string) {
  return z
    .unknown()
    .optional()
    .transform((value, ctx): string | undefined => {
      if (value === undefined) return fallback;
      if (
        typeof value === "string" &&
        value.length <= 4096 &&
        SAFE_PATH.test(value) &&
        !/(^|\/)\.\.(\/|$)/.test(value)
      ) {
        return value;
      }
      return fail(
        ctx,
        `${field} ${show(value)} is not a safe absolute path. Allowed: "/" followed by letters, digits and . _ + - / (no spaces, quotes, "..", or shell characters).`,
      );
    });
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

function ruleNameSchema(resourceName: string) {
  return z
    .unknown()
    .optional()
    .transform((value, ctx): string => {
      if (value === undefined) return deriveRuleName(resourceName);
      if (typeof value === "string" && RULE_NAME_PATTERN.test(value)) return value;
      const tooLong = typeof value === "string" && value.length > RULE_NAME_MAX;
      return fail(
        ctx,
        `ruleName ${show(value)} is ${tooLong ? `too long (${(value as string).length} characters)` : "not allowed"}. Allowed: 1-${RULE_NAME_MAX} letters, digits, "_" or "-" (the chain DPA-<ruleName> must fit iptables' 28 characters). Fix: pick a shorter name, or omit it to derive one from the resource name.`,
      );
    });
}

const originalDestinationSchema = z
  .unknown()
  .optional()
  .transform((value, ctx): Cidr | undefined => {
    if (value === undefined) return undefined;
    const address = typeof value === "string" ? parseAddress(value) : undefined;
    if (address !== undefined) return address;
    return fail(
      ctx,
      `originalDestination ${show(value)} is not a single IPv4 or IPv6 address. Allowed: one of the host's own addresses, e.g. 198.18.0.10 or 2001:db8::10 (no prefix). Fix: use the address clients connect to, or omit it to police every address.`,
    );
  });

function allowlistSchema(resourceName: string) {
  return z.object({
    port: portSchema("port"),
    protocols: protocolsSchema,
    sources: sourcesSchema(),
    originalDestination: originalDestinationSchema,
    action: enumSchema<Action>("action", ["DROP", "REJECT"], "DROP"),
    exemptDockerBridges: booleanSchema("exemptDockerBridges", true),
    ruleName: ruleNameSchema(resourceName),
    ipv6: enumSchema<Ipv6Mode>("ipv6", ["auto", "on", "off"], "auto"),
    persist: booleanSchema("persist", true),
    rulesV4Path: pathSchema("rulesV4Path", DEFAULT_RULES_V4_PATH),
    rulesV6Path: pathSchema("rulesV6Path", DEFAULT_RULES_V6_PATH),
  });
}

function toFailures(issues: readonly z.core.$ZodIssue[]): ValidationFailure[] {
  return issues.map((issue) => ({ property: propertyPath(issue.path), reason: issue.message }));
}

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
  const result = allowlistSchema(resourceName).safeParse(input);
  if (!result.success) return { ok: false, failures: toFailures(result.error.issues) };
  const v = result.data;
  const failures: ValidationFailure[] = [];
  if (v.originalDestination?.family === "ipv4" && v.ipv6 === "on") {
    failures.push({
      property: "ipv6",
      reason: `ipv6 "on" cannot apply: originalDestination ${formatCidr(v.originalDestination).replace(/\/32$/, "")} is an IPv4 address, so only IPv4 traffic is matched. Fix: set ipv6 to "auto" or "off", or declare a second allowlist for the IPv6 address.`,
    });
  }
  if (v.originalDestination?.family === "ipv6" && v.ipv6 === "off") {
    failures.push({
      property: "ipv6",
      reason: `ipv6 "off" contradicts originalDestination, an IPv6 address. Fix: set ipv6 to "auto" or "on", or use an IPv4 originalDestination.`,
    });
  }
  const odFamily = v.originalDestination?.family;
  if (odFamily !== undefined) {
    // Sources of the other family would sit in a chain no packet of that family ever reaches.
    const raw = (input as { sources?: unknown }).sources as unknown[];
    raw.forEach((item, i) => {
      const cidr = parseCidr(item as string);
      if (cidr !== undefined && cidr.family !== odFamily) {
        failures.push({
          property: `sources[${i}]`,
          reason: `sources[${i}] ${show(item)} is an ${cidr.family === "ipv4" ? "IPv4" : "IPv6"} source, but originalDestination is an ${odFamily === "ipv4" ? "IPv4" : "IPv6"} address, so it could never match. Fix: remove it, or declare a second allowlist for the other family.`,
        });
      }
    });
  }
  if (failures.length > 0) return { ok: false, failures };
  const spec: AllowlistSpec = {
    ruleName: v.ruleName,
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
const HOST_KEY_LINE = new RegExp(
  `^(?:${KEY_TYPES.map((t) => t.replace(/[.]/g, "\\.")).join("|")}) [A-Za-z0-9+/]+={0,2}(?: [A-Za-z0-9@._:+=/-]+)*$`,
);
const HOST_KEY_FINGERPRINT = /^SHA256:[A-Za-z0-9+/]{43}=?$/;

function hostSchema(field: string) {
  return z
    .unknown()
    .optional()
    .transform((value, ctx): string => {
      if (typeof value === "string" && (parseAddress(value) !== undefined || isDnsName(value))) {
        // Print an IPv6 literal as given; ssh2 takes any valid spelling.
        return value;
      }
      return fail(
        ctx,
        `${field} ${show(value)} is not an IP address or DNS name. Allowed: 198.18.0.10, 2001:db8::10 or docker1.example.com (letters, digits, "-" and "." only).`,
      );
    });
}

function intSchema(field: string, min: number, max: number, fallback: number, what: string) {
  return z
    .unknown()
    .optional()
    .transform((value, ctx): number => {
      if (value === undefined) return fallback;
      if (typeof value === "number" && Number.isInteger(value) && value >= min && value <= max) return value;
      return fail(
        ctx,
        `${field} ${show(value)} is not allowed. Allowed: ${what}, an integer ${min}-${max} (default ${fallback}).`,
      );
    });
}

function secretSchema(field: string) {
  return z
    .unknown()
    .optional()
    .transform((value, ctx): string | undefined => {
      if (value === undefined || typeof value === "string") return value;
      // Never echo the value: it may be a secret given in the wrong shape.
      return fail(
        ctx,
        `${field} must be a string (value not shown: it is a secret). Fix: pass the text itself.`,
      );
    });
}

function optionalString(field: string, pattern: RegExp, allowed: string) {
  return z
    .unknown()
    .optional()
    .transform((value, ctx): string | undefined => {
      if (value === undefined) return undefined;
      if (typeof value === "string" && pattern.test(value)) return value;
      return fail(ctx, `${field} ${show(value)} is not allowed. Allowed: ${allowed}.`);
    });
}

function connectionFields(prefix: string) {
  return {
    host: hostSchema(`${prefix}.host`),
    port: intSchema(`${prefix}.port`, 1, 65535, 22, "an SSH port"),
    user: z
      .unknown()
      .optional()
      .transform((value, ctx): string => {
        if (value === undefined) return "root";
        if (typeof value === "string" && POSIX_USER.test(value)) return value;
        return fail(
          ctx,
          `${prefix}.user ${show(value)} is not a POSIX user name. Allowed: a letter or "_" then up to 31 letters, digits, "_", "." or "-" (default "root").`,
        );
      }),
    password: secretSchema(`${prefix}.password`),
    privateKey: secretSchema(`${prefix}.privateKey`),
    privateKeyPassword: secretSchema(`${prefix}.privateKeyPassword`),
    agentSocketPath: pathSchema(`${prefix}.agentSocketPath`),
    dialErrorLimit: z
      .unknown()
      .optional()
      .transform((value, ctx): number => {
        if (value === undefined) return 10;
        if (typeof value === "number" && Number.isInteger(value) && value >= -1 && value <= 1000)
          return value;
        return fail(
          ctx,
          `${prefix}.dialErrorLimit ${show(value)} is not allowed. Allowed: an integer 1-1000, or -1 for no limit (default 10).`,
        );
      }),
    perDialTimeout: intSchema(`${prefix}.perDialTimeout`, 1, 3600, 15, "seconds per connection attempt"),
    hostKey: optionalString(
      `${prefix}.hostKey`,
      new RegExp(`${HOST_KEY_LINE.source}|${HOST_KEY_FINGERPRINT.source}`),
      `an OpenSSH public key line ("ssh-ed25519 AAAA...", as in the host's /etc/ssh/ssh_host_ed25519_key.pub) or a fingerprint "SHA256:..." (ssh-keygen -lf)`,
    ),
  };
}

const proxySchema = z
  .unknown()
  .optional()
  .transform((value, ctx) => {
    if (value === undefined) return undefined;
    if (typeof value !== "object" || value === null || Array.isArray(value)) {
      return fail(
        ctx,
        `connection.proxy ${show(value)} is not an object. Allowed: { host, port?, user?, ... } like connection.`,
      );
    }
    const nested = (value as { proxy?: unknown }).proxy !== undefined;
    if (nested) {
      fail(ctx, `connection.proxy.proxy is not supported: a jump host cannot nest. Fix: use one proxy.`, [
        "proxy",
      ]);
    }
    const result = z.object(connectionFields("connection.proxy")).safeParse(value);
    if (nested || !result.success) {
      for (const issue of result.error?.issues ?? [])
        ctx.addIssue({
          code: "custom",
          message: issue.message,
          path: [...issue.path] as (string | number)[],
        });
      return z.NEVER;
    }
    return result.data;
  });

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
  const schema = z.object({
    ...connectionFields(property),
    proxy: proxySchema,
    sudo: booleanSchema(`${property}.sudo`, false),
  });
  const result = schema.safeParse(input);
  if (!result.success) {
    return {
      ok: false,
      failures: result.error.issues.map((issue) => ({
        property: propertyPath([property, ...issue.path]),
        reason: issue.message,
      })),
    };
  }
  const d = result.data;
  const sudo = usesSudo({
    user: d.user,
    sudo: (input as { sudo?: unknown }).sudo === undefined ? undefined : d.sudo,
  });
  const spec: ConnectionSpec = stripUndefined({
    ...d,
    proxy: d.proxy === undefined ? undefined : stripUndefined(d.proxy),
    sudo,
  });
  return { ok: true, spec };
}

function stripUndefined<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
}
