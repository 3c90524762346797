# shellcheck shell=bash
# Shared start of read.sh, sync.sh and guard.sh (the loader puts this file in place of their
# `. ./prelude.sh`): a known shell state, the fingerprint, and the lock holder's line.
set -u
export LC_ALL=C
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# Core's FINGERPRINT_AWK (provider/core/fingerprint.ts), shell-quoted into the marker below by the
# loader: the host has no fingerprint logic of its own, so it computes exactly what the planner
# computed from the same text (docs/DESIGN.md "Fingerprint").
fingerprint_awk='@FINGERPRINT_AWK@'
# Fingerprints of the rules text on stdin for our chain, sha256 hex: fp covers every chain a plan
# may touch (the conflict check), saved_fp only what we own (a saved file against the live rules).
# shellcheck disable=SC2154 # rule: set by read.sh / sync.sh, which include this file
fp() { awk -v chain="DPA-$rule" -v forward=1 "$fingerprint_awk" | sha256sum | cut -d" " -f1; }
saved_fp() { awk -v chain="DPA-$rule" -v forward=0 "$fingerprint_awk" | sha256sum | cut -d" " -f1; }
# Who holds the host lock, as its holder wrote it into the lock file (sync.sh, guard.sh): the
# first line, only characters a message may carry, at most 200 of them.
lock_holder() { head -n 1 "$1" 2>/dev/null | tr -cd '[:alnum:] =._:-' | head -c 200; }
