#!/usr/bin/env bash
# A lab of real Docker hosts on one machine, each host a network namespace reached over real
# SSH. Used by the tests (through lab/index.ts) and by humans and the demo:
#
#   bash lab/lab.sh up [--docker N] [--light N] [--clients N] [--ipv6] [--docker-ipv6 on|off]
#                      [--docker-version 20.10|29[,...]] [--firewall-backend iptables|nftables[,...]]
#                      [--light-layout docker29|docker20] [--owner-pid PID]
#       prints the path of the lab's lab.json (the LabData of lab/index.ts) on stdout.
#       --docker-version and --firewall-backend take one value for every docker host or a
#       comma-separated list, one per docker host (h0, h1, ...; the last one repeats): 29 (the
#       default) is built by lab/docker29.sh and runs its own containerd, 20.10 is Debian's dockerd.
#       --ipv6 gives every namespace an IPv6 address and (--docker-ipv6 on, the default) starts
#       the daemons with IPv6 and ip6tables; --docker-ipv6 off leaves dockerd's IPv6 off, as
#       Docker's defaults do: containers IPv4-only, docker-proxy serving [::]:8080 (light hosts
#       then get no IPv6 Docker chains).
#   bash lab/lab.sh down ID          tear one lab down (namespaces, daemons, mounts, files)
#   bash lab/lab.sh down-all [--stale] tear down every lab (or only those whose owner died)
#   bash lab/lab.sh status           list labs
#   bash lab/lab.sh probe ID CLIENT HOST PORT tcp|udp [4|6]   real traffic, prints open|closed
#   bash lab/lab.sh reboot ID HOST [--no-restore]   restart a docker host's firewall and dockerd
#
# Layout of one lab (ID = dpaNNN, NNN = its slot):
#   root ns --veth ID"r"/up-- ID-sw (bridge br0) --veth-- ID-hK (hosts), ID-cK (clients), ID-out
#   IPv4 198.(18+NNN/256).(NNN%256).0/24: root .1, outside .2, hosts .10-.199, clients .200-.249
#   IPv6 2001:db8:0:NNN(hex)::/64 with the same host numbers.
# Every lab has its own slot, switch namespace and addresses, so labs of parallel jest workers
# never collide. Everything the lab makes is written to its registry BEFORE it is made, so
# `down`/`down-all` remove it even after a crash, and never touch what the lab did not make.
set -euo pipefail
shopt -s nullglob

LAB_ROOT=${DPA_LAB_ROOT:-/run/dpa-lab}
LABS="$LAB_ROOT/labs"
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
MAX_SLOTS=512 # 198.18.0.0/15 holds 512 /24s
MAX_HOSTS=190
MAX_CLIENTS=50
# The daemon's own client; the newer client on PATH also works but the matching one avoids
# API-version negotiation noise in the logs.
# The provider's host-wide lock (provider/host/remote/sync.sh); each lab host gets its own.
HOST_LOCK=/run/docker-port-allowlist.lock
# The guard's directory on a host (provider/core/guard.ts GUARD_DIR): each lab host has its own.
GUARD_DIR=/var/lib/docker-port-allowlist
DOCKER_CLI=/usr/bin/docker
[[ -x $DOCKER_CLI ]] || DOCKER_CLI=docker

die() {
  echo "lab: $*" >&2
  exit 1
}
log() { if [[ -z ${DPA_LAB_QUIET:-} ]]; then echo "lab: $*" >&2 || true; fi; }

# ---------------------------------------------------------------- process identity helpers
# A pid is only "ours" while its start time matches what we recorded, so a recycled pid of
# an unrelated process is never signalled.
# Fields after the ")" closing the command name (which may hold spaces): state is the 1st,
# start time the 20th (fields 3 and 22 of proc(5)).
proc_fields() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  echo "$stat"
}
starttime() {
  local s f
  s=$(proc_fields "$1") || return 0
  read -ra f <<<"$s"
  echo "${f[19]:-}"
}
alive_as() { # a zombie counts as dead: it is only waiting for its parent to reap it
  local s f
  s=$(proc_fields "$1") || return 1
  read -ra f <<<"$s"
  [[ ${f[0]} != Z && ${f[19]} == "$2" ]]
}

