/**
 * One SSH connection to one host, and the exec channels that run on it.
 *
 * Guarantees:
 * - A host key is checked inside ssh2's `hostVerifier`, before any credential is sent. A pinned
 *   key that does not match ends the operation at once (no retry) with both fingerprints shown.
 *   Where nothing is pinned, the key recorded at first use (`SessionOptions.trustedHostKeys`)
 *   is checked the same way; only a connection with neither accepts any key, and says so
 *   (`SessionOptions.warn`). The same holds for the jump host.
 * - Only dialing is retried (with exponential backoff); an authentication failure or a host-key
 *   mismatch is final, because retrying cannot fix it and may lock the account.
 * - Every exec has a timeout. Nothing secret (password, key, passphrase) is ever put in an error
 *   message or a log line: errors carry host, user, command name, exit code and stderr only.
 * - `stats` counts connections and round trips (request/response exchanges, see SessionStats) so
 *   callers can prove "one connection, at most two round trips" per operation.
 * - One connection may carry several execs at once (ssh2 multiplexes channels); ./pool.ts shares
 *   one per host between the operations of a provider process, each with its own options and
 *   stats ({@link SshSession.execWith}).
 */
import { createHash } from "crypto";
import type { Duplex } from "stream";
import type { Client, ClientChannel, ConnectConfig } from "ssh2";
import type { ConnectionArgs, ProxyConnectionArgs } from "../args";
import { HOST_KEY_FINGERPRINT, HOST_KEY_LINE, usesSudo } from "../core";
import { HostError, execEndedError } from "./errors";
import { zeroStats } from "./exec";
import type { ExecChannel, ExecOptions, ExecResult, HostExec, SessionOptions, SessionStats } from "./exec";
import { ExecOutput, toWire } from "./output";

export type { ExecChannel, ExecOptions, ExecResult, HostKeys, SessionOptions, SessionStats } from "./exec";

const DEFAULT_PORT = 22;
const DEFAULT_USER = "root";
const DEFAULT_DIAL_ERROR_LIMIT = 10;
const DEFAULT_PER_DIAL_TIMEOUT_S = 15;

/** `SHA256:<base64 without padding>` of a raw SSH public key blob, as `ssh-keygen -lf` prints it. */
export function fingerprintOfKeyBlob(blob: Buffer): string {
  return "SHA256:" + createHash("sha256").update(blob).digest("base64").replace(/=+$/, "");
}

/**
 * Turns a pin (an OpenSSH public key line or a `SHA256:` fingerprint) into the fingerprint to
 * compare against. Throws a HostError for a pin that is neither.
 */
export function expectedFingerprint(pin: string, host: string): string {
  const trimmed = pin.trim();
  if (HOST_KEY_FINGERPRINT.test(trimmed)) return trimmed.replace(/=$/, "");
  const line = HOST_KEY_LINE.exec(trimmed);
  if (line !== null) return fingerprintOfKeyBlob(Buffer.from(line[1]!, "base64"));
  throw new HostError(
    `connection.hostKey is neither an OpenSSH public key line ("ssh-ed25519 AAAA...") nor a SHA256 ` +
      `fingerprint ("SHA256:" + 43 base64 characters). Fix: copy it from /etc/ssh/ssh_host_ed25519_key.pub ` +
      `or from \`ssh-keygen -lf\` on the host.`,
    { host, kind: "host-key" },
  );
}

/**
 * The warning for a connection without a pin: what is accepted instead (the key recorded at
 * first use, or, the first time, any key) and how to pin it.
 */
function unpinnedWarning(conn: ProxyConnectionArgs, field: string, recorded: string | undefined): string {
  const what = field === "connection" ? "hostKeyFingerprint" : "proxyHostKeyFingerprint";
  return (
    `${field}.hostKey is not pinned for ${label(conn)}: ` +
    (recorded === undefined
      ? `whatever key it presents now is trusted on first use (a man in the middle right now would go ` +
        `unnoticed) and recorded in the state as ${what}; later operations refuse any other key. `
      : `only the key recorded at first use, ${recorded} (${what} in the state), is accepted. `) +
    `Fix: check the host's key out of band (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub on the host) and ` +
    `set ${field}.hostKey to its "ssh-ed25519 AAAA..." line or SHA256 fingerprint.`
  );
}

