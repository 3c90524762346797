# shellcheck shell=bash
# Exit codes of sync.sh: the one table. The loader (provider/host/scripts.ts) puts this file in
# place of sync.sh's `. ./exit-codes.sh` and parses its `EXIT_<NAME>=<code>` lines into the
# `EXIT` map that failure() in provider/host/failure.ts switches on. One assignment per line, a
# comment after each: what the code means for the host.
# shellcheck disable=SC2034 # checked alone, nothing here uses the names; sync.sh does
EXIT_DONE=0             # done; or nothing to do
EXIT_CONFLICT=10        # the live state changed before every plan sent; nothing changed
EXIT_TEST_FAILED=11     # iptables-restore --test rejected a payload; nothing changed
EXIT_APPLY_FAILED=12    # a restore failed; every family applied so far was rolled back
EXIT_ROLLED_BACK=13     # no commit came (verification failed, timeout, EOF): rolled back
EXIT_PERSIST_FAILED=14  # committed and live, but saving the rules files failed
EXIT_LOCK_TIMEOUT=15    # another writer held the host lock for longer than lockwait
EXIT_ROLLBACK_FAILED=16 # a restore failed and so did the rollback: the host may be half-changed
EXIT_NO_PLAN=17         # no plan within ptimeout (or EOF, or cut short); nothing changed
EXIT_SETUP_FAILED=20    # mktemp, the lock file, a bad plan header or a save failed; nothing changed
EXIT_NO_FLOCK=21        # flock is not installed
