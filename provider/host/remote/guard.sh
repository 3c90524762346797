#!/usr/bin/env bash
# dpa-guard: puts back the rules of every allowlist saved on this host, and only those, without a
# Pulumi run: at boot after dockerd built its chains, after every dockerd restart (systemd runs it
# `--once`, wanted by docker.service), after every firewalld reload (`--on-firewalld-reload`, its
# listener unit) and every 20 s (its timer; `--loop SECONDS` where there is no systemd). Installed by the provider at /var/lib/docker-port-allowlist/guard.sh with its saved
# copies beside it (allowlists/<ruleName>.v4|.v6, or .nft on Docker's nftables backend), removed
# with the last allowlist.
#
# usage: guard.sh --once | --loop SECONDS | --on-firewalld-reload
#
# One round, under the provider's host lock (/run/docker-port-allowlist.lock; when a `pulumi up`
# holds it for more than 3 s the round is skipped, the next one comes): per family, create the
# ipsets the copies hold that are gone (core's ./ipset.ts; a boot empties them) and add back the
# elements missing from those that exist, read `<tool>-save -t filter`, let guard.awk compare it
# with the saved copies, and when something is missing apply what it prints in ONE
# `<tool>-restore --noflush` transaction. It never flushes or
# rewrites a chain it does not own and deletes only its own rules, by their exact spec. Silent
# when everything is in place; prints one `dpa-guard: restored ...` line per thing put back (the
# journal keeps them) and exits 1 when a family could not be read or restored.
#
# Assembled like read.sh and sync.sh by provider/host/scripts.ts (`. ./<file>` lines replaced by
# the file, markers by shell-quoted values), then written to the host as one file.
# shellcheck source-path=SCRIPTDIR
. ./prelude.sh

guard_dir='@GUARD_DIR@'
# guard.awk, shell-quoted into the marker by the loader (a real file, tested on its own).
guard_awk='@GUARD_AWK@'
lock='@HOST_LOCK_PATH@'

usage() { echo "usage: $0 --once | --loop SECONDS | --on-firewalld-reload" >&2; exit 2; }
interval=""
listen=no
case "${1:-}" in
  --once) ;;
  --loop) interval="${2:-}"; case "$interval" in ''|*[!0-9]*|0) usage ;; esac ;;
  --on-firewalld-reload) listen=yes ;;
  *) usage ;;
esac
command -v flock >/dev/null 2>&1 || { echo "dpa-guard: flock is not installed (util-linux); nothing done" >&2; exit 1; }
tmp=$(mktemp -d /tmp/dpa-guard.XXXXXX) || { echo "dpa-guard: mktemp failed; nothing done" >&2; exit 1; }
trap 'rm -rf "$tmp"' EXIT
trap 'exit 0' TERM INT

