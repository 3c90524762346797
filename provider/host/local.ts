/**
 * The exec seam's local side: runs the same command lines the SSH edge sends, on this machine,
 * as `bash -c <command line>` (so the quoting, `sudo -n` prefix and script text are exactly
 * what a host receives). Used by unit tests of the dialogue and the scripts' exit codes; the
 * lab proves the same over real SSH.
 *
 * Like a remote command, a local one keeps running when its caller goes away (`destroy`): the
 * scripts must finish or roll back on their own, which is what the tests check.
 */
import { spawn, type ChildProcessWithoutNullStreams } from "child_process";
import { HostError, execEndedError } from "./errors";
import type { ExecChannel, ExecOptions, ExecResult, HostExec, SessionStats } from "./exec";
import { ExecOutput, toWire, type OutputLimits } from "./output";

export interface LocalExecOptions extends OutputLimits {
  /** The `host` of errors and snapshots. @default "localhost" */
  readonly host?: string;
  /** The user named in messages. @default "root" */
  readonly user?: string;
  /** Prefix the scripts with `sudo -n`. @default false */
  readonly sudo?: boolean;
  /**
   * The argv that runs a command line; the command line is appended as the last word. Tests
   * put the command in a prepared environment here (e.g. a mount namespace with stub tools).
   * @default ["bash", "-c"]
   */
  readonly shell?: readonly string[];
  /** Environment of the shell. @default - this process's environment */
  readonly env?: NodeJS.ProcessEnv;
  /** Default time one exec may take, in milliseconds. @default 120000 */
  readonly commandTimeoutMs?: number;
}

/** A "session" whose commands run as local processes. Counts like an SSH session does. */
export class LocalExec implements HostExec {
  public readonly stats: SessionStats = {
    // One local session stands for the one connection an SSH operation makes.
    connections: 1,
    reusedConnections: 0,
    proxyConnections: 0,
    dialAttempts: 1,
    roundTrips: 0,
    commits: 0,
  };
  public readonly host: string;
  public readonly user: string;
  public readonly sudo: boolean;
  private readonly children = new Set<ChildProcessWithoutNullStreams>();
  private readonly lost = new Set<() => void>();

  constructor(private readonly options: LocalExecOptions = {}) {
    this.host = options.host ?? "localhost";
    this.user = options.user ?? "root";
    this.sudo = options.sudo ?? false;
  }

  public exec(name: string, command: string, opts: ExecOptions = {}): Promise<ExecResult> {
    this.stats.roundTrips++;
    const timeoutMs = opts.timeoutMs ?? this.options.commandTimeoutMs ?? 120_000;
    const [file, ...args] = this.options.shell ?? ["bash", "-c"];
    return new Promise<ExecResult>((resolve, reject) => {
      const output = new ExecOutput(this.host, name, this.options);
      let settled = false;
      // Its own process group, so a timeout kills the script and everything it started.
      const child = spawn(file, [...args, command], {
        env: this.options.env ?? process.env,
        stdio: ["pipe", "pipe", "pipe"],
        detached: true,
      });
      this.children.add(child);
      const settle = (f: () => void) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this.lost.delete(onLost);
        f();
      };
      const onLost = () =>
        settle(() => reject(execEndedError(this.host, name, "connection-lost", output.stderr)));
      this.lost.add(onLost);
      const timer = setTimeout(() => {
        this.kill(child);
        settle(() => reject(execEndedError(this.host, name, { timeoutMs }, output.stderr)));
      }, timeoutMs);
      const overflow = () => {
        this.kill(child);
        settle(() => reject(output.overflow));
      };
      const api: ExecChannel = {
        write: (text) => {
          child.stdin.write(toWire(text));
        },
        end: () => {
          child.stdin.end();
        },
      };
      // A script that exits before reading all we send must not crash us with EPIPE.
      child.stdin.on("error", () => undefined);
      child.stdout.on("data", (chunk: Buffer) => {
        if (settled) return;
        if (!output.addStdout(chunk)) return overflow();
        opts.onStdout?.(output.stdout, api);
      });
      child.stderr.on("data", (chunk: Buffer) => {
        if (!output.addStderr(chunk)) overflow();
      });
      child.on("error", (err) =>
        settle(() =>
          reject(
            new HostError(`could not start "${name}": ${err.message}`, {
              host: this.host,
              kind: "command",
              command: name,
              cause: err,
            }),
          ),
        ),
      );
      child.on("close", (code, signal) => {
        this.children.delete(child);
        settle(() =>
          resolve({ code, signal: signal ?? undefined, stdout: output.stdout, stderr: output.finalStderr() }),
        );
      });
      if (opts.stdin !== undefined) child.stdin.write(toWire(opts.stdin));
      if (opts.endStdin ?? true) child.stdin.end();
    });
  }

  public countRoundTrip(): void {
    this.stats.roundTrips++;
  }

  public countCommit(): void {
    this.stats.commits++;
  }

  /**
   * What a cut connection does: the caller's pending execs fail at once, and the commands see
   * EOF on stdin but go on running (a remote script would, too).
   */
  public destroy(): void {
    for (const child of this.children) child.stdin.end();
    for (const onLost of [...this.lost]) onLost();
  }

  /** Ends the session; commands still running see EOF on stdin. */
  public close(): void {
    for (const child of this.children) child.stdin.end();
  }

  private kill(child: ChildProcessWithoutNullStreams): void {
    try {
      if (child.pid !== undefined) process.kill(-child.pid, "SIGKILL");
    } catch {
      // Already gone.
    }
  }
}
