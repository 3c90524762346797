/**
 * What the client accepts from one exec, for every {@link HostExec} implementation (SshSession
 * and LocalExec share this, so both bound and decode a host's output the same way):
 *
 * - stdout is kept as a latin1 *byte string* (one character per byte, core's ./text.ts): the only
 *   decoding that cannot split a multi-byte character across chunks and that keeps a rule whose
 *   comment is not valid UTF-8 byte-exact, so the core's fingerprint equals the host's and a
 *   rollback replays foreign rules unchanged;
 * - stderr (only ever shown to a person) is decoded as UTF-8 with one decoder for the whole
 *   stream, so a character split across chunks is decoded whole;
 * - both are bounded ({@link OutputLimits}): a host that prints more is broken or hostile, and
 *   the exec is ended with a HostError instead of filling the client's memory.
 *
 * Text the client writes to the host goes through {@link toWire}: the same byte-string rule.
 */
import { StringDecoder } from "string_decoder";
import { bytesOf } from "../core/text";
import { HostError } from "./errors";

/** Bounds of what one exec may print; beyond either, the exec is ended. */
export interface OutputLimits {
  /**
   * Bytes of stdout one exec may print. The largest honest output is a few `iptables-save -t
   * filter` texts (a big Docker host: a few MiB).
   * @default 67108864 (64 MiB, {@link DEFAULT_MAX_STDOUT_BYTES})
   */
  readonly maxStdoutBytes?: number;
  /**
   * Bytes of stderr one exec may print (all of it is kept for the error message).
   * @default 1048576 (1 MiB, {@link DEFAULT_MAX_STDERR_BYTES})
   */
  readonly maxStderrBytes?: number;
}

export const DEFAULT_MAX_STDOUT_BYTES = 64 * 1024 * 1024;
export const DEFAULT_MAX_STDERR_BYTES = 1024 * 1024;

/** `67108864` as `64 MiB`, for messages. */
function size(bytes: number): string {
  if (bytes % (1024 * 1024) === 0) return `${bytes / (1024 * 1024)} MiB`;
  if (bytes % 1024 === 0) return `${bytes / 1024} KiB`;
  return `${bytes} bytes`;
}

/** The bytes of `text` (a byte string) as the host must receive them. */
export function toWire(text: string): Buffer {
  return bytesOf(text);
}

/** Collects one exec's stdout and stderr within the limits. */
export class ExecOutput {
  private readonly maxStdout: number;
  private readonly maxStderr: number;
  private readonly stderrDecoder = new StringDecoder("utf8");
  private stdoutBytes = 0;
  private stderrBytes = 0;
  private out = "";
  private err = "";
  /** Set once a limit was passed: the HostError the exec must end with. */
  public overflow?: HostError;

  constructor(
    private readonly host: string,
    private readonly name: string,
    limits: OutputLimits = {},
  ) {
    this.maxStdout = limits.maxStdoutBytes ?? DEFAULT_MAX_STDOUT_BYTES;
    this.maxStderr = limits.maxStderrBytes ?? DEFAULT_MAX_STDERR_BYTES;
  }

  /** All stdout so far, as a byte string. */
  public get stdout(): string {
    return this.out;
  }

  /** All stderr so far (what the decoder could complete), UTF-8 decoded. */
  public get stderr(): string {
    return this.err;
  }

  /** All stderr, including an incomplete character at its end; call once the stream ended. */
  public finalStderr(): string {
    this.err += this.stderrDecoder.end();
    return this.err;
  }

  /** Adds a stdout chunk; false (and `overflow` set) when it passes the limit: end the exec. */
  public addStdout(chunk: Buffer): boolean {
    if (this.overflow !== undefined) return false;
    this.stdoutBytes += chunk.length;
    if (this.stdoutBytes > this.maxStdout) return this.overflowed("stdout", this.maxStdout);
    this.out += chunk.toString("latin1");
    return true;
  }

  /** Adds a stderr chunk; false (and `overflow` set) when it passes the limit: end the exec. */
  public addStderr(chunk: Buffer): boolean {
    if (this.overflow !== undefined) return false;
    this.stderrBytes += chunk.length;
    if (this.stderrBytes > this.maxStderr) return this.overflowed("stderr", this.maxStderr);
    this.err += this.stderrDecoder.write(chunk);
    return true;
  }

  private overflowed(stream: "stdout" | "stderr", limit: number): false {
    this.overflow = new HostError(
      `"${this.name}" printed more than ${size(limit)} on ${stream}, more than this client accepts from a ` +
        `host, so the exec was ended (the host may be left to roll back on its own). No honest run prints this ` +
        `much. Fix: check what the host prints: \`iptables-save -t filter | wc -c\` and \`ip6tables-save -t ` +
        `filter | wc -c\` (a runaway tool adding rules?), shell startup files of the login user that print ` +
        `(~/.bashrc, /etc/profile.d), and a forced command or wrapper in sshd_config or authorized_keys.`,
      {
        host: this.host,
        kind: "output-limit",
        command: this.name,
        // The first part of stderr says what the host was doing; the flood itself helps nobody.
        stderr: stream === "stderr" ? this.err.slice(0, 2000) : this.err,
      },
    );
    return false;
  }
}