# Children of a pid (one level), from /proc/<pid>/task/*/children.
children_of() { cat /proc/"$1"/task/*/children 2>/dev/null | tr ' ' '\n' | grep -E '^[0-9]+$' || true; }

kill_tree() { # SIGKILL a pid and everything below it, deepest first
  local pid=$1 c
  for c in $(children_of "$pid"); do kill_tree "$c"; done
  kill -KILL "$pid" 2>/dev/null || true
  KILLED+=("$pid")
}
KILLED=()

# Waits (up to 3 s) until every killed pid is gone or a zombie waiting for init to reap it.
wait_killed() {
  local p t
  for p in "${KILLED[@]}"; do
    for ((t = 0; t < 60; t++)); do
      local s f
      s=$(proc_fields "$p") || break
      read -ra f <<<"$s"
      [[ ${f[0]} != Z ]] || break
      sleep 0.05
    done
  done
  KILLED=()
}

# ------------------------------------------------------------------------------ addresses
slot_prefix4() { echo "198.$((18 + $1 / 256)).$(($1 % 256))"; }
slot_prefix6() { printf '2001:db8:0:%x' "$1"; }

# ----------------------------------------------------------------------------- registry
reg() { echo "$*" >>"$DIR/registry"; } # kinds: netns NAME | link NAME | pid PID START WHAT

# ======================================================================================= UP
check_binaries() {
  local need=(ip nsenter unshare setsid flock /usr/sbin/sshd ssh-keygen socat iptables-restore
    ip6tables-restore useradd chpasswd sudo timeout awk node conntrack jq)
  local i used=""
  for ((i = 0; i < N_DOCKER; i++)); do used+=",$(list_item "$DOCKER_VERSIONS" "$i")"; done
  if ((N_DOCKER > 0)); then need+=("$DOCKER_CLI" tar); fi
  if [[ $used == *,20.10* ]]; then need+=(dockerd containerd runc); fi
  if [[ $used == *,29* ]]; then
    need+=(/usr/bin/docker-init)
    find_docker29
  fi
  local b missing=()
  for b in "${need[@]}"; do command -v "$b" >/dev/null 2>&1 || missing+=("$b"); done
  if ((${#missing[@]})); then
    die "missing ${missing[*]} on PATH; install the lab's packages with: sudo bash lab/setup.sh"
  fi
  if ((N_DOCKER > 0)); then
    # The containers run the machine's node through a read-only /usr mount. DPA_LAB_NODE names
    # it when another node comes first on PATH (scripts/newest-leg.sh puts a cached Node 24 there).
    NODE_BIN=$(readlink -f "${DPA_LAB_NODE:-$(command -v node)}")
    [[ $NODE_BIN == /usr/* ]] || die "node is at $NODE_BIN; the lab's containers need it under /usr (they mount the machine's /usr); set DPA_LAB_NODE to a node under /usr"
  fi
  [[ $(id -u) -eq 0 ]] || die "the lab needs root (network namespaces, dockerd, sshd); run as root"
  if [[ -S /run/containerd/containerd.sock ]] && ((N_DOCKER > 0)); then
    # dockerd would attach to this shared containerd instead of starting its own, mixing
    # every lab's containers in one containerd namespace.
    die "a system containerd is running (/run/containerd/containerd.sock); stop it so each lab dockerd runs its own"
  fi
}

# Built once per version by lab/docker29.sh (scripts/test.sh runs it); a lab never builds it.
find_docker29() {
  DOCKER29_BIN=$(bash "$HERE/docker29.sh" --bin --no-build --quiet) || die "Docker 29 is not ready (the reason is above); run: bash lab/docker29.sh"
}

# Idempotent: the users live in the machine's /etc/passwd, shared by every lab, so they are
# made under a lock and only when missing. Both get a known password because sshd (UsePAM no)
# refuses even key logins into locked accounts, and dpapwsudo's sudo needs one.
ensure_users() {
  exec 8>"$LAB_ROOT/users.lock"
  flock 8
  local u
  for u in dpasudo dpapwsudo; do
    id -u "$u" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$u"
  done
  printf 'dpasudo:%s\ndpapwsudo:%s\n' "$LAB_PASSWORD" "$LAB_PASSWORD" | chpasswd
  local sudoers=/etc/sudoers.d/dpa-lab
  local want='# docker-port-allowlist lab users (lab/lab.sh)
dpasudo ALL=(ALL:ALL) NOPASSWD: ALL
dpapwsudo ALL=(ALL:ALL) ALL'
  if [[ ! -f $sudoers || "$(cat "$sudoers")" != "$want" ]]; then
    printf '%s\n' "$want" >"$sudoers.tmp"
    chmod 0440 "$sudoers.tmp"
    mv "$sudoers.tmp" "$sudoers"
  fi
  [[ -d /etc/iptables ]] || mkdir -p /etc/iptables # bind-mount target inside each host
  [[ -d $GUARD_DIR ]] || mkdir -p "$GUARD_DIR"      # the same for the guard's directory
  mkdir -p /run/sshd                                # sshd's privilege-separation dir
  flock -u 8
  exec 8>&-
}

# Picks the lowest free slot under a lock: free means no lab dir, no namespace with its
# prefix and no route in the root namespace into its /24 (something else may use it).
alloc_slot() {
  exec 9>"$LAB_ROOT/slots.lock"
  flock 9
  local s id p4
  for ((s = 0; s < MAX_SLOTS; s++)); do
    id=$(printf 'dpa%03d' "$s")
    [[ -e $LABS/$id ]] && continue
    ip netns list | grep -q "^$id-" && continue
    p4=$(slot_prefix4 "$s")
    ip -4 route show to match "$p4.1" | grep -qv '^default' && continue
    ip link show "${id}r" >/dev/null 2>&1 && continue
    # The lab dir appears complete with its owner (rename), so a concurrent reaper never
    # sees an ownerless lab that is still being made.
    rm -rf "$LABS/.$id.new"
    mkdir -p "$LABS/.$id.new"
    if [[ -n $OWNER ]]; then echo "$OWNER $(starttime "$OWNER")" >"$LABS/.$id.new/owner"; else echo manual >"$LABS/.$id.new/owner"; fi
    : >"$LABS/.$id.new/registry"
    mv "$LABS/.$id.new" "$LABS/$id"
    flock -u 9
    exec 9>&-
    SLOT=$s
    ID=$id
    return 0
  done
  flock -u 9
  die "no free lab slot among $MAX_SLOTS; run: bash lab/lab.sh down-all --stale"
}

# veth from the switch into namespace $1 (inside it is eth0), addresses $2 (v4) $3 (v6|"").
wire() {
  local ns=$1 ip4=$2 ip6=$3 port=$4
  ip link add eth0 netns "$ns" type veth peer name "$port" netns "$SW"
  ip -n "$SW" link set "$port" master br0 up
  ip -n "$ns" addr add "$ip4/24" dev eth0
  if [[ -n $ip6 ]]; then ip -n "$ns" addr add "$ip6/64" dev eth0 nodad; fi
  ip -n "$ns" link set eth0 up
}

new_ns() {
  reg netns "$1"
  ip netns add "$1"
  ip -n "$1" link set lo up
}

start_sshd() { # $1 host name, $2 netns, $3 host dir, $4 ipv4, $5 ipv6|""
  local name=$1 ns=$2 hd=$3 ip4=$4 ip6=$5
  mkdir -p "$hd/etc-iptables" "$hd/guard"
  # Every real host has its own /run, so the provider's host-wide lock is per host. Lab hosts
  # share the machine's /run: give each its own lock file, bound over the path in its mount ns,
  # or every host of every concurrent lab would queue behind one lock.
  : >"$hd/dpa.lock"
  [[ -e $HOST_LOCK ]] || : >"$HOST_LOCK"
  ssh-keygen -q -t ed25519 -N '' -C "dpa-lab-$name" -f "$hd/ssh_host_ed25519_key"
  {
    echo "# Generated by lab/lab.sh for lab host $name; reads nothing of the machine's own sshd setup."
    echo "ListenAddress $ip4:22"
    if [[ -n $ip6 ]]; then echo "ListenAddress [$ip6]:22"; fi
    echo "HostKey $hd/ssh_host_ed25519_key"
    echo "PidFile $hd/sshd.pid"
    echo "AuthorizedKeysFile $DIR/authorized_keys"
    echo "AuthorizedPrincipalsFile none"
    echo "AllowUsers root dpasudo dpapwsudo"
    echo "PermitRootLogin prohibit-password"
    echo "PubkeyAuthentication yes"
    echo "PasswordAuthentication yes"
    echo "KbdInteractiveAuthentication no"
    echo "UsePAM no"
    echo "UseDNS no"
    echo "PrintMotd no"
    echo "StrictModes yes"
    # Parallel tests open many connections at once; the default 10:30:100 drops some.
    echo "MaxStartups 200:30:400"
    echo "MaxSessions 100"
    echo "Subsystem sftp internal-sftp"
    echo "LogLevel VERBOSE"
    if [[ $HOST_KIND == docker ]]; then echo "SetEnv DOCKER_HOST=unix://$hd/docker.sock"; fi
  } >"$hd/sshd_config"
  # ip netns exec gives a new mount ns with /sys for this netns; unshare gives sshd its own
  # mount ns in which /etc/iptables is this host's directory. Slave propagation keeps
  # receiving unmounts from the root ns (e.g. `ip netns del` of other labs).
  # A sleeping anchor shares that mount ns: hostExec enters through it, so it keeps working
  # even when a test kills or restarts sshd. The machine's /root/.bashrc is hidden there by an
  # empty file: bash sources it for every command sshd runs, and this machine's (pyenv init,
  # whose rehash waits 60 s on a lock a killed shell left behind) belongs to another machine
  # than the one a lab host stands for.
  : >"$hd/empty-bashrc"
  # shellcheck disable=SC2016,SC2094 # $1..$9 belong to the inner sh, which expands them; sshd.log is only an argument there (sshd -E), never read
  setsid ip netns exec "$ns" unshare --mount --propagation slave sh -c \
    'mount --bind "$1" /etc/iptables || exit 1
     mount --bind "$5" "$6" || exit 1
     mount --bind "$7" "$8" || exit 1
     if [ -e /root/.bashrc ]; then mount --bind "$9" /root/.bashrc || exit 1; fi
     sleep 2147483647 </dev/null >/dev/null 2>&1 &
     echo $! >"$4"
     exec /usr/sbin/sshd -D -f "$2" -E "$3"' \
    sh "$hd/etc-iptables" "$hd/sshd_config" "$hd/sshd.log" "$hd/ns-anchor.pid" "$hd/dpa.lock" "$HOST_LOCK" "$hd/guard" "$GUARD_DIR" "$hd/empty-bashrc" </dev/null >>"$hd/sshd.log" 2>&1 7>&- 8>&- 9>&- &
  local pid=$!
  reg pid "$pid" "$(starttime "$pid")" "sshd-$name"
  echo "$pid" >"$hd/sshd.launch-pid"
}

wait_tcp() { # $1 addr, $2 port, $3 what, $4 log: wait up to 10 s
  local i
  for ((i = 0; i < 200; i++)); do
    timeout 1 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null && return 0
    sleep 0.05
  done
  die "$3 did not listen on $1:$2 within 10 s; see $4"
}

# The i-th entry ($2, from 0) of a comma-separated list ($1); the last entry for i beyond it.
list_item() {
  local items
  IFS=, read -ra items <<<"$1"
  local n=${#items[@]}
  if (($2 < n)); then echo "${items[$2]}"; else echo "${items[n - 1]}"; fi
}

# Docker 29's own containerd (v2, with the runc and shim of lab/docker29.sh first on PATH, else
# it would pick Debian's 1.6 shim and runc), its state and sockets under the host dir.
start_containerd() { # $1 host name, $2 netns, $3 host dir
  local name=$1 ns=$2 hd=$3
  mkdir -p "$hd/containerd"
  cat >"$hd/containerd.toml" <<EOF
# Generated by lab/lab.sh for lab host $name.
version = 3
root = "$hd/containerd/root"
state = "$hd/containerd/state"
# Docker needs none of Kubernetes' CRI.
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime", "io.containerd.cri.v1.images"]
[grpc]
  address = "$hd/containerd/containerd.sock"
[ttrpc]
  address = "$hd/containerd/containerd.sock.ttrpc"
EOF
  setsid nsenter --net="/run/netns/$ns" env PATH="$DOCKER29_BIN:$PATH" containerd --config "$hd/containerd.toml" \
    </dev/null >>"$hd/containerd.log" 2>&1 7>&- 8>&- 9>&- &
  local pid=$!
  reg pid "$pid" "$(starttime "$pid")" "containerd-$name"
}

start_dockerd() { # $1 host name, $2 netns, $3 host dir, $4 host index
  local name=$1 ns=$2 hd=$3 idx=$4 version backend
  version=$(cat "$hd/docker-version")
  backend=$(cat "$hd/firewall-backend")
  local ipv6=false
  if [[ -n $IPV6 && $DOCKER_IPV6 == on ]]; then ipv6=true; fi
  jq -n --argjson ipv6 "$ipv6" --arg cidr6 "$(printf '2001:db8:%x:%x::/64' $((0x1000 + SLOT)) "$idx")" \
    --arg backend "$backend" --arg version "$version" '
    (if $ipv6 then {"ipv6": true, "fixed-cidr-v6": $cidr6, "ip6tables": true, "experimental": true} else {} end)
    + (if $version == "29" then {"firewall-backend": $backend} else {} end)' >"$hd/daemon.json"
  # nsenter, not ip netns exec: the latter remounts /sys and dockerd then finds no cgroups.
  # Own data/exec root, pidfile and socket: several daemons run side by side.
  if [[ $backend == nftables ]]; then
    # With nftables Docker does not turn on forwarding itself (it could not guard it with an
    # iptables FORWARD policy) and refuses to start without it: a host's admin sets it.
    ip netns exec "$ns" sysctl -qw net.ipv4.ip_forward=1
    if [[ $ipv6 == true ]]; then ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.forwarding=1; fi
  fi
  local run=(dockerd)
  if [[ $version == 29 ]]; then
    # Docker 29's dockerd and docker-proxy first on PATH; its own containerd. The lab's client is
    # Debian's (API 1.41), below Docker 29's minimum API version unless the daemon lowers it.
    run=(env PATH="$DOCKER29_BIN:$PATH" DOCKER_MIN_API_VERSION=1.41 dockerd --containerd "$hd/containerd/containerd.sock")
  fi
  setsid nsenter --net="/run/netns/$ns" "${run[@]}" --config-file "$hd/daemon.json" \
    --data-root "$hd/data" --exec-root "$hd/exec" --pidfile "$hd/docker.pid" \
    -H "unix://$hd/docker.sock" </dev/null >>"$hd/dockerd.log" 2>&1 7>&- 8>&- 9>&- &
  local pid=$!
  reg pid "$pid" "$(starttime "$pid")" "dockerd-$name"
  echo "$pid" >"$hd/dockerd.launch-pid"
}

# Runs in the background per docker host: image import and the two published containers.
wait_dockerd() { # $1 host name, $2 host dir: until the API answers (30 s)
  local name=$1 hd=$2 i pid
  pid=$(cat "$hd/dockerd.launch-pid")
  for ((i = 0; i < 300; i++)); do
    "$DOCKER_CLI" -H "unix://$hd/docker.sock" version >/dev/null 2>&1 && return 0
    kill -0 "$pid" 2>/dev/null || die "dockerd of $name exited during start; see $hd/dockerd.log"
    sleep 0.1
  done
  die "dockerd of $name not ready within 30 s; see $hd/dockerd.log"
}

wait_containers() { # $1 host name, $2 host dir: httpd and the UDP echo answer, then IPv6 ready (10 s each)
  local name=$1 hd=$2 i
  local dk=("$DOCKER_CLI" -H "unix://$hd/docker.sock")
  for ((i = 0; i < 100; i++)); do
    # node takes a moment to start; httpd is up long before it.
    if "${dk[@]}" exec -i udp /usr/bin/socat -t 0.2 - UDP4:127.0.0.1:53 <<<ping 2>/dev/null | grep -q dpa-udp &&
      "${dk[@]}" exec web nc -w 1 127.0.0.1 80 </dev/null >/dev/null 2>&1; then
      break
    fi
    sleep 0.1
  done
  ((i < 100)) || die "the containers on $name did not answer within 10 s; see: docker -H unix://$hd/docker.sock logs udp"
  # IPv6 addresses (docker0's, the containers') are unusable while duplicate address detection
  # runs ("tentative", about a second): a client's first IPv6 connection would be lost.
  for ((i = 0; i < 100; i++)); do
    if ! ip -n "$ID-$name" -6 addr show tentative 2>/dev/null | grep -q . &&
      ! "${dk[@]}" exec web ip -6 addr 2>/dev/null | grep -q tentative &&
      ! "${dk[@]}" exec udp ip -6 addr 2>/dev/null | grep -q tentative; then
      return 0
    fi
    sleep 0.1
  done
  die "IPv6 addresses on $name still tentative (duplicate address detection) after 10 s"
}

docker_host_containers() { # $1 host name, $2 host dir
  local name=$1 hd=$2
  local dk=("$DOCKER_CLI" -H "unix://$hd/docker.sock")
  wait_dockerd "$name" "$hd"
  "${dk[@]}" import "$IMAGE_TAR" dpa-lab/busybox:1 >/dev/null
  # --init: tini as PID 1 reaps and forwards signals, so the containers stop at once.
  # --restart always: they come back when `reboot` restarts the daemon.
  "${dk[@]}" run -d --init --restart always --pull never --name web -p 8080:80 dpa-lab/busybox:1 \
    /bin/httpd -f -p 80 -h /www >/dev/null
  # Debian's busybox nc has no UDP mode: borrow the machine's /usr (node for the server,
  # socat for containerProbe) and the lab dir (the server script).
  "${dk[@]}" run -d --init --restart always --pull never --name udp -p 5353:53/udp -v /usr:/usr:ro \
    -v "$HERE:/lab:ro" dpa-lab/busybox:1 "$NODE_BIN" /lab/echo-server.js --udp 53 --reply dpa-udp >/dev/null
  wait_containers "$name" "$hd"
}

lay_light_layout() { # $1 netns, $2 layout
  local ns=$1 layout=$2
  ip netns exec "$ns" iptables-restore <"$HERE/layouts/$layout.v4.rules"
  if [[ -n $IPV6 && $DOCKER_IPV6 == on ]]; then
    ip netns exec "$ns" ip6tables-restore <"$HERE/layouts/$layout.v6.rules"
  fi
  # A docker0 to match the layout's rules (nothing runs behind it).
  ip -n "$ns" link add docker0 type bridge
  ip -n "$ns" addr add 172.17.0.1/16 dev docker0
  ip -n "$ns" link set docker0 up
  return 0
}

# The outside namespace answers on EVERY port: NAT redirects all TCP to one socat listener
# and all UDP to another, so containerProbe can test any destination port.
start_outside() {
  local ns=$OUT
  ip netns exec "$ns" iptables -t nat -A PREROUTING -p tcp -j REDIRECT --to-ports 7000
  ip netns exec "$ns" iptables -t nat -A PREROUTING -p udp -j REDIRECT --to-ports 7001
  if [[ -n $IPV6 ]]; then
    ip netns exec "$ns" ip6tables -t nat -A PREROUTING -p tcp -j REDIRECT --to-ports 7000
    ip netns exec "$ns" ip6tables -t nat -A PREROUTING -p udp -j REDIRECT --to-ports 7001
  fi
  setsid ip netns exec "$ns" node "$HERE/echo-server.js" --tcp 7000 --udp 7001 --reply dpa-outside \
    </dev/null >>"$DIR/outside.log" 2>&1 7>&- 8>&- 9>&- &
  local pid=$!
  reg pid "$pid" "$(starttime "$pid")" "outside-echo"
}

# lab.json (the LabData of lab/index.ts), written by jq: every value goes in as --arg (a JSON
# string, escaped by jq) or --argjson (a number or boolean), nothing is pasted into JSON text.
# One object per host and client, one line each, then the whole file from those lines.
write_json() {
  local p4=$1 p6=$2 i ipv6=false docker_ipv6=false
  if [[ -n $IPV6 ]]; then ipv6=true; fi
  if [[ -n $IPV6 && $DOCKER_IPV6 == on ]]; then docker_ipv6=true; fi
  local hosts="$DIR/lab.hosts.tmp" clients="$DIR/lab.clients.tmp"
  : >"$hosts"
  : >"$clients"
  for ((i = 0; i < N_HOSTS; i++)); do
    local name=h$i hd="$DIR/h$i" kind=docker layout=docker20 version="" backend=""
    ((i >= N_DOCKER)) && kind=light && layout=$LIGHT_LAYOUT
    local key fp docker_pid=""
    if [[ $kind == docker ]]; then
      version=$(cat "$hd/docker-version")
      backend=$(cat "$hd/firewall-backend")
      if [[ $version == 29 ]]; then layout=docker29; fi
    fi
    key=$(awk '{print $1" "$2}' "$hd/ssh_host_ed25519_key.pub")
    fp=$(ssh-keygen -l -E sha256 -f "$hd/ssh_host_ed25519_key.pub" | awk '{print $2}')
    if [[ $kind == docker ]]; then docker_pid=$(cat "$hd/docker.pid"); fi
    jq -c -n --arg name "$name" --arg kind "$kind" --arg netns "$ID-$name" --arg ipv4 "$p4.$((10 + i))" \
      --arg ipv6 "${IPV6:+$p6::$((10 + i))}" --arg hostKey "$key" --arg hostKeyFingerprint "$fp" \
      --arg etcIptablesDir "$hd/etc-iptables" --arg layout "$layout" --argjson dockerIpv6 "$docker_ipv6" \
      --argjson sshdPid "$(cat "$hd/sshd.launch-pid")" --argjson nsPid "$(cat "$hd/ns-anchor.pid")" \
      --arg dockerHost "unix://$hd/docker.sock" --arg dockerPid "$docker_pid" \
      --arg dockerVersion "$version" --arg firewallBackend "$backend" '
      {name: $name, kind: $kind, netns: $netns, ipv4: $ipv4}
      + (if $ipv6 != "" then {ipv6: $ipv6} else {} end)
      + {sshPort: 22, hostKey: $hostKey, hostKeyFingerprint: $hostKeyFingerprint,
         etcIptablesDir: $etcIptablesDir, published: {tcp: 8080, udp: 5353}, layout: $layout,
         dockerIpv6: $dockerIpv6, sshdPid: $sshdPid, nsPid: $nsPid}
      + (if $kind == "docker" then {dockerHost: $dockerHost, dockerPid: ($dockerPid | tonumber),
           dockerVersion: $dockerVersion, firewallBackend: $firewallBackend} else {} end)' \
      >>"$hosts"
  done
  for ((i = 0; i < N_CLIENTS; i++)); do
    jq -c -n --arg name "c$i" --arg netns "$ID-c$i" --arg ipv4 "$p4.$((200 + i))" \
      --arg ipv6 "${IPV6:+$p6::$((200 + i))}" '
      {name: $name, netns: $netns, ipv4: $ipv4} + (if $ipv6 != "" then {ipv6: $ipv6} else {} end)' \
      >>"$clients"
  done
  jq -n --arg id "$ID" --arg dir "$DIR" --argjson slot "$SLOT" --argjson ipv6 "$ipv6" \
    --arg rootIpv4 "$p4.1" --slurpfile hosts "$hosts" --slurpfile clients "$clients" \
    --arg outNetns "$OUT" --arg outIpv4 "$p4.2" --arg outIpv6 "${IPV6:+$p6::2}" \
    --arg privateKeyPath "$DIR/client_ed25519" --arg publicKey "$(cat "$DIR/client_ed25519.pub")" \
    --arg knownHostsPath "$DIR/known_hosts" --arg password "$LAB_PASSWORD" '
    {id: $id, dir: $dir, slot: $slot, ipv6: $ipv6, rootIpv4: $rootIpv4, hosts: $hosts, clients: $clients,
     outside: ({netns: $outNetns, ipv4: $outIpv4} + (if $outIpv6 != "" then {ipv6: $outIpv6} else {} end)),
     clientKey: {privateKeyPath: $privateKeyPath, publicKey: $publicKey},
     knownHostsPath: $knownHostsPath,
     users: {root: "root", sudo: "dpasudo", sudoPassword: "dpapwsudo", password: $password}}' \
    >"$DIR/lab.json.tmp"
  rm -f "$hosts" "$clients"
  mv "$DIR/lab.json.tmp" "$DIR/lab.json"
}

# One host, run as a background job: namespace, wiring, dockerd or chain layout, sshd; for
# docker hosts also the image and containers. Marks success with $hd/ready.
setup_host() { # $1 index, $2 v4 prefix, $3 v6 prefix
  local i=$1 p4=$2 p6=$3
  local ns="$ID-h$i" hd="$DIR/h$i"
  mkdir -p "$hd"
  new_ns "$ns"
  wire "$ns" "$p4.$((10 + i))" "${IPV6:+$p6::$((10 + i))}" "h$i"
  if ((i < N_DOCKER)); then
    HOST_KIND=docker
    list_item "$DOCKER_VERSIONS" "$i" >"$hd/docker-version"
    list_item "$FIREWALL_BACKENDS" "$i" >"$hd/firewall-backend"
    if [[ $(cat "$hd/docker-version") == 29 ]]; then start_containerd "h$i" "$ns" "$hd"; fi
    start_dockerd "h$i" "$ns" "$hd" "$i"
  else
    HOST_KIND=light
    lay_light_layout "$ns" "$LIGHT_LAYOUT"
  fi
  start_sshd "h$i" "$ns" "$hd" "$p4.$((10 + i))" "${IPV6:+$p6::$((10 + i))}"
  if ((i < N_DOCKER)); then docker_host_containers "h$i" "$hd"; fi
  wait_tcp "$p4.$((10 + i))" 22 "sshd of h$i" "$hd/sshd.log"
  touch "$hd/ready"
}

# Keeps the logs of a failed bring-up (the lab dir itself goes) and tears the lab down.
up_failed() {
  local keep f rel
  keep="$LAB_ROOT/failed/$ID-$(date +%H%M%S)"
  mkdir -p "$keep"
  for f in "$DIR"/*.log "$DIR"/h*/*.log "$DIR"/h*/*_config "$DIR"/h*/daemon.json "$DIR/registry"; do
    rel=${f#"$DIR"/}
    cp "$f" "$keep/${rel//\//_}" 2>/dev/null || true
  done
  # Keep the 20 newest failures only.
  # shellcheck disable=SC2012 # ls -t sorts by age; the names are ours (dpaNNN-HHMMSS), plain characters only
  ls -dt "$LAB_ROOT"/failed/*/ 2>/dev/null | tail -n +21 | xargs -r rm -rf
  echo "lab: up failed (exit $1); logs kept in $keep; tearing $ID down" >&2
  teardown "$ID" >&2 || true
}

cmd_up() {
  N_DOCKER=1 N_LIGHT=0 N_CLIENTS=2 IPV6="" DOCKER_IPV6=on LIGHT_LAYOUT=docker29 OWNER=""
  DOCKER_VERSIONS=29 FIREWALL_BACKENDS=iptables
  while (($#)); do
    case $1 in
    --docker) N_DOCKER=$2 && shift ;;
    --light) N_LIGHT=$2 && shift ;;
    --clients) N_CLIENTS=$2 && shift ;;
    --ipv6) IPV6=1 ;;
    --docker-ipv6) DOCKER_IPV6=$2 && shift ;;
    --light-layout) LIGHT_LAYOUT=$2 && shift ;;
    --docker-version) DOCKER_VERSIONS=$2 && shift ;;
    --firewall-backend) FIREWALL_BACKENDS=$2 && shift ;;
    --owner-pid) OWNER=$2 && shift ;;
    *) die "up: unknown option '$1'; allowed: --docker N --light N --clients N --ipv6 --docker-ipv6 on|off --docker-version 20.10|29[,...] --firewall-backend iptables|nftables[,...] --light-layout docker20|docker29 --owner-pid PID" ;;
    esac
    shift
  done
  local n
  for n in "$N_DOCKER" "$N_LIGHT" "$N_CLIENTS"; do
    [[ $n =~ ^[0-9]+$ ]] || die "up: host and client counts must be whole numbers >= 0, got '$n'"
  done
  [[ -z $OWNER || $OWNER =~ ^[0-9]+$ ]] || die "up: --owner-pid must be a process id, got '$OWNER'"
  [[ $DOCKER_IPV6 == on || $DOCKER_IPV6 == off ]] ||
    die "up: --docker-ipv6 must be on or off, got '$DOCKER_IPV6'"
  [[ $LIGHT_LAYOUT == docker20 || $LIGHT_LAYOUT == docker29 ]] ||
    die "up: --light-layout must be docker20 or docker29, got '$LIGHT_LAYOUT'"
  [[ $DOCKER_VERSIONS =~ ^(20\.10|29)(,(20\.10|29))*$ ]] ||
    die "up: --docker-version must be 20.10 or 29, or a comma-separated list of them (one per docker host), got '$DOCKER_VERSIONS'"
  [[ $FIREWALL_BACKENDS =~ ^(iptables|nftables)(,(iptables|nftables))*$ ]] ||
    die "up: --firewall-backend must be iptables or nftables, or a comma-separated list of them (one per docker host), got '$FIREWALL_BACKENDS'"
  for ((n = 0; n < N_DOCKER; n++)); do
    [[ $(list_item "$DOCKER_VERSIONS" "$n") == 29 || $(list_item "$FIREWALL_BACKENDS" "$n") == iptables ]] ||
      die "up: docker host h$n: --firewall-backend nftables needs --docker-version 29 (Docker 20.10 has no nftables backend)"
  done
  N_HOSTS=$((N_DOCKER + N_LIGHT))
  ((N_HOSTS <= MAX_HOSTS)) || die "up: at most $MAX_HOSTS hosts per lab (docker + light), got $N_HOSTS"
  ((N_CLIENTS <= MAX_CLIENTS)) || die "up: at most $MAX_CLIENTS clients per lab, got $N_CLIENTS"
  check_binaries
  LAB_PASSWORD=dpa-lab-pw
  mkdir -p "$LABS"
  chmod 0755 "$LAB_ROOT" "$LABS" # sshd StrictModes checks every dir above authorized_keys
  # A test run that was killed leaves its labs behind; reclaim those first.
  reap_stale
  ensure_users
  ((N_DOCKER > 0)) && IMAGE_TAR=$(bash "$HERE/image.sh")

  alloc_slot
  DIR="$LABS/$ID"
  SW="$ID-sw"
  OUT="$ID-out"
  # Any failure from here on (set -e or die) takes the half-built lab down again.
  UP_DONE=""
  # shellcheck disable=SC2154 # rc is assigned at the start of this very trap command
  trap 'rc=$?; if [[ -z $UP_DONE ]]; then up_failed "$rc"; fi' EXIT
  # A signal ends the script through exit, so the EXIT trap above still cleans up.
  trap 'exit 143' TERM
  trap 'exit 130' INT
  trap 'exit 129' HUP

  local p4 p6 i j
  p4=$(slot_prefix4 "$SLOT")
  p6=$(slot_prefix6 "$SLOT")
  local t0=$SECONDS
  log "bringing up $ID ($N_DOCKER docker, $N_LIGHT light, $N_CLIENTS clients${IPV6:+, ipv6}) in $DIR"

  ssh-keygen -q -t ed25519 -N '' -C "dpa-lab-client-$ID" -f "$DIR/client_ed25519"
  cp "$DIR/client_ed25519.pub" "$DIR/authorized_keys"
  chmod 0644 "$DIR/authorized_keys"

  # Switch namespace and its one link to the root namespace.
  new_ns "$SW"
  ip -n "$SW" link add br0 type bridge forward_delay 0 stp_state 0
  ip -n "$SW" link set br0 up
  reg link "${ID}r"
  ip link add "${ID}r" type veth peer name uplink netns "$SW"
  ip -n "$SW" link set uplink master br0 up
  ip addr add "$p4.1/24" dev "${ID}r"
  if [[ -n $IPV6 ]]; then
    sysctl -qw "net.ipv6.conf.${ID}r.accept_ra=0" || true
    ip addr add "$p6::1/64" dev "${ID}r" nodad
  fi
  ip link set "${ID}r" up

  new_ns "$OUT"
  wire "$OUT" "$p4.2" "${IPV6:+$p6::2}" out
  OUTSIDE_IP=$p4.2
  start_outside

  for ((j = 0; j < N_CLIENTS; j++)); do
    new_ns "$ID-c$j"
    wire "$ID-c$j" "$p4.$((200 + j))" "${IPV6:+$p6::$((200 + j))}" "c$j"
  done

  # Hosts come up in parallel (bounded: each is a handful of processes and kernel calls).
  # Only these jobs are waited for: the outside server is a background child too.
  local max_jobs=${DPA_LAB_JOBS:-16} jobs_=() k
  for ((i = 0; i < N_HOSTS; i++)); do
    if ((i >= max_jobs)); then wait "${jobs_[i - max_jobs]}" || true; fi
    setup_host "$i" "$p4" "$p6" &
    jobs_+=($!)
  done
  for k in "${jobs_[@]}"; do wait "$k" || true; done
  local missing=()
  for ((i = 0; i < N_HOSTS; i++)); do [[ -e $DIR/h$i/ready ]] || missing+=("h$i"); done
  ((${#missing[@]} == 0)) || die "hosts ${missing[*]} failed to come up; logs in $DIR/<host>/"

  # Waited for only now: node's start overlaps the hosts' bring-up.
  wait_tcp "$OUTSIDE_IP" 7000 "the outside echo server" "$DIR/outside.log"
  : >"$DIR/known_hosts"
  for ((i = 0; i < N_HOSTS; i++)); do
    local key
    key=$(awk '{print $1" "$2}' "$DIR/h$i/ssh_host_ed25519_key.pub")
    echo "$p4.$((10 + i)) $key" >>"$DIR/known_hosts"
    if [[ -n $IPV6 ]]; then echo "$p6::$((10 + i)) $key" >>"$DIR/known_hosts"; fi
  done

  write_json "$p4" "$p6"
  UP_DONE=1
  log "$ID up in $((SECONDS - t0)) s"
  echo "$DIR/lab.json"
}

# ===================================================================================== DOWN
stop_dockerd() { # $1 pid, $2 its start time, $3 host dir; run in parallel per host
  local pid=$1 st=$2 hd=$3 ids t
  ids=$(timeout 10 "$DOCKER_CLI" -H "unix://$hd/docker.sock" ps -aq 2>/dev/null || true)
  if [[ -n $ids ]]; then
    # shellcheck disable=SC2086 # one argument per container id
    timeout 20 "$DOCKER_CLI" -H "unix://$hd/docker.sock" rm -f $ids >/dev/null 2>&1 || true
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for ((t = 0; t < 150; t++)); do alive_as "$pid" "$st" || return 0; sleep 0.1; done
  kill_tree "$pid"
}

teardown() { # $1 lab id; idempotent, safe after a crash at any point of `up`
  local id=$1 dir="$LABS/$1"
  [[ $id =~ ^dpa[0-9]{3}$ ]] || die "down: '$id' is not a lab id (dpaNNN); see: bash lab/lab.sh status"
  [[ -d $dir ]] || return 0
  exec 7>"$LAB_ROOT/lock.$id"
  flock 7
  [[ -d $dir ]] || return 0
  local registry="$dir/registry" kind a b c
  [[ -f $registry ]] || : >"$registry"

  # 1. Docker daemons stop cleanly first (they stop containerd and the shims themselves);
  #    containers are removed first so shutdown does not wait for PID-1 httpd to die.
  local dpids=()
  while read -r kind a b c; do
    [[ $kind == pid && $c == dockerd-* ]] || continue
    alive_as "$a" "$b" || continue
    stop_dockerd "$a" "$b" "$dir/${c#dockerd-}" &
    dpids+=($!)
  done <"$registry"
  local p t
  for p in "${dpids[@]}"; do wait "$p" || true; done

  # 2. Every other recorded process (sshd, outside servers).
  while read -r kind a b c; do
    [[ $kind == pid ]] || continue
    alive_as "$a" "$b" && kill_tree "$a"
  done <"$registry"

  # 3. Whatever still runs inside the lab's namespaces is the lab's (sshd sessions,
  #    docker-proxy, a half-started daemon): the namespaces are ours, so are they.
  while read -r kind a b c; do
    [[ $kind == netns && -e /run/netns/$a ]] || continue
    for p in $(ip netns pids "$a" 2>/dev/null); do kill_tree "$p"; done
  done <"$registry"

  # 4. Processes started by the daemons with the lab dir on their command line (containerd,
  #    shims whose containers live in their own namespaces): they and their children.
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline" | grep -qF "$dir/" && kill_tree "$p"
  done

  wait_killed

  # 5. Mounts under the lab dir (overlays, netns binds) deepest first, then namespaces.
  local m
  while read -r m; do
    umount -l "$m" 2>/dev/null || true
  done < <(awk -v d="$dir/" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r)
  while read -r kind a b c; do
    if [[ $kind == netns && -e /run/netns/$a ]]; then ip netns del "$a" 2>/dev/null || true; fi
  done <"$registry"
  while read -r kind a b c; do
    if [[ $kind == link ]] && ip link show "$a" >/dev/null 2>&1; then ip link del "$a" 2>/dev/null || true; fi
  done <"$registry"
  rm -rf "$dir"
  rm -f "$LAB_ROOT/lock.$id"
  flock -u 7
}

cmd_down() {
  [[ $# -eq 1 ]] || die "usage: bash lab/lab.sh down ID (see: bash lab/lab.sh status)"
  teardown "$1"
}

owner_dead() { # owner file: "PID STARTTIME" or "manual"
  local o
  o=$(cat "$1/owner" 2>/dev/null || echo "")
  [[ $o == manual ]] && return 1
  [[ -z $o ]] && return 0 # crashed before writing the owner
  local pid=${o%% *} st=${o#* }
  ! alive_as "$pid" "$st"
}

reap_stale() {
  local d
  for d in "$LABS"/dpa*; do
    if owner_dead "$d"; then
      log "reaping stale lab ${d##*/} (its owner process is gone)"
      teardown "${d##*/}" || true
    fi
  done
}

