/**
 * A lab of REAL Docker hosts for tests and the demo: each host is a network namespace with its
 * own sshd (own host key, own /etc/iptables) and, for "docker" hosts, its own dockerd with two
 * published containers; "light" hosts only carry Docker's chain layout (for scale tests).
 * Client namespaces with their own source addresses send real traffic to the hosts; an
 * "outside" namespace answers on every port so containers can reach "a server outside".
 *
 * The work is done by `lab/lab.sh` (also the CLI for humans); this module starts it, reads the
 * lab's description and adds the probes. Needs root and the packages of `lab/setup.sh`.
 *
 * Guarantees: labs started in parallel (jest workers) never collide (own slot, switch
 * namespace, addresses); `down()` leaves no namespace, veth, mount or process behind; a lab
 * whose owner process died is reaped by the next `startLab` or by `bash lab/lab.sh down-all`.
 * Test traffic only ever goes to addresses inside the lab (198.18.0.0/15, 2001:db8::/32).
 */
import { execFile, spawn, spawnSync } from "child_process";
import { existsSync, readFileSync } from "fs";
import * as path from "path";

const LAB_SH = path.join(__dirname, "lab.sh");
/** The daemon's own (20.10) client when present; a newer client on PATH works too. */
const DOCKER_CLI = existsSync("/usr/bin/docker") ? "/usr/bin/docker" : "docker";

/** How long a probe waits for a connection or a UDP reply before calling the port closed. */
const PROBE_TIMEOUT_S = 2;

/** What to bring up. */
export interface StartLabOptions {
  /** Hosts running a real dockerd with published 8080/tcp (httpd) and 5353/udp (socat). */
  readonly docker: number;
  /** Hosts with sshd and Docker's chain layout laid by iptables-restore, no dockerd. */
  readonly light: number;
  /** Client namespaces, each with its own IPv4 (and IPv6) source address. */
  readonly clients: number;
  /**
   * Give every host, client and the outside namespace an IPv6 address, and start the docker
   * hosts' daemons with `{"ipv6": true, "fixed-cidr-v6": ..., "ip6tables": true}`.
   * @default false
   */
  readonly ipv6?: boolean;
  /**
   * With `ipv6: true`: whether the daemons run with IPv6 too. `false` keeps Docker's defaults
   * (IPv6 off): the namespaces and clients have IPv6 addresses, containers are IPv4-only, and
   * docker-proxy serves the published ports on `[::]` (light hosts get no IPv6 Docker chains).
   * @default true
   */
  readonly dockerIpv6?: boolean;
  /**
   * Chain layout of the light hosts, both captured from real daemons: Docker 20.10-27 (`docker20`,
   * DOCKER-USER ends in RETURN) or Docker 29 (`docker29`: DOCKER-FORWARD, DOCKER-CT, DOCKER-BRIDGE,
   * DOCKER-INTERNAL, no RETURN, an ip6tables DOCKER-USER).
   * @default "docker29"
   */
  readonly lightLayout?: LightLayout;
  /**
   * The Docker of the docker hosts: Debian 12's dockerd 20.10, or Docker 29 (built once by
   * `lab/docker29.sh`, with its own containerd v2 per host): the Docker people run, so every
   * test gets it unless it asks for 20.10, the compatibility leg. One value for every docker
   * host, or one per docker host (h0, h1, ...; the last repeats).
   * @default "29"
   */
  readonly dockerVersion?: DockerVersion | readonly DockerVersion[];
  /**
   * Docker's firewall backend per docker host (as {@link dockerVersion}); `nftables` needs Docker 29.
   * @default "iptables"
   */
  readonly firewallBackend?: FirewallBackend | readonly FirewallBackend[];
}

export type LightLayout = "docker20" | "docker29";
export type DockerVersion = "20.10" | "29";
export type FirewallBackend = "iptables" | "nftables";
export type Family = 4 | 6;
export type Proto = "tcp" | "udp";

