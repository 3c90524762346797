/**
 * The two bash programs that run on a host: one to read (refresh), one to read+apply under the
 * host lock (create/update/delete).
 *
 * They travel as the argument of `bash -c` (quoted with {@link shellQuote}); variable values go
 * as further argv words (also quoted, and already validated by the core), and rule payloads go
 * over stdin. Nothing a user wrote is ever spliced into the script text itself.
 *
 * Output protocol: lines starting with `@@DPA:` open a section; every other line belongs to the
 * section above it. iptables-save never prints a line starting with `@@`.
 */
import { FINGERPRINT_AWK } from "../core/fingerprint";
import { shellQuote } from "./ssh";

/**
 * Shared helpers. `fp` runs core's {@link FINGERPRINT_AWK} itself, so the host computes exactly
 * what core's `fingerprint(saveText, ruleName)` computes (docs/DESIGN.md "Fingerprint").
 */
const PRELUDE =
  String.raw`
set -u
export LC_ALL=C
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
fingerprint_awk=` +
  shellQuote(FINGERPRINT_AWK) +
  String.raw`
fp() { awk -v chain="DPA-$rule" "$fingerprint_awk" | sha256sum | cut -d" " -f1; }
`;

/**
 * `report_state`: facts + `iptables-save -t filter` per family, sections meta, save4, save4err,
 * save6, save6err, other, persisted, end. Reads `$rule`, `$v4path`, `$v6path`. Reports facts
 * only; the client decides what is an error, so all findings reach the user from one exchange.
 */
const REPORT_STATE = String.raw`
report_state() {
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
}
`;

/** argv: rule, rulesV4Path, rulesV6Path. Read-only (refresh): takes no lock. */
export const READ_SCRIPT =
  PRELUDE +
  REPORT_STATE +
  String.raw`
rule="$1"; v4path="$2"; v6path="$3"
report_state
`;

/**
 * Decides which live flows to cut after a commit (see `conntrackPolicy` in ./rollback.ts for the
 * policy lines it reads first). Second input: `conntrack -L -f <family>`. Prints
 * `proto src dst sport dport` of each flow to a policed port that was DNATed (the reply comes
 * from another address than the original destination: a connection to a published port, not a
 * container's own outbound flow) and whose original source no allowed network contains.
 * Exported so unit tests run this exact program with a real awk.
 */
export const CUT_AWK = String.raw`
function v4int(a,   p) { split(a, p, "."); return ((p[1] * 256 + p[2]) * 256 + p[3]) * 256 + p[4] }
function pad4(g) { return substr("0000" g, length(g) + 1) }
function v6hex(a,   n, head, tail, hg, tg, hn, tn, i, out) {
  a = tolower(a); n = index(a, "::")
  if (n > 0) { head = substr(a, 1, n - 1); tail = substr(a, n + 2) } else { head = a; tail = "" }
  hn = head == "" ? 0 : split(head, hg, ":"); tn = tail == "" ? 0 : split(tail, tg, ":")
  out = ""
  for (i = 1; i <= hn; i++) out = out pad4(hg[i])
  for (i = hn + tn; i < 8; i++) out = out "0000"
  for (i = 1; i <= tn; i++) out = out pad4(tg[i])
  return out
}
function hexv(c) { return index("0123456789abcdef", c) - 1 }
# No ^ operator: busybox awk may be built without math support.
function pow2(n,   r) { r = 1; while (n-- > 0) r *= 2; return r }
function contains(net, len, addr,   b, full, rem, d) {
  if (fam == "ipv4") { b = pow2(32 - len); return int(v4int(addr) / b) == int(v4int(net) / b) }
  full = int(len / 4); rem = len % 4
  if (substr(addr, 1, full) != substr(net, 1, full)) return 0
  if (rem == 0) return 1
  d = pow2(4 - rem)
  return int(hexv(substr(addr, full + 1, 1)) / d) == int(hexv(substr(net, full + 1, 1)) / d)
}
function key(a) { return fam == "ipv6" ? v6hex(a) : a }
function allowed(a,   k, i) {
  k = key(a)
  if (k in exact) return 1
  for (i = 1; i <= nn; i++) if (contains(nets[i], lens[i], k)) return 1
  return 0
}
FNR == NR {
  if ($2 != fam) next
  if ($1 == "P") { np++; pproto[np] = $3; plo[np] = $4 + 0; phi[np] = $5 + 0; pdst[np] = $6 }
  else if ($1 == "A") {
    split($3, c, "/")
    if (c[2] + 0 == (fam == "ipv4" ? 32 : 128)) exact[key(c[1])] = 1
    else { nn++; nets[nn] = key(c[1]); lens[nn] = c[2] + 0 }
  }
  next
}
{
  osrc = ""; odst = ""; osport = ""; odport = ""; rsrc = ""
  for (i = 2; i <= NF; i++) {
    eq = index($i, "="); if (eq == 0) continue
    k = substr($i, 1, eq - 1); v = substr($i, eq + 1)
    if (k == "src") { if (osrc == "") osrc = v; else if (rsrc == "") rsrc = v }
    else if (k == "dst" && odst == "") odst = v
    else if (k == "sport" && osport == "") osport = v
    else if (k == "dport" && odport == "") odport = v
  }
  if (osrc !~ /^[0-9a-fA-F:.]+$/ || odst !~ /^[0-9a-fA-F:.]+$/) next
  if (osport !~ /^[0-9]+$/ || odport !~ /^[0-9]+$/ || rsrc == "" || rsrc == odst) next
  policed = 0
  for (p = 1; p <= np; p++)
    if (pproto[p] == $1 && odport + 0 >= plo[p] && odport + 0 <= phi[p] && (pdst[p] == "-" || pdst[p] == odst)) policed = 1
  if (policed && !allowed(osrc)) print $1, osrc, odst, osport, odport
}
`;

