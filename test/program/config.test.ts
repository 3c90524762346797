import * as fs from "node:fs";
import * as path from "node:path";

import { ConfigError, configKey, loadStackConfig, parseStackConfig } from "../../program/config";
import { CONFIG_REFERENCE, TOP_LEVEL_KEYS } from "../../program/config-reference";
import { validateAllowlist, validateConnection } from "../../provider/core";

type Loose = any; // eslint-disable-line @typescript-eslint/no-explicit-any
const BASE = { port: 8080, sources: ["198.18.1.0/24"] };

/** A complete, valid stack config; each case below breaks one thing in a copy of it. */
const valid = (): Record<string, unknown> => ({
  connection: { user: "root", privateKey: "-----BEGIN OPENSSH PRIVATE KEY-----\n...", hostKey: undefined },
  hosts: [
    { name: "web-1", connection: { host: "198.18.0.2" } },
    { name: "web-2", connection: { host: "198.18.0.3", port: 2222 }, extraSources: { web: ["198.18.9.9"] } },
    { name: "dns-1", connection: { host: "198.18.0.4" }, policies: ["dns"] },
  ],
  policies: [
    { name: "web", port: 8080, sources: ["198.18.7.0/24", "2001:db8:7::/48"] },
    { name: "dns", port: "5353", protocols: ["udp"], sources: [], action: "REJECT" },
  ],
  rollout: { canaries: ["web-2"], batchSize: 1 },
});

type Mutate = (c: Record<string, any>) => void; // eslint-disable-line @typescript-eslint/no-explicit-any

const P = "docker-port-allowlist:";
// Leaf reasons come from core (provider/core/spec.ts), the same words the resource uses.
const PORT_ALLOWED = `Allowed: a published host port 1-65535 (8080) or an inclusive range "8000-8100"`;
const SOURCE_ALLOWED =
  "Allowed: 198.18.1.7, 198.18.1.0/24, 2001:db8::7 or 2001:db8::/48 (prefix 0-32 for IPv4, 0-128 for IPv6). Fix: correct or remove it.";