/** One Docker host, reached at `ipv4:22` from the root namespace (where jest and pulumi run). */
export interface LabHost {
  readonly name: string;
  readonly kind: "docker" | "light";
  readonly netns: string;
  readonly ipv4: string;
  /** Present when the lab was started with `ipv6: true`. */
  readonly ipv6?: string;
  readonly sshPort: 22;
  /** The host's public key as an OpenSSH line without comment (`ssh-ed25519 AAAA...`). */
  readonly hostKey: string;
  /** `SHA256:...` fingerprint of {@link hostKey}. */
  readonly hostKeyFingerprint: string;
  /** The machine-side directory that SSH sessions on this host see as `/etc/iptables`. */
  readonly etcIptablesDir: string;
  readonly published: { readonly tcp: 8080; readonly udp: 5353 };
  /**
   * The chain layout: what the real dockerd made on docker hosts (`docker20` for 20.10,
   * `docker29` for 29), laid by script on light hosts.
   */
  readonly layout: LightLayout;
  /** The dockerd this docker host runs (docker hosts only). */
  readonly dockerVersion?: DockerVersion;
  /** Its firewall backend (docker hosts only). */
  readonly firewallBackend?: FirewallBackend;
  /**
   * Docker manages ip6tables on this host. Note: dockerd 20.10 (docker hosts) then builds
   * DOCKER and DOCKER-ISOLATION-* in ip6tables but NO ip6tables DOCKER-USER; the lab leaves
   * that as the daemon made it. Light hosts mimic their layout (docker29 has one).
   */
  readonly dockerIpv6: boolean;
  /** `unix://...` socket of this host's dockerd (docker hosts only); SSH sessions have it as DOCKER_HOST. */
  readonly dockerHost?: string;
  /** pid of the host's sshd (listener). */
  readonly sshdPid: number;
  /** @internal pid of a process sharing sshd's network and mount ns; hostExec enters through it. */
  readonly nsPid: number;
}

export interface LabClient {
  readonly name: string;
  readonly netns: string;
  readonly ipv4: string;
  readonly ipv6?: string;
}

export interface ExecResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Everything `lab.sh up` writes to `<dir>/lab.json`. */
interface LabData {
  readonly id: string;
  readonly dir: string;
  readonly ipv6: boolean;
  readonly hosts: LabHost[];
  readonly clients: LabClient[];
  readonly outside: { readonly netns: string; readonly ipv4: string; readonly ipv6?: string };
  readonly clientKey: { readonly privateKeyPath: string; readonly publicKey: string };
  readonly knownHostsPath: string;
  readonly users: {
    readonly root: "root";
    readonly sudo: "dpasudo";
    readonly sudoPassword: "dpapwsudo";
    readonly password: string;
  };
}

export interface Lab {
  /** `dpaNNN`; also the prefix of every namespace of this lab. */
  readonly id: string;
  /** The lab's directory (keys, logs, daemon state); removed by `down()`. */
  readonly dir: string;
  readonly hosts: readonly LabHost[];
  readonly clients: readonly LabClient[];
  /** Namespace answering on every TCP and UDP port (for containerProbe). */
  readonly outside: { readonly netns: string; readonly ipv4: string; readonly ipv6?: string };
  /** The client key every host accepts for root, dpasudo and dpapwsudo. */
  readonly clientKey: {
    readonly privateKey: string;
    readonly privateKeyPath: string;
    readonly publicKey: string;
  };
  /** An OpenSSH known_hosts file pinning every host's key (by IPv4 and IPv6 address). */
  readonly knownHostsPath: string;
  /**
   * Login users: root (key only), `dpasudo` (passwordless sudo), `dpapwsudo` (sudo needs a
   * password, so `sudo -n` fails). Both non-root users also log in with `password`.
   */
  readonly users: LabData["users"];
  /**
   * Real traffic from a client namespace to a host's port: TCP = a connection is accepted,
   * UDP = a reply comes back, within 2 s.
   * @param family 4 or 6. @default 4
   */
  probe(
    client: LabClient | string,
    host: LabHost | string,
    port: number,
    proto: Proto,
    family?: Family,
  ): Promise<boolean>;
  /**
   * Real traffic from inside a running container on a docker host to the outside namespace's
   * server on `port` (which answers on every port).
   * @param family 4 or 6 (needs `ipv6: true`). @default 4
   */
  containerProbe(host: LabHost | string, port: number, proto: Proto, family?: Family): Promise<boolean>;
  /** Runs `sh -c cmd` in the host's network and mount namespace, as an SSH session would. */
  hostExec(host: LabHost | string, cmd: string): Promise<ExecResult>;
  /**
   * Reboots a docker host as far as its firewall can tell: dockerd stops, every iptables and
   * ip6tables rule and conntrack entry is flushed, the host's persisted `rules.v4`/`rules.v6`
   * are restored (as netfilter-persistent does at boot), dockerd starts again and rebuilds its
   * chains around them; the containers come back. Resolves when they answer again.
   */
  reboot(host: LabHost | string, options?: RebootOptions): Promise<void>;
  /** argv for the system `ssh` client logging in as `user`, host key pinned, batch mode. */
  sshArgv(host: LabHost | string, user: string, remoteCmd: string): string[];
  /** Tears the lab down; idempotent. */
  down(): Promise<void>;
}

