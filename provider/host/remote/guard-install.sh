# shellcheck shell=bash
# install_guard: the sync script's guard step (the loader puts this file in place of sync.sh's
# `. ./guard-install.sh`). Runs after the commit (or when nothing was applied) and BEFORE the
# conntrack cut and the persist step, under the host lock, so the guard never holds an older
# copy than the live rules and never runs between the apply and this step.
#
# What the client sent (sections of the plan, see planMessage in provider/host/dialogue.ts):
# guard-copy4 / guard-copy6 / guard-copynft (this allowlist's saved copy: iptables rules per
# family, or its nftables table; empty = remove it), guard-script (the
# guard script), guard-service + guard-timer + guard-listener (the systemd units). Nothing sent: nothing done.
# Every file is written to a temp file beside its target, fsynced and renamed over it. When no
# copy is left on the host afterwards, the guard is removed (units disabled and deleted, script
# and directories deleted). Reports `@@DPA:guard installed systemd|no-systemd`, `@@DPA:guard
# removed` and, for what failed (never fatal: the rules are live), `@@DPA:guard-failed <what>`
# with the tool's words on stderr. A copy that could not be written is removed, so the guard
# never puts back rules older than the live ones.
# shellcheck disable=SC2154 # tmp, rule, guard_dir, guard_unit, guard_listener, unit_dir: set by sync.sh and report-state.sh
install_guard() {
local sent=0 f fam dst copies="$guard_dir/allowlists" systemd=no
for f in guard-copy4 guard-copy6 guard-copynft guard-script guard-service guard-timer guard-listener; do [ -e "$tmp/$f" ] && sent=1; done
[ "$sent" = 1 ] || return 0
[ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1 && systemd=yes
: >"$tmp/gerr"
guard_failed() { echo "@@DPA:guard-failed $1"; cat "$tmp/gerr" >&2; : >"$tmp/gerr"; }
put_file() { # src dst mode: temp file beside dst, fsynced, renamed over it
  local gt="$2.dpa-tmp.$$"
  if dd if="$1" of="$gt" conv=fsync status=none 2>>"$tmp/gerr" && chmod "$3" "$gt" 2>>"$tmp/gerr" &&
    mv -f "$gt" "$2" 2>>"$tmp/gerr"; then return 0; fi
  rm -f "$gt"
  return 1
}
mkdir -p "$copies" 2>>"$tmp/gerr" || guard_failed directory
for fam in 4 6 nft; do
  [ -e "$tmp/guard-copy$fam" ] || continue
  dst="$copies/$rule.v$fam"; [ "$fam" = nft ] && dst="$copies/$rule.nft"
  if [ -s "$tmp/guard-copy$fam" ]; then
    put_file "$tmp/guard-copy$fam" "$dst" 0644 && continue
    rm -f "$dst" 2>>"$tmp/gerr"
    guard_failed "copy$fam"
  else
    rm -f "$dst" 2>>"$tmp/gerr" || guard_failed "remove-copy$fam"
  fi
done
if ! compgen -G "$copies/*.v[46]" >/dev/null && ! compgen -G "$copies/*.nft" >/dev/null; then
  # The last allowlist on this host went: so does the guard.
  if [ "$systemd" = yes ]; then
    systemctl disable --now "$guard_unit.timer" "$guard_unit.service" "$guard_listener" >/dev/null 2>>"$tmp/gerr"
  fi
  rm -f "$unit_dir/$guard_unit.service" "$unit_dir/$guard_unit.timer" "$unit_dir/$guard_listener" \
    "$guard_dir/guard.sh" 2>>"$tmp/gerr" ||
    guard_failed remove
  [ "$systemd" = yes ] && systemctl daemon-reload 2>>"$tmp/gerr"
  rmdir "$copies" "$guard_dir" 2>/dev/null
  echo "@@DPA:guard removed"
  return 0
fi
if [ -e "$tmp/guard-script" ]; then put_file "$tmp/guard-script" "$guard_dir/guard.sh" 0755 || guard_failed script; fi
if [ "$systemd" = yes ] && [ -e "$tmp/guard-service" ] && [ -e "$tmp/guard-timer" ] && [ -e "$tmp/guard-listener" ]; then
  # The listener is started (restarted: it may run an older script) only where its conditions
  # hold (firewalld installed); elsewhere systemd skips the start and that is not a failure.
  if put_file "$tmp/guard-service" "$unit_dir/$guard_unit.service" 0644 &&
    put_file "$tmp/guard-timer" "$unit_dir/$guard_unit.timer" 0644 &&
    put_file "$tmp/guard-listener" "$unit_dir/$guard_listener" 0644 &&
    systemctl daemon-reload 2>>"$tmp/gerr" &&
    systemctl enable "$guard_unit.service" >/dev/null 2>>"$tmp/gerr" &&
    systemctl enable --now "$guard_unit.timer" >/dev/null 2>>"$tmp/gerr" &&
    systemctl enable "$guard_listener" >/dev/null 2>>"$tmp/gerr" &&
    systemctl restart "$guard_listener" >/dev/null 2>>"$tmp/gerr"; then :; else guard_failed units; fi
fi
echo "@@DPA:guard installed $([ "$systemd" = yes ] && echo systemd || echo no-systemd)"
}