/**
 * The whole write operation in ONE exec, under the host lock from the read to the commit, so
 * writers that use the lock (other allowlists of this provider, other `pulumi up`s) never
 * interleave and never conflict.
 *
 * argv: rule, rulesV4Path, rulesV6Path ("-" = persistence off for that family), lockWaitSeconds,
 * planTimeoutSeconds, commitTimeoutSeconds, persist (0/1), maxAttempts.
 *
 * Dialogue on the channel (every wait on the client is bounded, so the lock is never held for
 * longer than lockwait is spent elsewhere):
 * 1. host: takes the lock, prints the state (report_state) and `@@DPA:await-plan <attempt>`.
 * 2. client -> one line `none` (nothing to do: the host exits at once, releasing the lock) or
 *    `plan <nlines> <fp4> <fp6>` followed by <nlines> lines: sections payload4, rollback4,
 *    payload6, rollback6, conntrack, then `@@DPA:end`. fp = core fingerprint (FORWARD,
 *    DOCKER-USER, our chain) of the state the plan was made from ("-" = family untouched).
 *    Nothing within planTimeoutSeconds (or EOF) = exit 17, nothing changed.
 * 3. host: if a family's fingerprint differs (a writer that does not take our lock: Docker, a
 *    person), prints `@@DPA:conflict`, the fresh state and a new await-plan (back to 2) until
 *    maxAttempts plans were refused (exit 10). Otherwise: test, apply, print the new state and
 *    `@@DPA:await-commit`.
 * 4. client -> `commit` (anything else, EOF or commitTimeoutSeconds rolls back); host: conntrack
 *    cuts, persist, `@@DPA:done`.
 *
 * Exit codes: 0 done, 10 live state changed on every attempt, 11 payload rejected by
 * `iptables-restore --test`, 12 restore failed (host unchanged), 13 rolled back (no commit),
 * 14 committed but persisting failed, 15 lock timeout, 16 rollback failed, 17 no plan in time,
 * 20 setup failed, 21 flock missing.
 */
