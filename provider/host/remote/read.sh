#!/usr/bin/env bash
# dpa-read: the host's facts and filter tables, read-only (refresh); takes no lock.
# argv: rule, rulesV4Path, rulesV6Path ("-" = persistence off for that family).
#
# Runs as `bash -c '<this script, assembled>' dpa-read <argv>...`: the loader
# (provider/host/scripts.ts) puts each `. ./<file>` line's file in its place, so nothing is
# sourced on the host; shellcheck -x follows the same lines.
# shellcheck source-path=SCRIPTDIR
. ./prelude.sh
. ./report-state.sh

rule="$1"; v4path="$2"; v6path="$3"
report_state
