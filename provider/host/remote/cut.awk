# Decides which live flows to cut after a commit: run by sync.sh as
#   awk -v fam=ipv4|ipv6 "$cut_awk" POLICY -
# POLICY: the lines of the family the client sent (`conntrackPolicyOf` in provider/core/conntrack.ts, carried in the plan):
#   P <fam> <proto> <lo> <hi> <dst|->   a policed port range
#   A <fam> <cidr>                      an allowed network
#   B <fam> <bridge>                    (ignored here: sync.sh then adds an A line per bridge subnet)
# Second input: `conntrack -L -f <family>`. Prints `proto src dst sport dport` of each flow to a
# policed port that was DNATed (the reply comes from another address than the original
# destination: a connection to a published port, not an outbound flow of a container) and whose
# original source no allowed network contains.
# Portable awk only (no gawk extensions): test/host/cut.test.ts runs it with mawk and busybox.
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
