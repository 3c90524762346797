/**
 * Validation: exact messages per field, injection attempts in every string field, secrets never
 * echoed, and a property: nothing with shell metacharacters ever gets through.
 */
import fc from "fast-check";
import {
  deriveRuleName,
  validateAllowlist,
  validateConnection,
  type ValidationFailure,
} from "../../provider/core";

const BASE = { port: 8080, sources: ["198.18.1.0/24"] };

function failures(input: object): ValidationFailure[] {
  const v = validateAllowlist({ ...BASE, ...input }, "web");
  return v.ok ? [] : v.failures;
}

function connFailures(input: object): ValidationFailure[] {
  const v = validateConnection({ host: "198.18.0.10", ...input });
  return v.ok ? [] : v.failures;
}

const PORT_ALLOWED = `Allowed: a published host port 1-65535 (8080) or an inclusive range "8000-8100"`;
const SOURCE_ALLOWED =
  "Allowed: 198.18.1.7, 198.18.1.0/24, 2001:db8::7 or 2001:db8::/48 (prefix 0-32 for IPv4, 0-128 for IPv6). Fix: correct or remove it.";

describe("validateAllowlist", () => {
  it("normalises a valid allowlist and fills in the defaults", () => {
    const v = validateAllowlist(
      { port: "8000-8100", sources: ["198.18.1.7/24", "2001:DB8:0:0::7", "198.18.1.0/24", "198.18.0.9"] },
      "web",
    );
    expect(v.ok).toBe(true);
    if (!v.ok) return;
    expect(v.spec.ports).toEqual({ from: 8000, to: 8100 });
    expect(v.spec.protocols).toEqual(["tcp"]);
    expect(v.spec.sources.ipv4.map((c) => `${c.address}/${c.prefix}`)).toEqual([
      `${(198n << 24n) | (18n << 16n) | 9n}/32`,
      `${(198n << 24n) | (18n << 16n) | (1n << 8n)}/24`,
    ]);
    expect(v.spec.sources.ipv6).toHaveLength(1);
    expect(v.spec).toMatchObject({
      action: "DROP",
      exemptDockerBridges: true,
      ruleName: "web",
      ipv6: "auto",
      persist: true,
      rulesV4Path: "/etc/iptables/rules.v4",
      rulesV6Path: "/etc/iptables/rules.v6",
    });
  });

  it("takes a single-port range as that port", () => {
    const v = validateAllowlist({ port: "443-443", sources: [] }, "web");
    expect(v.ok && v.spec.ports).toEqual({ from: 443, to: 443 });
  });

  it.each<[string, object, ValidationFailure[]]>([
    [
      "port 0",
      { port: 0 },
      [
        {
          property: "port",
          reason: `port 0 (number) is out of range: 0 is not a port. ${PORT_ALLOWED}. Fix: use the host side of "docker run -p HOST:CONTAINER".`,
        },
      ],
    ],
    [
      "port 70000",
      { port: 70000 },
      [
        {
          property: "port",
          reason: `port 70000 (number) is out of range: 70000 is not a port. ${PORT_ALLOWED}. Fix: use the host side of "docker run -p HOST:CONTAINER".`,
        },
      ],
    ],
    [
      "a reversed range",
      { port: "8100-8000" },
      [
        {
          property: "port",
          reason: `port "8100-8000" is a range that ends before it starts. ${PORT_ALLOWED}; write "8000-8100".`,
        },
      ],
    ],
    [
      "a missing port",
      { port: undefined },
      [{ property: "port", reason: `port (missing) is not a port or port range. ${PORT_ALLOWED}.` }],
    ],
    [
      "a fractional port",
      { port: 80.5 },
      [
        {
          property: "port",
          reason: `port 80.5 (number) is out of range: 80.5 is not a port. ${PORT_ALLOWED}. Fix: use the host side of "docker run -p HOST:CONTAINER".`,
        },
      ],
    ],
    [
      "a bad CIDR",
      { sources: ["198.18.1.0/24", "198.18.1.0/33"] },
      [
        {
          property: "sources[1]",
          reason: `sources[1] "198.18.1.0/33" is not an IPv4/IPv6 address or CIDR. ${SOURCE_ALLOWED}`,
        },
      ],
    ],
    [
      "an octet over 255",
      { sources: ["198.18.1.256"] },
      [
        {
          property: "sources[0]",
          reason: `sources[0] "198.18.1.256" is not an IPv4/IPv6 address or CIDR. ${SOURCE_ALLOWED}`,
        },
      ],
    ],
    [
      "a leading-zero octet (read as octal by some libcs)",
      { sources: ["198.018.1.1"] },
      [
        {
          property: "sources[0]",
          reason: `sources[0] "198.018.1.1" is not an IPv4/IPv6 address or CIDR. ${SOURCE_ALLOWED}`,
        },
      ],
    ],
    [
      "an IPv6 zone id",
      { sources: ["fe80::1%eth0"] },
      [
        {
          property: "sources[0]",
          reason: `sources[0] "fe80::1%eth0" is not an IPv4/IPv6 address or CIDR. ${SOURCE_ALLOWED}`,
        },
      ],
    ],
    [
      "an IPv6 prefix over 128",
      { sources: ["2001:db8::/129"] },
      [
        {
          property: "sources[0]",
          reason: `sources[0] "2001:db8::/129" is not an IPv4/IPv6 address or CIDR. ${SOURCE_ALLOWED}`,
        },
      ],
    ],
    [
      "sources that are not a list",
      { sources: "198.18.1.0/24" },
      [
        {
          property: "sources",
          reason: `sources "198.18.1.0/24" is not a list. Allowed: a list of IPv4/IPv6 addresses and CIDRs, e.g. ["198.18.1.0/24", "2001:db8::/48"]; [] lets nobody in.`,
        },
      ],
    ],
    [
      "an empty protocol list",
      { protocols: [] },
      [
        {
          property: "protocols",
          reason: `protocols [] is not a non-empty list. Allowed: ["tcp"], ["udp"] or ["tcp", "udp"].`,
        },
      ],
    ],
    [
      "an unknown protocol",
      { protocols: ["tcp", "icmp"] },
      [
        {
          property: "protocols[1]",
          reason: `protocols[1] "icmp" is not a protocol. Allowed: "tcp" or "udp" (lower case).`,
        },
      ],
    ],
    [
      "ACCEPT as action",
      { action: "ACCEPT" },
      [
        {
          property: "action",
          reason: `action "ACCEPT" is not allowed. Allowed: "DROP", "REJECT" (default "DROP").`,
        },
      ],
    ],
    [
      "a bad ipv6 mode",
      { ipv6: "yes" },
      [
        {
          property: "ipv6",
          reason: `ipv6 "yes" is not allowed. Allowed: "auto", "on", "off" (default "auto").`,
        },
      ],
    ],
    [
      "a string for a boolean",
      { exemptDockerBridges: "false" },
      [
        {
          property: "exemptDockerBridges",
          reason: `exemptDockerBridges "false" is not a boolean. Allowed: true or false (default true).`,
        },
      ],
    ],
    [
      "a number for persist",
      { persist: 1 },
      [
        {
          property: "persist",
          reason: `persist 1 (number) is not a boolean. Allowed: true or false (default true).`,
        },
      ],
    ],
    [
      "a ruleName too long",
      { ruleName: "a".repeat(25) },
      [
        {
          property: "ruleName",
          reason: `ruleName "${"a".repeat(25)}" is too long (25 characters). Allowed: 1-24 letters, digits, "_" or "-" (the chain DPA-<ruleName> must fit iptables' 28 characters). Fix: pick a shorter name, or omit it to derive one from the resource name.`,
        },
      ],
    ],
    [
      "a ruleName with a space",
      { ruleName: "my web" },
      [
        {
          property: "ruleName",
          reason: `ruleName "my web" is not allowed. Allowed: 1-24 letters, digits, "_" or "-" (the chain DPA-<ruleName> must fit iptables' 28 characters). Fix: pick a shorter name, or omit it to derive one from the resource name.`,
        },
      ],
    ],
    [
      "a CIDR as original destination",
      { originalDestination: "198.18.0.0/24" },
      [
        {
          property: "originalDestination",
          reason: `originalDestination "198.18.0.0/24" is not a single IPv4 or IPv6 address. Allowed: one of the host's own addresses, e.g. 198.18.0.10 or 2001:db8::10 (no prefix). Fix: use the address clients connect to, or omit it to police every address.`,
        },
      ],
    ],
    [
      "an IPv6 source with an IPv4 original destination",
      { originalDestination: "198.18.0.10", sources: ["198.18.1.0/24", "2001:db8::1"] },
      [
        {
          property: "sources[1]",
          reason: `sources[1] "2001:db8::1" is an IPv6 source, but originalDestination is an IPv4 address, so it could never match. Fix: remove it, or declare a second allowlist for the other family.`,
        },
      ],
    ],
    [
      "ipv6 on with an IPv4 original destination",
      { originalDestination: "198.18.0.10", ipv6: "on" },
      [
        {
          property: "ipv6",
          reason: `ipv6 "on" cannot apply: originalDestination 198.18.0.10 is an IPv4 address, so only IPv4 traffic is matched. Fix: set ipv6 to "auto" or "off", or declare a second allowlist for the IPv6 address.`,
        },
      ],
    ],
    [
      "a relative rules path",
      { rulesV4Path: "rules.v4" },
      [
        {
          property: "rulesV4Path",
          reason: `rulesV4Path "rules.v4" is not a safe absolute path. Allowed: "/" followed by letters, digits and . _ + - / (no spaces, quotes, "..", or shell characters).`,
        },
      ],
    ],
    [
      "a rules path climbing out",
      { rulesV6Path: "/etc/iptables/../shadow" },
      [
        {
          property: "rulesV6Path",
          reason: `rulesV6Path "/etc/iptables/../shadow" is not a safe absolute path. Allowed: "/" followed by letters, digits and . _ + - / (no spaces, quotes, "..", or shell characters).`,
        },
      ],
    ],
  ])("rejects %s with an exact message", (_name, input, expected) => {
    expect(failures(input)).toEqual(expected);
  });

  it("reports every bad field at once, one failure each", () => {
    expect(failures({ port: 0, sources: ["x", "y"], action: "x" }).map((f) => f.property)).toEqual([
      "port",
      "sources[0]",
      "sources[1]",
      "action",
    ]);
  });

  it("derives a ruleName that fits and stays distinct for long names", () => {
    expect(deriveRuleName("web")).toBe("web");
    const a = deriveRuleName("production-frontend-allowlist-a");
    const b = deriveRuleName("production-frontend-allowlist-b");
    expect(a).toMatch(/^[A-Za-z0-9_-]{1,24}$/);
    expect(a).not.toBe(b);
    expect(deriveRuleName("web.example/8080")).toMatch(/^web-example-8080-[0-9a-f]{6}$/);
  });
});

