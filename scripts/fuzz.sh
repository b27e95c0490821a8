#!/usr/bin/env bash
# Runs every `func Fuzz*` target in the module for the given budget each:
# a duration (10s, 10m) or an execution count (30000x).
# CI uses a count: with a duration, Go's fuzzing coordinator can report a
# bare "context deadline exceeded" when the time runs out while a worker is
# mid-call on a loaded machine (golang/go#51484, #75804), failing a run that
# found nothing. A count has no deadline to race.
# Usage: scripts/fuzz.sh 10s | scripts/fuzz.sh 30000x
set -euo pipefail
cd "$(dirname "$0")/.."
t=${1:-10s}
grep -rl --include='*_test.go' '^func Fuzz' . | while read -r f; do
  pkg=./$(dirname "${f#./}")
  grep -o '^func Fuzz[A-Za-z0-9_]*' "$f" | sed 's/^func //' | while read -r target; do
    echo "fuzz: $pkg $target ($t)"
    go test -run='^$' -fuzz="^${target}\$" -fuzztime="$t" -fuzzminimizetime=10s "$pkg"
  done
done
