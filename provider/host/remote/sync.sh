#!/usr/bin/env bash
# dpa-sync: the whole write operation in ONE exec, under the host lock from the read to the
# commit, so writers that use the lock (other allowlists of this provider, other `pulumi up`s)
# never interleave and never conflict.
#
# argv: rule, rulesV4Path, rulesV6Path ("-" = persistence off for that family), lockWaitSeconds,
# planTimeoutSeconds, commitTimeoutSeconds, persist (0/1), maxAttempts, pauseDir ("-": none; a
# test hook, see pause_at).
#
# Dialogue on the channel (every wait on the client is bounded, so the lock is never held for
# longer than lockwait is spent elsewhere):
# 1. host: takes the lock, prints the state (report_state) and `@@DPA:await-plan <attempt>`.
# 2. client -> one line `none` (nothing to do: the host exits at once, releasing the lock) or
#    `plan <nlines> <fp4> <fp6> <fpnft> <first|last>` followed by <nlines> lines: sections
#    payload4, rollback4, payload6, rollback6, payloadnft, rollbacknft, conntrack, then
#    `@@DPA:end`; a family whose sources are in an ipset (core's ./ipset.ts) also has ipsetN
#    (`ipset -exist restore` input run before its payload), ipsetdropN (after it), ipsetrbN
#    (before its rollback) and ipsetrbdropN (after its rollback). fp = core fingerprint (INPUT,
#    FORWARD, DOCKER-USER, our chain) of the state the plan was made from ("-" = family
#    untouched); fpnft = nft_sha of our nftables table (core's nft.ts), whose payload is applied
#    before the iptables families (`first`: it adds policing) or after them (`last`: it removes
#    it), so a switch of backends never leaves a gap.
#    Nothing within planTimeoutSeconds (or EOF) = EXIT_NO_PLAN, nothing changed.
# 3. host: if a family's fingerprint differs (a writer that does not take our lock: Docker, a
#    person), prints `@@DPA:conflict`, the fresh state and a new await-plan (back to 2) until
#    maxAttempts plans were refused (EXIT_CONFLICT). Otherwise: test, apply, print the new state
#    and `@@DPA:await-commit`.
# 4. client -> `commit` (anything else, EOF or commitTimeoutSeconds rolls back); host: the guard
#    step (guard-install.sh, sections guard-*), conntrack cuts, persist, `@@DPA:done`. A plan
#    with guard sections only (rules in sync) goes straight to the guard step.
# Exit codes: exit-codes.sh.
#
# The watchdog (see watchdog below): from the first apply to the end, a detached copy of this
# script in its own session holds the host lock with us and rolls back if we die before the
# commit (SIGKILL, OOM killer): the rollback does not depend on this process or its session.
# Assumes bash >= 4, coreutils and util-linux (flock, setsid), as on every Debian/Ubuntu/RHEL.
#
# Runs as `bash -c '<this script, assembled>' dpa-sync <argv>...`: the loader
# (provider/host/scripts.ts) puts each `. ./<file>` line's file in its place and fills the two
# awk programs' markers below (shell-quoted), so nothing is sourced on the host and no user
# value is ever part of the script text; shellcheck -x follows the same lines.
# shellcheck source-path=SCRIPTDIR
. ./exit-codes.sh
. ./prelude.sh
. ./report-state.sh
. ./guard-install.sh

# Per family (4, 6): its tools are ${ipt[fam]}-save and ${ipt[fam]}-restore.
ipt=([4]=iptables [6]=ip6tables)
# How often a rollback restore is tried before the host's state is called unknown (1 s apart;
# each try waits up to 10 s for the xtables lock with -w).
rollback_tries=3

