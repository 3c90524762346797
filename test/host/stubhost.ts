/**
 * A "host" on this machine for the real host scripts: LocalExec runs the exact command line the
 * SSH edge sends, inside a private mount namespace (`unshare --user --map-root-user --mount`,
 * no root and no network namespace needed) in which
 * - /usr/local/sbin is a directory of stub tools (iptables, ip6tables, *-save, *-restore,
 *   conntrack, ip, nft, sudo). The scripts reset PATH to the system directories, and
 *   /usr/local/sbin is the first of them, so the stubs win without changing the scripts;
 * - /run is this host's own directory, so /run/docker-port-allowlist.lock is a file of this
 *   test (the test holds it with `flock` on `lockPath`, the same file); so is /var/lib, where
 *   the guard lives (`guardDir`). Without the `systemd` option it has no /run/systemd: the host
 *   runs no systemd. With it, /run/systemd/system exists, /etc/systemd/system is the host's own
 *   directory (`unitDir`), and `systemctl` is a stub that logs its calls (`systemctl.calls`)
 *   and keeps what is enabled and active in `enabled.<unit>` / `active.<unit>`;
 * - optionally /usr/bin and /usr/sbin lack some tools (directories of symlinks to the real ones
 *   minus those; a stub of that name is left out too), to show what the scripts do on a host
 *   without them.
 *
 * The stubs keep the host's state in files under `state/`:
 * - `save4` / `save6`: what `iptables-save` / `ip6tables-save` print (`save4.fail` instead:
 *   they fail with it as stderr; `save4.fail.<n>`: only their n-th call fails);
 * - `nat4` / `nat6`: what `iptables-save -t nat` / `ip6tables-save -t nat` print (nothing if absent);
 * - `save4.extra`: what the whole `iptables-save` (no `-t filter`, as the persist step runs it)
 *   prints after `save4`: the other tables;
 * - `iptables-restore --test --noflush` (a payload's test) keeps its input in `test4` and fails
 *   with `test4.fail` if present; `--test` alone (the persist step's test of a whole saved file,
 *   from stdin or a file argument) keeps it in `filetest4` and fails with `filetest4.fail`;
 * - every other restore is counted: the n-th one's input lands in `restore4.<n>` (written last,
 *   so tests wait for it), fails with `restore4.fail.<n>` if present, and otherwise moves the
 *   rules to `next4` (the state the test says the payload leads to; the plan hook writes it)
 *   or, when there is no `next4`, back to the state before (a rollback); while another process
 *   holds the host's /run/xtables.lock (`holdLock(xtablesLockPath)`), it fails as a real restore
 *   whose -w ran out does, and leaves `restore4.locked.<n>`;
 * - `conntrack -L -f ipv4` prints `flows4` (fails when `conntrack-L.fail` exists); each
 *   `conntrack -D ...` is a line of `deleted`, or, when `conntrack-D.fail` exists, fails and is a
 *   line of `delete-failed`; `conntrack -G ...` (is the flow still there?) succeeds only when
 *   `conntrack-G.present` exists.
 * - `ipset` fails every call, as where the kernel's ip_set cannot be used.
 */
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from "child_process";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "fs";
import { tmpdir } from "os";
import { join } from "path";
import type { Family } from "../../provider/core";
import { applyPayload } from "../core/support/simulate";
import {
  LocalExec,
  type Connect,
  type HostExec,
  type HostSnapshot,
  type PlanLike,
} from "../../provider/host";

const SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/** Runs in the new mount namespace, then hands over to the command line ($2) as sshd would. */
const ENTER = String.raw`
set -e
mount --bind "$1/stubs" /usr/local/sbin
mount --bind "$1/run" /run
mount --bind "$1/varlib" /var/lib
if [ -d "$1/units" ]; then mount --bind "$1/units" /etc/systemd/system; fi
if [ -d "$1/usrbin" ]; then
  mkdir -p "$1/realbin" "$1/realsbin"
  mount --bind /usr/bin "$1/realbin"
  mount --bind /usr/sbin "$1/realsbin"
  mount --bind "$1/usrbin" /usr/bin
  mount --bind "$1/usrsbin" /usr/sbin
fi
if [ -e "$1/etc.read-only" ]; then
  mount --bind "$1/etc" "$1/etc"
  mount -o remount,bind,ro "$1/etc"
fi
if [ -e "$1/etc.tmpfs" ]; then
  # The tmpfs lives as long as this namespace: fill it from etc/ and copy it back afterwards.
  mkdir -p "$1/etc.under"
  mount --bind "$1/etc" "$1/etc.under"
  mount -t tmpfs -o "size=$(cat "$1/etc.tmpfs")" dpa-etc "$1/etc"
  cp -a "$1/etc.under/." "$1/etc/"
  set +e
  bash -c "$2"
  rc=$?
  find "$1/etc.under" -mindepth 1 -delete
  cp -a "$1/etc/." "$1/etc.under/"
  exit "$rc"
fi
set +e
exec bash -c "$2"
`;

