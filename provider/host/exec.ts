/**
 * The seam between the host edge and its transport: what the dialogue with the host scripts
 * needs from "a shell on the host", and nothing more.
 *
 * Two implementations: {@link SshSession} (./ssh.ts, the real thing) and {@link LocalExec}
 * (./local.ts, the same command line run with `bash -c` on this machine), so the dialogue and
 * every exit code of the scripts are tested without SSH, and the lab only has to prove SSH.
 */
import type { ConnectionArgs } from "../args";
import type { OutputLimits } from "./output";

/** Counters for one operation on one host. */
export interface SessionStats {
  /**
   * SSH connections to the target host that this operation dialed. An operation of the provider
   * runs on the connection its host already has in this process when there is one (./pool.ts),
   * so over one `pulumi up` a host's operations add up to 1.
   */
  connections: number;
  /** Connections to the target opened earlier (by another operation) that this one ran on. */
  reusedConnections: number;
  /** SSH connections to jump hosts that this operation dialed. */
  proxyConnections: number;
  /** Dial attempts to the target, including failed ones. */
  dialAttempts: number;
  /**
   * Request/response exchanges with the target in which the client waits for the host's answer
   * before it can go on: starting an exec (answer: its output) and, inside the one exec of a
   * write, each plan sent (answer: the applied state). The bar is 2 per operation.
   */
  roundTrips: number;
  /** `commit` lines sent to confirm a verified apply (0 or 1); they close the plan's exchange. */
  commits: number;
}

/** Counters of an operation that has done nothing yet. */
export function zeroStats(): SessionStats {
  return {
    connections: 0,
    reusedConnections: 0,
    proxyConnections: 0,
    dialAttempts: 0,
    roundTrips: 0,
    commits: 0,
  };
}

/**
 * What came back from one exec. A non-zero exit is not an error at this level.
 *
 * Output is bounded and decoded by ./output.ts for every implementation: `stdout` is a latin1
 * byte string (one character per byte, exactly what the host printed), `stderr` UTF-8 text.
 */
export interface ExecResult {
  readonly code: number | null;
  readonly signal?: string;
  readonly stdout: string;
  readonly stderr: string;
}

/** Lets an exec's caller talk back while the remote command runs (the commit handshake). */
export interface ExecChannel {
  /** Sends a byte string (ASCII, or bytes the host printed), byte for byte. */
  write(text: string): void;
  end(): void;
}

export interface ExecOptions {
  /** Written to the command's stdin right after start. */
  readonly stdin?: string;
  /** Close stdin after `stdin` was written. @default true */
  readonly endStdin?: boolean;
  /** @default - the transport's default command timeout */
  readonly timeoutMs?: number;
  /** Called with all stdout received so far (a byte string), on every chunk. */
  readonly onStdout?: (stdoutSoFar: string, channel: ExecChannel) => void;
}

/** What a progress message is about: a wait (something is in the way) or a phase of the work. */
export type ProgressKind = "wait" | "phase";

/** Knobs of the transport that are not part of the user's connection args. */
export interface SessionOptions extends OutputLimits {
  /**
   * Default time one exec may take, in milliseconds.
   * @default 120000
   */
  readonly commandTimeoutMs?: number;
  /**
   * First delay between dial attempts; doubles each attempt.
   * @default 500
   */
  readonly retryBaseDelayMs?: number;
  /**
   * Upper bound of the delay between dial attempts.
   * @default 8000
   */
  readonly retryMaxDelayMs?: number;
  /** Receives warnings (e.g. "no host key pinned"). @default - dropped */
  readonly warn?: (message: string) => void;
  /**
   * Receives progress while an operation waits (`wait`: each failed dial attempt with its error
   * and the next try, each wait for the host lock with who holds it) or works (`phase`: the steps
   * of a write). The caller paces them (provider/pulumi/progress.ts). @default - dropped
   */
  readonly progress?: (message: string, kind: ProgressKind) => void;
  /**
   * Host keys trusted on first use: the `SHA256:` fingerprints the target (`host`) and the jump
   * host (`proxy`) presented when the resource was created. Used only where the connection pins
   * no key (`hostKey` unset): a host presenting another key is then refused. A pin always wins.
   * @default - nothing recorded: an unpinned host's key is accepted (and warned about)
   */
  readonly trustedHostKeys?: HostKeys;
}

/** `SHA256:` fingerprints of the target's and the jump host's SSH host keys. */
export interface HostKeys {
  readonly host?: string;
  readonly proxy?: string;
}

/** A shell on one host, open for one operation. */
export interface HostExec {
  /** Host name as the user wrote it; the `host` of every error. */
  readonly host: string;
  /** The login user, for messages. */
  readonly user: string;
  /** Whether the scripts must run under `sudo -n` (see `usesSudo` in core). */
  readonly sudo: boolean;
  readonly stats: SessionStats;
  /**
   * The host keys the target and jump host presented and that passed verification (pin, key
   * recorded at first use, or none to check).
   * @default - transports without host keys (LocalExec) have none
   */
  readonly hostKeys?: HostKeys;
  /**
   * Runs one command line (one exec = one round trip). Resolves with its exit code and output;
   * rejects with a HostError on timeout or a lost transport.
   */
  exec(name: string, command: string, opts?: ExecOptions): Promise<ExecResult>;
  /** Counts one more exchange on an open exec (a plan sent, whose answer we wait for). */
  countRoundTrip(): void;
  /** Counts the `commit` confirmation of an apply. */
  countCommit(): void;
  /** Drops the transport at once, without a goodbye (tests use it to simulate a crash). */
  destroy(): void;
  close(): void;
}

/** Opens the transport to a host: {@link SshSession.open} unless a test or tool says otherwise. */
export type Connect = (conn: ConnectionArgs, options: SessionOptions) => Promise<HostExec>;