describe("parseStackConfig", () => {
  it("accepts a complete config and builds the fleet arguments, normalising string numbers", () => {
    const cfg = valid();
    (cfg.rollout as Record<string, unknown>).batchSize = "2";
    const result = parseStackConfig(cfg);
    expect(result).toEqual({
      ok: true,
      fleet: {
        connection: { user: "root", privateKey: "-----BEGIN OPENSSH PRIVATE KEY-----\n..." },
        hosts: [
          { name: "web-1", connection: { host: "198.18.0.2" } },
          {
            name: "web-2",
            connection: { host: "198.18.0.3", port: 2222 },
            extraSources: { web: ["198.18.9.9"] },
          },
          { name: "dns-1", connection: { host: "198.18.0.4" }, policies: ["dns"] },
        ],
        policies: [
          { name: "web", port: 8080, sources: ["198.18.7.0/24", "2001:db8:7::/48"] },
          { name: "dns", port: 5353, protocols: ["udp"], sources: [], action: "REJECT" },
        ],
        rollout: { canaries: ["web-2"], batchSize: 2 },
      },
    });
  });

  it("normalises a port range to FROM-TO and booleans given as strings", () => {
    const cfg = valid();
    const policies = cfg.policies as Record<string, unknown>[];
    policies[0]!.port = "8000:8100";
    policies[0]!.exemptDockerBridges = "false";
    const result = parseStackConfig(cfg);
    if (!result.ok) throw new Error(JSON.stringify(result.issues));
    expect(result.fleet.policies[0]).toMatchObject({ port: "8000-8100", exemptDockerBridges: false });
  });

  // Each row: what breaks, the mutation, and the exact problems (key -> reason) it must produce.
  const cases: [string, Mutate, [string, string][]][] = [
    [
      "a host without an address",
      (c) => delete c.hosts[1].connection.host,
      [
        [
          "hosts[1].connection.host",
          "is required (Address (IP or DNS name) of the host's SSH server). Set it, e.g. " +
            "`pulumi config set --path 'docker-port-allowlist:hosts[1].connection.host' 198.18.0.10`",
        ],
      ],
    ],
    [
      "a missing hosts key",
      (c) => delete c.hosts,
      [["hosts", "is required (The Docker hosts, in rollout order. At least one). Set it"]],
    ],
    [
      "an empty policy list",
      (c) => (c.policies = []),
      [["policies", "is empty; a fleet needs at least one policy ({ name, port, sources })."]],
    ],
    [
      "a misspelt top-level key",
      (c) => (c.host = []),
      [
        [
          "host",
          "is not a known key; allowed here: hosts, policies, connection, rollout, persistence. " +
            "Check the spelling or remove it.",
        ],
      ],
    ],
    [
      "a misspelt connection field",
      (c) => (c.hosts[0].connection.usr = "x"),
      [
        [
          "hosts[0].connection.usr",
          "is not a known key; allowed here: host, port, user, privateKey, privateKeyPassword, password, " +
            "agentSocketPath, hostKey, dialErrorLimit, perDialTimeout, sudo, proxy. Check the spelling or remove it.",
        ],
      ],
    ],
    [
      "a host address in the shared connection",
      (c) => (c.connection.host = "198.18.0.2"),
      [
        [
          "connection.host",
          "is not a known key; allowed here: port, user, privateKey, privateKeyPassword, password, " +
            "agentSocketPath, hostKey, dialErrorLimit, perDialTimeout, sudo, proxy. Check the spelling or remove it.",
        ],
      ],
    ],
    [
      "an SSH port out of range",
      (c) => (c.hosts[2].connection.port = 70000),
      [
        [
          "hosts[2].connection.port",
          "70000 (number) is not allowed. Allowed: an SSH port, an integer 1-65535 (default 22).",
        ],
      ],
    ],
    [
      "a connection that is not an object",
      (c) => (c.hosts[0].connection = "198.18.0.2"),
      [["hosts[0].connection", 'is string "198.18.0.2"; it must be object']],
    ],
    [
      "a malformed host key",
      (c) => (c.connection.hostKey = "AAAAC3NzaC1lZDI1NTE5"),
      [
        [
          "connection.hostKey",
          '"AAAAC3NzaC1lZDI1NTE5" is not allowed. Allowed: an OpenSSH public key line ("ssh-ed25519 AAAA...", ' +
            'as in the host\'s /etc/ssh/ssh_host_ed25519_key.pub) or a fingerprint "SHA256:..." (ssh-keygen -lf).',
        ],
      ],
    ],
    [
      "no way to log in",
      (c) => delete c.connection.privateKey,
      [0, 1, 2].map((i) => [
        `hosts[${i}].connection`,
        "has no way to log in: set privateKey or password (with --secret) or agentSocketPath, here or for " +
          "every host in docker-port-allowlist:connection (or run with an ssh-agent in $SSH_AUTH_SOCK)",
      ]),
    ],
    [
      "a bad source",
      (c) => c.policies[0].sources.push("198.18.300.0/24"),
      [
        [
          "policies[0].sources[2]",
          `"198.18.300.0/24" is not an IPv4/IPv6 address or CIDR. ${SOURCE_ALLOWED}`,
        ],
      ],
    ],
    [
      "an IPv6 prefix that is too long",
      (c) => (c.policies[0].sources[1] = "2001:db8::/129"),
      [["policies[0].sources[1]", `"2001:db8::/129" is not an IPv4/IPv6 address or CIDR. ${SOURCE_ALLOWED}`]],
    ],
    [
      "a bad per-host extra source",
      (c) => (c.hosts[1].extraSources.web = ["office"]),
      [["hosts[1].extraSources.web[0]", `"office" is not an IPv4/IPv6 address or CIDR. ${SOURCE_ALLOWED}`]],
    ],
    [
      "a port out of range",
      (c) => (c.policies[0].port = 0),
      [
        [
          "policies[0].port",
          `0 (number) is out of range: 0 is not a port. ${PORT_ALLOWED}. Fix: use the host side of "docker run -p HOST:CONTAINER".`,
        ],
      ],
    ],
    [
      "a backwards port range",
      (c) => (c.policies[0].port = "9000-8000"),
      [
        [
          "policies[0].port",
          `"9000-8000" is a range that ends before it starts. ${PORT_ALLOWED}; write "8000-9000".`,
        ],
      ],
    ],
    [
      "an unknown protocol",
      (c) => (c.policies[1].protocols = ["udp", "sctp"]),
      [["policies[1].protocols[1]", '"sctp" is not a protocol. Allowed: "tcp" or "udp" (lower case).']],
    ],
    [
      "an unknown action",
      (c) => (c.policies[0].action = "ACCEPT"),
      [["policies[0].action", '"ACCEPT" is not allowed. Allowed: "DROP", "REJECT" (default "DROP").']],
    ],
    [
      "a policy name too long for a chain",
      (c) => (c.policies[0].name = "a-very-long-policy-name-xyz"),
      [
        [
          "policies[0].name",
          'is "a-very-long-policy-name-xyz"; a policy name becomes the chain DPA-<name> on every host, ' +
            "so it must be 1-24 letters, digits, `_` or `-`. Pick a shorter or simpler name.",
        ],
      ],
    ],
    [
      "two policies with one name",
      (c) => c.policies.push({ name: "web", port: 9000, sources: [] }),
      [
        [
          "policies[2].name",
          '"web" is already used by policies[0]; each policy owns its own chain, so names must be unique. ' +
            "Rename one, or merge their sources.",
        ],
      ],
    ],
    [
      "two hosts with one name",
      (c) => (c.hosts[2].name = "web-1"),
      [
        [
          "hosts[2].name",
          '"web-1" is already used by hosts[0]; every host needs a unique name. Rename one of them ' +
            "(names are used in resource names and in rollout.canaries).",
        ],
      ],
    ],
    [
      "a host applying an unknown policy",
      (c) => (c.hosts[2].policies = ["dns", "ssh"]),
      [["hosts[2].policies[1]", 'is "ssh", not a policy of this fleet; known policies: web, dns.']],
    ],
    [
      "extra sources for a policy the host does not apply",
      (c) => (c.hosts[2].extraSources = { web: ["198.18.1.1"] }),
      [
        [
          "hosts[2].extraSources.web",
          'adds sources to policy "web", which is not applied to host "dns-1"; known policies: web, dns; ' +
            "this host applies: dns. Fix the name or apply the policy.",
        ],
      ],
    ],
    [
      "two policies policing one port and protocol on one host",
      (c) => c.policies.push({ name: "web2", port: "8000-8080", sources: [] }),
      ["web-1", "web-2"].map((h) => [
        "policies[2].port",
        `overlaps policy "web" (8080/tcp) on host "${h}": a source allowed by one ` +
          "would be dropped by the other. Merge their sources into one policy, or apply them to different " +
          "hosts with hosts[].policies",
      ]),
    ],
    [
      "an unknown canary",
      (c) => (c.rollout.canaries = ["web-9"]),
      [
        [
          "rollout.canaries[0]",
          'names "web-9", which is not a host of this fleet; known hosts: web-1, web-2, dns-1. Use one of those names.',
        ],
      ],
    ],
    [
      "more canaries than hosts",
      (c) => (c.rollout.canaries = 4),
      [
        [
          "rollout.canaries",
          'is 4; as a number it means "the first N hosts" and must be a whole number from 0 to 3 ' +
            "(the number of hosts). Or list host names instead.",
        ],
      ],
    ],
    [
      "a zero batch size",
      (c) => (c.rollout.batchSize = 0),
      [
        [
          "rollout.batchSize",
          "is 0; it must be a whole number of hosts, 1 or more. Leave it unset to change all non-canary hosts in one batch.",
        ],
      ],
    ],
    [
      "a relative persistence path",
      (c) => (c.persistence = { rulesV4Path: "rules.v4" }),
      [
        [
          "persistence.rulesV4Path",
          '"rules.v4" is not a safe absolute path. Allowed: "/" followed by letters, digits and . _ + - / ' +
            '(no spaces, quotes, "..", or shell characters).',
        ],
      ],
    ],
  ];

  it.each(cases)("names the key and the fix for %s", (_what, mutate, expected) => {
    const cfg = valid();
    mutate(cfg);
    const result = parseStackConfig(cfg);
    expect(result.ok).toBe(false);
    if (result.ok) return;
    expect(result.issues.map((i) => [i.key, i.reason])).toEqual(expected.map(([k, r]) => [P + k, r]));
  });

  it("accepts hosts without a credential when an ssh-agent is in $SSH_AUTH_SOCK, as @pulumi/command does", () => {
    const cfg = { ...valid(), connection: { user: "root" } };
    expect(parseStackConfig(cfg).ok).toBe(false);
    expect(parseStackConfig(cfg, undefined, { sshAuthSock: "/run/user/0/agent.sock" }).ok).toBe(true);
  });

  it("accepts overlapping ports when the policies apply to different hosts", () => {
    const cfg = valid() as Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
    cfg.policies[1] = { name: "web2", port: 8080, sources: [] };
    cfg.hosts[0].policies = ["web"];
    cfg.hosts[1].policies = ["web"];
    cfg.hosts[2].policies = ["web2"];
    expect(parseStackConfig(cfg).ok).toBe(true);
  });
});

