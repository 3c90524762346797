#!/usr/bin/env bash
# Build (once per version) and locate Docker 29 for the lab, offline: dockerd, docker-proxy,
# containerd v2, containerd-shim-runc-v2 and runc, all from the Go module proxy.
#
#   bash lab/docker29.sh          build or reuse; print where the binaries are, versions and timings
#   bash lab/docker29.sh --bin    same, but print only the bin directory on stdout
#   bash lab/docker29.sh --bin --no-build   the bin directory if the pinned build is cached, else fail
#                                           (lab/lab.sh: a lab never starts a build of minutes)
#
# Why: Debian 12's docker.io is 20.10; users run Docker 27-29. Docker 29's daemon is the Go module
# github.com/moby/moby/v2 (tags v2.0.0-beta.N are Docker 29.x releases), and containerd v2 and
# runc are Go modules too. Debian's runc (1.1.5) and containerd (1.6) do not work with them.
# The lab runs each Docker 29 host with its own containerd, these binaries first on PATH.
#
# Binaries are cached per version OUTSIDE the repo:
#   ${DPA_CACHE_DIR:-$HOME/.cache/docker-port-allowlist}/docker/v<docker version>/bin
# A stamp of the pinned versions, the build flags and the Go version decides what is rebuilt;
# a warm run only checks the stamp and the binaries' versions.
set -euo pipefail

# ---- pins: one Docker 29 release and the containerd and runc it is run with -------------
# v2.0.0-beta.24 is Docker 29.8.0: its releases/versions.yaml says last: "29.8.0" and its
# Dockerfile pins the CLI v29.8.0. dockerd reports DOCKER_VERSION (ldflags; else "library-import").
DOCKER_VERSION=29.8.0
MOBY_MODULE_VERSION=v2.0.0-beta.24
CONTAINERD_VERSION=v2.3.7
RUNC_VERSION=v1.3.5 # with libseccomp (cgo); v1.4.x did not build with `go install` here

usage() {
  cat >&2 <<'EOF'
usage: lab/docker29.sh [--bin] [--no-build] [--quiet]
  --bin       print only the bin directory on stdout (progress goes to stderr)
  --no-build  fail instead of building what is not cached
  --quiet  no progress messages on stderr (errors are still printed)
EOF
}

mode=info
quiet=false
no_build=false
for arg in "$@"; do
  case "$arg" in
    --bin) mode=bin ;;
    --quiet) quiet=true ;;
    --no-build) no_build=true ;;
    -h | --help) usage; exit 0 ;;
    *) echo "docker29.sh: unknown argument '$arg'" >&2; usage; exit 2 ;;
  esac
done

t_start=$(date +%s.%N)
log() { $quiet || echo "docker29.sh: $*" >&2; }
die() { echo "docker29.sh: error: $*" >&2; exit 1; }
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1fs", b - a }'; }

command -v go >/dev/null || die "go is not on PATH; install Go >= 1.25 and retry"

cache_root="${DPA_CACHE_DIR:-$HOME/.cache/docker-port-allowlist}"
docker_dir="$cache_root/docker/v$DOCKER_VERSION"
bin="$docker_dir/bin"
mkdir -p "$bin"

# Several jest workers or CI steps may call this at once: one builds, the others wait.
exec 9>"$docker_dir/.lock"
if ! flock -n 9; then
  log "another docker29.sh is building in $docker_dir; waiting (up to 60 min)"
  flock -w 3600 9 || die "timed out waiting for the lock $docker_dir/.lock"
fi

export GOTOOLCHAIN=local GOFLAGS="-buildvcs=false"
go_version=$(go env GOVERSION)
build_log="$docker_dir/build.log"
read_stamp() { cat "$docker_dir/$1.stamp" 2>/dev/null || true; }

