import * as fs from "node:fs";
import * as path from "node:path";

import {
  CONFIG_REFERENCE,
  ConfigError,
  configKey,
  loadStackConfig,
  parseStackConfig,
  TOP_LEVEL_KEYS,
} from "../provider/config";
import { validateConnection } from "../provider/core";

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
    ["an empty policy list", (c) => (c.policies = []), [["policies", "is empty; list at least one policy"]]],
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
      [["hosts[2].connection.port", "is 70000; an SSH port must be a whole number 1-65535"]],
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
          "is not a host key; write an OpenSSH public key line (`ssh-ed25519 AAAA...`, as in known_hosts " +
            "without the host name) or a fingerprint (`SHA256:` + 43 base64 characters, from `ssh-keygen -lf`)",
        ],
      ],
    ],
    [
      "no way to log in",
      (c) => delete c.connection.privateKey,
      [0, 1, 2].map((i) => [
        `hosts[${i}].connection`,
        "has no way to log in: set privateKey or password (with --secret) or agentSocketPath, here or for " +
          "every host in docker-port-allowlist:connection",
      ]),
    ],
    [
      "a bad source",
      (c) => c.policies[0].sources.push("198.18.300.0/24"),
      [
        [
          "policies[0].sources[2]",
          'is "198.18.300.0/24", not an IP address or CIDR; write an address ("198.18.0.7", "2001:db8::7") ' +
            'or a network ("198.18.0.0/24", "2001:db8::/48")',
        ],
      ],
    ],
    [
      "an IPv6 prefix that is too long",
      (c) => (c.policies[0].sources[1] = "2001:db8::/129"),
      [["policies[0].sources[1]", 'is "2001:db8::/129"; the prefix length of an IPv6 network must be 0-128']],
    ],
    [
      "a bad per-host extra source",
      (c) => (c.hosts[1].extraSources.web = ["office"]),
      [
        [
          "hosts[1].extraSources.web[0]",
          'is "office", not an IP address or CIDR; write an address ("198.18.0.7", "2001:db8::7") ' +
            'or a network ("198.18.0.0/24", "2001:db8::/48")',
        ],
      ],
    ],
    [
      "a port out of range",
      (c) => (c.policies[0].port = 0),
      [
        [
          "policies[0].port",
          'is 0; a port must be 1-65535. Write a published host port (8080) or an inclusive range ("8000-8100")',
        ],
      ],
    ],
    [
      "a backwards port range",
      (c) => (c.policies[0].port = "9000-8000"),
      [
        [
          "policies[0].port",
          'is "9000-8000"; a range must go from a lower to a higher port. Write a published host port (8080) ' +
            'or an inclusive range ("8000-8100")',
        ],
      ],
    ],
    [
      "an unknown protocol",
      (c) => (c.policies[1].protocols = ["udp", "sctp"]),
      [["policies[1].protocols[1]", 'is "sctp"; allowed: "tcp", "udp"']],
    ],
    [
      "an unknown action",
      (c) => (c.policies[0].action = "ACCEPT"),
      [["policies[0].action", 'is "ACCEPT"; allowed: "DROP", "REJECT"']],
    ],
    [
      "a policy name too long for a chain",
      (c) => (c.policies[0].name = "a-very-long-policy-name-xyz"),
      [
        [
          "policies[0].name",
          "must be 1-24 letters, digits, `_` or `-` (it becomes the chain DPA-<name> on every host)",
        ],
      ],
    ],
    [
      "two policies with one name",
      (c) => c.policies.push({ name: "web", port: 9000, sources: [] }),
      [
        [
          "policies[2].name",
          'is "web", already used by policies[0]; policy names must be unique (each owns the chain DPA-<name>)',
        ],
      ],
    ],
    [
      "two hosts with one name",
      (c) => (c.hosts[2].name = "web-1"),
      [["hosts[2].name", 'is "web-1", already used by hosts[0]; host names must be unique']],
    ],
    [
      "a host applying an unknown policy",
      (c) => (c.hosts[2].policies = ["dns", "ssh"]),
      [["hosts[2].policies[1]", 'is "ssh", not a policy; known policies: web, dns']],
    ],
    [
      "extra sources for a policy the host does not apply",
      (c) => (c.hosts[2].extraSources = { web: ["198.18.1.1"] }),
      [
        [
          "hosts[2].extraSources.web",
          'adds sources to policy "web", which hosts[2].policies does not apply to this host; ' +
            "add it there or remove these sources",
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
      [["rollout.canaries[0]", 'is "web-9", not a host; known hosts: web-1, web-2, dns-1']],
    ],
    [
      "more canaries than hosts",
      (c) => (c.rollout.canaries = 4),
      [["rollout.canaries", "is 4, more than the 3 hosts; use 0-3"]],
    ],
    [
      "a zero batch size",
      (c) => (c.rollout.batchSize = 0),
      [["rollout.batchSize", "is 0; must be a whole number of hosts, 1 or more"]],
    ],
    [
      "a relative persistence path",
      (c) => (c.persistence = { rulesV4Path: "rules.v4" }),
      [["persistence.rulesV4Path", "must be an absolute path"]],
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

  it("accepts overlapping ports when the policies apply to different hosts", () => {
    const cfg = valid() as Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
    cfg.policies[1] = { name: "web2", port: 8080, sources: [] };
    cfg.hosts[0].policies = ["web"];
    cfg.hosts[1].policies = ["web"];
    cfg.hosts[2].policies = ["web2"];
    expect(parseStackConfig(cfg).ok).toBe(true);
  });
});

describe("the core's validation as a safety net", () => {
  // The config schema accepts any non-empty host and user; the core refuses shell characters. The
  // core's reason is kept, and reported under the config key the bad value came from.
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
    expect(result.issues).toEqual([{ key: P + key, reason: core.failures[0]!.reason }]);
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
        `  ${P}hosts[0].connection.port: is "ssh"; an SSH port must be a whole number 1-65535\n` +
        `  ${P}policies[0].port: is 0; a port must be 1-65535. Write a published host port (8080) or an ` +
        'inclusive range ("8000-8100")',
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
  const readme = () => fs.readFileSync(path.join(__dirname, "..", "README.md"), "utf8");

  it.each(CONFIG_REFERENCE.map((d) => d.key))("documents %s in README.md", (key) => {
    expect(readme()).toContain(`\`${key}\``);
  });

  it("starts every key with a top-level key", () => {
    for (const d of CONFIG_REFERENCE) {
      expect(TOP_LEVEL_KEYS).toContain(d.key.split(/[.[]/)[0]);
    }
  });
});
