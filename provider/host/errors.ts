/**
 * The one error class of the SSH edge.
 *
 * Every failure that touches a host becomes a `HostError` whose message names the host, what was
 * being done (a short command name, never the script or a secret), the exit code and stderr, and
 * says how to fix it. The original error stays in `cause`. `kind` lets callers (the dynamic
 * provider, tests) branch without parsing the message.
 *
 * A message may quote what a host printed (stderr, section headers): the whole message, and the
 * `stderr` kept on the error, go through core's `printable`, so no host can put control
 * characters or escape sequences into the operator's terminal through an error.
 */
import { printable } from "../core/text";

/** Why talking to a host failed. */
export type HostErrorKind =
  /** TCP connect / SSH handshake failed after all attempts (network, refused, timeout). */
  | "connect"
  /** The server refused every configured credential. Not retried. */
  | "auth"
  /** The host presented another key than the pinned one. Not retried. */
  | "host-key"
  /** `sudo -n` wants a password (or is missing). */
  | "sudo"
  /** A command did not finish within its timeout. */
  | "timeout"
  /** A command exited non-zero for a reason we do not classify further. */
  | "command"
  /** The host is not in a state we can safely change (no DOCKER-USER, backend mismatch...). */
  | "precondition"
  /** The live rules changed under us twice in a row: another writer is busy. */
  | "conflict"
  /** The change was rolled back (verify failed, restore failed, no commit). Host unchanged. */
  | "rolled-back"
  /** The change is live but could not be saved for reboots. */
  | "persist"
  /** The rollback itself failed: the host may be half-changed. Needs a human. */
  | "rollback-failed"
  /** The host printed more than the client accepts (see OutputLimits); the exec was ended. */
  | "output-limit";

export interface HostErrorDetails {
  readonly host: string;
  readonly kind: HostErrorKind;
  /** Short name of the remote step, e.g. "dpa-read" or "dpa-apply"; never the script text. */
  readonly command?: string;
  readonly exitCode?: number | null;
  readonly stderr?: string;
  readonly cause?: unknown;
}

const BRAND = Symbol.for("docker-port-allowlist:HostError");

/** A failure on (or on the way to) one host. */
export class HostError extends Error {
  public readonly host: string;
  public readonly kind: HostErrorKind;
  public readonly command?: string;
  public readonly exitCode?: number | null;
  public readonly stderr?: string;
  /** What the failed operation cost on the host, when it got that far (set by syncHost). */
  public stats?: {
    connections: number;
    reusedConnections: number;
    proxyConnections: number;
    roundTrips: number;
    ms: number;
  };

  constructor(message: string, details: HostErrorDetails) {
    super(
      HostError.compose(message, details),
      details.cause === undefined ? undefined : { cause: details.cause },
    );
    this.name = "HostError";
    this.host = details.host;
    this.kind = details.kind;
    this.command = details.command;
    this.exitCode = details.exitCode;
    this.stderr = details.stderr === undefined ? undefined : printable(details.stderr);
    (this as unknown as Record<symbol, boolean>)[BRAND] = true;
  }

  /** True for a HostError even when it comes from another copy of this package. */
  public static isInstance(value: unknown): value is HostError {
    return typeof value === "object" && value !== null && (value as Record<symbol, unknown>)[BRAND] === true;
  }

  private static compose(message: string, d: HostErrorDetails): string {
    const parts = [`host ${d.host}: ${message}`];
    if (d.command !== undefined) {
      parts.push(
        `command: ${d.command}` + (d.exitCode !== undefined ? `, exit code ${d.exitCode ?? "none"}` : ""),
      );
    }
    const stderr = (d.stderr ?? "").trim();
    if (stderr !== "") {
      // Long stderr (iptables-restore dumps) is cut so the message stays readable in `pulumi up`.
      parts.push(`stderr: ${stderr.length > 2000 ? stderr.slice(0, 2000) + " ..." : stderr}`);
    }
    return printable(parts.join("\n"));
  }
}

/** How an exec ended without an exit code; one wording for every {@link HostExec} implementation. */
export function execEndedError(
  host: string,
  name: string,
  how: { readonly timeoutMs: number } | "connection-lost",
  stderr: string,
): HostError {
  return how === "connection-lost"
    ? new HostError(`the SSH connection was lost while "${name}" ran`, {
        host,
        kind: "command",
        command: name,
        stderr,
      })
    : new HostError(`"${name}" did not finish within ${how.timeoutMs / 1000}s`, {
        host,
        kind: "timeout",
        command: name,
        stderr,
      });
}