const INJECTIONS = [
  "; rm -rf /",
  "$(id)",
  "`id`",
  "a\nb",
  "x' || true '",
  'x" || true "',
  "a b",
  "a|b",
  "a&&b",
  "$HOME",
  "a>b",
];

describe.each(INJECTIONS)("injection attempt %j", (attack) => {
  const prefix = (valid: string): string => `${valid}${attack}`;
  it.each<[string, object]>([
    ["port", { port: prefix("8080") }],
    ["sources[0]", { sources: [prefix("198.18.1.0/24")] }],
    ["protocols[0]", { protocols: [prefix("tcp")] }],
    ["originalDestination", { originalDestination: prefix("198.18.0.10") }],
    ["action", { action: prefix("DROP") }],
    ["ipv6", { ipv6: prefix("auto") }],
    ["ruleName", { ruleName: prefix("web") }],
    ["rulesV4Path", { rulesV4Path: prefix("/etc/iptables/rules.v4") }],
    ["rulesV6Path", { rulesV6Path: prefix("/etc/iptables/rules.v6") }],
  ])("is rejected in %s, naming the field and showing the value", (property, input) => {
    const f = failures(input);
    expect(f).toHaveLength(1);
    expect(f[0].property).toBe(property);
    expect(f[0].reason).toContain(property);
    expect(f[0].reason).toContain(JSON.stringify(Object.values(input)[0]).replace(/^\[|\]$/g, ""));
  });

  it.each<[string, object]>([
    ["connection.host", { host: prefix("198.18.0.10") }],
    ["connection.user", { user: prefix("root") }],
    ["connection.agentSocketPath", { agentSocketPath: prefix("/run/agent.sock") }],
    ["connection.hostKey", { hostKey: prefix("SHA256:d7xfeckyweRJzKwX4ZUHXvN7Onjc2ryCjg3XOb9YsuU") }],
    ["connection.proxy.host", { proxy: { host: prefix("198.18.0.1") } }],
    ["connection.proxy.user", { proxy: { host: "198.18.0.1", user: prefix("jump") } }],
  ])("is rejected in %s", (property, input) => {
    const f = connFailures(input);
    expect(f.map((x) => x.property)).toEqual([property]);
  });
});