type Live = { ipv4: string | null; ipv6: string | null };

const DIGIT: Record<Family, "4" | "6"> = { ipv4: "4", ipv6: "6" };

function stubs(state: string): Record<string, string> {
  // `fail` prints a failure file as one stderr line: real tools end their messages with a newline.
  const head = `#!/bin/sh\nS='${state}'\nfail() { printf '%s\\n' "$(cat "$1")" >&2; }\n`;
  const iptables = (tool: string) =>
    head +
    `case "$1" in\n` +
    `  -V) echo "${tool} v1.8.9 (nf_tables)" ;;\n` +
    `  *) echo "$*" >> "$S/${tool}.calls" ;;\n` +
    `esac\n`;
  const save = (n: string) =>
    head +
    // The nat table (what Docker publishes): `nat4` / `nat6`, outside the counted filter saves.
    `if [ "$1 $2" = "-t nat" ]; then cat "$S/nat${n}" 2>/dev/null; exit 0; fi\n` +
    `c=$(( $(cat "$S/save${n}.count" 2>/dev/null || echo 0) + 1 )); echo "$c" > "$S/save${n}.count"\n` +
    `for f in "$S/save${n}.fail" "$S/save${n}.fail.$c"; do\n` +
    `  if [ -e "$f" ]; then fail "$f"; exit 1; fi\n` +
    `done\n` +
    `cat "$S/save${n}"\n` +
    // The whole save (no -t) also prints the other tables, as the real tool does.
    `[ "$1" = -t ] || cat "$S/save${n}.extra" 2>/dev/null\n` +
    `exit 0\n`;
  const restore = (n: string) =>
    head +
    `test=0; noflush=0; in=/dev/stdin\n` +
    `while [ $# -gt 0 ]; do\n` +
    `  case "$1" in\n` +
    `    --test) test=1 ;; --noflush) noflush=1 ;; -w) shift ;; -*) ;; *) in=$1 ;;\n` +
    `  esac\n` +
    `  shift\n` +
    `done\n` +
    `if [ "$test" = 1 ]; then\n` +
    `  t=test${n}; [ "$noflush" = 1 ] || t=filetest${n}\n` +
    `  cat "$in" > "$S/$t"\n` +
    `  if [ -e "$S/$t.fail" ]; then fail "$S/$t.fail"; exit 1; fi\n` +
    `  exit 0\n` +
    `fi\n` +
    `c=$(( $(cat "$S/restore${n}.count" 2>/dev/null || echo 0) + 1 )); echo "$c" > "$S/restore${n}.count"\n` +
    // The xtables lock, as a real restore takes it; held by another process for longer than -w
    // waits, it fails (here at once: the wait is the real tool's business, not the test's).
    `if ! flock -n /run/xtables.lock true 2>/dev/null; then\n` +
    `  echo "Another app is currently holding the xtables lock. Stopped waiting after 10s." >&2\n` +
    `  : > "$S/restore${n}.locked.$c"; exit 4\n` +
    `fi\n` +
    `cat "$in" > "$S/restore${n}.$c.tmp"\n` +
    `if [ -e "$S/restore${n}.fail.$c" ]; then\n` +
    `  fail "$S/restore${n}.fail.$c"; mv "$S/restore${n}.$c.tmp" "$S/restore${n}.$c"; exit 1\n` +
    `fi\n` +
    `if [ -e "$S/next${n}" ]; then cp "$S/save${n}" "$S/prev${n}"; mv "$S/next${n}" "$S/save${n}"\n` +
    `else cp "$S/prev${n}" "$S/save${n}"; fi\n` +
    `mv "$S/restore${n}.$c.tmp" "$S/restore${n}.$c"\n`;
  return {
    iptables: iptables("iptables"),
    ip6tables: iptables("ip6tables"),
    "iptables-save": save("4"),
    "ip6tables-save": save("6"),
    "iptables-restore": restore("4"),
    "ip6tables-restore": restore("6"),
    "iptables-legacy-save": head + `cat "$S/legacy-save" 2>/dev/null\n`,
    "iptables-nft-save": head + `cat "$S/legacy-save" 2>/dev/null\n`,
    nft: head + `cat "$S/nft-tables" 2>/dev/null\n`,
    // ipset as on a host whose kernel has no usable ip_set (the tool is there, every call fails):
    // the scripts then keep every list as rules.
    ipset: head + `echo "ipset v7.17: Kernel error received: Operation not permitted" >&2; exit 1\n`,
    conntrack:
      head +
      `case "$1" in\n` +
      `  -L) [ -e "$S/conntrack-L.fail" ] && exit 1\n` +
      `      [ "$3" = ipv4 ] && cat "$S/flows4" 2>/dev/null; [ "$3" = ipv6 ] && cat "$S/flows6" 2>/dev/null ;;\n` +
      `  -D) if [ -e "$S/conntrack-D.fail" ]; then echo "$*" >> "$S/delete-failed"; exit 1; fi\n` +
      `      echo "$*" >> "$S/deleted" ;;\n` +
      `  -G) [ -e "$S/conntrack-G.present" ] || exit 1 ;;\n` +
      `esac\n` +
      `exit 0\n`,
    ip:
      head +
      `[ "$3" = inet ] && echo "4: docker0    inet 172.17.0.1/16 brd 172.17.255.255 scope global docker0"\n` +
      `exit 0\n`,
    sudo: head + `echo "sudo: a password is required" >&2\nexit 1\n`,
    systemctl:
      head +
      `echo "$*" >> "$S/systemctl.calls"\n` +
      `cmd=$1; shift; now=0\n` +
      `for u in "$@"; do\n` +
      `  case "$cmd $u" in\n` +
      `    *" --now") now=1 ;;\n` +
      `    "is-enabled "*) cat "$S/enabled.$u" 2>/dev/null || { echo not-found; exit 1; } ;;\n` +
      `    "is-active "*) cat "$S/active.$u" 2>/dev/null || { echo inactive; exit 3; } ;;\n` +
      `    "enable "*) echo enabled > "$S/enabled.$u"; [ "$now" = 1 ] && echo active > "$S/active.$u" ;;\n` +
      `    "disable "*) rm -f "$S/enabled.$u"; [ "$now" = 1 ] && rm -f "$S/active.$u" ;;\n` +
      `  esac\n` +
      `done\n` +
      `exit 0\n`,
  };
}