# rollback <families>: puts each listed family (newest first) back to its snapshot ($tmp/snapN,
# by the payload $tmp/rollbackN the client rendered); 0 = the host is back. A family whose rules
# still match the snapshot (its restore never ran, or it was rolled back already) is left alone:
# its rollback restored over the snapshot could insert rules twice. (Only a family recorded as
# applying whose restore had not run yet, while a writer that ignores our lock changed those
# chains, looks applied without being so: its rollback then fails, or, for a payload that only
# deletes, inserts our rules again; a window one restore wide.) A restore that fails (another
# process held the xtables lock longer than -w waits, ...) is tried again; when the tries are
# spent, the host's state is unknown: the marker $unknown_marker (report-state.sh) says so, with
# the restores' stderr, until a later write of this allowlist succeeds.
rollback() {
  local todo=$1 left rf try=1
  while :; do
    left=""
    for rf in $todo; do
      if [ "$rf" = nft ]; then
        # Our nftables table: one `nft -f` puts it back as read (or deletes it).
        [ "$(nft_sha)" = "$(cat "$tmp/snapnft")" ] && continue
        nft -f "$tmp/rollbacknft" 2>>"$tmp/rberr" || left="$left $rf"
        continue
      fi
      # The family's ipsets (core's ./ipset.ts): the sets as read are built again before the
      # rules that match them come back, the sets that were not there go after (each text can
      # run again with the same result).
      if [ -s "$tmp/ipsetrb$rf" ] && ! ipset -exist restore < "$tmp/ipsetrb$rf" 2>>"$tmp/rberr"; then
        left="$left $rf"; continue
      fi
      if [ "$("${ipt[$rf]}-save" -t filter 2>/dev/null | fp)" != "$(fp < "$tmp/snap$rf")" ] &&
        ! "${ipt[$rf]}-restore" -w 10 --noflush < "$tmp/rollback$rf" 2>>"$tmp/rberr"; then
        left="$left $rf"; continue
      fi
      if [ -s "$tmp/ipsetrbdrop$rf" ] && ! ipset -exist restore < "$tmp/ipsetrbdrop$rf" 2>>"$tmp/rberr"; then
        left="$left $rf"
      fi
    done
    todo=$left
    [ -z "$todo" ] && return 0
    [ "$try" -ge "$rollback_tries" ] && break
    try=$((try + 1))
    sleep 1
  done
  mkdir -p "$unknown_dir" 2>/dev/null
  { echo "rollback of families$todo failed $rollback_tries times at $(date -u +%Y-%m-%dT%H:%M:%SZ):"
    tail -n 20 "$tmp/rberr"; } > "$unknown_marker" 2>/dev/null
  return 1
}

# The watchdog: `setsid bash -c "<this script>" dpa-watchdog <rule> <tmp>`, started by
# start_watchdog below with our host lock fd (9) and a pipe from us as stdin. We write our fate
# to the pipe once it is decided (`committed`, `rolled-back`, `rollback-failed`); the pipe ends
# when we end, however we end. EOF without a word = we died between our first apply and the
# commit: it rolls back every family we were applying ($tmp/applying). Then it removes $tmp (it
# owns it from its start) and exits, which releases the lock. In its own session, with no tie to
# the SSH channel: neither the connection's end nor a kill of our process group reaches it.
watchdog() {
  rule=$1; tmp=$2
  local fate="" word
  while IFS= read -r word; do fate=$word; done
  if [ -z "$fate" ]; then rollback "$(cat "$tmp/applying" 2>/dev/null)"; fi
  rm -rf "$tmp"
}
if [ "$0" = dpa-watchdog ]; then
  rule=$1; unknown_marker=$(unknown_path)
  watchdog "$1" "$2"
  exit "$EXIT_DONE"
fi

rule="$1"; v4path="$2"; v6path="$3"; lockwait="$4"; ptimeout="$5"; ctimeout="$6"; persist="$7"; attempts="$8"
pausedir="${9:--}"
unknown_marker=$(unknown_path)
# cut.awk, shell-quoted into the marker by the loader (a real file, so it is tested on its own).
cut_awk='@CUT_AWK@'
# A dropped SSH connection must not kill us half-way: we finish, or roll back on EOF/timeout.
trap '' HUP PIPE
tmp=$(mktemp -d /tmp/dpa-sync.XXXXXX) || { echo "@@DPA:error mktemp failed"; exit "$EXIT_SETUP_FAILED"; }
# $t: a rules file's temp copy while persisting (see there), removed however the script ends.
# $tmp is the watchdog's to remove once it runs (it may need the rollbacks after we are gone).
t=""
watching=""
trap '[ -n "$watching" ] || rm -rf "$tmp"; [ -z "$t" ] || rm -f "$t"' EXIT
command -v flock >/dev/null 2>&1 || { echo "@@DPA:no-flock"; exit "$EXIT_NO_FLOCK"; }
# Appending (no truncation): the file holds who has the lock, which a waiter reports.
lockfile='@HOST_LOCK_PATH@'
exec 9>>"$lockfile" || { echo "@@DPA:error cannot open $lockfile"; exit "$EXIT_SETUP_FAILED"; }
if ! flock -n 9; then
  # Held: say by whom (`@@DPA:lock-busy <seconds waited> <holder line>`, the client shows it as
  # progress) every 5 s until it is ours or lockwait is spent.
  waited=0
  while :; do
    echo "@@DPA:lock-busy $waited $(lock_holder "$lockfile")"
    step=$((lockwait - waited)); [ "$step" -gt 5 ] && step=5
    [ "$step" -gt 0 ] || { echo "@@DPA:lock-timeout"; exit "$EXIT_LOCK_TIMEOUT"; }
    flock -w "$step" 9 && break
    waited=$((waited + step))
  done
