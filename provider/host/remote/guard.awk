# guard.awk: what the guard (guard.sh) puts back in one family, as ONE `iptables-restore
# --noflush` transaction; nothing at all when every saved line is in place.
#
# Operands: the saved copies of one family (<ruleName>.v4 or .v6, written by the provider from
# core's renderGuardCopy: `-A` lines exactly as iptables-save prints them), then `phase=live`,
# then the live `iptables-save -t filter` of that family. Variable `logfile`: one line per thing
# put back is written there (guard.sh prints them).
#
# What is checked and restored, and nothing else (rules of other owners are never named, so
# never deleted, moved or flushed):
# - each allowlist's chain (DPA-<name>): exactly the saved lines, in order, owner line last.
#   Missing: created; different: rewritten (declaring it with --noflush empties it first).
# - each saved jump in DOCKER-USER and INPUT: present among the chain's leading rules of this
#   tool (comment "dpa:..."), i.e. above every foreign rule. Otherwise every copy of it is
#   deleted by its exact spec and one is inserted at the top.
# - `-A FORWARD ... "dpa::forward" -j DOCKER-USER` in a copy means: FORWARD must reach DOCKER-USER
#   first. When its first rule is not an unconditional jump to DOCKER-USER (Docker's or ours),
#   our tagged jumps are deleted by spec and one is inserted at the top (as the planner does).
# - DOCKER-USER itself, when it is gone (a firewalld reload deletes it) and a copy jumps from it.
function spec(line) { sub(/^-A [^ ]+ /, "", line); return line }
function say(text) { print text > logfile }
# An unconditional jump to DOCKER-USER, comment or not (parse.ts: isForwardJump).
function forward_jump(line) {
  gsub(/ -m comment --comment ("[^"]*"|[^ ]+)/, "", line)
  return line == "-A FORWARD -j DOCKER-USER"
}
phase != "live" {
  if ($1 != "-A") next
  c = $2
  if (c == "FORWARD") { fwd = $0; needdu = 1; next }
  if (c == "DOCKER-USER" || c == "INPUT") {
    nj++; jline[nj] = $0; jchain[nj] = c
    if (c == "DOCKER-USER") needdu = 1
    next
  }
  if (!(c in nown)) { no++; ochain[no] = c; nown[c] = 0 }
  nown[c]++; oline[c, nown[c]] = $0
  next
}
/^:/ { exists[substr($1, 2)] = 1; next }
/^-A / {
  c = $2; nlive[c]++; live[c, nlive[c]] = $0
  # The leading run of this tool's rules (above every foreign rule).
  if (!(c in broken)) {
    if ($0 ~ /--comment "dpa:/) lead[c] = nlive[c]; else broken[c] = 1
  }
  next
}
END {
  if (needdu && !("DOCKER-USER" in exists)) {
    decl = decl ":DOCKER-USER - [0:0]\n"
    say("chain DOCKER-USER was missing: created")
  }
  for (i = 1; i <= no; i++) {
    c = ochain[i]
    same = (c in exists) && nlive[c] == nown[c]
    for (k = 1; same && k <= nown[c]; k++) if (live[c, k] != oline[c, k]) same = 0
    if (same) continue
    decl = decl ":" c " - [0:0]\n"
    for (k = 1; k <= nown[c]; k++) body = body oline[c, k] "\n"
    say("chain " c (!(c in exists) ? " was missing: created" : nlive[c] ? " differed: rewritten" : " was empty: filled") " with its " nown[c] " saved rules")
  }
  # Backwards, so that jumps inserted at the top keep the order of the copy.
  for (j = nj; j >= 1; j--) {
    c = jchain[j]; line = jline[j]
    placed = 0; copies = 0
    for (k = 1; k <= nlive[c]; k++) if (live[c, k] == line) { copies++; if (k <= lead[c]) placed = 1 }
    if (placed) continue
    for (n = 0; n < copies; n++) dels = dels "-D " c " " spec(line) "\n"
    ins = ins "-I " c " 1 " spec(line) "\n"
    jlog[j] = (copies > 0 ? "jump below a foreign rule, moved to the top of " : "jump missing, inserted at the top of ") c ": " line
  }
  for (j = 1; j <= nj; j++) if (j in jlog) say(jlog[j])
  if (fwd != "" && !(nlive["FORWARD"] > 0 && forward_jump(live["FORWARD", 1]))) {
    for (k = 1; k <= nlive["FORWARD"]; k++) if (live["FORWARD", k] == fwd) dels = dels "-D FORWARD " spec(fwd) "\n"
    ins = ins "-I FORWARD 1 " spec(fwd) "\n"
    say("FORWARD did not jump to DOCKER-USER first: inserted " fwd " at the top")
  }
  if (decl body dels ins == "") exit
  printf "*filter\n%s%s%s%sCOMMIT\n", decl, body, dels, ins
}
