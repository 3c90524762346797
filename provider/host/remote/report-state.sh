# shellcheck shell=bash
# report_state: facts + `iptables-save -t filter` per family, sections meta, save4, save4err,
# save6, save6err, nat4, nat6, other, nftnat4, nftnat6 (Docker's nftables backend only),
# nfttable, nftbridges (where nft exists), ipsets (where ipset works), persisted, unknown-state
# (only when there is one), guard..., end (parsed by parseSnapshot in provider/host/snapshot.ts).
# Reports facts only; the client decides what is an error, so all findings reach the user from
# one exchange. Reads $rule (through saved_fp), $v4path and $v6path; leaves $rc4 and $rc6 (the saves'
# exit codes) for sync.sh. The loader puts this file in place of `. ./report-state.sh`.
# The guard's paths (provider/core/guard.ts), shell-quoted into the markers by the loader.
guard_dir='@GUARD_DIR@'
guard_unit='@GUARD_UNIT@'
guard_listener='@GUARD_LISTENER@'
unit_dir='@GUARD_UNIT_DIR@'
# Where a rollback that failed for good leaves its marker (UNKNOWN_STATE_DIR in
# provider/host/scripts.ts): `unknown.<rule>`, the host's state for that allowlist is unknown.
unknown_dir='@UNKNOWN_STATE_DIR@'
# shellcheck disable=SC2154 # rule: set by read.sh / sync.sh, which include this file
unknown_path() { printf '%s' "$unknown_dir/unknown.$rule"; }
# Where Docker's nftables backend DNATs published ports (provider/core/published.ts).
nft_table='@NFT_TABLE@'
nft_nat_chain='@NFT_NAT_CHAIN@'
nft_bridge_map='@NFT_BRIDGE_MAP@'
# Our own nftables table for this allowlist (core's ./nft.ts): `<family> <prefix><rule>`.
nft_own_family='@NFT_FAMILY@'
nft_own_prefix='@NFT_TABLE_PREFIX@'
# nft_own: our table as nft lists it (nothing, exit 1, when there is none); nft_sha: the digest
# (nft_digest of a listing) the client sends back with a plan and the apply compares
# (compare-and-swap), of the listing exactly as report_state prints it.
# shellcheck disable=SC2154 # rule: set by read.sh / sync.sh, which include this file
nft_own() { nft -s list table "$nft_own_family" "$nft_own_prefix$rule" 2>/dev/null; }
nft_digest() { printf '%s\n' "$1" | sha256sum | cut -d' ' -f1; }
nft_sha() { nft_digest "$(nft_own)"; }
# This allowlist's ipsets (core's ./ipset.ts): the prefixes (live and temporary set, per family)
# + the ruleName. own_sets: `ipset save` of those that exist.
set_prefixes='@SET_PREFIXES@'
own_sets() { local p; for p in $set_prefixes; do ipset save "$p$rule" 2>/dev/null; done; }
# sets_work: ipset works here (the tool, and the kernel's ip_set module: a host whose kernel lacks
# it keeps its lists as rules). Where it does not, no ipsets section is printed.
sets_work() { command -v ipset >/dev/null 2>&1 && ipset list -n >/dev/null 2>&1; }
# expand-sets.awk, shell-quoted into the marker by the loader. expand_sets: the rules text on
# stdin with every rule on one of this tool's sets written out, one rule per element, as the
# rules files keep them (sync.sh's persist step); unchanged on a host without ipset.
expand_awk='@EXPAND_SETS_AWK@'
expand_sets() {
  if command -v ipset >/dev/null 2>&1; then awk "$expand_awk" <(ipset save 2>/dev/null) phase=rules -; else cat; fi
}
# shellcheck disable=SC2154 # v4path, v6path: set by read.sh / sync.sh, which include this file
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
# What Docker publishes: only the DNAT lines of the nat DOCKER chain under `*nat`, so a host with a
# large nat table (kube-proxy's) sends no more than one line per published port. Sections nat4 and
# nat6, the save's exit code in the header (parsed by parseSnapshot; read by core's published.ts).
for nf in 4 6; do
  natsave=iptables-save; [ "$nf" = 6 ] && natsave=ip6tables-save
  # pipefail: a failed save fails the whole; a save that works always has its `*nat` line.
  nat=$(set -o pipefail; "$natsave" -t nat 2>/dev/null | grep -E '^(\*nat|COMMIT|-A DOCKER .* -j DNAT .*)$'); natrc=$?
  echo "@@DPA:nat$nf rc=$natrc"
  printf '%s\n' "$nat"