describe("validateConnection", () => {
  it("fills in defaults, and sudo follows the user", () => {
    const root = validateConnection({ host: "docker1.example.com" });
    expect(root).toEqual({
      ok: true,
      spec: {
        host: "docker1.example.com",
        port: 22,
        user: "root",
        dialErrorLimit: 10,
        perDialTimeout: 15,
        sudo: false,
      },
    });
    const other = validateConnection({
      host: "2001:db8::10",
      user: "deploy",
      hostKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAII7bxRN4p4+jf+gtBQ9+WKe85rUG/aPYo3qKb7GEebuE",
    });
    expect(other.ok && other.spec.sudo).toBe(true);
  });

  it("never shows a secret, even a misshapen one, and keeps valid ones out of other messages", () => {
    const secret = "SECRET-hunter2";
    const f = connFailures({
      password: { value: secret },
      privateKey: [secret],
      privateKeyPassword: 7,
      port: 0,
    });
    expect(f.map((x) => x.property)).toEqual([
      "connection.port",
      "connection.password",
      "connection.privateKey",
      "connection.privateKeyPassword",
    ]);
    expect(JSON.stringify(f)).not.toContain("hunter2");
    expect(f[1].reason).toBe(
      "connection.password must be a string (value not shown: it is a secret). Fix: pass the text itself.",
    );
    const g = connFailures({ password: secret, privateKey: secret, host: "bad host" });
    expect(JSON.stringify(g)).not.toContain("hunter2");
  });

  it.each<[string, object, string]>([
    [
      "port 70000",
      { port: 70000 },
      "connection.port 70000 (number) is not allowed. Allowed: an SSH port, an integer 1-65535 (default 22).",
    ],
    [
      "a host with a leading dash (ssh option injection)",
      { host: "-oProxyCommand=id" },
      `connection.host "-oProxyCommand=id" is not an IP address or DNS name. Allowed: 198.18.0.10, 2001:db8::10 or docker1.example.com (letters, digits, "-" and "." only).`,
    ],
    [
      "a user with a leading dash",
      { user: "-root" },
      `connection.user "-root" is not a POSIX user name. Allowed: a letter or "_" then up to 31 letters, digits, "_", "." or "-" (default "root").`,
    ],
    [
      "dialErrorLimit -2",
      { dialErrorLimit: -2 },
      "connection.dialErrorLimit -2 (number) is not allowed. Allowed: an integer 1-1000, or -1 for no limit (default 10).",
    ],
    [
      "a nested proxy",
      { proxy: { host: "198.18.0.1", proxy: { host: "198.18.0.2" } } },
      "connection.proxy.proxy is not supported: a jump host cannot nest. Fix: use one proxy.",
    ],
  ])("rejects %s", (_name, input, reason) => {
    expect(connFailures(input).map((f) => f.reason)).toEqual([reason]);
  });
});

