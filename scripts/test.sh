#!/usr/bin/env bash
# The one command that runs every test, on a fresh machine of this kind or a warm one:
#   bash scripts/test.sh            # install what is missing, then lint, type-check, unit, lab, engine,
#                                   # and the engine leg on the newest Pulumi and Node 24
#   bash scripts/test.sh unit       # only the fast pure tests (no root needed)
# It installs Debian packages (lab/setup.sh), npm dependencies (npm ci), the offline Pulumi engine
# (scripts/engine.sh), the newest-Pulumi leg's Node, engine and SDK (scripts/newest-leg.sh) and
# Docker 29 for the lab (lab/docker29.sh), all cached per version outside the repo, then runs
# every suite even if an earlier one failed, and ends with one line "N passed, N failed" counted
# over all jest suites.
# Lab and engine tests need root; they are never skipped: without root this script fails.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
only=${1:-all}
out=$(mktemp -d /tmp/dpa-test.XXXXXX)
status=0
t0=$(date +%s)

step() { printf '\n==> %s\n' "$*"; }
fail() { echo "FAILED: $*"; status=1; }

step "install: npm dependencies"
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund || { echo "npm ci failed"; exit 1; }
fi

if [ "$only" = all ]; then
  if [ "$(id -u)" != 0 ]; then echo "the lab and engine tests need root; run as root" >&2; exit 1; fi
  step "install: Debian packages for the lab"
  bash lab/setup.sh || { echo "lab/setup.sh failed"; exit 1; }
  step "install: the Pulumi engine (cached)"
  bash scripts/engine.sh || { echo "scripts/engine.sh failed"; exit 1; }
  eval "$(bash scripts/engine.sh --env)"
  step "install: Node 24 and the newest Pulumi for the second engine leg (cached)"
  bash scripts/newest-leg.sh --install || { echo "scripts/newest-leg.sh --install failed"; exit 1; }
  step "install: Docker 29 for the lab (cached)"
  bash lab/docker29.sh || { echo "lab/docker29.sh failed"; exit 1; }
  # A previous run that was killed may have left a lab behind: remove the labs whose owner
  # process is gone (never a live lab: another run on this machine may own it).
  bash lab/lab.sh down-all --stale >/dev/null 2>&1 || true
fi

step "lint and format"
npx eslint . || fail "eslint"
npx prettier --check . || fail "prettier"
npm run --silent lint:sh || fail "shellcheck"
step "type-check"
npx tsc --noEmit -p . || fail "tsc"

# Each project has a bound (minutes): a test that leaves a process or handle open keeps jest
# from exiting, and that must fail this run with its name, not run into CI's own limit. The
# bounds are about 3x a warm run on 2 cores (unit ~1 min, lab ~10, engine ~8, newest leg ~2.5).
run_bounded() { # name, minutes, jest command... (its report goes to $out/<name>.json)
  local name=$1 minutes=$2 rc; shift 2
  step "jest: $name"
  timeout --kill-after=30 "$((minutes * 60))" "$@" --json --outputFile="$out/$name.json"
  rc=$?
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    fail "jest $name did not end within $minutes min (a test left a process or handle open?)"
  elif [ "$rc" != 0 ]; then
    fail "jest $name"
  fi
}
run_jest() { # project, minutes, extra args...
  local project=$1 minutes=$2; shift 2
  run_bounded "$project" "$minutes" node_modules/.bin/jest --selectProjects "$project" "$@"
}
run_jest unit 10
if [ "$only" = all ]; then
  # Labs are isolated from each other, but dockerd and the engine are heavy on 2 cores.
  run_jest lab 35 --maxWorkers=2
  run_jest engine 25 --runInBand
  # The second leg: engine, lifecycle and portable-state tests on Node 24 with the newest
  # @pulumi/pulumi, CLI and language host (package.json's peer range rests on both legs).
  run_bounded engine-newest-pulumi 8 bash scripts/newest-leg.sh
  # Every test tears its lab down; whatever is left now is a leak. In CI nothing else runs on the
  # machine, so any lab namespace left is ours and fails the run.
  step "lab tear-down check"
  bash lab/lab.sh down-all --stale || fail "lab down-all --stale"
  left=$(ip netns list | grep -c '^dpa' || true)
  if [ "$left" != 0 ]; then
    if [ "${CI:-}" = true ]; then fail "$left lab namespaces left behind"; else echo "note: $left lab namespaces of other live runs"; fi
  fi
fi

# shellcheck disable=SC2016 # JavaScript for node, with its own template literals
node -e '
const fs = require("fs"); let p = 0, f = 0, s = 0;
for (const file of fs.readdirSync(process.argv[1])) {
  try { const r = JSON.parse(fs.readFileSync(process.argv[1] + "/" + file, "utf8"));
        p += r.numPassedTests; f += r.numFailedTests + r.numRuntimeErrorTestSuites; s += r.numPendingTests; }
  catch (e) { f += 1; console.log("unreadable jest report " + file); }
}
console.log(`\nwall time: ${Math.round(Date.now() / 1000) - Number(process.argv[2])} s`);
console.log(`${p} passed, ${f} failed` + (s ? `, ${s} skipped` : ""));
if (f > 0) process.exitCode = 1;' "$out" "$t0" || status=1
rm -rf "$out"
exit $status
