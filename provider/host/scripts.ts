/**
 * The two bash programs that run on a host, one to read (refresh) and one to read + apply under
 * the host lock (create/update/delete), and the loader that assembles them from the real files
 * in ./remote/ (shipped in the package as bin/provider/host/remote/, read once at load time).
 *
 * They travel as the argument of `bash -c` (quoted with {@link shellQuote}); variable values go
 * as further argv words (also quoted, and already validated by the core), and rule payloads go
 * over stdin. Nothing a user wrote is ever spliced into the script text itself: the loader only
 * puts files of ./remote/ and core's fingerprint program into it.
 *
 * Assembly, the same steps shellcheck follows (`npm run lint:sh`):
 * - a line `. ./<file>.sh` is replaced by that file of ./remote/ (nothing is sourced on the host);
 * - in a line `variable='@NAME@'`, the marker is replaced by the value of NAME, shell-quoted:
 *   FINGERPRINT_AWK (core's, provider/core/fingerprint.ts), CUT_AWK (./remote/cut.awk),
 *   GUARD_AWK (./remote/guard.awk), EXPAND_SETS_AWK (./remote/expand-sets.awk), the guard's
 *   paths (core's ./guard.ts), where Docker's nftables backend DNATs (core's ./published.ts)
 *   and the prefixes of our ipsets' names (core's ./ipset.ts).
 *
 * Output protocol: lines starting with `@@DPA:` open a section; every other line belongs to the
 * section above it. iptables-save never prints a line starting with `@@`.
 */
import { readFileSync } from "fs";
import { join } from "path";
import { gzipSync } from "zlib";
import { FINGERPRINT_AWK } from "../core/fingerprint";
import { ownSetNames } from "../core/ipset";
import { GUARD_DIR, GUARD_LISTENER, GUARD_UNIT, GUARD_UNIT_DIR } from "../core/guard";
import { NFT_FAMILY, NFT_TABLE_PREFIX } from "../core/nft";
import { DOCKER_NFT_BRIDGE_MAP, DOCKER_NFT_NAT_CHAIN, DOCKER_NFT_TABLE } from "../core/published";
import { shellQuote } from "./ssh";

/** Where the remote files are: beside this module, in the sources and in the build (bin/). */
export const REMOTE_DIR = join(__dirname, "remote");

const files = new Map<string, string>();

/** The text of a file of ./remote/, read once. */
export function remoteFile(name: string): string {
  let text = files.get(name);
  if (text === undefined) {
    text = readFileSync(join(REMOTE_DIR, name), "utf8");
    files.set(name, text);
  }
  return text;
}

const INCLUDE = /^\. \.\/([a-z0-9-]+\.sh)$/gm;
const MARKER = /^([a-z_]+)='@([A-Z_]+)@'$/gm;

/**
 * The script `entry` (a file of ./remote/) with its `. ./<file>` lines and `variable='@NAME@'`
 * markers filled in. Throws when a marker has no value or a value is never used, so a renamed
 * marker fails at load time instead of on a host.
 */
export function assembleScript(entry: string, values: Readonly<Record<string, string>>): string {
  const used = new Set<string>();
  const include = (text: string): string =>
    text.replace(INCLUDE, (_line, file: string) => include(remoteFile(file)).replace(/\n$/, ""));
  const script = include(remoteFile(entry)).replace(MARKER, (_line, variable: string, name: string) => {
    const value = values[name];
    if (value === undefined) throw new Error(`remote/${entry}: no value for the marker '@${name}@'`);
    used.add(name);
    return `${variable}=${shellQuote(value)}`;
  });
  for (const name of Object.keys(values)) {
    if (!used.has(name)) throw new Error(`remote/${entry}: no marker '@${name}@' for the value ${name}`);
  }
  return script;
}

/**
 * Decides which live flows to cut after a commit: ./remote/cut.awk (see its header; the policy
 * lines come from `conntrackPolicy` in ./rollback.ts). Exported so unit tests run this exact
 * program with a real awk.
 */