ipt=([4]=iptables [6]=ip6tables)
round() { # one round over both families; 0 = all in place (or put back), 1 = a family failed
  local status=0 fam bin f copies set what
  if ! exec 8>>"$lock"; then echo "dpa-guard: cannot open $lock; nothing done" >&2; return 1; fi
  if ! flock -w 3 8; then
    holder=$(lock_holder "$lock")
    echo "dpa-guard: $lock is held (${holder:-a pulumi operation?}); skipping this round"
    exec 8>&-
    return 0
  fi
  printf 'guard pid=%s since=%s\n' "$$" "$(date +%s)" > "$lock" 2>/dev/null
  for fam in 4 6; do
    copies=()
    for f in "$guard_dir/allowlists/"*".v$fam"; do [ -f "$f" ] && copies+=("$f"); done
    [ "${#copies[@]}" -gt 0 ] || continue
    bin=${ipt[$fam]}
    # A copy whose sources are in an ipset (core's ./ipset.ts) holds the set as `ipset save`
    # prints it (create and add lines): a set that is gone (a reboot empties the kernel's sets)
    # is created and filled first, and elements missing from one that exists (`ipset flush`,
    # `ipset del`) are added back, in one `ipset restore` each, so the rules match the saved list
    # again. Elements someone added are left: a refresh reports them.
    if grep -q '^create ' "${copies[@]}"; then
      awk '$1 == "create" { print $2 }' "${copies[@]}" >"$tmp/sets"
      while read -r set; do
        awk -v s="$set" '$1 == "add" && $2 == s' "${copies[@]}" | sort >"$tmp/want"
        if ipset list -n "$set" >/dev/null 2>&1; then
          ipset save "$set" 2>/dev/null | awk '$1 == "add"' | sort | comm -13 - "$tmp/want" >"$tmp/missing"
          [ -s "$tmp/missing" ] || continue
          what="$(wc -l <"$tmp/missing") element(s) of $set"
        else
          cp "$tmp/want" "$tmp/missing"
          what=$set
        fi
        { awk -v s="$set" '$1 == "create" && $2 == s' "${copies[@]}"; cat "$tmp/missing"; } >"$tmp/set"
        if ipset -exist restore <"$tmp/set" 2>"$tmp/err"; then
          echo "dpa-guard: restored (ipset): $what"
        else
          echo "dpa-guard: ipset restore of $set failed: $(head -c 500 "$tmp/err")" >&2; status=1
        fi
      done <"$tmp/sets"
    fi
    if ! "$bin-save" -t filter >"$tmp/live" 2>"$tmp/err"; then
      echo "dpa-guard: $bin-save failed: $(head -c 500 "$tmp/err")" >&2; status=1; continue
    fi
    : >"$tmp/log"
    if ! awk -v logfile="$tmp/log" "$guard_awk" "${copies[@]}" phase=live "$tmp/live" >"$tmp/payload"; then
      echo "dpa-guard: reading the $bin rules failed; nothing restored" >&2; status=1; continue
    fi
    [ -s "$tmp/payload" ] || continue
    if "$bin-restore" -w 10 --noflush <"$tmp/payload" 2>"$tmp/err"; then
      sed "s/^/dpa-guard: restored ($bin): /" "$tmp/log"
    else
      echo "dpa-guard: $bin-restore failed, nothing of it applied: $(head -c 500 "$tmp/err")" >&2
      sed "s/^/dpa-guard: not restored ($bin): /" "$tmp/log" >&2
      status=1
    fi
  done
  # Docker's nftables backend: each copy is an allowlist's whole table (its first line names it:
  # `table <family> <name> {`); one that is gone (a reboot, `nft flush ruleset`) is loaded again
  # in one `nft -f`. One that exists is left as it is: a refresh reports drift in it.
  for f in "$guard_dir/allowlists/"*.nft; do
    [ -f "$f" ] || continue
    command -v nft >/dev/null 2>&1 || { echo "dpa-guard: nft is not installed; $f not restored" >&2; status=1; break; }
    read -r _ nfam nname _ < "$f"
    nft list table "$nfam" "$nname" >/dev/null 2>&1 && continue
    if nft -f "$f" 2>"$tmp/err"; then
      echo "dpa-guard: restored (nft): table $nfam $nname"
    else
      echo "dpa-guard: nft -f $f failed, nothing of it applied: $(head -c 500 "$tmp/err")" >&2
      status=1
    fi
  done
  exec 8>&-
  return "$status"
}

if [ "$listen" = yes ]; then
  # firewalld's D-Bus signal Reloaded comes once a reload has rebuilt its rules (and removed
  # ours). busctl (systemd's own; --match since systemd 232) prints each matching message over a
  # few lines, one of them holding "Member=Reloaded", and "Monitoring bus message stream." on
  # stderr once it listens. One round first: a reload may have come before that. Ends when
  # busctl does (the bus went away); its unit restarts it.
  command -v busctl >/dev/null 2>&1 || { echo "dpa-guard: busctl (systemd) is not installed; cannot listen for firewalld reloads" >&2; exit 1; }
  round
  busctl monitor --system --match "type='signal',interface='org.fedoraproject.FirewallD1',member='Reloaded'" |
    while IFS= read -r line; do
      case "$line" in *" Member=Reloaded"*) round ;; esac
    done
  echo "dpa-guard: busctl monitor ended; no longer listening for firewalld reloads" >&2
  exit 1
fi
if [ -z "$interval" ]; then round; exit; fi
while :; do
  round
  sleep "$interval" &
  wait $!
done
