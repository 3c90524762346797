#!/usr/bin/env bash
# The main job in one command, on a fresh Debian 12 machine or a warm one (as root):
#
#   bash scripts/demo.sh           lab of 3 Docker hosts + 3 clients, pulumi preview --diff and up on the
#                                  root program, a traffic matrix checked against the policy, clean up
#   bash scripts/demo.sh --keep    the same, but leave the lab and the stack up and print how to explore
#
# Exit status 0 only when every probe matched the policy (see scripts/demo.ts for the steps).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ $(id -u) -ne 0 ]]; then
  echo "demo: must run as root (it creates network namespaces and runs dockerd); try: sudo bash scripts/demo.sh" >&2
  exit 1
fi

echo "[demo] installing what is missing: Debian packages (lab/setup.sh), npm packages, the Pulumi engine"
bash lab/setup.sh
if [[ ! -d node_modules || package-lock.json -nt node_modules/.package-lock.json ]]; then
  npm ci --no-audit --no-fund
fi
bash scripts/engine.sh

# Run the TypeScript directly: a require hook that only transpiles (type-checking is the tests' job,
# `npx tsc --noEmit -p .`), so the demo starts in a second without a build step.
exec node -e '
const ts = require("typescript");
const fs = require("fs");
require.extensions[".ts"] = (module, file) => {
  const out = ts.transpileModule(fs.readFileSync(file, "utf8"), {
    fileName: file,
    compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, esModuleInterop: true },
  });
  module._compile(out.outputText, file);
};
require("./scripts/demo.ts").main(process.argv.slice(1)).then((code) => process.exit(code));
' -- "$@"