export const CUT_AWK = remoteFile("cut.awk");
/** ./remote/expand-sets.awk: our ipset rules written out as one rule per source, for the rules files. */
export const EXPAND_SETS_AWK = remoteFile("expand-sets.awk");

/**
 * The exit codes of the sync script by name, parsed once from ./remote/exit-codes.sh (the one
 * table; the script itself says `exit "$EXIT_CONFLICT"`). The names the client knows are the
 * keys of this type; loading fails if the file and this list disagree.
 */
export const EXIT_NAMES = [
  "DONE",
  "CONFLICT",
  "TEST_FAILED",
  "APPLY_FAILED",
  "ROLLED_BACK",
  "PERSIST_FAILED",
  "LOCK_TIMEOUT",
  "ROLLBACK_FAILED",
  "NO_PLAN",
  "SETUP_FAILED",
  "NO_FLOCK",
] as const;
export type ExitName = (typeof EXIT_NAMES)[number];

/** `EXIT_<NAME>=<code>` lines of exit-codes.sh, by name; everything else there is comments. */
export function parseExitCodes(text: string): Map<string, number> {
  const codes = new Map<string, number>();
  for (const line of text.split("\n")) {
    const m = /^EXIT_([A-Z_]+)=(\d+)(?:\s+#.*)?$/.exec(line);
    if (m === null) {
      if (line !== "" && !line.startsWith("#"))
        throw new Error(`remote/exit-codes.sh: cannot read the line '${line}'`);
      continue;
    }
    if (codes.has(m[1])) throw new Error(`remote/exit-codes.sh: EXIT_${m[1]} is defined twice`);
    codes.set(m[1], Number(m[2]));
  }
  return codes;
}

function exitTable(): Readonly<Record<ExitName, number>> {
  const codes = parseExitCodes(remoteFile("exit-codes.sh"));
  const names = [...codes.keys()].sort().join(" ");
  if (names !== [...EXIT_NAMES].sort().join(" ")) {
    throw new Error(`remote/exit-codes.sh defines ${names}; the client knows ${EXIT_NAMES.join(" ")}`);
  }
  return Object.freeze(Object.fromEntries(codes)) as Record<ExitName, number>;
}

/** Exit codes of {@link SYNC_SCRIPT}, e.g. `EXIT.CONFLICT` (10). */
export const EXIT = exitTable();

/**
 * What the guard puts back in one family (./remote/guard.awk, see its header). Exported so unit
 * tests run this exact program with a real awk.
 */
export const GUARD_AWK = remoteFile("guard.awk");

/**
 * Where the sync script leaves `unknown.<ruleName>` when a rollback failed for good (remote/sync.sh's
 * rollback): the host's state for that allowlist is unknown until a write of it succeeds.
 * report-state.sh reports it; under /run, so a reboot (which reloads the rules) forgets it.
 */
export const UNKNOWN_STATE_DIR = "/run/docker-port-allowlist";

/**
 * The host-wide lock the sync script takes from its read to its commit, and the guard for each
 * round (both get it through their `@HOST_LOCK_PATH@` marker); messages name it from here.
 */
export const HOST_LOCK_PATH = "/run/docker-port-allowlist.lock";

/** The paths report-state.sh and guard-install.sh name: the guard's (core's ./guard.ts) and the marker's. */
const HOST_PATHS = { GUARD_DIR, GUARD_LISTENER, GUARD_UNIT, GUARD_UNIT_DIR, UNKNOWN_STATE_DIR };
/**
 * Where Docker's nftables backend DNATs and names its bridges (core's ./published.ts), and our own
 * table (core's ./nft.ts), for report-state.sh.
 */
const NFT_NAT = {
  NFT_TABLE: DOCKER_NFT_TABLE,
  NFT_NAT_CHAIN: DOCKER_NFT_NAT_CHAIN,
  NFT_BRIDGE_MAP: DOCKER_NFT_BRIDGE_MAP,
  NFT_FAMILY,
  NFT_TABLE_PREFIX,
  // An allowlist's ipsets (core's ./ipset.ts) are these prefixes + its ruleName.
  SET_PREFIXES: ownSetNames("").join(" "),
  EXPAND_SETS_AWK,
};

/** argv: rule, rulesV4Path, rulesV6Path. Read-only (refresh): takes no lock. See remote/read.sh. */
export const READ_SCRIPT = assembleScript("read.sh", { FINGERPRINT_AWK, ...HOST_PATHS, ...NFT_NAT });

/**
 * The guard (remote/guard.sh): not run by an exec but installed by the sync script as
 * `GUARD_SCRIPT_PATH` (core's ./guard.ts), run by systemd or `--loop`.
 */
export const GUARD_SCRIPT = assembleScript("guard.sh", {
  FINGERPRINT_AWK,
  GUARD_AWK,
  GUARD_DIR,
  HOST_LOCK_PATH,
});

/**
 * The whole write operation in ONE exec, under the host lock from the read to the commit, so
 * writers that use the lock never interleave. argv and the dialogue: remote/sync.sh; exit codes:
 * {@link EXIT}.
 */
export const SYNC_SCRIPT = assembleScript("sync.sh", {
  FINGERPRINT_AWK,
  CUT_AWK,
  ...HOST_PATHS,
  ...NFT_NAT,
  HOST_LOCK_PATH,
});

/**
 * Each script packed once per process (the scripts are constants, a few of them): a fleet's
 * `up` sends the same one to every host, and gzip at level 9 took about 2 ms per exec.
 */
const PACKED = new Map<string, string>();

/**
 * The command line that runs `script` as `bash -c <script> <name> <arg>...` (under `sudo -n` when
 * asked). The script travels gzipped and base64-encoded, and the login shell unpacks it into the
 * `bash -c` word: the SSH exec request carries the whole command line in one packet, and the
 * uncompressed sync script is past the 32 KiB payload that RFC 4253 makes every server accept
 * (ssh2's server and dropbear refuse larger ones, OpenSSH takes up to 256 KiB). Needs base64
 * (coreutils) and gzip on the host, as every Debian/RHEL/busybox system has; a host without them
 * fails the exec with the shell's "not found", before anything runs.
 */
export function remoteCommand(script: string, name: string, args: readonly string[], sudo: boolean): string {
  let packed = PACKED.get(script);
  if (packed === undefined) {
    packed = gzipSync(Buffer.from(script, "utf8"), { level: 9 }).toString("base64");
    PACKED.set(script, packed);
  }
  const run = [
    ...(sudo ? ["sudo", "-n", "--"] : []),
    "bash",
    "-c",
    '"$s"',
    shellQuote(name),
    ...args.map(shellQuote),
  ];
  return `s=$(printf %s ${packed} | base64 -d | gzip -dc) && exec ${run.join(" ")}`;
}

/** Splits script output into sections keyed by the first word after `@@DPA:`. */
export function parseSections(stdout: string): Map<string, { header: string; body: string }> {
  const sections = new Map<string, { header: string; body: string }>();
  let current: { header: string; lines: string[] } | undefined;
  const flush = () => {
    if (current === undefined) return;
    const lines = current.lines;
    // `$(...)` + printf leave a lone empty line for empty output; trailing blanks carry nothing.
    while (lines.length > 0 && lines[lines.length - 1] === "") lines.pop();
    sections.set(current.header.split(" ")[0], {
      header: current.header,
      body: lines.length > 0 ? lines.join("\n") + "\n" : "",
    });
  };
  for (const line of stdout.split("\n")) {
    if (line.startsWith("@@DPA:")) {
      flush();
      current = { header: line.slice(6), lines: [] };
    } else if (current !== undefined) {
      current.lines.push(line);
    }
  }
  flush();
  return sections;
}
