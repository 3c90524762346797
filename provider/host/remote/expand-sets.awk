# expand-sets.awk: a rules text (`iptables-save`) with each rule that matches one of this tool's
# ipsets (`-m set --match-set dpa4-<ruleName> src`, core's ./ipset.ts) written out as one `-s`
# rule per element of the set, for the rules files a boot restores (sync.sh's persist step) and
# their fingerprint (report-state.sh). Such a file loads where no ipset exists yet (at boot,
# before the guard creates the sets again, or on a host without ipset-persistent); it polices
# the same sources, one rule each, until the guard puts the set back.
#
# Operands: `ipset save` (any sets; only this tool's are used), then `phase=rules`, then the
# rules text. Rules of other owners and other sets pass through unchanged. An empty set of ours
# matches nothing, so its rule is left out.
phase != "rules" {
  if ($1 == "create" && $2 ~ /^dpa[46]-/) n[$2] = 0
  else if ($1 == "add" && ($2 in n)) { n[$2]++; e[$2, n[$2]] = $3 }
  next
}
match($0, / -m set --match-set [^ ]+ src /) {
  name = substr($0, RSTART + 20, RLENGTH - 25)
  if (name in n) {
    head = substr($0, 1, RSTART - 1)
    tail = substr($0, RSTART + RLENGTH - 1)
    for (i = 1; i <= n[name]; i++) print head " -s " e[name, i] tail
    next
  }
}
{ print }