fi
# Ours now: say so in the file for the next waiter (a new write; the lock stays on fd 9).
printf 'allowlist=%s pid=%s since=%s\n' "$rule" "$$" "$(date +%s)" > "$lockfile" 2>/dev/null

# Test hook (PAUSE_POINTS in provider/host/options.ts): where the test made "<pausedir>/<point>",
# stop at that boundary of the write, say so with "<pausedir>/<point>.reached", and go on once the
# test removed "<pausedir>/<point>" (at most ctimeout seconds), so it can race a foreign writer or
# kill us there. Never used in production (pausedir "-").
pause_at() {
  [ "$pausedir" != "-" ] && [ -e "$pausedir/$1" ] || return 0
  # Our pid, so a test can SIGKILL exactly this process there.
  echo "$$" > "$pausedir/$1.reached"
  waited=0
  while [ -e "$pausedir/$1" ] && [ "$waited" -lt "$((ctimeout * 20))" ]; do sleep 0.05; waited=$((waited + 1)); done
}

attempt=0
while :; do
  attempt=$((attempt + 1))
  report_state
  echo "@@DPA:await-plan $attempt"
  # bash's read takes one byte at a time from a pipe, so it never eats the lines after it.
  header=""
  IFS= read -r -t "$ptimeout" header
  case "$header" in
    none) echo "@@DPA:done"; exit "$EXIT_DONE" ;;
    "plan "*) ;;
    *) echo "@@DPA:no-plan ${header:-none within ${ptimeout}s}"; exit "$EXIT_NO_PLAN" ;;
  esac
  # plan <nlines> <fp4> <fp6> <fpnft> <first|last>: words split on blanks, like the client joined them.
  read -r _ nlines fp4 fp6 fpnft nftorder _ <<<"$header"
  want=([4]="$fp4" [6]="$fp6")
  case "$nlines" in ''|*[!0-9]*) echo "@@DPA:error bad plan header"; exit "$EXIT_SETUP_FAILED" ;; esac
  rm -f "$tmp"/payload? "$tmp"/rollback? "$tmp"/payloadnft "$tmp"/rollbacknft "$tmp/conntrack" "$tmp"/guard-* "$tmp"/ipset*
  # head, not awk: mawk keeps reading to fill its buffer and would wait for the commit line.
  # The client sends nothing more before await-commit, so head cannot read past the plan.
  timeout "$ptimeout" head -n "$nlines" > "$tmp/input" || { echo "@@DPA:no-plan cut short"; exit "$EXIT_NO_PLAN"; }
  tail -n 1 "$tmp/input" | grep -qx '@@DPA:end' || { echo "@@DPA:no-plan cut short"; exit "$EXIT_NO_PLAN"; }
  awk -v d="$tmp" '/^@@DPA:end$/ { exit } /^@@DPA:/ { f = d "/" substr($0, 7); printf "" > f; next } f != "" { print > f }' "$tmp/input"
  conflict=0
  for fam in 4 6; do
    [ -s "$tmp/payload$fam" ] || continue
    bin=${ipt[$fam]}
    "$bin-save" -t filter > "$tmp/snap$fam" 2>"$tmp/err" || { echo "@@DPA:error $bin-save failed"; cat "$tmp/err" >&2; exit "$EXIT_SETUP_FAILED"; }
    [ "$(fp < "$tmp/snap$fam")" = "${want[$fam]}" ] || conflict=1
  done
  if [ -s "$tmp/payloadnft" ]; then
    command -v nft >/dev/null 2>&1 || { echo "@@DPA:error nft not found"; exit "$EXIT_SETUP_FAILED"; }
    nft_sha > "$tmp/snapnft"
    [ "$(cat "$tmp/snapnft")" = "$fpnft" ] || conflict=1
  fi
  [ "$conflict" = 0 ] && break
  # Changed since our read by a writer that ignores our lock. Hand back the fresh state (the
  # loop prints it) so the client re-plans without another exec.
  if [ "$attempt" -ge "$attempts" ]; then echo "@@DPA:conflict final $attempt"; exit "$EXIT_CONFLICT"; fi
  echo "@@DPA:conflict $attempt"