describe("property: nothing with shell metacharacters gets through", () => {
  const META = /[\s;&|`$(){}[\]<>'"\\*?!#~%^]/;
  /** Every string inside a validated spec (addresses are bigints, not text). */
  const strings = (value: unknown): string[] =>
    typeof value === "string"
      ? [value]
      : typeof value === "object" && value !== null
        ? Object.values(value).flatMap(strings)
        : [];
  const fields = ["port", "originalDestination", "action", "ipv6", "ruleName", "rulesV4Path", "rulesV6Path"];
  const candidate = fc.oneof(
    fc.string({ unit: "binary-ascii", maxLength: 40 }),
    fc
      .tuple(
        fc.constantFrom(
          "198.18.1.0/24",
          "2001:db8::1",
          "8080",
          "web",
          "/etc/iptables/rules.v4",
          "DROP",
          "auto",
        ),
        fc.string({ unit: "binary-ascii", maxLength: 8 }),
        fc.string({ unit: "binary-ascii", maxLength: 8 }),
      )
      .map(([v, a, b]) => `${a}${v}${b}`),
  );

  it("in the allowlist", () => {
    fc.assert(
      fc.property(fc.constantFrom(...fields, "sources"), candidate, (field, value) => {
        const input = field === "sources" ? { ...BASE, sources: [value] } : { ...BASE, [field]: value };
        const v = validateAllowlist(input, "web");
        if (v.ok) for (const text of strings(v.spec)) expect(text).not.toMatch(META);
      }),
      { numRuns: 3000 },
    );
  });

  it("in the connection", () => {
    fc.assert(
      fc.property(
        fc.constantFrom("host", "user", "agentSocketPath", "hostKey"),
        candidate,
        (field, value) => {
          const v = validateConnection({ host: "198.18.0.10", [field]: value });
          if (!v.ok) return;
          // A hostKey line has one space between key type and key by design; nothing else may.
          for (const text of strings(v.spec)) {
            expect(text.replace(/^(ssh-[a-z0-9-]+|ecdsa-[a-z0-9-]+) /, "$1_")).not.toMatch(META);
          }
        },
      ),
      { numRuns: 3000 },
    );
  });
});

describe("connection host names", () => {
  it.each(["docker1.example.com", "h", "docker-1.lab.", "2001:db8::10", "198.18.0.10"])(
    "accepts %s",
    (host) => {
      expect(validateConnection({ host }).ok).toBe(true);
    },
  );
  it.each(["0", "1.2.3.999", "198.18.0.10/24", "-h", "a..b", "a_b.example.com", `${"a".repeat(64)}.com`])(
    "rejects %s",
    (host) => {
      expect(connFailures({ host }).map((f) => f.property)).toEqual(["connection.host"]);
    },
  );
});
