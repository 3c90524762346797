#!/usr/bin/env bash
# `npm run lint:sh`: bash -n and shellcheck over every shell script of the repository: the
# remote scripts the package ships (provider/host/remote/*.sh), the lab's and these scripts.
# With -x, shellcheck follows the `. ./<file>` lines of the remote entry scripts as the loader
# (provider/host/scripts.ts) does, so names defined in one file and used in another are checked.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v shellcheck >/dev/null 2>&1; then
  echo "lint:sh: shellcheck is not installed; install it with: sudo bash lab/setup.sh (or apt-get install shellcheck)" >&2
  exit 1
fi

# Tracked and new (not ignored) files, so a script is checked before its first commit.
mapfile -t files < <(git ls-files --cached --others --exclude-standard -- '*.sh' | sort -u)
((${#files[@]} > 0)) || { echo "lint:sh: no shell scripts found" >&2; exit 1; }

status=0
for f in "${files[@]}"; do
  bash -n "$f" || { echo "lint:sh: bash -n failed: $f" >&2; status=1; }
done
shellcheck -x "${files[@]}" || status=1
((status == 0)) && echo "lint:sh: ${#files[@]} scripts pass bash -n and shellcheck"
exit "$status"