export interface RebootOptions {
  /** Restore `/etc/iptables/rules.v4` and `rules.v6` before dockerd starts. @default true */
  readonly restorePersisted?: boolean;
}

/** A lab could not be started, probed or torn down. `cause` keeps the underlying error. */
export class LabError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "LabError";
  }
}

function run(
  file: string,
  args: readonly string[],
  opts: { timeoutMs?: number; env?: NodeJS.ProcessEnv } = {},
) {
  return new Promise<ExecResult>((resolve, reject) => {
    execFile(
      file,
      args as string[],
      { maxBuffer: 64 * 1024 * 1024, timeout: opts.timeoutMs ?? 0, env: opts.env ?? process.env },
      (err, stdout, stderr) => {
        if (err && typeof (err as { code?: unknown }).code !== "number") {
          reject(new LabError(`could not run ${file} ${args.join(" ")}: ${err.message}`, { cause: err }));
          return;
        }
        resolve({ code: err ? Number((err as { code: number }).code) : 0, stdout, stderr });
      },
    );
  });
}

function checkCount(field: string, value: number, max: number): void {
  if (!Number.isInteger(value) || value < 0 || value > max) {
    throw new LabError(`startLab: ${field} must be a whole number from 0 to ${max}, got ${String(value)}`);
  }
}

/** Labs of this process not yet torn down; torn down synchronously if the process exits. */
const liveLabs = new Set<string>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once("exit", () => {
    for (const id of liveLabs) spawnSync("bash", [LAB_SH, "down", id], { stdio: "ignore" });
  });
}

/**
 * An `iptables-save` text as a restore would rebuild it: without the `#` comment lines (dates,
 * backend warnings) and with chain counters zeroed, so two saves of the same rules compare equal.
 */
export function comparableSave(text: string): string {
  return text
    .split("\n")
    .filter((l) => !l.startsWith("#"))
    .map((l) => l.replace(/\[\d+:\d+\]$/, "[0:0]"))
    .join("\n");
}