done

for fam in 4 6; do
  [ -s "$tmp/payload$fam" ] || continue
  # A payload whose rules match a set this plan builds first cannot be tested before the set
  # exists (iptables-restore checks it); its restore stays one transaction, and a failure rolls
  # the sets back with it.
  [ -s "$tmp/ipset$fam" ] && continue
  bin=${ipt[$fam]}
  if ! "$bin-restore" -w 10 --test --noflush < "$tmp/payload$fam" 2>"$tmp/err"; then
    echo "@@DPA:test-failed $fam"; cat "$tmp/err" >&2; exit "$EXIT_TEST_FAILED"
  fi
done
if compgen -G "$tmp/ipset*" >/dev/null && ! command -v ipset >/dev/null 2>&1; then
  echo "@@DPA:error ipset not found"; exit "$EXIT_SETUP_FAILED"
fi
if [ -s "$tmp/payloadnft" ] && ! nft -c -f "$tmp/payloadnft" 2>"$tmp/err"; then
  echo "@@DPA:test-failed nft"; cat "$tmp/err" >&2; exit "$EXIT_TEST_FAILED"
fi

# Our fate for the watchdog (see there): the last word it reads before EOF.
tell() { [ -z "$watching" ] || echo "$1" >&8; }
# Ends in ROLLBACK_FAILED: the rollback left the host's state unknown (the marker says so).
rollback_failed() {
  tell rollback-failed
  echo "@@DPA:rollback-failed $unknown_marker"; cat "$tmp/rberr" >&2; exit "$EXIT_ROLLBACK_FAILED"
}
# A later write that succeeds leaves the host in a known state again.
known() { rm -f "$unknown_marker"; }
start_watchdog() {
  # Without setsid (util-linux, like flock) there is no watchdog: EOF and the commit timeout
  # still roll back, a SIGKILL of this script before the commit does not.
  command -v setsid >/dev/null 2>&1 || return 0
  # The process substitution's subshell is not a process group leader, so setsid makes it a new
  # session in place and the exec'd bash reads the pipe's other end; stdout/stderr away from
  # the channel, so the SSH session can end without waiting for it. fd 9 (the lock) goes with it.
  exec 8> >(exec setsid bash -c "$BASH_EXECUTION_STRING" dpa-watchdog "$rule" "$tmp" >/dev/null 2>&1)
  watching=1
}

applied=""
for fam in 4 6 nft; do [ -s "$tmp/payload$fam" ] && { start_watchdog; break; }; done
pause_at before-apply
# apply_nft: our nftables table's one transaction (first or last, see the dialogue above).
apply_nft() {
  [ -s "$tmp/payloadnft" ] || return 0
  [ -n "$applied" ] && pause_at between-families
  echo "nft $applied" > "$tmp/applying"
  if ! nft -f "$tmp/payloadnft" 2>"$tmp/err"; then
    cat "$tmp/err" >&2
    if rollback "$applied"; then tell rolled-back; echo "@@DPA:apply-failed nft"; exit "$EXIT_APPLY_FAILED"; fi
    rollback_failed
  fi
  applied="nft $applied"
}
[ "$nftorder" = first ] && apply_nft
for fam in 4 6; do
  [ -s "$tmp/payload$fam" ] || continue
  [ -n "$applied" ] && pause_at between-families
  bin=${ipt[$fam]}
  # Recorded before the restore: a kill during it leaves the watchdog a family it must check.
  echo "$fam $applied" > "$tmp/applying"
  # The family's ipsets are built (and swapped in) before the rules that match them.
  if { [ -s "$tmp/ipset$fam" ] && ! ipset -exist restore < "$tmp/ipset$fam" 2>"$tmp/err"; } ||
    ! "$bin-restore" -w 10 --noflush < "$tmp/payload$fam" 2>"$tmp/err"; then
    cat "$tmp/err" >&2
    # This family too: its sets may be half-built (its rules, untouched, are skipped).
    if rollback "$fam $applied"; then tell rolled-back; echo "@@DPA:apply-failed $fam"; exit "$EXIT_APPLY_FAILED"; fi
    rollback_failed
  fi
  # Sets no rule matches any more; one still in use stays, and the verify sees it.
  [ -s "$tmp/ipsetdrop$fam" ] && ipset -exist restore < "$tmp/ipsetdrop$fam" 2>/dev/null
  applied="$fam $applied"