describe("the core's leaf validators in the stack config", () => {
  // The config schema judges every value with core's leaf validators: the reason is the core's
  // own (the resource puts the property in front of it), reported under the config key the bad
  // value came from.
  it.each<[string, Mutate, string, Record<string, string>]>([
    [
      "a host's own field",
      (c) => (c.hosts[1].connection.host = "198.18.0.3;reboot"),
      "hosts[1].connection.host",
      { host: "198.18.0.3;reboot" },
    ],
    [
      "the shared connection",
      (c) => (c.connection.user = "ro ot"),
      "connection.user",
      { host: "198.18.0.2", user: "ro ot" },
    ],
  ])("reports a bad value in %s under its key", (_what, mutate, key, connection) => {
    const cfg = valid();
    mutate(cfg);
    const result = parseStackConfig(cfg);
    const core = validateConnection(connection);
    expect(core.ok).toBe(false);
    if (core.ok || result.ok) throw new Error("expected both to fail");
    expect(result.issues).toHaveLength(1);
    expect(result.issues[0]!.key).toBe(P + key);
    expect(`${core.failures[0]!.property} ${result.issues[0]!.reason}`).toBe(core.failures[0]!.reason);
  });
});

describe("loadStackConfig", () => {
  it("throws one ConfigError listing every problem, one per line", () => {
    const cfg = valid() as Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
    cfg.policies[0].port = 0;
    cfg.hosts[0].connection.port = "ssh";
    let error: unknown;
    try {
      loadStackConfig(cfg);
    } catch (e) {
      error = e;
    }
    expect(ConfigError.isInstance(error)).toBe(true);
    expect((error as Error).message).toBe(
      "The stack configuration has 2 problems:\n" +
        `  ${P}hosts[0].connection.port: "ssh" is not allowed. Allowed: an SSH port, an integer 1-65535 (default 22).\n` +
        `  ${P}policies[0].port: 0 (number) is out of range: 0 is not a port. ${PORT_ALLOWED}. ` +
        'Fix: use the host side of "docker run -p HOST:CONTAINER".',
    );
  });
});

