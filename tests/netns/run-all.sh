#!/usr/bin/env bash
# tests/netns/run-all.sh — runs every tier-3 test script in tests/netns/ (all *.sh except
# lib.sh and this file), one after another, each bounded by NETNS_SCRIPT_TIMEOUT seconds
# (default 600). A script exiting 77 was skipped; with CI=true a skip counts as a failure.
#
# Closing line: "netns: N passed, M failed, K skipped"; exit 0 only if M is 0.

set -euo pipefail
DIR=$(cd "$(dirname "$0")" && pwd)
TIMEOUT=${NETNS_SCRIPT_TIMEOUT:-600}
passed=0 failed=0 skipped=0
results=()

shopt -s nullglob
for script in "$DIR"/*.sh; do
    base=$(basename "$script")
    case $base in lib.sh | run-all.sh) continue ;; esac
    echo "==== $base ===="
    rc=0
    timeout --kill-after=10 "$TIMEOUT" bash "$script" || rc=$?
    case $rc in
    0)
        passed=$((passed + 1))
        results+=("pass $base")
        ;;
    77)
        if [[ ${CI:-} == true ]]; then
            failed=$((failed + 1))
            results+=("FAIL $base (skipped, which CI=true does not allow)")
        else
            skipped=$((skipped + 1))
            results+=("SKIP $base")
        fi
        ;;
    124 | 137)
        failed=$((failed + 1))
        results+=("FAIL $base (timed out after ${TIMEOUT}s)")
        ;;
    *)
        failed=$((failed + 1))
        results+=("FAIL $base (exit $rc)")
        ;;
    esac
done

echo "==== netns summary ===="
for r in "${results[@]}"; do echo "  $r"; done
if ((passed + failed + skipped == 0)); then
    echo "netns: no test scripts found in $DIR"
    exit 1
fi
echo "netns: $passed passed, $failed failed, $skipped skipped"
((failed == 0))