done
[ "$nftorder" = first ] || apply_nft

if [ -n "$applied" ]; then
  for fam in 4 6; do
    [ -s "$tmp/payload$fam" ] || continue
    bin=${ipt[$fam]}
    echo "@@DPA:new$fam"; "$bin-save" -t filter 2>/dev/null
  done
  if [ -s "$tmp/payloadnft" ]; then
    nt=$(nft_own); echo "@@DPA:newnft rc=$?"; [ -z "$nt" ] || printf '%s\n' "$nt"
  fi
  if sets_work; then echo "@@DPA:newsets"; own_sets; fi
  echo "@@DPA:await-commit"
  pause_at awaiting-commit
  answer=""
  IFS= read -r -t "$ctimeout" answer
  if [ "$answer" != "commit" ]; then
    if rollback "$applied"; then
      tell rolled-back; echo "@@DPA:rolled-back ${answer:-no-commit}"; exit "$EXIT_ROLLED_BACK"
    fi
    rollback_failed
  fi
  # From here on the new rules stand, whatever happens to us: the watchdog must not undo them.
  tell committed
  known
  echo "@@DPA:committed"
fi
# The guard's saved copies, script and units (guard-install.sh): after the commit, before anything
# that may end the script early, so the copies never lag behind the committed rules.
install_guard

# Cut live flows that the new rules would not let in (the ESTABLISHED fast path would keep
# them for days): one conntrack listing per family, matched by CUT_AWK against the policy lines
# the client sent, then one delete per flow to cut. What could not be cut is reported, never
# skipped in silence: `conntrack-unavailable <fam>` (no conntrack binary), `conntrack-list-failed
# <fam>` (the listing failed: nothing known, nothing cut) and `conntrack-failed <fam> <n>` (n
# flows whose delete failed and that are still there; a flow that ended by itself meanwhile is
# not a failure).
if [ -s "$tmp/conntrack" ]; then
  n=0
  for fam in ipv4 ipv6; do
    grep -q "^P $fam " "$tmp/conntrack" || continue
    if ! command -v conntrack >/dev/null 2>&1; then echo "@@DPA:conntrack-unavailable $fam"; continue; fi
    grep "^[PAB] $fam" "$tmp/conntrack" > "$tmp/policy"
    if grep -q "^B $fam " "$tmp/policy"; then
      # The subnets of the Docker bridges the chain exempts (named in the B lines), nothing else.
      inet=inet; [ "$fam" = ipv6 ] && inet=inet6
      ip -o -f "$inet" addr show 2>/dev/null |
        awk -v fam="$fam" 'NR == FNR { if ($1 == "B") b[$3] = 1; next } ($2 in b) { print "A", fam, $4 }' \
          "$tmp/policy" - > "$tmp/bridgenets"
      cat "$tmp/bridgenets" >> "$tmp/policy"
    fi
    if ! conntrack -L -f "$fam" > "$tmp/flows" 2>/dev/null; then echo "@@DPA:conntrack-list-failed $fam"; continue; fi
    awk -v fam="$fam" "$cut_awk" "$tmp/policy" - < "$tmp/flows" > "$tmp/cuts"
    failed=0
    while read -r proto src dst sport dport; do
      set -- -f "$fam" -p "$proto" -s "$src" -d "$dst" --sport "$sport" --dport "$dport"
      if conntrack -D "$@" >/dev/null 2>&1; then
        n=$((n + 1))
      elif conntrack -G "$@" >/dev/null 2>&1; then
        failed=$((failed + 1))
      fi
    done < "$tmp/cuts"
    [ "$failed" = 0 ] || echo "@@DPA:conntrack-failed $fam $failed"
  done
  echo "@@DPA:conntrack-deleted $n"