export interface StubHostOptions {
  /** Tools /usr/bin and /usr/sbin lack on this host (e.g. ["flock"], ["conntrack"]). @default - none */
  readonly without?: readonly string[];
  /**
   * What the host's `etc/` (where the tests keep its rules files) is inside its namespace: a
   * tmpfs of `tmpfsBytes` (filled from `etc/` before each command and copied back after it, so a
   * test sees what the command left there), or `etc/` bind-mounted read-only.
   * @default - the plain directory
   */
  readonly etc?: { readonly tmpfsBytes: number } | "read-only";
  /**
   * Enter only a mount namespace, no user namespace, so that files of other users keep their
   * owners on the host (an unprivileged user namespace maps root alone). Needs real root.
   * @default false
   */
  readonly realRoot?: boolean;
  /**
   * The host runs systemd: /run/systemd/system exists and /etc/systemd/system is `unitDir`.
   * @default false
   */
  readonly systemd?: boolean;
}

/** One stub host in a temp dir; `remove()` deletes it. */
export class StubHost {
  public readonly root: string;
  public readonly state: string;
  /** The host's /run/docker-port-allowlist.lock, seen from outside its namespace. */
  public readonly lockPath: string;
  /** The host's /run/xtables.lock (the iptables tools' lock), seen from outside. */
  public readonly xtablesLockPath: string;
  /** The host's /run/docker-port-allowlist (where a failed rollback leaves its marker), seen from outside. */
  public readonly runDir: string;
  /** The host's /var/lib/docker-port-allowlist (the guard's directory), seen from outside. */
  public readonly guardDir: string;
  /** The host's /etc/systemd/system (with the `systemd` option), seen from outside. */
  public readonly unitDir: string;
  private readonly holders: ChildProcessWithoutNullStreams[] = [];
  private readonly realRoot: boolean;

