#!/usr/bin/env bash
# Build (once per version) and locate the real Pulumi engine, offline.
#
#   scripts/engine.sh              build or reuse; print where it is, versions and timings
#   eval "$(scripts/engine.sh --env)"   same, then export PATH, PULUMI_HOME, ... into this shell
#
#   DPA_PULUMI_VERSION=3.276.0 scripts/engine.sh [--env]   another version (the newest-Pulumi
#                                  test leg, scripts/newest-leg.sh); package.json's is the default
#
# Why: the Pulumi CLI installer downloads a binary from outside, which our machines cannot
# reach; the Go module proxy is reachable. So the CLI is built from its Go module, and the
# Node.js language host is our own (tools/pulumi-language-nodejs; the upstream one is not
# served by the proxy). CLI, language host and SDK protocol come from ONE go.mod/go.sum in
# that directory, pinned to the @pulumi/pulumi version in package.json. For another version
# (DPA_PULUMI_VERSION) that module is copied into the cache and moved to that version there
# (go get pkg/v3 and sdk/v3 @v<version>, go mod tidy, from the module proxy); the repo's
# go.mod/go.sum are never touched.
# The YAML language host (pulumi-yaml, for Pulumi YAML programs such as examples/yaml) comes from a
# module of its own, tools/pulumi-language-yaml, built for the default version only; and
# pulumi-resource-pulumi-nodejs, the dynamic-provider plugin, is a copy of our language host.
#
# Binaries are cached per version OUTSIDE the repo:
#   ${DPA_CACHE_DIR:-$HOME/.cache/docker-port-allowlist}/engine/v<version>/bin
# A cold build takes minutes (hundreds of MB of modules); a warm run takes well under a second.
# A stamp of the inputs (go.mod, go.sum, sources, Go version) decides what is rebuilt.
set -euo pipefail

usage() {
  cat >&2 <<'EOF'
usage: scripts/engine.sh [--env] [--quiet]
  --env    print only shell exports on stdout (progress goes to stderr): eval "$(scripts/engine.sh --env)"
  --quiet  no progress messages on stderr (errors are still printed)
EOF
}

mode=info
quiet=false
for arg in "$@"; do
  case "$arg" in
    --env) mode="env" ;;
    --quiet) quiet=true ;;
    -h | --help) usage; exit 0 ;;
    *) echo "engine.sh: unknown argument '$arg'" >&2; usage; exit 2 ;;
  esac
done

t_start=$(date +%s.%N)
log() { $quiet || echo "engine.sh: $*" >&2; }
die() { echo "engine.sh: error: $*" >&2; exit 1; }
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1fs", b - a }'; }

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mod="$repo/tools/pulumi-language-nodejs"

command -v go >/dev/null || die "go is not on PATH; install Go >= 1.25 (the module pins go 1.25.11) and retry"
command -v node >/dev/null || die "node is not on PATH; install Node.js >= 20 and retry"