done
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
# Docker's nftables backend has no DOCKER-USER; its DNAT lines (one per published port) are in
# sections nftnat4 / nftnat6, present only when the chain exists (parsed like nat4 / nat6).
if ! printf '%s\n' "$save4" | grep -q '^:DOCKER-USER ' && command -v nft >/dev/null 2>&1; then
  for nf in 4 6; do
    nftfam=ip; [ "$nf" = 6 ] && nftfam=ip6
    if nftnat=$(nft list chain "$nftfam" "$nft_table" "$nft_nat_chain" 2>/dev/null); then
      echo "@@DPA:nftnat$nf"
      printf '%s\n' "$nftnat" | grep ' dnat '
    fi
  done
fi
# Our nftables table (sections nfttable, with rc and digest, and nftbridges: Docker's bridges as
# the keys of its nftables interface maps), wherever nft exists: on an nftables host it is the
# allowlist; on an iptables host, what is left of it after a switch.
if command -v nft >/dev/null 2>&1; then
  nt=$(nft_own); ntrc=$?
  echo "@@DPA:nfttable rc=$ntrc sha=$(nft_digest "$nt")"
  [ "$ntrc" = 0 ] && printf '%s\n' "$nt"
  echo "@@DPA:nftbridges"
  for nf in ip ip6; do nft list map "$nf" "$nft_table" "$nft_bridge_map" 2>/dev/null; done | grep -o '"[^"]*" : jump '
  # The jumps of every allowlist's table (any owner): what polices Docker's nftables ports.
  echo "@@DPA:nftjumps"
  nft list tables 2>/dev/null | while read -r _ nf name; do
    case "$nf $name" in
      "$nft_own_family $nft_own_prefix"*)
        for c in forward input; do nft -s list chain "$nf" "$name" "$c" 2>/dev/null | grep ' jump allowlist$'; done ;;
    esac
  done
fi
# This allowlist's ipsets (section ipsets), wherever ipset works.
if sets_work; then echo "@@DPA:ipsets"; own_sets; fi
echo "@@DPA:persisted"
for f in "4:$v4path" "6:$v6path"; do
  fam=${f%%:*}; path=${f#*:}
  if [ "$path" = "-" ]; then echo "v$fam=off"
  elif [ ! -e "$path" ]; then echo "v$fam=missing"
  elif [ ! -r "$path" ]; then echo "v$fam=unreadable"
  else echo "v$fam=$(saved_fp < "$path")"
  fi
done
[ "$rc4" = 0 ] && echo "live4=$(printf '%s\n' "$save4" | expand_sets | saved_fp)"
[ "$rc6" = 0 ] && echo "live6=$(printf '%s\n' "$save6" | expand_sets | saved_fp)"
# A rollback of this allowlist that failed for good (sync.sh's rollback): what it left.
if [ -f "$(unknown_path)" ]; then echo "@@DPA:unknown-state $(unknown_path)"; cat "$(unknown_path)"; fi
report_guard
echo "@@DPA:end"
}
# The guard (guard.sh): sections guard (facts: systemd, sha256 of its script and of its units -
# service, timer, firewalld listener - and their state) and guardcopy4/guardcopy6/guardcopynft
# (this allowlist's saved copies, `present` or `missing`), parsed by parseGuardReport in
# provider/host/snapshot.ts.
# shellcheck disable=SC2154 # rule: set by read.sh / sync.sh, which include this file
report_guard() {
echo "@@DPA:guard"
systemd=no; [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1 && systemd=yes
echo "systemd=$systemd"
for f in "script:$guard_dir/guard.sh" "service:$unit_dir/$guard_unit.service" "timer:$unit_dir/$guard_unit.timer" \
  "listener:$unit_dir/$guard_listener"; do
  if [ -f "${f#*:}" ]; then echo "${f%%:*}=$(sha256sum < "${f#*:}" | cut -d" " -f1)"; else echo "${f%%:*}=missing"; fi
done
if [ "$systemd" = yes ]; then
  echo "serviceEnabled=$(systemctl is-enabled "$guard_unit.service" 2>/dev/null | head -n 1)"
  echo "timerEnabled=$(systemctl is-enabled "$guard_unit.timer" 2>/dev/null | head -n 1)"
  echo "timerActive=$(systemctl is-active "$guard_unit.timer" 2>/dev/null | head -n 1)"
  echo "listenerEnabled=$(systemctl is-enabled "$guard_listener" 2>/dev/null | head -n 1)"
fi
for fam in 4 6 nft; do
  f="$guard_dir/allowlists/$rule.v$fam"; [ "$fam" = nft ] && f="$guard_dir/allowlists/$rule.nft"
  if [ -f "$f" ]; then echo "@@DPA:guardcopy$fam present"; awk 1 "$f"; else echo "@@DPA:guardcopy$fam missing"; fi
done
}