/**
 * Says, through `options.warn`, that a connection (or its jump host) pins no host key. Every
 * operation says it, also one that reuses a connection another operation opened.
 */
export function warnUnpinned(conn: ConnectionArgs, options: SessionOptions): void {
  const trusted = options.trustedHostKeys ?? {};
  if (conn.hostKey === undefined) options.warn?.(unpinnedWarning(conn, "connection", trusted.host));
  if (conn.proxy !== undefined && conn.proxy.hostKey === undefined) {
    options.warn?.(unpinnedWarning(conn.proxy, "connection.proxy", trusted.proxy));
  }
}

/** The refusal of a host whose key differs from the one recorded at first use. */
function recordedMismatch(
  conn: ProxyConnectionArgs,
  isProxy: boolean,
  recorded: string,
  presented: string,
): string {
  const field = isProxy ? "connection.proxy.hostKey" : "connection.hostKey";
  const what = isProxy ? "proxyHostKeyFingerprint" : "hostKeyFingerprint";
  return (
    `host key changed for ${isProxy ? "jump host " : ""}${label(conn)}: it presented ${presented}, but the key ` +
    `recorded when this resource first connected is ${recorded} (${what} in the state; ${field} pins nothing). ` +
    `The connection was refused before any credential was sent. Fix: check the host's key out of band ` +
    `(ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub on the host). If ${presented} is really its key ` +
    `(re-installed, key rotated), pin it: set ${field} to "${presented}" and run \`pulumi up\`, which records it; ` +
    `refresh and destroy use the connection stored in the state, so run that \`pulumi up\` first. When the ` +
    `program can no longer run, put the new fingerprint into ${what} of this resource in ` +
    `\`pulumi stack export\` output and load it back with \`pulumi stack import\`. If it is not the host's key, ` +
    `something is answering in its place: do not connect.`
  );
}

