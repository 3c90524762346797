/**
 * What the benchmarks share: the figures' format (median (min–max)), the line that says on what
 * machine and under what load a figure was taken, and CPU accounting of a process tree through a
 * cgroup (a process and everything it forks, exited children included: what `/proc` walks and
 * `getrusage` miss when a grandchild is never waited for).
 */
import { execFileSync } from "child_process";
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from "fs";
import { join } from "path";
import type { Lab, LabHost } from "../lab";

export const median = (xs: readonly number[]): number =>
  [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** `median (min–max)` with `digits` decimals. */
export const fmt = (xs: readonly number[], digits = 0): string =>
  `${median(xs).toFixed(digits)} (${Math.min(...xs).toFixed(digits)}–${Math.max(...xs).toFixed(digits)})`;

/** The machine's 1, 5 and 15 minute load averages, as /proc/loadavg prints them. */
export const loadavg = (): string => readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ");

/** `# <what> <ISO time>, nproc N, loadavg at start a b c, Node vX`: the first line of every bench's output. */
export function machineLine(what: string): string {
  return (
    `# ${what} ${new Date().toISOString()}, nproc ${execFileSync("nproc").toString().trim()}, ` +
    `loadavg at start ${loadavg()}, Node ${process.version}`
  );
}

/** SSH logins a lab host's sshd accepted so far (its log, LogLevel VERBOSE: one line per login). */
export function acceptedLogins(lab: Lab, host: LabHost): number {
  const log = readFileSync(join(lab.dir, host.name, "sshd.log"), "utf8");
  return log.split("\n").filter((l) => l.includes("Accepted publickey for")).length;
}

/**
 * Transpile-on-require boot for `node -e`, as every bench's header shows: `require("./bench/X.ts")`
 * appended. Child processes of a bench start the same way.
 */
export const BOOT_PREFIX =
  'const ts=require("typescript"),fs=require("fs");require.extensions[".ts"]=(m,f)=>m._compile(' +
  'ts.transpileModule(fs.readFileSync(f,"utf8"),{compilerOptions:{module:1,target:9}}).outputText,f);';

/**
 * A cgroup that counts the CPU time of every process put into it and of everything they fork
 * afterwards, exited or not (cgroup v1 `cpuacct`, else cgroup v2 `cpu.stat`). Root only.
 */
export class CpuAccount {
  private constructor(
    readonly dir: string,
    private readonly v2: boolean,
  ) {}

  /** Makes `dpa-bench-<pid>-<name>` under the cpuacct (v1) or unified (v2) hierarchy. */
  static create(name: string): CpuAccount {
    const v1 = "/sys/fs/cgroup/cpuacct";
    const v2 = existsSync("/sys/fs/cgroup/unified/cgroup.procs")
      ? "/sys/fs/cgroup/unified"
      : "/sys/fs/cgroup";
    const useV1 = existsSync(join(v1, "cpuacct.usage"));
    const root = useV1 ? v1 : v2;
    if (!useV1 && !existsSync(join(root, "cgroup.procs")))
      throw new Error(
        `CpuAccount: no cpuacct (v1) at ${v1} and no cgroup v2 at ${v2}; CPU accounting needs one`,
      );
    const dir = join(root, `dpa-bench-${process.pid}-${name}`);
    mkdirSync(dir);
    return new CpuAccount(dir, !useV1);
  }

  /** Moves `pid` in; what it forks from now on is counted too. */
  add(pid: number): void {
    writeFileSync(join(this.dir, "cgroup.procs"), String(pid));
  }

  /** `sh -c` argv that moves itself in, then execs the rest of the argv (a command prefix). */
  prefix(): string[] {
    return ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', this.dir];
  }

  /** CPU seconds (user + system) used so far by everything that ran in the cgroup. */
  seconds(): number {
    if (!this.v2) return Number(readFileSync(join(this.dir, "cpuacct.usage"), "utf8")) / 1e9;
    const line = readFileSync(join(this.dir, "cpu.stat"), "utf8")
      .split("\n")
      .find((l) => l.startsWith("usage_usec "));
    return Number(line?.split(" ")[1]) / 1e6;
  }

  /** CPU seconds `fn` costs the processes in the cgroup. */
  async during<T>(fn: () => Promise<T>): Promise<{ result: T; cpuS: number }> {
    const before = this.seconds();
    const result = await fn();
    return { result, cpuS: this.seconds() - before };
  }

  /** Moves whatever still runs in it back to the root cgroup, then removes it. */
  remove(): void {
    const root = join(this.dir, "..");
    for (const pid of readFileSync(join(this.dir, "cgroup.procs"), "utf8").split("\n").filter(Boolean)) {
      try {
        writeFileSync(join(root, "cgroup.procs"), pid);
      } catch {
        // It exited meanwhile.
      }
    }
    rmdirSync(this.dir);
  }
}
