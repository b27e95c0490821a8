// Package leakcheck fails tests that leave goroutines running. It is
// goleak's VerifyNone and VerifyTestMain with a longer wait: goleak gives
// goroutines about 0.4 s to end, which goroutines of just-closed
// connections and stopped servers can exceed on a loaded 2-core machine
// running every package's tests with -race. leakcheck keeps looking for up
// to Wait before it reports them.
package leakcheck

import (
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// Wait is how long Find waits for unexpected goroutines to end.
const Wait = 10 * time.Second

// Find returns goleak's report of the goroutines still running after
// Wait, or nil as soon as none is left but those opts exclude.
func Find(opts ...goleak.Option) error {
	deadline := time.Now().Add(Wait)
	for {
		err := goleak.Find(opts...) // retries for about 0.4 s itself
		if err == nil || time.Now().After(deadline) {
			return err
		}
	}
}

// VerifyNone marks t failed if goroutines other than those opts exclude
// are still running after Wait.
func VerifyNone(t testing.TB, opts ...goleak.Option) {
	t.Helper()
	if err := Find(opts...); err != nil {
		t.Error(err)
	}
}

// VerifyTestMain runs the tests, then fails the run if they passed but
// left goroutines running (other than those opts exclude), and exits.
func VerifyTestMain(m *testing.M, opts ...goleak.Option) {
	code := m.Run()
	if code == 0 {
		if err := Find(opts...); err != nil {
			fmt.Fprintf(os.Stderr, "leakcheck: goroutines left running after the tests passed: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}