/** Quotes one word for a POSIX shell. */
export function shellQuote(word: string): string {
  return "'" + word.replace(/'/g, "'\\''") + "'";
}

/**
 * The ssh-agent a connection tries after its key and password: `agentSocketPath`, else the agent of
 * the provider's environment (`$SSH_AUTH_SOCK`, which the provider process inherits from the
 * `pulumi` command), as `@pulumi/command` does. An agent that cannot be reached only fails the
 * login when nothing else works, and the message then names it.
 */
export function agentOf(
  conn: Pick<ProxyConnectionArgs, "agentSocketPath">,
  env: NodeJS.ProcessEnv = process.env,
): { readonly path: string; readonly from: "agentSocketPath" | "$SSH_AUTH_SOCK" } | undefined {
  if (conn.agentSocketPath !== undefined) return { path: conn.agentSocketPath, from: "agentSocketPath" };
  const sock = env.SSH_AUTH_SOCK;
  return sock ? { path: sock, from: "$SSH_AUTH_SOCK" } : undefined;
}

function label(conn: ProxyConnectionArgs): string {
  return `${conn.user ?? DEFAULT_USER}@${conn.host}:${conn.port ?? DEFAULT_PORT}`;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** One established connection to a host (possibly through a jump host). */
export class SshSession implements HostExec {
  public readonly stats: SessionStats = zeroStats();
  /** `user@host:port` of the target, for messages. */
  public readonly target: string;
  /** The fingerprints the target and jump host presented (set once each handshake passed). */
  public readonly hostKeys: { host?: string; proxy?: string } = {};
  private client?: Client;
  private proxyClient?: Client;
  private readonly commandTimeoutMs: number;

  private constructor(
    public readonly conn: ConnectionArgs,
    private readonly options: SessionOptions,
  ) {
    this.target = label(conn);
    this.commandTimeoutMs = options.commandTimeoutMs ?? 120_000;
  }

  /** Host name as the user wrote it; used as the `host` of every error. */
  public get host(): string {
    return this.conn.host;
  }

  /** The login user. */
  public get user(): string {
    return this.conn.user ?? DEFAULT_USER;
  }

  /** Whether the scripts run under `sudo -n`: as configured, else for any user but root. */
  public get sudo(): boolean {
    return usesSudo(this.conn);
  }

  /** Opens the connection (retrying the dial with backoff) and returns the ready session. */
  public static async open(conn: ConnectionArgs, options: SessionOptions = {}): Promise<SshSession> {
    const session = new SshSession(conn, options);
    try {
      await session.connect();
    } catch (err) {
      session.close();
      throw err;
    }
    return session;
  }

  /**
   * ssh2 is loaded on first use, so that importing this module (e.g. from the serialized dynamic
   * provider or from pure tests) never needs it. A load failure is a setup bug, not a network
   * problem, so it is raised here, outside the dial retry loop.
   */
  private ssh2Client(): typeof import("ssh2").Client {
    return (require("ssh2") as typeof import("ssh2")).Client;
  }

  private async connect(): Promise<void> {
    const conn = this.conn;
    this.ssh2Client();
    warnUnpinned(conn, this.options);
    if (conn.proxy !== undefined) {
      this.proxyClient = await this.dialWithRetry(conn.proxy, undefined, true);
      this.stats.proxyConnections++;
    }
    this.client = await this.dialWithRetry(conn, this.proxyClient, false);
    this.stats.connections++;
  }

  private async dialWithRetry(
    conn: ProxyConnectionArgs,
    via: Client | undefined,
    isProxy: boolean,
  ): Promise<Client> {
    const limit = conn.dialErrorLimit ?? DEFAULT_DIAL_ERROR_LIMIT;
    const base = this.options.retryBaseDelayMs ?? 500;
    const max = this.options.retryMaxDelayMs ?? 8000;
    const errors: string[] = [];
    for (let attempt = 1; ; attempt++) {
      if (!isProxy) this.stats.dialAttempts++;
      try {
        return await this.dialOnce(conn, via, isProxy);
      } catch (err) {
        if (HostError.isInstance(err) && err.kind !== "connect") throw err;
        errors.push(`attempt ${attempt}: ${(err as Error).message}`);
        if (limit !== -1 && attempt >= Math.max(1, limit)) {
          throw new HostError(
            `could not connect to ${isProxy ? "jump host " : ""}${label(conn)} after ${attempt} attempt(s) ` +
              `(connection.dialErrorLimit=${limit}, perDialTimeout=${conn.perDialTimeout ?? DEFAULT_PER_DIAL_TIMEOUT_S}s): ` +
              `${errors.slice(-3).join("; ")}. Fix: check that the address and port are right, that sshd runs ` +
              `and that a firewall lets this machine in.`,
            { host: this.conn.host, kind: "connect", cause: err },
          );
        }
        // Jitter keeps many hosts of a fleet from retrying in lockstep.
        const delay = Math.min(max, base * 2 ** (attempt - 1));
        const wait = delay / 2 + Math.random() * (delay / 2);
        this.options.progress?.(
          `dial ${attempt}${limit === -1 ? "" : `/${limit}`} to ${isProxy ? "jump host " : ""}${label(conn)} ` +
            `failed (${(err as Error).message}); next try in ${(wait / 1000).toFixed(1)} s`,
          "wait",
        );
        await sleep(wait);
      }
    }
  }

  private dialOnce(conn: ProxyConnectionArgs, via: Client | undefined, isProxy: boolean): Promise<Client> {
    const SshClient = this.ssh2Client();
    const host = this.conn.host;
    const port = conn.port ?? DEFAULT_PORT;
    const timeoutMs = (conn.perDialTimeout ?? DEFAULT_PER_DIAL_TIMEOUT_S) * 1000;
    const recorded = isProxy ? this.options.trustedHostKeys?.proxy : this.options.trustedHostKeys?.host;
    // The user's pin wins over the key recorded at first use (they changed it on purpose).
    const expected = conn.hostKey === undefined ? recorded : expectedFingerprint(conn.hostKey, host);
    let presented: string | undefined;

    // A jump host that never answers the channel request would stall us: bounded like the dial.
    const getSock = (): Promise<Duplex | undefined> =>
      via === undefined
        ? Promise.resolve(undefined)
        : new Promise((resolve, reject) => {
            let timedOut = false;
            const timer = setTimeout(() => {
              timedOut = true;
              reject(
                new Error(`jump host opened no channel to ${conn.host}:${port} within ${timeoutMs / 1000}s`),
              );
            }, timeoutMs);
            via.forwardOut("127.0.0.1", 0, conn.host, port, (err, stream) => {
              clearTimeout(timer);
              if (timedOut) {
                stream?.destroy();
              } else if (err) {
                reject(
                  new Error(`jump host could not open a channel to ${conn.host}:${port}: ${err.message}`),
                );
              } else {
                resolve(stream);
              }
            });
          });

    return getSock().then(
      (sock) =>
        new Promise<Client>((resolve, reject) => {
          const client = new SshClient();
          const agent = agentOf(conn);
          let agentProblem: string | undefined;
          let settled = false;
          const finish = (err: Error | undefined) => {
            if (settled) return;
            settled = true;
            clearTimeout(timer);
            if (err) {
              client.removeAllListeners("ready");
              client.on("error", () => undefined);
              client.end();
              reject(err);
            } else {
              resolve(client);
            }
          };
          const timer = setTimeout(
            () => finish(new Error(`no SSH handshake within ${timeoutMs / 1000}s`)),
            timeoutMs,
          );
          client.on("ready", () => {
            this.hostKeys[isProxy ? "proxy" : "host"] = presented;
            finish(undefined);
          });
          client.on("error", (err: Error & { level?: string }) => {
            if (expected !== undefined && presented !== undefined && presented !== expected) {
              const field = isProxy ? "connection.proxy.hostKey" : "connection.hostKey";
              finish(
                new HostError(
                  conn.hostKey !== undefined
                    ? `host key mismatch for ${label(conn)}: expected ${expected} (${field}), ` +
                        `the host presented ${presented}. The connection was refused before any credential ` +
                        `was sent. Fix: if the host was re-installed, check its new key out of band ` +
                        `(ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub on the host) and update ${field}.`
                    : recordedMismatch(conn, isProxy, expected, presented),
                  { host, kind: "host-key", cause: err },
                ),
              );
            } else if (err.level === "agent") {
              // ssh2 goes on with the next method; the agent's problem is told if none works.
              agentProblem = err.message;
            } else if (err.level === "client-authentication") {
              const methods = [
                conn.privateKey !== undefined ? "privateKey" : undefined,
                conn.password !== undefined ? "password" : undefined,
                agent === undefined
                  ? undefined
                  : `${agent.from} (${agent.path}${agentProblem === undefined ? "" : `: ${agentProblem}`})`,
              ].filter((m) => m !== undefined);
              finish(
                new HostError(
                  `authentication failed for ${label(conn)} with ${methods.length > 0 ? methods.join(", ") : "no credentials"}. ` +
                    `Fix: check connection.user and that the key/password is accepted by the host ` +
                    `(e.g. the public key is in ~${conn.user ?? DEFAULT_USER}/.ssh/authorized_keys).`,
                  { host, kind: "auth", cause: err },
                ),
              );
            } else {
              finish(err);
            }
          });
          client.on("close", () => finish(new Error("connection closed during handshake")));
          const config: ConnectConfig = {
            host: conn.host,
            port,
            username: conn.user ?? DEFAULT_USER,
            readyTimeout: timeoutMs,
            keepaliveInterval: 5000,
            keepaliveCountMax: 3,
            hostVerifier: (key: Buffer) => {
              presented = fingerprintOfKeyBlob(key);
              return expected === undefined || presented === expected;
            },
          };
          if (sock !== undefined) config.sock = sock;
          if (conn.password !== undefined) config.password = conn.password;
          if (conn.privateKey !== undefined) config.privateKey = conn.privateKey;
          if (conn.privateKeyPassword !== undefined) config.passphrase = conn.privateKeyPassword;
          if (agent !== undefined) config.agent = agent.path;
          try {
            client.connect(config);
          } catch (err) {
            // ssh2 throws synchronously for a key it cannot parse (or a wrong passphrase).
            finish(
              new HostError(
                `connection.privateKey could not be used: ${(err as Error).message}. Fix: give an ` +
                  `OpenSSH or PEM private key, and privateKeyPassword if it is encrypted.`,
                { host, kind: "auth", cause: err },
              ),
            );
          }
        }),
    );
  }

  /**
   * Runs one command (one exec channel = one round trip). Resolves with its exit code and
   * output; rejects with a HostError on timeout or a lost connection.
   */
  public exec(name: string, command: string, opts: ExecOptions = {}): Promise<ExecResult> {
    return this.execWith(this.options, this.stats, name, command, opts);
  }

  /**
   * {@link exec} with another operation's transport options (timeout, output limits) and
   * counters, on this connection: how ./pool.ts runs each operation on a shared connection.
   * `onStarted` is called once the host accepted the command (the exec channel is open); an exec
   * that fails before that never ran.
   */
  public execWith(
    options: SessionOptions,
    stats: SessionStats,
    name: string,
    command: string,
    opts: ExecOptions = {},
    onStarted?: () => void,
  ): Promise<ExecResult> {
    const client = this.client;
    if (client === undefined) {
      return Promise.reject(
        new HostError("the SSH session is closed", { host: this.host, kind: "command", command: name }),
      );
    }
    stats.roundTrips++;
    const timeoutMs = opts.timeoutMs ?? options.commandTimeoutMs ?? this.commandTimeoutMs;
    return new Promise<ExecResult>((resolve, reject) => {
      const output = new ExecOutput(this.host, name, options);
      let settled = false;
      let channel: ClientChannel | undefined;
      const onClientClose = () => fail(execEndedError(this.host, name, "connection-lost", output.stderr));
      const fail = (err: Error) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        client.removeListener("close", onClientClose);
        reject(err);
      };
      const kill = () => {
        if (channel === undefined) return;
        try {
          channel.signal("KILL");
        } catch {
          // The channel may already be gone; closing it below is what matters.
        }
        channel.close();
      };
      const timer = setTimeout(() => {
        kill();
        fail(execEndedError(this.host, name, { timeoutMs }, output.stderr));
      }, timeoutMs);
      const overflow = () => {
        kill();
        fail(output.overflow!);
      };
      const notStarted = (err: Error) =>
        fail(
          new HostError(`could not start "${name}": ${err.message}`, {
            host: this.host,
            kind: "command",
            command: name,
            cause: err,
          }),
        );
      const run = (ch: ClientChannel): void => {
        channel = ch;
        const api: ExecChannel = {
          write: (text) => {
            ch.write(toWire(text));
          },
          end: () => {
            ch.end();
          },
        };
        ch.on("data", (chunk: Buffer) => {
          if (settled) return;
          if (!output.addStdout(chunk)) return overflow();
          opts.onStdout?.(output.stdout, api);
        });
        ch.stderr.on("data", (chunk: Buffer) => {
          if (!output.addStderr(chunk)) overflow();
        });
        ch.on("error", () => undefined);
        ch.on("close", (code: number | null | undefined, signal?: string) => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          client.removeListener("close", onClientClose);
          resolve({
            code: code ?? null,
            signal: signal ?? undefined,
            stdout: output.stdout,
            stderr: output.finalStderr(),
          });
        });
        if (opts.stdin !== undefined) ch.write(toWire(opts.stdin));
        if (opts.endStdin ?? true) ch.end();
      };
      client.once("close", onClientClose);
      try {
        client.exec(command, (err, ch) => {
          if (err) return notStarted(err);
          onStarted?.();
          run(ch);
        });
      } catch (err) {
        // ssh2 throws "Not connected" when the connection went away before this exec.
        notStarted(err as Error);
      }
    });
  }

  /**
   * Whether the connection can still open channels: false once it closed, broke or was closed
   * here. (A connection that died silently stays "alive" until ssh2's keepalive gives up.)
   */
  public get alive(): boolean {
    const sock = (this.client as unknown as { _sock?: { writable?: boolean } } | undefined)?._sock;
    return sock?.writable === true;
  }

  /**
   * Calls `listener` once when the connection to the target (or its jump host) closes or
   * breaks. Several execs may each wait on the same connection, so the listener limit is raised.
   */
  public onClose(listener: () => void): void {
    let called = false;
    const once = () => {
      if (called) return;
      called = true;
      listener();
    };
    for (const c of [this.client, this.proxyClient]) {
      if (c === undefined) continue;
      c.setMaxListeners(0);
      c.once("close", once);
      c.on("error", () => undefined);
    }
  }

  /** Counts one more exchange on an open exec channel (a plan sent, whose answer we wait for). */
  public countRoundTrip(): void {
    this.stats.roundTrips++;
  }

  /** Counts the `commit` confirmation of an apply. */
  public countCommit(): void {
    this.stats.commits++;
  }

  /** Cuts the TCP connection at once, without a clean SSH goodbye (tests use it to simulate a crash). */
  public destroy(): void {
    const sock = (this.client as unknown as { _sock?: { destroy(): void } } | undefined)?._sock;
    sock?.destroy();
  }

  public close(): void {
    this.client?.end();
    this.proxyClient?.end();
    this.client = undefined;
    this.proxyClient = undefined;
  }
}