describe("configKey", () => {
  it("spells paths the way `pulumi config set --path` does", () => {
    expect(configKey(["hosts", 1, "connection", "host"])).toBe(
      "docker-port-allowlist:hosts[1].connection.host",
    );
    expect(configKey(["rollout"], "fleet")).toBe("fleet:rollout");
  });
});

describe("the config reference", () => {
  const readme = () => fs.readFileSync(path.join(__dirname, "..", "..", "README.md"), "utf8");

  it.each(CONFIG_REFERENCE.map((d) => d.key))("documents %s in README.md", (key) => {
    expect(readme()).toContain(`\`${key}\``);
  });

  it("starts every key with a top-level key", () => {
    for (const d of CONFIG_REFERENCE) {
      expect(TOP_LEVEL_KEYS).toContain(d.key.split(/[.[]/)[0]);
    }
  });
});

describe("the stack config and the resource give the same answer for the same value", () => {
  // Rows where the config schema kept its own copy of a rule until both called core's leaves:
  // where the field lives, the value, and whether it is accepted (the resource's rule, which won).
  type Where = "policy" | "sources" | "persistence" | "connection";
  const resource = (where: Where, field: string, value: unknown) =>
    where === "connection"
      ? validateConnection({ host: "198.18.0.2", privateKey: "k", [field]: value })
      : validateAllowlist({ ...BASE, [field]: where === "sources" ? [value] : value }, "web");
  const config = (where: Where, field: string, value: unknown) => {
    const c = valid() as Loose;
    if (where === "policy") c.policies[0][field] = value;
    if (where === "sources") c.policies[0].sources = [value];
    if (where === "persistence") c.persistence = { [field]: value };
    if (where === "connection") c.hosts[0].connection[field] = value;
    return parseStackConfig(c);
  };

  it.each<[Where, string, unknown, boolean]>([
    ["policy", "port", "443-443", true], // config refused from >= to; the resource takes a one-port range
    ["policy", "port", "9000-8000", false],
    ["policy", "port", 65536, false],
    ["connection", "dialErrorLimit", 1000, true],
    ["connection", "dialErrorLimit", 1001, false], // config allowed up to 1,000,000
    ["connection", "dialErrorLimit", -1, true],
    ["connection", "perDialTimeout", 2.5, false], // config allowed any number > 0
    ["connection", "perDialTimeout", 3601, false],
    ["connection", "perDialTimeout", 30, true],
    ["connection", "hostKey", "ssh-foo AAAA", false], // config took any ssh-/ecdsa-/sk- word + a word
    [
      "connection",
      "hostKey",
      "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAII7bxRN4p4+jf+gtBQ9+WKe85rUG/aPYo3qKb7GEebuE",
      true,
    ],
    ["connection", "hostKey", `SHA256:${"a".repeat(43)}`, true],
    ["connection", "agentSocketPath", "run/agent.sock", false], // config took any non-empty text
    ["sources", "sources", "fe80::1%eth0", false], // node's isIP takes a zone id
    ["sources", "sources", "198.018.1.1", false],
    ["sources", "sources", "2001:db8::/48", true],
    ["policy", "originalDestination", "fe80::1%eth0", false],
    ["policy", "protocols", ["tcp", "tcp"], true], // config refused a repeat; the resource de-duplicates
    ["persistence", "rulesV4Path", "/etc/iptables/../shadow", false], // config only asked for a leading "/"
    ["persistence", "rulesV4Path", "/etc/sysconfig/iptables", true],
  ])("%s %s %j: accepted %s", (where, field, value, accepted) => {
    const r = resource(where, field, value);
    const c = config(where, field, value);
    expect([r.ok, c.ok]).toEqual([accepted, accepted]);
    if (r.ok || c.ok) return;
    // The same reason: the resource puts the property in front of it, the config the key.
    expect(c.issues).toHaveLength(1);
    expect(r.failures.map((f) => f.reason)).toContain(`${r.failures[0]!.property} ${c.issues[0]!.reason}`);
  });
});

describe("the config reference and the schema", () => {
  // Every documented key is accepted where it is documented (not refused as unknown); the
  // other direction (every accepted key documented) holds because unknown-key messages list
  // the allowed keys from the reference (see "a misspelt connection field").
  const sample: Record<string, unknown> = { "hosts[].connection.proxy": { host: "198.18.0.1" } };
  it.each(CONFIG_REFERENCE.map((d) => d.key).filter((k) => /\.[A-Za-z<>]+$/.test(k)))(
    "accepts the documented key %s",
    (key) => {
      const cfg = valid() as Loose;
      const path = key
        .replace("[]", "[0]")
        .replace("<policy>", "web")
        .split(/\.|(?=\[)/);
      let at = cfg;
      for (const seg of path.slice(0, -1)) {
        const k = seg.startsWith("[") ? Number(seg.slice(1, -1)) : seg;
        at[k] ??= {};
        at = at[k];
      }
      at[path[path.length - 1]!] = sample[key] ?? "x";
      const result = parseStackConfig(cfg);
      const unknown = result.ok ? [] : result.issues.filter((i) => i.reason.startsWith("is not a known key"));
      expect(unknown).toEqual([]);
    },
  );
});