# --- versions: package.json is the source of truth; go.mod and node_modules must agree ------
pinned_version() { # pkg|sdk -> the version tools/pulumi-language-nodejs/go.mod requires
  awk -v m="github.com/pulumi/pulumi/$1/v3" '$1 == m { sub(/^v/, "", $2); print $2; exit }' "$mod/go.mod"
}
if [[ -n "${DPA_PULUMI_VERSION:-}" ]]; then
  version=$DPA_PULUMI_VERSION
  [[ "$version" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] ||
    die "DPA_PULUMI_VERSION is '$version'; it must be an exact version such as 3.276.0 (no leading v)"
else
  version=$(node -p 'require(process.argv[1]).devDependencies["@pulumi/pulumi"]' "$repo/package.json")
  [[ "$version" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] ||
    die "package.json devDependencies[\"@pulumi/pulumi\"] is '$version'; it must be an exact version such as 3.248.0 so that CLI, language host and SDK match"
  for m in pkg sdk; do
    [[ "$(pinned_version $m)" == "$version" ]] ||
      die "tools/pulumi-language-nodejs/go.mod requires github.com/pulumi/pulumi/$m/v3 'v$(pinned_version $m)' but package.json pins @pulumi/pulumi $version; run: (cd tools/pulumi-language-nodejs && go get github.com/pulumi/pulumi/pkg/v3@v$version github.com/pulumi/pulumi/sdk/v3@v$version && go mod tidy)"
  done
  sdk_pkg="$repo/node_modules/@pulumi/pulumi/package.json"
  if [[ -f "$sdk_pkg" ]]; then
    installed=$(node -p 'require(process.argv[1]).version' "$sdk_pkg")
    [[ "$installed" == "$version" ]] ||
      die "node_modules has @pulumi/pulumi $installed but package.json pins $version; run: npm ci"
  fi
fi

cache_root="${DPA_CACHE_DIR:-$HOME/.cache/docker-port-allowlist}"
engine_dir="$cache_root/engine/v$version"
bin="$engine_dir/bin"
mkdir -p "$bin" "$engine_dir/home"

export GOTOOLCHAIN=local CGO_ENABLED=0
# -mod=readonly: build exactly what go.sum pins; never rewrite it during a build.
export GOFLAGS="-mod=readonly -buildvcs=false"
ldflags="-X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=v$version"

# Several jest workers or CI jobs may call this at once: one builds, the others wait.
exec 9>"$engine_dir/.lock"
if ! flock -n 9; then
  log "another engine.sh is building in $engine_dir; waiting (up to 30 min)"
  flock -w 1800 9 || die "timed out waiting for the lock $engine_dir/.lock"
fi

go_version=$(go env GOVERSION)
hash_of() { cat "$@" | sha256sum | cut -c1-16; }
build_log="$engine_dir/build.log"

# Another version than go.mod pins: build from a copy of the module moved to that version.
# The copy is made again when the repo's module (go.mod, go.sum, sources) or Go changes.
if [[ "$(pinned_version pkg)" != "$version" || "$(pinned_version sdk)" != "$version" ]]; then
  src="$engine_dir/src"
  src_stamp="src $version $go_version $(cd "$mod" && hash_of go.mod go.sum ./*.go)"
  if [[ ! -f "$src/go.sum" || "$(cat "$engine_dir/src.stamp" 2>/dev/null)" != "$src_stamp" ]]; then
    t=$(date +%s.%N)
    log "moving a copy of tools/pulumi-language-nodejs to Pulumi v$version (go get, go mod tidy)"
    rm -rf "$src" && mkdir -p "$src" && cp "$mod"/go.mod "$mod"/go.sum "$mod"/*.go "$src"/
    : >"$build_log"
    if ! (cd "$src" && GOFLAGS=-mod=mod go get "github.com/pulumi/pulumi/pkg/v3@v$version" \
      "github.com/pulumi/pulumi/sdk/v3@v$version" && GOFLAGS=-mod=mod go mod tidy) >>"$build_log" 2>&1; then
      tail -n 40 "$build_log" >&2
      die "could not move the language host module to Pulumi v$version in $src (full log: $build_log); is v$version served by the Go module proxy? (go list -m -versions github.com/pulumi/pulumi/pkg/v3)"
    fi
    echo "$src_stamp" >"$engine_dir/src.stamp"
    log "module copy at v$version ready after $(elapsed "$t")"
  fi
  mod=$src
fi
deps_hash=$(cd "$mod" && hash_of go.mod go.sum)
cli_stamp="cli $version $go_version $deps_hash"
host_stamp="host $version $go_version $(cd "$mod" && hash_of go.mod go.sum ./*.go)"
read_stamp() { cat "$engine_dir/$1.stamp" 2>/dev/null || true; }

run_logged() {
  if ! "$@" >>"$build_log" 2>&1; then
    tail -n 40 "$build_log" >&2
    die "'$*' failed in $PWD (full log: $build_log)"
  fi
}

built=""
if [[ ! -x "$bin/pulumi" || ! -x "$bin/pulumi-language-nodejs" || "$(read_stamp cli)" != "$cli_stamp" ||
  "$(read_stamp host)" != "$host_stamp" ]]; then
  : >"$build_log"
  t=$(date +%s.%N)
  log "downloading Go modules (cold: hundreds of MB from the Go module proxy)"
  (cd "$mod" && run_logged go mod download)
  log "modules ready after $(elapsed "$t")"
fi

if [[ ! -x "$bin/pulumi-language-nodejs" || "$(read_stamp host)" != "$host_stamp" ]]; then
  t=$(date +%s.%N)
  log "building pulumi-language-nodejs (our language host)"
  (cd "$mod" && run_logged go build -trimpath -ldflags "$ldflags" -o "$bin/.pulumi-language-nodejs.tmp" .)
  mv -f "$bin/.pulumi-language-nodejs.tmp" "$bin/pulumi-language-nodejs"
  echo "$host_stamp" >"$engine_dir/host.stamp"
  built+=" pulumi-language-nodejs($(elapsed "$t"))"
fi

if [[ ! -x "$bin/pulumi" || "$(read_stamp cli)" != "$cli_stamp" ]]; then
  t=$(date +%s.%N)
  log "building pulumi v$version CLI (cold: about 7-10 min on 2 cores)"
  (cd "$mod" && run_logged go build -trimpath -tags osusergo -ldflags "$ldflags" \
    -o "$bin/.pulumi.tmp" github.com/pulumi/pulumi/pkg/v3/cmd/pulumi)
  mv -f "$bin/.pulumi.tmp" "$bin/pulumi"
  echo "$cli_stamp" >"$engine_dir/cli.stamp"
  built+=" pulumi($(elapsed "$t"))"
fi

# The dynamic-provider plugin: upstream's is a shell shim (in the sdk/v3 module, nodejs/dist) that
# runs @pulumi/pulumi/cmd/dynamic-provider resolved from the project's directory, which fails in a
# YAML project using this package as a component (pulumi/pulumi#5455). Our language host does the
# same resolution and then falls back to the project's local packages when it runs under the
# shim's name (tools/pulumi-language-nodejs/dynamic_provider.go): a copy of it under that name (a
# copy, not a link, so that whatever replaces one of the two files never leaves the other broken).
shim="$bin/pulumi-resource-pulumi-nodejs"
if [[ -L "$shim" ]] || ! cmp -s "$bin/pulumi-language-nodejs" "$shim"; then
  cp -f "$bin/pulumi-language-nodejs" "$shim.tmp"
  mv -f "$shim.tmp" "$shim"
  rm -f "$engine_dir/shim.stamp"
  built+=" pulumi-resource-pulumi-nodejs(copy of the language host)"
fi

# The YAML language host (Pulumi YAML programs, e.g. examples/yaml): pulumi-yaml from its own
# module, tools/pulumi-language-yaml, so that its dependencies never move the Pulumi version
# pinned above. Only for the default version: the newest-Pulumi leg runs no YAML program.
yaml_mod="$repo/tools/pulumi-language-yaml"
yaml_version=$(awk -v m=github.com/pulumi/pulumi-yaml '$1 == "require" && $2 == m { print $3; exit }
  $1 == m { print $2; exit }' "$yaml_mod/go.mod")
yaml_host=""
if [[ -z "${DPA_PULUMI_VERSION:-}" ]]; then
  yaml_host="$bin/pulumi-language-yaml"
  yaml_stamp="yaml $yaml_version $go_version $(cd "$yaml_mod" && hash_of go.mod go.sum tools.go)"
  if [[ ! -x "$yaml_host" || "$(read_stamp yaml)" != "$yaml_stamp" ]]; then
    t=$(date +%s.%N)
    log "building pulumi-language-yaml $yaml_version (cold: about 2.5 min on 2 cores, modules included)"
    (cd "$yaml_mod" && run_logged go build -trimpath \
      -ldflags "-X github.com/pulumi/pulumi-yaml/pkg/version.Version=$yaml_version" \
      -o "$yaml_host.tmp" github.com/pulumi/pulumi-yaml/cmd/pulumi-language-yaml)
    mv -f "$yaml_host.tmp" "$yaml_host"
    echo "$yaml_stamp" >"$engine_dir/yaml.stamp"
    built+=" pulumi-language-yaml($(elapsed "$t"))"
  fi
fi

# --- verify what we hand out -------------------------------------------------------------
cli_version=$("$bin/pulumi" version 2>/dev/null) || die "$bin/pulumi does not run; delete $engine_dir and rerun"
[[ "$cli_version" == "v$version" ]] ||
  die "$bin/pulumi reports '$cli_version', expected v$version; delete $engine_dir and rerun"
host_version=$("$bin/pulumi-language-nodejs" -version) ||
  die "$bin/pulumi-language-nodejs does not run; delete $engine_dir and rerun"
[[ "$host_version" == "v$version" ]] ||
  die "$bin/pulumi-language-nodejs reports '$host_version', expected v$version; delete $engine_dir and rerun"

if [[ -n "$yaml_host" ]]; then
  # pulumi-language-yaml has no -version flag; the module version is in its build info.
  yaml_built=$(go version -m "$yaml_host" 2>/dev/null | awk '($1 == "mod" || $1 == "dep") && $2 == "github.com/pulumi/pulumi-yaml" { print $3 }')
  [[ "$yaml_built" == "$yaml_version" ]] ||
    die "$yaml_host was built from pulumi-yaml '$yaml_built', expected $yaml_version; delete $yaml_host and rerun"
fi

total=$(elapsed "$t_start")
if [[ -n "$built" ]]; then log "built:$built; total $total"; else log "cached engine v$version reused in $total"; fi

passphrase="${PULUMI_CONFIG_PASSPHRASE:-dpa-local-engine}"
if [[ "$mode" == env ]]; then
  q() { printf '%q' "$1"; }
  echo "export PATH=$(q "$bin"):\"\$PATH\""
  echo "export PULUMI_HOME=$(q "$engine_dir/home")"
  echo "export PULUMI_SKIP_UPDATE_CHECK=true"
  echo "export PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true"
  echo "export PULUMI_CONFIG_PASSPHRASE=$(q "$passphrase")"
else
  cat <<EOF
pulumi engine v$version ready in $total
  bin:        $bin
  pulumi:     $cli_version
  langhost:   $host_version (tools/pulumi-language-nodejs)
  yaml host:  $(if [[ -n "$yaml_host" ]]; then echo "pulumi-yaml $yaml_version (tools/pulumi-language-yaml)"; else echo "not built (DPA_PULUMI_VERSION is set)"; fi)
  provider:   $shim
  PULUMI_HOME=$engine_dir/home (isolated)
Use it:  eval "\$(scripts/engine.sh --env)"   then e.g.  PULUMI_BACKEND_URL=file://\$PWD/.state pulumi preview
EOF
fi
