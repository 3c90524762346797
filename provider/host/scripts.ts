/**
 * The two bash programs that run on a host: one to read, one to apply.
 *
 * They travel as the argument of `bash -c` (quoted with {@link shellQuote}); variable values go
 * as further argv words (also quoted, and already validated by the core), and rule payloads go
 * over stdin. Nothing a user wrote is ever spliced into the script text itself.
 *
 * Output protocol: lines starting with `@@DPA:` open a section; every other line belongs to the
 * section above it. iptables-save never prints a line starting with `@@`.
 */
import { createHash } from "crypto";
import { shellQuote } from "./ssh";

/**
 * Shared helpers. `fp` must compute exactly what core's `fingerprint(saveText, ruleName)`
 * computes (docs/DESIGN.md "Fingerprint"): chain headers of DOCKER-USER and our chain reduced
 * to `:NAME`, their `-A` rules verbatim, in file order, sha256 hex.
 */
const PRELUDE = String.raw`
set -u
export LC_ALL=C
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
fp() {
  awk -v c="DPA-$rule" 'BEGIN { h = ":" c }
    $1 == ":DOCKER-USER" || $1 == h { print $1; next }
    $1 == "-A" && ($2 == "DOCKER-USER" || $2 == c) { print }' | sha256sum | cut -d" " -f1
}
# FORWARD's rules: the plan may insert or remove our jump there, which the core's
# fingerprint does not cover; two writers must not both do it.
ffp() { awk '$1 == "-A" && $2 == "FORWARD" { print }' | sha256sum | cut -d" " -f1; }
`;

/**
 * argv: rule, rulesV4Path, rulesV6Path. Reports facts only and exits 0; the client decides
 * what is an error, so that all findings reach the user from one round trip.
 */
/** What `ffp` computes on the host: sha256 hex of the `-A FORWARD` lines, each + "\\n". */
export function forwardFingerprint(saveText: string): string {
  const lines = saveText.split("\n").filter((l) => {
    const f = l.split(/[ \t]+/).filter((x) => x !== "");
    return f[0] === "-A" && f[1] === "FORWARD";
  });
  return createHash("sha256")
    .update(lines.map((l) => l + "\n").join(""))
    .digest("hex");
}

export const READ_SCRIPT =
  PRELUDE +
  String.raw`
rule="$1"; v4path="$2"; v6path="$3"
echo "@@DPA:meta"
echo "uid=$(id -u)"
echo "iptables=$(iptables -V 2>&1 | head -n 1)"
echo "ip6tables=$(ip6tables -V 2>&1 | head -n 1)"
for t in conntrack flock nft iptables-legacy-save iptables-nft-save ip6tables-save; do
  if command -v "$t" >/dev/null 2>&1; then echo "tool.$t=yes"; else echo "tool.$t=no"; fi
done
save4=$(iptables-save -t filter 2>"/tmp/.dpa-read-err.$$"); rc4=$?
echo "@@DPA:save4 rc=$rc4"
printf '%s\n' "$save4"
echo "@@DPA:save4err"; cat "/tmp/.dpa-read-err.$$" 2>/dev/null
save6=$(ip6tables-save -t filter 2>"/tmp/.dpa-read-err.$$"); rc6=$?
echo "@@DPA:save6 rc=$rc6"
printf '%s\n' "$save6"
echo "@@DPA:save6err"; cat "/tmp/.dpa-read-err.$$" 2>/dev/null
rm -f "/tmp/.dpa-read-err.$$"
# Rules written through the other iptables backend are invisible to this one (and vice versa).
# Only look there when this backend has no DOCKER-USER: touching the legacy tools may load
# kernel modules, which a healthy host does not need.
echo "@@DPA:other"
if ! printf '%s\n' "$save4" | grep -q '^:DOCKER-USER '; then
  case "$(iptables -V 2>&1)" in
    *legacy*) other=iptables-nft-save ;;
    *) other=iptables-legacy-save ;;
  esac
  if command -v "$other" >/dev/null 2>&1; then
    echo "backend=$other"
    echo "dockerChains=$("$other" -t filter 2>/dev/null | grep -c '^:DOCKER')"
  fi
  if command -v nft >/dev/null 2>&1; then
    echo "nftDockerTables=$(nft list tables 2>/dev/null | grep -c 'docker')"
  fi
fi
echo "@@DPA:persisted"
for f in "4:$v4path" "6:$v6path"; do
  fam=$${"{"}f%%:*}; path=$${"{"}f#*:}
  if [ "$path" = "-" ]; then echo "v$fam=off"
  elif [ ! -e "$path" ]; then echo "v$fam=missing"
  elif [ ! -r "$path" ]; then echo "v$fam=unreadable"
  else echo "v$fam=$(fp < "$path")"
  fi
done
[ "$rc4" = 0 ] && echo "live4=$(printf '%s\n' "$save4" | fp)"
[ "$rc6" = 0 ] && echo "live6=$(printf '%s\n' "$save6" | fp)"
echo "@@DPA:end"
`;