fi

# Persist: the rules files are never worse than before. Each family's save goes to a temp file
# beside the target, is checked (something there unless the family has no rules at all, every
# table ends in COMMIT, `<bin>-restore --test` loads it), is fsynced, takes the old file's mode
# and owner, and only then replaces the old file by rename; the directory is fsynced after it.
# On any failure the old file is untouched (we never write to it), the temp file is removed and
# `@@DPA:persist-failed <fam> <reason> <path>` names what the client turns into a fix
# (failure.ts): no-directory, disk-full, read-only, not-writable, save-failed, incomplete,
# test-rejected, write-failed.
persist_failed() { # reason: removes the temp file, reports why and ends the script
  [ -z "$t" ] || rm -f "$t"
  t=""
  echo "@@DPA:persist-failed $fam $1 $path"; cat "$tmp/err" >&2; exit "$EXIT_PERSIST_FAILED"
}
# The errno text of a failed write (dd prints it) names the cause; `test -w` catches the rest.
write_failed() {
  if grep -q 'No space left on device\|Disk quota exceeded' "$tmp/err"; then persist_failed disk-full
  elif grep -q 'Read-only file system' "$tmp/err"; then persist_failed read-only
  elif [ ! -w "$dir" ] || grep -q 'Permission denied' "$tmp/err"; then persist_failed not-writable
  fi
  persist_failed write-failed
}
if [ "$persist" = 1 ]; then
  pause_at before-persist
  for f in "4:$v4path" "6:$v6path"; do
    fam=${f%%:*}; path=${f#*:}
    [ "$path" = "-" ] && continue
    # A family whose save failed in the read (no ip6tables, IPv6 off) has nothing to save.
    bin=${ipt[$fam]}
    if [ "$fam" = 4 ]; then rc=$rc4; else rc=$rc6; fi
    [ "$rc" = 0 ] || continue
    dir=$(dirname "$path")
    : > "$tmp/err"
    [ -d "$dir" ] || persist_failed no-directory
    t="$dir/.$(basename "$path").dpa-tmp.$$"
    # dd, not `> "$t"` + `sync "$t"`: dd reports a failed write with its errno text (the save
    # tool may not check its stdout), and conv=fsync has flushed the data before dd exits on
    # every coreutils, where `sync FILE` needs coreutils >= 8.24 (older ones ignore the operand).
    # Rules on our ipsets are written out one per source (expand_sets, report-state.sh): the file
    # then loads at boot, before any set exists, without ipset-persistent.
    "$bin-save" 2>"$tmp/saveerr" | expand_sets | dd of="$t" conv=fsync status=none 2>"$tmp/err"
    saved=("${PIPESTATUS[@]}")
    [ "${saved[2]}" = 0 ] || write_failed
    [ "${saved[0]}" = 0 ] || { cat "$tmp/saveerr" > "$tmp/err"; persist_failed save-failed; }
    # Empty only where the family has no rules at all (ip6tables-save prints nothing on a host
    # without IPv6 rules); anything else empty is a save that went wrong.
    if [ ! -s "$t" ] && "$bin-save" -t filter 2>/dev/null | grep -q '^-A '; then
      echo "$bin-save printed nothing although the filter table has rules" > "$tmp/err"
      persist_failed incomplete
    fi
    # Every table ends with COMMIT (a save cut short by a full disk ends mid-table).
    awk '/^\*/ { if (open != "") print open " ends without COMMIT"; open = $0; next }
         /^COMMIT$/ { if (open == "") print "COMMIT outside a table at line " NR; open = ""; next }
         END { if (open != "") print open " ends without COMMIT" }' "$t" > "$tmp/err"
    [ -s "$tmp/err" ] && persist_failed incomplete
    "$bin-restore" -w 10 --test < "$t" 2>"$tmp/err" || persist_failed test-rejected
    if [ -e "$path" ]; then
      { chmod --reference="$path" "$t" && chown --reference="$path" "$t"; } 2>"$tmp/err" || write_failed
    fi
    mv -f "$t" "$path" 2>"$tmp/err" || write_failed
    t=""
    # The rename is done and cannot be undone; the directory's fsync makes it survive a crash.
    sync "$dir" 2>/dev/null || sync
    echo "@@DPA:persisted $fam $(saved_fp < "$path")"
  done
fi
known
echo "@@DPA:done"
