/**
 * The documented keys of the root program's stack config (`docker-port-allowlist:*`): what
 * README.md's config reference lists and what the schema's messages quote (a key's type, what a
 * missing key means, an example value, the keys allowed next to a misspelt one).
 *
 * Data only. test/program/config.test.ts keeps it in step with the schema in ./config.ts (every schema
 * key documented, every documented key accepted) and with README.md.
 */

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
 * `sudo`); `canonicalKey` in ./config.ts maps those places here.
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
    default: "`$SSH_AUTH_SOCK` when set",
    doc: "Path of an ssh-agent socket, tried after `privateKey` and `password`. Unset: the agent in the `pulumi` command's `$SSH_AUTH_SOCK`, as with `@pulumi/command`.",
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
    type: "integer 1-1000, or -1",
    default: "10",
    doc: "Connection attempts before giving up; -1 means no limit.",
  },
  {
    key: `${prefix}.perDialTimeout`,
    type: "integer 1-3600 (seconds)",
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