/**
 * argv: rule, fp4, fp6 ("-" = family untouched), commitTimeoutSeconds, persist (0/1),
 * rulesV4Path, rulesV6Path ("-" = do not save that family), lockWaitSeconds, stdinLines,
 * forwardFp4, forwardFp6 (sha256 of the FORWARD rules the plan was made from).
 * stdin: sections payload4, rollback4, payload6, rollback6, conntrack, then `@@DPA:end`;
 * later one line `commit` (anything else, EOF or the timeout rolls back).
 *
 * Exit codes: 0 done, 10 live state changed (conflict; current state printed), 11 payload
 * rejected by `iptables-restore --test`, 12 restore failed (host unchanged), 13 rolled back
 * (no commit), 14 committed but persisting failed, 15 lock timeout, 16 rollback failed,
 * 20 setup failed.
 */
export const APPLY_SCRIPT =
  PRELUDE +
  String.raw`
rule="$1"; fp4="$2"; fp6="$3"; ctimeout="$4"; persist="$5"; v4path="$6"; v6path="$7"; lockwait="$8"; nlines="$9"
ffp4="$${"{"}10}"; ffp6="$${"{"}11}"
# A dropped SSH connection must not kill us half-way: we finish, or roll back on EOF/timeout.
trap '' HUP PIPE
tmp=$(mktemp -d /tmp/dpa-apply.XXXXXX) || { echo "@@DPA:error mktemp failed"; exit 20; }
trap 'rm -rf "$tmp"' EXIT
# Read exactly the announced number of lines; the commit line comes later on the same stdin.
# (head, not awk: mawk keeps reading to fill its buffer and would wait for the commit line.)
head -n "$nlines" > "$tmp/input" || { echo "@@DPA:error reading stdin failed"; exit 20; }
tail -n 1 "$tmp/input" | grep -qx '@@DPA:end' || { echo "@@DPA:error stdin was cut short"; exit 20; }
awk -v d="$tmp" '/^@@DPA:end$/ { exit } /^@@DPA:/ { f = d "/" substr($0, 7); printf "" > f; next } f != "" { print > f }' "$tmp/input"
command -v flock >/dev/null 2>&1 || { echo "@@DPA:error flock is not installed"; exit 20; }
exec 9>/run/docker-port-allowlist.lock || { echo "@@DPA:error cannot open /run/docker-port-allowlist.lock"; exit 20; }
flock -w "$lockwait" 9 || { echo "@@DPA:lock-timeout"; exit 15; }

bin4=iptables; bin6=ip6tables
conflict=0
for fam in 4 6; do
  [ -s "$tmp/payload$fam" ] || continue
  eval "want=\$fp$fam; wantf=\$ffp$fam; bin=\$bin$fam"
  "$bin-save" -t filter > "$tmp/snap$fam" 2>"$tmp/err" || { echo "@@DPA:error $bin-save failed"; cat "$tmp/err" >&2; exit 20; }
  [ "$(fp < "$tmp/snap$fam")" = "$want" ] || conflict=1
  [ "$(ffp < "$tmp/snap$fam")" = "$wantf" ] || conflict=1
done
if [ "$conflict" = 1 ]; then
  # Someone changed DOCKER-USER or our chain since the plan was made: hand back the live state
  # so the client can re-plan without another read.
  echo "@@DPA:conflict"
  echo "@@DPA:save4 rc=0"; iptables-save -t filter 2>/dev/null
  echo "@@DPA:save6 rc=0"; ip6tables-save -t filter 2>/dev/null
  exit 10
fi

for fam in 4 6; do
  [ -s "$tmp/payload$fam" ] || continue
  eval "bin=\$bin$fam"
  if ! "$bin-restore" -w 10 --test --noflush < "$tmp/payload$fam" 2>"$tmp/err"; then
    echo "@@DPA:test-failed $fam"; cat "$tmp/err" >&2; exit 11
  fi
done

rollback() { # rolls back every family already applied, newest first; 0 = host back to snapshot
  ok=0
  for fam in $applied; do
    eval "bin=\$bin$fam"
    "$bin-restore" -w 10 --noflush < "$tmp/rollback$fam" 2>>"$tmp/rberr" || ok=1
  done
  return $ok
}
applied=""
for fam in 4 6; do
  [ -s "$tmp/payload$fam" ] || continue
  eval "bin=\$bin$fam"
  if ! "$bin-restore" -w 10 --noflush < "$tmp/payload$fam" 2>"$tmp/err"; then
    cat "$tmp/err" >&2
    if rollback; then echo "@@DPA:apply-failed $fam"; exit 12; fi
    echo "@@DPA:rollback-failed"; cat "$tmp/rberr" >&2; exit 16
  fi
  applied="$fam $applied"
done

if [ -n "$applied" ]; then
  for fam in 4 6; do
    [ -s "$tmp/payload$fam" ] || continue
    eval "bin=\$bin$fam"
    echo "@@DPA:new$fam"; "$bin-save" -t filter 2>/dev/null
  done
  echo "@@DPA:await-commit"
  answer=""
  IFS= read -r -t "$ctimeout" answer
  if [ "$answer" != "commit" ]; then
    if rollback; then echo "@@DPA:rolled-back $${"{"}answer:-no-commit}"; exit 13; fi
    echo "@@DPA:rollback-failed"; cat "$tmp/rberr" >&2; exit 16
  fi
  echo "@@DPA:committed"
fi

# Cut live flows of sources that lost access (the ESTABLISHED fast path would keep them).
if [ -s "$tmp/conntrack" ] && command -v conntrack >/dev/null 2>&1; then
  n=0
  while IFS= read -r line; do
    # Word splitting is intended: each line is "-f ipv4 -p tcp --orig-port-dst 8080 -s CIDR",
    # built from validated values only.
    conntrack -D $line >/dev/null 2>&1 && n=$((n + 1))
  done < "$tmp/conntrack"
  echo "@@DPA:conntrack-deleted $n"
fi

if [ "$persist" = 1 ]; then
  for f in "4:$v4path" "6:$v6path"; do
    fam=$${"{"}f%%:*}; path=$${"{"}f#*:}
    [ "$path" = "-" ] && continue
    eval "bin=\$bin$fam"
    dir=$(dirname "$path")
    if [ ! -d "$dir" ]; then
      echo "@@DPA:persist-failed $fam directory $dir does not exist"; exit 14
    fi
    t="$dir/.$(basename "$path").dpa-tmp.$$"
    if "$bin-save" > "$t" 2>"$tmp/err" && mv -f "$t" "$path" 2>>"$tmp/err"; then
      echo "@@DPA:persisted $fam $(fp < "$path")"
    else
      rm -f "$t"; echo "@@DPA:persist-failed $fam write to $path failed"; cat "$tmp/err" >&2; exit 14
    fi
  done
fi
echo "@@DPA:done"
`;

/** `bash -c '<script>' <name> 'arg'...`, under `sudo -n` when asked. */
export function remoteCommand(script: string, name: string, args: readonly string[], sudo: boolean): string {
  const words = ["bash", "-c", shellQuote(script), shellQuote(name), ...args.map(shellQuote)];
  return (sudo ? "sudo -n -- " : "") + words.join(" ");
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
