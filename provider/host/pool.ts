/**
 * One SSH connection per host for the whole provider process.
 *
 * The engine runs the dynamic provider in ONE Node process per command (`pulumi up`, `refresh`,
 * `destroy`) and calls create/update/read/delete of every resource in it, concurrently. A fleet
 * with several allowlists on a host would open one connection per (host, allowlist); here the
 * operations on one host share one authenticated connection instead, each with its own exec
 * channel (ssh2 multiplexes them). Nothing else changes for an operation: it still runs ONE exec
 * that holds the host lock from its read to its commit (the host's `flock` queues the others),
 * with at most two round trips.
 *
 * Guarantees:
 * - A connection is shared only by operations that would have dialed it identically: the same
 *   connection args in everything but `sudo` (address, port, user, every credential, host-key
 *   pin, dial limits, jump host with all of its own) and the same trusted host keys (the key
 *   recorded at first use, where nothing is pinned). The pool is keyed by a SHA-256 of those
 *   values, so it holds no secret in a key, and it logs nothing.
 * - Only a connection that passed the host-key check and authentication is shared: a dial that
 *   fails rejects every operation waiting for it and leaves nothing behind, so the next operation
 *   dials again (and is refused again, if nothing changed).
 * - A connection that closes or breaks leaves the pool at once. An operation whose command could
 *   not start because its connection was lost dials a new one ONCE and runs there. That is safe:
 *   no operation changes a host before its command's first answer came back (the read is
 *   read-only; the sync waits, under the lock, for a plan that was never sent, and ends).
 * - At most `maxChannels` commands run on one connection at a time (OpenSSH's `MaxSessions` is
 *   10 by default); more wait, in order, for one to end. Their command timeout starts when they
 *   run. A host that allows fewer (a hardened `MaxSessions 2`) refuses a channel while others
 *   run on the connection: the limit of that connection is lowered to what it carries, and the
 *   refused command waits for its turn and runs then. Refused with nothing else running, the
 *   refusal is the operation's error.
 * - A connection that no operation uses for `idleMs` is closed. The timer is unref'd: the pool
 *   never keeps the process alive by itself (ssh2's keepalive timer does, for at most `idleMs`,
 *   until the idle connection is closed), so the provider process exits when the engine is done.
 * - Every operation gets its own {@link HostExec} with its own counters: `connections` (1 when it
 *   dialed), `reusedConnections` (1 when it ran on a connection another operation opened), round
 *   trips and commits of its own exec; warnings (an unpinned host key) are its own too.
 */
import { createHash } from "crypto";
import type { ConnectionArgs } from "../args";
import { usesSudo } from "../core";
import type {
  Connect,
  ExecOptions,
  ExecResult,
  HostExec,
  HostKeys,
  SessionOptions,
  SessionStats,
} from "./exec";
import { zeroStats } from "./exec";
import { SshSession, warnUnpinned } from "./ssh";

/** How long an unused connection stays open, in milliseconds. */
export const DEFAULT_POOL_IDLE_MS = 3000;
/** Commands at once on one connection: below OpenSSH's default `MaxSessions` (10). */
export const DEFAULT_POOL_MAX_CHANNELS = 8;

export interface SshPoolOptions {
  /** @default DEFAULT_POOL_IDLE_MS */
  readonly idleMs?: number;
  /** @default DEFAULT_POOL_MAX_CHANNELS */
  readonly maxChannels?: number;
}

/** One pooled connection (dialing, or open). Internal to this module and its leases. */
export interface PoolEntry {
  readonly key: string;
  /** Settles once the dial passed host-key check and authentication, or failed. */
  readonly ready: Promise<SshSession>;
  session?: SshSession;
  /** Operations holding it. */
  leases: number;
  /** Commands running on it. */
  channels: number;
  /** Commands it may run at once: maxChannels, lowered when the host refused a channel. */
  cap: number;
  /** Commands waiting for a free channel, first come first served. */
  readonly waiting: (() => void)[];
  idle?: NodeJS.Timeout;
  /** Out of the pool (closed, broken, or the pool was closed); never handed out again. */
  dead: boolean;
}

/** JSON with object keys sorted and `undefined` left out: equal values, equal text. */
function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonical(v)}`).join(",")}}`;
  }
  return JSON.stringify(value) ?? "null";
}

/**
 * What a connection is shared by: everything that decides how it is dialed, authenticated and
 * trusted, hashed. `sudo` only changes the commands run on it; a recorded key counts only where
 * nothing is pinned (a pin wins, see {@link SessionOptions.trustedHostKeys}).
 */
