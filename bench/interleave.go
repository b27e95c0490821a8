package main

import (
	"errors"
	"fmt"
	"slices"
)

// interleaved runs one for each of systems, runs times: in the order given
// on odd runs and reversed on even ones, so that drifts in the machine's
// load hit every system alike. A run whose setup fails (a setupError) is
// started over on a fresh cluster, up to 3 attempts; each such failure is
// returned in retries. Every successful run goes to done. label names the
// configuration (a row of the report) in messages.
func interleaved[R any](systems []string, runs int, label string, one func(sys string) (R, error), done func(sys string, run int, r R)) (retries []string, err error) {
	for i := 1; i <= runs; i++ {
		order := slices.Clone(systems)
		if i%2 == 0 {
			slices.Reverse(order)
		}
		for _, sys := range order {
			var r R
			for attempt := 1; ; attempt++ {
				r, err = one(sys)
				var se setupError
				if err == nil || !errors.As(err, &se) || attempt == 3 {
					break
				}
				retries = append(retries, fmt.Sprintf("%s, %s, run %d, attempt %d: %v", sys, label, i, attempt, err))
				logf("%s %s run %d: setup failed (%v), starting over with a fresh cluster", sys, label, i, err)
			}
			if err != nil {
				return retries, fmt.Errorf("%s, %s, run %d: %w", sys, label, i, err)
			}
			done(sys, i, r)
		}
	}
	return retries, nil
}