/** Brings up a lab as described in {@link StartLabOptions}. Needs root. */
export async function startLab(options: StartLabOptions): Promise<Lab> {
  checkCount("docker", options.docker, 190);
  checkCount("light", options.light, 190);
  checkCount("clients", options.clients, 50);
  if (options.docker + options.light < 1) {
    throw new LabError("startLab: a lab needs at least one host; set docker or light to 1 or more");
  }
  if (options.lightLayout !== undefined && !["docker20", "docker29"].includes(options.lightLayout)) {
    throw new LabError(
      `startLab: lightLayout must be "docker20" or "docker29", got ${JSON.stringify(options.lightLayout)}`,
    );
  }
  const args = [
    LAB_SH,
    "up",
    "--docker",
    String(options.docker),
    "--light",
    String(options.light),
    "--clients",
    String(options.clients),
    "--light-layout",
    options.lightLayout ?? "docker29",
    "--owner-pid",
    String(process.pid),
  ];
  if (options.ipv6) args.push("--ipv6");
  if (options.dockerIpv6 === false) {
    if (!options.ipv6)
      throw new LabError("startLab: dockerIpv6: false needs ipv6: true (the hosts' own IPv6)");
    args.push("--docker-ipv6", "off");
  }
  const perHost = <T extends string>(
    field: string,
    value: T | readonly T[] | undefined,
    allowed: readonly T[],
  ) => {
    if (value === undefined) return;
    const list: readonly T[] = typeof value === "string" ? [value as T] : (value as readonly T[]);
    if (list.length === 0 || list.some((v) => !allowed.includes(v))) {
      throw new LabError(
        `startLab: ${field} must be one of ${allowed.map((a) => JSON.stringify(a)).join(", ")} or a non-empty list of them, got ${JSON.stringify(value)}`,
      );
    }
    args.push(`--${field.replace(/[A-Z]/g, (c) => "-" + c.toLowerCase())}`, list.join(","));
  };
  perHost("dockerVersion", options.dockerVersion, ["20.10", "29"] as const);
  perHost("firewallBackend", options.firewallBackend, ["iptables", "nftables"] as const);
  const res = await run("bash", args, { env: { ...process.env, DPA_LAB_QUIET: "1" } });
  if (res.code !== 0) {
    throw new LabError(
      `startLab failed: bash ${args.join(" ")} exited with ${res.code}\n${res.stderr.trim()}`,
    );
  }
  const jsonPath = res.stdout.trim().split("\n").pop() ?? "";
  let data: LabData;
  let privateKey: string;
  try {
    data = JSON.parse(readFileSync(jsonPath, "utf8")) as LabData;
    privateKey = readFileSync(data.clientKey.privateKeyPath, "utf8");
  } catch (e) {
    throw new LabError(`startLab: could not read the lab description '${jsonPath}' written by lab.sh`, {
      cause: e,
    });
  }
  liveLabs.add(data.id);
  installExitHook();
  return makeLab(data, privateKey);
}

function makeLab(data: LabData, privateKey: string): Lab {
  const host = (h: LabHost | string): LabHost => {
    const name = typeof h === "string" ? h : h.name;
    const found = data.hosts.find((x) => x.name === name);
    if (!found) {
      throw new LabError(
        `lab ${data.id}: no host '${name}'; hosts are ${data.hosts.map((x) => x.name).join(", ")}`,
      );
    }
    return found;
  };
  const client = (c: LabClient | string): LabClient => {
    const name = typeof c === "string" ? c : c.name;
    const found = data.clients.find((x) => x.name === name);
    if (!found) {
      throw new LabError(
        `lab ${data.id}: no client '${name}'; clients are ${data.clients.map((x) => x.name).join(", ") || "none"}`,
      );
    }
    return found;
  };
  const address = (what: string, x: { ipv4: string; ipv6?: string }, family: Family): string => {
    if (family === 4) return x.ipv4;
    if (!x.ipv6)
      throw new LabError(`lab ${data.id}: ${what} has no IPv6 address; start the lab with ipv6: true`);
    return x.ipv6;
  };
  const checkPort = (port: number) => {
    if (!Number.isInteger(port) || port < 1 || port > 65535) {
      throw new LabError(`lab ${data.id}: port must be a whole number from 1 to 65535, got ${String(port)}`);
    }
  };
  let isDown = false;
  // After down() the recorded pids and namespaces may belong to someone else.
  const live = (what: string) => {
    if (isDown) throw new LabError(`lab ${data.id}: ${what} after down(); start a new lab`);
  };

  return {
    id: data.id,
    dir: data.dir,
    hosts: data.hosts,
    clients: data.clients,
    outside: data.outside,
    clientKey: {
      privateKey,
      privateKeyPath: data.clientKey.privateKeyPath,
      publicKey: data.clientKey.publicKey,
    },
    knownHostsPath: data.knownHostsPath,
    users: data.users,

    async probe(c, h, port, proto, family = 4) {
      live("probe");
      const cl = client(c);
      const target = address(`host ${host(h).name}`, host(h), family);
      checkPort(port);
      return socatProbe(["nsenter", `--net=/run/netns/${cl.netns}`, "--"], target, port, proto, family);
    },

    async containerProbe(h, port, proto, family = 4) {
      live("containerProbe");
      const hh = host(h);
      if (hh.kind !== "docker" || !hh.dockerHost) {
        throw new LabError(
          `lab ${data.id}: containerProbe needs a docker host; ${hh.name} is a ${hh.kind} host`,
        );
      }
      checkPort(port);
      const target = address("the outside namespace", data.outside, family);
      // The "udp" container has the machine's /usr mounted, hence socat.
      return socatProbe(
        [DOCKER_CLI, "-H", hh.dockerHost, "exec", "-i", "udp"],
        target,
        port,
        proto,
        family,
        "/usr/bin/socat",
      );
    },

    async hostExec(h, cmd) {
      live("hostExec");
      const hh = host(h);
      const env = { ...process.env, ...(hh.dockerHost ? { DOCKER_HOST: hh.dockerHost } : {}) };
      return run("nsenter", ["-t", String(hh.nsPid), "-n", "-m", "--", "sh", "-c", cmd], { env });
    },

    async reboot(h, options = {}) {
      live("reboot");
      const hh = host(h);
      if (hh.kind !== "docker") {
        throw new LabError(`lab ${data.id}: reboot needs a docker host; ${hh.name} is a ${hh.kind} host`);
      }
      const args = [LAB_SH, "reboot", data.id, hh.name];
      if (options.restorePersisted === false) args.push("--no-restore");
      const res = await run("bash", args);
      if (res.code !== 0) {
        throw new LabError(
          `lab ${data.id}: reboot of ${hh.name} failed (exit ${res.code})\n${res.stderr.trim()}`,
        );
      }
    },

    sshArgv(h, user, remoteCmd) {
      const hh = host(h);
      return [
        "-i",
        data.clientKey.privateKeyPath,
        "-o",
        `UserKnownHostsFile=${data.knownHostsPath}`,
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "ConnectTimeout=5",
        "-F",
        "/dev/null",
        "-p",
        String(hh.sshPort),
        `${user}@${hh.ipv4}`,
        remoteCmd,
      ];
    },

    async down() {
      if (isDown) return;
      const res = await run("bash", [LAB_SH, "down", data.id]);
      if (res.code !== 0) {
        throw new LabError(
          `lab ${data.id}: down failed (exit ${res.code}); retry with: bash lab/lab.sh down ${data.id}\n${res.stderr.trim()}`,
        );
      }
      isDown = true;
      liveLabs.delete(data.id);
    },
  };
}