# build NAME STAMP BINARIES... -- GO-INSTALL-ARGS...: `go install` into a scratch GOBIN, then move
# the binaries in place and write the stamp, so an interrupted build leaves no half state.
built=""
build() {
  local name=$1 stamp=$2
  shift 2
  local outs=()
  while [[ $1 != -- ]]; do outs+=("$1"); shift; done
  shift
  local b fresh=true
  for b in "${outs[@]}"; do [[ -x $bin/$b ]] || fresh=false; done
  if $fresh && [[ $(read_stamp "$name") == "$stamp" ]]; then return 0; fi
  $no_build && die "Docker $DOCKER_VERSION's $name is not built (or built from other pins); build it once with: bash lab/docker29.sh"
  local t gobin
  t=$(date +%s.%N)
  gobin=$(mktemp -d "$docker_dir/.gobin.XXXXXX")
  log "building $name (cold: minutes on 2 cores; log: $build_log)"
  if ! GOBIN=$gobin go install -trimpath "$@" >>"$build_log" 2>&1; then
    rm -rf "$gobin"
    tail -n 40 "$build_log" >&2
    die "building $name failed: go install $* (full log: $build_log)"
  fi
  for b in "${outs[@]}"; do mv -f "$gobin/$b" "$bin/$b"; done
  rm -rf "$gobin"
  echo "$stamp" >"$docker_dir/$name.stamp"
  built+=" $name($(elapsed "$t"))"
}

: >>"$build_log"

moby=github.com/moby/moby/v2
ldflags="-X $moby/dockerversion.Version=$DOCKER_VERSION -X $moby/dockerversion.GitCommit=$MOBY_MODULE_VERSION"
build moby "moby $MOBY_MODULE_VERSION $DOCKER_VERSION $go_version" dockerd docker-proxy -- \
  -ldflags "$ldflags" "$moby/cmd/dockerd@$MOBY_MODULE_VERSION" "$moby/cmd/docker-proxy@$MOBY_MODULE_VERSION"

ctr=github.com/containerd/containerd/v2
build containerd "containerd $CONTAINERD_VERSION $go_version" containerd containerd-shim-runc-v2 -- \
  -ldflags "-X $ctr/version.Version=$CONTAINERD_VERSION" \
  "$ctr/cmd/containerd@$CONTAINERD_VERSION" "$ctr/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION"

# runc needs libseccomp through cgo: without it containerd's default seccomp profile fails with
# "seccomp: config provided but seccomp not supported".
if ! pkg-config --exists libseccomp 2>/dev/null; then
  die "runc needs libseccomp-dev and pkg-config (Debian); install them with: sudo bash lab/setup.sh"
fi
CGO_ENABLED=1 build runc "runc $RUNC_VERSION $go_version seccomp" runc -- \
  -tags seccomp -ldflags "-X main.version=${RUNC_VERSION#v}" "github.com/opencontainers/runc@$RUNC_VERSION"

# --- verify what we hand out -------------------------------------------------------------
dockerd_version=$("$bin/dockerd" --version 2>/dev/null) || die "$bin/dockerd does not run; delete $docker_dir and rerun"
[[ $dockerd_version == "Docker version $DOCKER_VERSION,"* ]] ||
  die "$bin/dockerd reports '$dockerd_version', expected Docker version $DOCKER_VERSION; delete $docker_dir and rerun"
containerd_version=$("$bin/containerd" --version 2>/dev/null) || die "$bin/containerd does not run; delete $docker_dir and rerun"
# Whole output first: a reader that stops early (head, grep -q) would make runc die of SIGPIPE.
runc_out=$("$bin/runc" --version 2>/dev/null) || die "$bin/runc does not run; delete $docker_dir and rerun"
runc_version=${runc_out%%$'\n'*}
[[ $runc_out == *$'\n'libseccomp* ]] || die "$bin/runc was built without seccomp; delete $docker_dir and rerun"

total=$(elapsed "$t_start")
if [[ -n $built ]]; then log "built:$built; total $total"; else log "cached Docker $DOCKER_VERSION reused in $total"; fi

if [[ $mode == bin ]]; then
  echo "$bin"
else
  cat <<EOF
Docker $DOCKER_VERSION for the lab ready in $total
  bin:         $bin
  dockerd:     $dockerd_version (module github.com/moby/moby/v2)
  containerd:  $containerd_version
  runc:        $runc_version
EOF
fi