export function poolKey(conn: ConnectionArgs, options: SessionOptions): string {
  const { sudo: _commandsOnly, ...dial } = conn;
  const trusted = options.trustedHostKeys ?? {};
  return createHash("sha256")
    .update(
      canonical({
        dial,
        trusted: {
          host: conn.hostKey === undefined ? trusted.host : undefined,
          proxy: conn.proxy !== undefined && conn.proxy.hostKey === undefined ? trusted.proxy : undefined,
        },
        retry: [options.retryBaseDelayMs, options.retryMaxDelayMs],
      }),
    )
    .digest("hex");
}

/** Shares SSH connections between the operations of one process (see the module comment). */
export class SshPool {
  private readonly entries = new Map<string, PoolEntry>();
  private readonly idleMs: number;
  private readonly maxChannels: number;

  constructor(options: SshPoolOptions = {}) {
    this.idleMs = options.idleMs ?? DEFAULT_POOL_IDLE_MS;
    this.maxChannels = Math.max(1, options.maxChannels ?? DEFAULT_POOL_MAX_CHANNELS);
  }

  /** Connections open or being dialed. */
  public get size(): number {
    return this.entries.size;
  }

  /** A {@link Connect} for one operation: its own view of the host's shared connection. */
  public readonly connect: Connect = async (conn, options) => {
    warnUnpinned(conn, options);
    const lease = new Lease(this, conn, options);
    await lease.attach();
    return lease;
  };

  /** Closes every connection (tests; a process that wants to end now). */
  public closeAll(): void {
    for (const entry of [...this.entries.values()]) this.drop(entry);
  }

  /** @internal The connection for `conn`: the open one, or a new dial. */
  public acquire(conn: ConnectionArgs, options: SessionOptions): { entry: PoolEntry; dialed: boolean } {
    const key = poolKey(conn, options);
    let entry: PoolEntry | undefined = this.entries.get(key);
    let dialed = false;
    if (entry !== undefined && entry.session !== undefined && !entry.session.alive) {
      this.drop(entry);
      entry = undefined;
    }
    if (entry === undefined) {
      entry = this.dial(key, conn, options);
      dialed = true;
    }
    entry.leases++;
    clearTimeout(entry.idle);
    entry.idle = undefined;
    return { entry, dialed };
  }

  /** @internal An operation is done with `entry`. */
  public release(entry: PoolEntry): void {
    entry.leases--;
    if (entry.leases > 0 || entry.dead) return;
    entry.idle = setTimeout(() => {
      if (entry.leases === 0) this.drop(entry);
    }, this.idleMs);
    entry.idle.unref();
  }

  /** @internal Waits for a free channel on `entry`; the returned function frees it. */
  public async channel(entry: PoolEntry): Promise<() => void> {
    if (entry.channels < entry.cap && entry.waiting.length === 0) entry.channels++;
    // Counted for it by {@link pump} when its turn comes.
    else await new Promise<void>((resolve) => entry.waiting.push(resolve));
    let freed = false;
    return () => {
      if (freed) return;
      freed = true;
      entry.channels--;
      this.pump(entry);
    };
  }

  /**
   * @internal The host refused a channel while `entry` carried `others` commands: it allows no
   * more than those (at least 1) from now on.
   */
  public lowerCap(entry: PoolEntry, others: number): void {
    entry.cap = Math.max(1, Math.min(entry.cap, others));
  }

  /** Starts waiting commands, in order, while `entry` has room. */
  private pump(entry: PoolEntry): void {
    while (entry.channels < entry.cap && entry.waiting.length > 0) {
      entry.channels++;
      entry.waiting.shift()!();
    }
  }

  /** @internal Takes `entry` out of the pool and closes its connection. */
  public drop(entry: PoolEntry): void {
    if (this.entries.get(entry.key) === entry) this.entries.delete(entry.key);
    entry.dead = true;
    clearTimeout(entry.idle);
    entry.idle = undefined;
    entry.session?.close();
  }

  private dial(key: string, conn: ConnectionArgs, options: SessionOptions): PoolEntry {
    const entry: PoolEntry = {
      key,
      leases: 0,
      channels: 0,
      cap: this.maxChannels,
      waiting: [],
      dead: false,
      // The operations' own leases warn (every one of them); the dial must not warn twice.
      ready: SshSession.open(conn, { ...options, warn: undefined }).then(
        (session) => {
          entry.session = session;
          if (entry.dead) session.close();
          else session.onClose(() => this.drop(entry));
          return session;
        },
        (err: unknown) => {
          this.drop(entry);
          throw err;
        },
      ),
    };
    // Each waiting operation gets the rejection; the pool itself has nothing to do with it.
    entry.ready.catch(() => undefined);
    this.entries.set(key, entry);
    return entry;
  }
}