/**
 * TCP: socat connects and closes; exit 0 = a connection was accepted. UDP: one datagram; the
 * first byte of a reply means open (the child is then stopped early instead of idling 2 s).
 */
function socatProbe(
  prefix: readonly string[],
  addr: string,
  port: number,
  proto: Proto,
  family: Family,
  socat = "socat",
): Promise<boolean> {
  const target = family === 6 ? `[${addr}]` : addr;
  const argv =
    proto === "tcp"
      ? [
          ...prefix,
          socat,
          "-u",
          "OPEN:/dev/null",
          `TCP${family}:${target}:${port},connect-timeout=${PROBE_TIMEOUT_S}`,
        ]
      : [...prefix, socat, "-t", String(PROBE_TIMEOUT_S), "-", `UDP${family}:${target}:${port}`];
  return new Promise<boolean>((resolve, reject) => {
    const child = spawn(argv[0], argv.slice(1), { stdio: ["pipe", "pipe", "ignore"] });
    let settled = false;
    const finish = (value: boolean) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (child.exitCode === null && child.pid !== undefined) child.kill("SIGKILL");
      resolve(value);
    };
    // Backstop only: socat itself gives up after PROBE_TIMEOUT_S.
    const timer = setTimeout(() => finish(false), (PROBE_TIMEOUT_S + 8) * 1000);
    child.on("error", (e) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      reject(new LabError(`probe: could not run ${argv.join(" ")}`, { cause: e }));
    });
    if (proto === "udp") {
      child.stdout.once("data", () => finish(true));
      child.stdin.end("dpa-probe\n");
    } else {
      child.stdout.resume();
      child.stdin.end();
    }
    // "close", not "exit": a UDP reply may still sit in the stdout pipe when socat exits.
    child.on("close", (code) => finish(proto === "tcp" && code === 0));
  });
}