export const SYNC_SCRIPT =
  PRELUDE +
  REPORT_STATE +
  String.raw`
rule="$1"; v4path="$2"; v6path="$3"; lockwait="$4"; ptimeout="$5"; ctimeout="$6"; persist="$7"; attempts="$8"
cut_awk=$(cat <<'DPA_CUT_AWK'
` +
  CUT_AWK +
  String.raw`
DPA_CUT_AWK
)
# A dropped SSH connection must not kill us half-way: we finish, or roll back on EOF/timeout.
trap '' HUP PIPE
tmp=$(mktemp -d /tmp/dpa-sync.XXXXXX) || { echo "@@DPA:error mktemp failed"; exit 20; }
trap 'rm -rf "$tmp"' EXIT
command -v flock >/dev/null 2>&1 || { echo "@@DPA:no-flock"; exit 21; }
exec 9>/run/docker-port-allowlist.lock || { echo "@@DPA:error cannot open /run/docker-port-allowlist.lock"; exit 20; }
flock -w "$lockwait" 9 || { echo "@@DPA:lock-timeout"; exit 15; }

bin4=iptables; bin6=ip6tables
attempt=0
while :; do
  attempt=$((attempt + 1))
  report_state
  echo "@@DPA:await-plan $attempt"
  # bash's read takes one byte at a time from a pipe, so it never eats the lines after it.
  header=""
  IFS= read -r -t "$ptimeout" header
  case "$header" in
    none) echo "@@DPA:done"; exit 0 ;;
    "plan "*) ;;
    *) echo "@@DPA:no-plan $${"{"}header:-none within $${"{"}ptimeout}s}"; exit 17 ;;
  esac
  set -- $header
  nlines="$2"; fp4="$3"; fp6="$4"
  case "$nlines" in ''|*[!0-9]*) echo "@@DPA:error bad plan header"; exit 20 ;; esac
  rm -f "$tmp"/payload? "$tmp"/rollback? "$tmp/conntrack"
  # head, not awk: mawk keeps reading to fill its buffer and would wait for the commit line.
  # The client sends nothing more before await-commit, so head cannot read past the plan.
  timeout "$ptimeout" head -n "$nlines" > "$tmp/input" || { echo "@@DPA:no-plan cut short"; exit 17; }
  tail -n 1 "$tmp/input" | grep -qx '@@DPA:end' || { echo "@@DPA:no-plan cut short"; exit 17; }
  awk -v d="$tmp" '/^@@DPA:end$/ { exit } /^@@DPA:/ { f = d "/" substr($0, 7); printf "" > f; next } f != "" { print > f }' "$tmp/input"
  conflict=0
  for fam in 4 6; do
    [ -s "$tmp/payload$fam" ] || continue
    eval "want=\$fp$fam; bin=\$bin$fam"
    "$bin-save" -t filter > "$tmp/snap$fam" 2>"$tmp/err" || { echo "@@DPA:error $bin-save failed"; cat "$tmp/err" >&2; exit 20; }
    [ "$(fp < "$tmp/snap$fam")" = "$want" ] || conflict=1
  done
  [ "$conflict" = 0 ] && break
  # Changed since our read by a writer that ignores our lock. Hand back the fresh state (the
  # loop prints it) so the client re-plans without another exec.
  if [ "$attempt" -ge "$attempts" ]; then echo "@@DPA:conflict final $attempt"; exit 10; fi
  echo "@@DPA:conflict $attempt"
done

for fam in 4 6; do
  [ -s "$tmp/payload$fam" ] || continue
  eval "bin=\$bin$fam"
  if ! "$bin-restore" -w 10 --test --noflush < "$tmp/payload$fam" 2>"$tmp/err"; then
    echo "@@DPA:test-failed $fam"; cat "$tmp/err" >&2; exit 11
  fi
done

rollback() { # rolls back every family already applied, newest first; 0 = host back to snapshot
  # Own loop variables: the caller's $fam names the family that failed, for its message.
  ok=0
  for rf in $applied; do
    eval "rbin=\$bin$rf"
    "$rbin-restore" -w 10 --noflush < "$tmp/rollback$rf" 2>>"$tmp/rberr" || ok=1
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

# Cut live flows that the new rules would not let in (the ESTABLISHED fast path would keep
# them for days): one conntrack listing per family, matched by CUT_AWK against the policy lines
# the client sent, then one delete per flow to cut.
if [ -s "$tmp/conntrack" ] && command -v conntrack >/dev/null 2>&1; then
  n=0
  for fam in ipv4 ipv6; do
    grep -q "^P $fam " "$tmp/conntrack" || continue
    grep "^[PAB] $fam" "$tmp/conntrack" > "$tmp/policy"
    if grep -q "^B $fam" "$tmp/policy"; then
      inet=inet; [ "$fam" = ipv6 ] && inet=inet6
      ip -o -f "$inet" addr show 2>/dev/null |
        awk -v fam="$fam" '$2 == "docker0" || $2 ~ /^br-/ { print "A", fam, $4 }' >> "$tmp/policy"
    fi
    conntrack -L -f "$fam" 2>/dev/null | awk -v fam="$fam" "$cut_awk" "$tmp/policy" - > "$tmp/cuts"
    while read -r proto src dst sport dport; do
      conntrack -D -f "$fam" -p "$proto" -s "$src" -d "$dst" --sport "$sport" --dport "$dport" \
        >/dev/null 2>&1 && n=$((n + 1))
    done < "$tmp/cuts"
  done
  echo "@@DPA:conntrack-deleted $n"
fi

if [ "$persist" = 1 ]; then
  for f in "4:$v4path" "6:$v6path"; do
    fam=$${"{"}f%%:*}; path=$${"{"}f#*:}
    [ "$path" = "-" ] && continue
    # A family whose save failed in the read (no ip6tables, IPv6 off) has nothing to save.
    eval "bin=\$bin$fam; rc=\$rc$fam"
    [ "$rc" = 0 ] || continue
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
