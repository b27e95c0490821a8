//go:build linux

package faults

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// soakRow is one scenario's line of the soak table.
type soakRow struct {
	runs, failed, skipped int
	violations            int // runs with a violation
	lostWrites            int
	maxUnavail            time.Duration
	failedSeeds           []uint64
	took                  time.Duration
}

// TestSoak runs every scenario (or those -faults.scenarios matches) over
// new seeds, round after round, for -faults.soak (and at most
// -faults.soak-seeds rounds), then prints a table: scenario, runs,
// violations, lost writes, longest unavailability.
func TestSoak(t *testing.T) {
	if *flagSoak <= 0 {
		t.Skip("faults: the soak runs only with -faults.soak=DURATION (see faults/soak.sh)")
	}
	re, err := regexp.Compile(*flagScenarios)
	if err != nil {
		t.Fatalf("-faults.scenarios: %v", err)
	}
	var selected []scenario
	for _, sc := range allScenarios {
		if re.MatchString(sc.name) {
			selected = append(selected, sc)
		}
	}
	if len(selected) == 0 {
		t.Fatalf("-faults.scenarios=%q matches no scenario", *flagScenarios)
	}
	start := time.Now()
	deadline := start.Add(*flagSoak)
	rows := map[string]*soakRow{}
	for _, sc := range selected {
		rows[sc.name] = &soakRow{}
	}
	rounds := 0
soak:
	for ; *flagSoakSeeds == 0 || rounds < *flagSoakSeeds; rounds++ {
		for _, sc := range selected {
			if time.Now().After(deadline) {
				break soak
			}
			seed := newSeed()
			if *flagSeed != 0 {
				seed = *flagSeed + uint64(rounds)
			}
			res := &result{}
			ok := t.Run(fmt.Sprintf("%s/seed=%d", sc.name, seed), func(t *testing.T) { runScenario(t, sc, seed, res) })
			row := rows[sc.name]
			row.took += res.took
			if res.skipped {
				row.skipped++
				continue
			}
			row.runs++
			if len(res.violations) > 0 {
				row.violations++
			}
			row.lostWrites += res.lostWrites
			row.maxUnavail = max(row.maxUnavail, res.maxUnavail)
			verdict := "ok"
			if !ok {
				row.failed++
				row.failedSeeds = append(row.failedSeeds, seed)
				verdict = "FAILED"
				if len(res.violations) > 0 {
					verdict = "VIOLATION " + strings.Join(res.violations, ",")
				}
			}
			fmt.Printf("soak: %-28s seed %-20d %-8s %6d ops  unavailable ≤ %-7v %v\n", sc.name, seed, verdict, res.ops,
				res.maxUnavail.Round(time.Millisecond), res.took.Round(100*time.Millisecond))
		}
	}
	table := soakTable(selected, rows, time.Since(start))
	fmt.Print(table)
	if err := os.MkdirAll(*flagResults, 0o755); err == nil {
		path := filepath.Join(*flagResults, "soak-"+start.Format("20060102-150405")+".md")
		if os.WriteFile(path, []byte(table), 0o644) == nil {
			fmt.Printf("soak: table saved in %s\n", path)
		}
	}
}

func soakTable(selected []scenario, rows map[string]*soakRow, took time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\nsoak: %v\n\n", took.Round(time.Second))
	b.WriteString("| scenario | runs | runs with violations | lost writes | failed runs | max unavailability | time per run |\n")
	b.WriteString("| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	var total soakRow
	for _, sc := range selected {
		r := rows[sc.name]
		per := "-"
		if n := r.runs + r.skipped; n > 0 {
			per = (r.took / time.Duration(n)).Round(100 * time.Millisecond).String()
		}
		runs := fmt.Sprint(r.runs)
		if r.skipped > 0 {
			runs += fmt.Sprintf(" (%d skipped)", r.skipped)
		}
		fmt.Fprintf(&b, "| %s | %s | %d | %d | %d | %v | %s |\n", sc.name, runs, r.violations, r.lostWrites, r.failed,
			r.maxUnavail.Round(time.Millisecond), per)
		total.runs += r.runs
		total.violations += r.violations
		total.lostWrites += r.lostWrites
		total.failed += r.failed
	}
	fmt.Fprintf(&b, "| **all** | %d | %d | %d | %d | | |\n", total.runs, total.violations, total.lostWrites, total.failed)
	for _, sc := range selected {
		if r := rows[sc.name]; len(r.failedSeeds) > 0 {
			fmt.Fprintf(&b, "\nfailed: %s seeds %v\n", sc.name, r.failedSeeds)
		}
	}
	return b.String()
}