  constructor(opts: StubHostOptions = {}) {
    this.root = mkdtempSync(join(tmpdir(), "dpa-stubhost-"));
    this.state = join(this.root, "state");
    this.lockPath = join(this.root, "run", "docker-port-allowlist.lock");
    this.xtablesLockPath = join(this.root, "run", "xtables.lock");
    this.runDir = join(this.root, "run", "docker-port-allowlist");
    this.guardDir = join(this.root, "varlib", "docker-port-allowlist");
    this.unitDir = join(this.root, "units");
    for (const d of ["stubs", "run", "state", "etc", "varlib"]) mkdirSync(join(this.root, d));
    if (opts.systemd === true) {
      mkdirSync(this.unitDir);
      mkdirSync(join(this.root, "run", "systemd", "system"), { recursive: true });
    }
    this.realRoot = opts.realRoot ?? false;
    if (opts.etc === "read-only") writeFileSync(join(this.root, "etc.read-only"), "");
    else if (opts.etc !== undefined) writeFileSync(join(this.root, "etc.tmpfs"), String(opts.etc.tmpfsBytes));
    const without = opts.without ?? [];
    for (const [name, text] of Object.entries(stubs(this.state))) {
      if (!without.includes(name)) writeFileSync(join(this.root, "stubs", name), text, { mode: 0o755 });
    }
    if (without.length > 0) {
      for (const [dir, farm, real] of [
        ["/usr/bin", "usrbin", "realbin"],
        ["/usr/sbin", "usrsbin", "realsbin"],
      ] as const) {
        mkdirSync(join(this.root, farm));
        for (const name of readdirSync(dir)) {
          if (!without.includes(name)) symlinkSync(join(this.root, real, name), join(this.root, farm, name));
        }
      }
    }
  }

  /** The argv that runs a command line (appended as its last word) on this host, and its environment. */
  public shell(): { argv: string[]; env: NodeJS.ProcessEnv } {
    return {
      argv: [
        "unshare",
        ...(this.realRoot ? [] : ["--user", "--map-root-user"]),
        "--mount",
        "bash",
        "-c",
        ENTER,
        "dpa-stubhost",
        this.root,
      ],
      env: { ...process.env, PATH: SYSTEM_PATH, LC_ALL: "C" },
    };
  }

  /** A fresh session on this host (what `SshSession.open` is for a real one). */
  public exec(extra: { sudo?: boolean } = {}): HostExec {
    const { argv, env } = this.shell();
    return new LocalExec({ host: "stubhost", sudo: extra.sudo, shell: argv, env });
  }

  /** The `connect` option of syncHost / converge for this host; `opened` sees each session. */
  public connect(opened?: (s: HostExec) => void): Connect {
    return (conn) => {
      const s = this.exec({ sudo: conn.sudo });
      opened?.(s);
      return Promise.resolve(s);
    };
  }

  /** Writes a state file; text is a byte string (latin1), as the SSH edge hands host output around. */
  public write(name: string, text: string | Buffer): void {
    writeFileSync(join(this.state, name), typeof text === "string" ? Buffer.from(text, "latin1") : text);
  }

  /** A state file as a byte string (latin1), comparable with what the SSH edge read. */
  public read(name: string): string {
    return readFileSync(join(this.state, name), "latin1");
  }

  /** A state file's bytes. */
  public bytes(name: string): Buffer {
    return readFileSync(join(this.state, name));
  }

  public has(name: string): boolean {
    return existsSync(join(this.state, name));
  }

  /**
   * Wraps a plan callback so the stub restore knows where each payload leads: the core's
   * restore simulator applied to the rules the plan was made from.
   */
  public leadsTo<P extends PlanLike>(
    plan: (live: Live, snapshot: HostSnapshot) => P | Promise<P>,
  ): (live: Live, snapshot: HostSnapshot) => Promise<P> {
    return async (live, snapshot) => {
      const p = await plan(live, snapshot);
      for (const fam of ["ipv4", "ipv6"] as const) {
        const f = p.families[fam];
        if (f !== undefined && live[fam] !== null) {
          this.write(`next${DIGIT[fam]}`, applyPayload(live[fam], f.payload, fam));
        }
      }
      return p;
    };
  }

  /**
   * Holds the host lock (or another lock file of the host, e.g. `xtablesLockPath`), from outside
   * on the same file, until `release()`; resolves once held.
   */
  public async holdLock(path = this.lockPath): Promise<{ release(): Promise<void> }> {
    const child = spawn("flock", [path, "-c", "echo held; exec cat >/dev/null"]);
    this.holders.push(child);
    await new Promise<void>((resolve, reject) => {
      child.stdout.on("data", (b: Buffer) => {
        if (b.toString().includes("held")) resolve();
      });
      child.on("error", reject);
      child.on("exit", () => reject(new Error("flock exited before holding the lock")));
    });
    return {
      release: () =>
        new Promise<void>((resolve) => {
          if (child.exitCode !== null) return resolve();
          child.on("exit", () => resolve());
          child.stdin.end();
        }),
    };
  }

  /** True when nobody holds the host lock right now. */
  public lockFree(): boolean {
    return spawnSync("flock", ["-n", this.lockPath, "true"]).status === 0;
  }

  public remove(): void {
    for (const h of this.holders) if (h.exitCode === null) h.kill("SIGKILL");
    rmSync(this.root, { recursive: true, force: true });
  }
}

/** Resolves once `check()` holds (polled), or rejects after `ms`: for events, not for time. */
export async function until(check: () => boolean, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`waited ${ms} ms for an event that did not happen`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