/** Whether an exec failed because the host refused to open its channel (ssh2 gives the reason code). */
function refusedChannel(err: unknown): boolean {
  return typeof (err as { cause?: { reason?: unknown } }).cause?.reason === "number";
}

/** One operation's use of a pooled connection. */
class Lease implements HostExec {
  public readonly stats: SessionStats = zeroStats();
  public readonly host: string;
  public readonly sudo: boolean;
  private entry?: PoolEntry;
  private session?: SshSession;
  private redialed = false;
  private closed = false;

  constructor(
    private readonly pool: SshPool,
    private readonly conn: ConnectionArgs,
    private readonly options: SessionOptions,
  ) {
    this.host = conn.host;
    this.sudo = usesSudo(conn);
  }

  public get user(): string {
    return this.session?.user ?? this.conn.user ?? "root";
  }

  public get hostKeys(): HostKeys {
    return this.session?.hostKeys ?? {};
  }

  /** Takes the host's connection (dialing it when there is none) and counts which it was. */
  public async attach(): Promise<void> {
    const { entry, dialed } = this.pool.acquire(this.conn, this.options);
    let session: SshSession;
    try {
      session = await entry.ready;
    } catch (err) {
      this.pool.release(entry);
      throw err;
    }
    this.entry = entry;
    this.session = session;
    if (dialed) {
      this.stats.connections += session.stats.connections;
      this.stats.proxyConnections += session.stats.proxyConnections;
      this.stats.dialAttempts += session.stats.dialAttempts;
    } else {
      this.stats.reusedConnections++;
    }
  }

  public async exec(name: string, command: string, opts: ExecOptions = {}): Promise<ExecResult> {
    const entry = this.entry!;
    const session = this.session!;
    let started = false;
    const free = await this.pool.channel(entry);
    try {
      return await session.execWith(this.options, this.stats, name, command, opts, () => {
        started = true;
      });
    } catch (err) {
      if (started || this.closed) throw err;
      if (session.alive) {
        // The host refused the channel while others run on this connection: it allows fewer
        // sessions (sshd's MaxSessions). Nothing ran; the command waits for one of them to end.
        const others = entry.channels - 1;
        if (!refusedChannel(err) || others === 0) throw err;
        this.pool.lowerCap(entry, others);
        this.stats.roundTrips--;
        free();
        return this.exec(name, command, opts);
      }
      if (this.redialed) throw err;
      // The connection was lost before the host took the command: nothing ran. Once, on a new one.
      this.redialed = true;
      // It never reached the host: not a round trip (the new dial shows in `connections`).
      this.stats.roundTrips--;
      free();
      this.pool.drop(entry);
      this.pool.release(entry);
      this.entry = undefined;
      await this.attach();
      return this.exec(name, command, opts);
    } finally {
      free();
    }
  }

  public countRoundTrip(): void {
    this.stats.roundTrips++;
  }

  public countCommit(): void {
    this.stats.commits++;
  }

  /** Drops the shared connection at once (tests simulating a crash): every operation on it sees it. */
  public destroy(): void {
    this.session?.destroy();
  }

  /** Gives the connection back to the pool; it stays open for the host's next operation. */
  public close(): void {
    if (this.closed || this.entry === undefined) return;
    this.closed = true;
    this.pool.release(this.entry);
  }
}

/**
 * How long the provider process keeps an unused connection: the engine runs a host's allowlists
 * as their turn comes among all resources (8 at a time), so under load a host's next operation
 * came more than 3 s after its last (bench/fleet.ts, 50 hosts x 3 allowlists: 21 of 150 hosts
 * logged in twice in an `up`, 129 in a `destroy`). The engine kills the provider process when it
 * is done, so a longer wait delays nothing; as a library, a process keeps an idle connection (and
 * ssh2's keepalive, the event loop) that long after its last operation.
 */
export const PROVIDER_POOL_IDLE_MS = 60_000;

/** The provider process's pool. */
export const sshPool = new SshPool({ idleMs: PROVIDER_POOL_IDLE_MS });

/** {@link Connect} through {@link sshPool}: what the provider's operations use. */
export const pooledConnect: Connect = (conn, options) => sshPool.connect(conn, options);
