#!/bin/sh
# soak.sh runs every fault scenario over new seeds, round after round, for
# DURATION (and at most SEEDS rounds, 0 for no limit), then prints a table:
# scenario, runs, violations, lost writes, failed runs, longest
# unavailability. A failed run leaves its history, visualisation, data dirs
# and logs in faults/results/<test>-<seed>/; the table is saved there too.
#
#   faults/soak.sh                 # 30 minutes
#   faults/soak.sh 2h 20           # 20 seeds per scenario, at most 2 hours
#   faults/soak.sh 1h 0 -faults.scenarios='Kill9|Pause' -faults.scale=2
set -eu
duration=${1:-30m}
seeds=${2:-0}
[ $# -gt 0 ] && shift
[ $# -gt 0 ] && shift
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# A test binary run directly prints each run's line as it ends (go test
# would hold the output back until the end).
go test -c -o "$tmp/faults.test" .
"$tmp/faults.test" -test.run '^TestSoak$' -test.count=1 -test.timeout=0 \
	-faults.soak="$duration" -faults.soak-seeds="$seeds" "$@"