cmd_down_all() {
  mkdir -p "$LABS"
  if [[ ${1:-} == --stale ]]; then
    reap_stale
    return 0
  fi
  local d
  for d in "$LABS"/dpa*; do teardown "${d##*/}"; done
}

cmd_status() {
  local d
  for d in "$LABS"/dpa*; do
    local id=${d##*/} state=up
    [[ -f $d/lab.json ]] || state=incomplete
    owner_dead "$d" && state="$state,stale"
    echo "$id $state owner=$(cat "$d/owner" 2>/dev/null) netns=$(grep -c '^netns' "$d/registry" 2>/dev/null || echo 0) dir=$d"
  done
}

# A docker host's reboot, as far as the firewall sees it: dockerd stops, the kernel forgets
# every rule, ipset and connection, the persisted rules.v4/rules.v6 come back (as netfilter-persistent
# would restore them at boot, unless --no-restore), then dockerd starts and rebuilds its
# chains around whatever is there. Containers come back (--restart always).
cmd_reboot() {
  [[ $# -ge 2 ]] || die "usage: bash lab/lab.sh reboot ID HOST [--no-restore]"
  ID=$1
  local host=$2 restore=1
  [[ ${3:-} == --no-restore ]] && restore=""
  DIR="$LABS/$ID"
  [[ -f $DIR/lab.json ]] || die "reboot: no lab '$ID' (see: bash lab/lab.sh status)"
  local hd="$DIR/$host" ns="$ID-$host"
  [[ -f $hd/daemon.json ]] || die "reboot: '$host' is not a docker host of $ID; only docker hosts can reboot"
  # The daemon's own IPv6 is what daemon.json says (off for --docker-ipv6 off).
  IPV6="" DOCKER_IPV6=on
  if grep -q '"ipv6": true' "$hd/daemon.json"; then IPV6=1; fi
  SLOT=$((10#${ID#dpa}))
  # Not while the lab is being torn down (the lock fd is closed for the daemons started here).
  exec 7>"$LAB_ROOT/lock.$ID"
  flock 7
  [[ -f $DIR/lab.json ]] || die "reboot: lab '$ID' went down"
  local pid st t
  pid=$(cat "$hd/docker.pid" 2>/dev/null || echo 0)
  st=$(starttime "$pid")
  if [[ -n $st ]]; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((t = 0; t < 200; t++)); do alive_as "$pid" "$st" || break; sleep 0.1; done
    alive_as "$pid" "$st" && die "reboot: dockerd of $host (pid $pid) did not stop within 20 s"
  fi
  if [[ $(cat "$hd/docker-version") == 29 ]]; then find_docker29; fi
  # On a host whose Docker runs nftables, every nftables table goes, as on a boot (Docker's,
  # which dockerd makes again, and everyone else's: an allowlist's table comes back only if
  # something restores it).
  if [[ $(cat "$hd/firewall-backend") == nftables ]]; then
    ip netns exec "$ns" nft flush ruleset 2>/dev/null || true
  fi
  local fam
  for fam in iptables ip6tables; do
    ip netns exec "$ns" sh -c "for t in filter nat mangle raw; do $fam -t \$t -F; $fam -t \$t -X; done
      for c in INPUT FORWARD OUTPUT; do $fam -P \$c ACCEPT; done"
  done
  # The kernel's ipsets go too (after the rules that matched them: a set in use cannot go).
  ip netns exec "$ns" ipset destroy 2>/dev/null || true
  ip netns exec "$ns" conntrack -F >/dev/null 2>&1 || true
  if [[ -n $restore ]]; then
    if [[ -s $hd/etc-iptables/rules.v4 ]]; then ip netns exec "$ns" iptables-restore <"$hd/etc-iptables/rules.v4"; fi
    if [[ -s $hd/etc-iptables/rules.v6 ]]; then ip netns exec "$ns" ip6tables-restore <"$hd/etc-iptables/rules.v6"; fi
  fi
  start_dockerd "$host" "$ns" "$hd" "${host#h}"
  wait_dockerd "$host" "$hd"
  wait_containers "$host" "$hd"
}

# A human-sized probe; lab/index.ts has its own with the same semantics.
cmd_probe() {
  [[ $# -ge 5 ]] || die "usage: bash lab/lab.sh probe ID CLIENT HOST PORT tcp|udp [4|6]"
  local id=$1 client=$2 host=$3 port=$4 proto=$5 fam=${6:-4}
  local json="$LABS/$id/lab.json"
  [[ -f $json ]] || die "probe: no lab '$id'"
  local addr
  addr=$(jq -r --arg h "$host" --arg f "$fam" '.hosts[] | select(.name == $h) | if $f == "6" then .ipv6 else .ipv4 end' "$json")
  [[ -n $addr && $addr != null ]] || die "probe: host '$host' has no IPv$fam address in $id"
  [[ $fam == 6 ]] && addr="[$addr]"
  local ok=1
  if [[ $proto == tcp ]]; then
    ip netns exec "$id-$client" socat -u OPEN:/dev/null "TCP$fam:$addr:$port,connect-timeout=2" 2>/dev/null || ok=0
  else
    local out
    out=$(echo ping | ip netns exec "$id-$client" socat -t 2 - "UDP$fam:$addr:$port" 2>/dev/null || true)
    [[ -n $out ]] || ok=0
  fi
  ((ok)) && echo open || echo closed
}

main() {
  mkdir -p "$LAB_ROOT"
  local cmd=${1:-}
  shift || true
  case $cmd in
  up) cmd_up "$@" ;;
  down) cmd_down "$@" ;;
  down-all) cmd_down_all "$@" ;;
  status) cmd_status ;;
  probe) cmd_probe "$@" ;;
  reboot) cmd_reboot "$@" ;;
  *) die "usage: bash lab/lab.sh up|down ID|down-all [--stale]|status|probe ...|reboot ID HOST [--no-restore]" ;;
  esac
}
main "$@"
