//go:build linux

package faults

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var (
	flagSeed      = flag.Uint64("faults.seed", 0, "seed of every scenario's fault schedule and clients (0: a new one per run, printed)")
	flagSoak      = flag.Duration("faults.soak", 0, "TestSoak: run every scenario over new seeds for this long (0: skip TestSoak)")
	flagSoakSeeds = flag.Int("faults.soak-seeds", 0, "TestSoak: stop once every scenario ran this many seeds (0: only the duration bounds it)")
	flagScenarios = flag.String("faults.scenarios", "", "TestSoak: run only the scenarios whose name matches this regexp")
	flagResults   = flag.String("faults.results", "results", "where a failed run leaves its history, visualisation, data dirs and logs")
	flagKeep      = flag.Bool("faults.keep", false, "leave the results of passing runs too")
	flagLogs      = flag.Bool("faults.logs", false, "print the nodes' logs at the end of every run, not only a failed one's")
	flagBin       = flag.String("faults.bin", "", "use this graftkv binary instead of building ./cmd/graftkv (for testing a patched build)")
	flagScale     = flag.Float64("faults.scale", 1, "multiply the scenarios' phase durations (longer runs find more)")
)

// graftkvBin is the binary every scenario runs.
var graftkvBin string

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run()) // every scenario skips
	}
	if *flagBin != "" {
		graftkvBin = *flagBin
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "graft-faults-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "faults:", err)
		os.Exit(1)
	}
	code := func() int {
		defer os.RemoveAll(dir)
		graftkvBin = filepath.Join(dir, "graftkv")
		if err := goBuild(graftkvBin, "github.com/graft-raft/graft/cmd/graftkv"); err != nil {
			fmt.Fprintln(os.Stderr, "faults:", err)
			return 1
		}
		return m.Run()
	}()
	os.Exit(code)
}

// goBuild builds pkg into out without the race detector, whatever the
// test binary has: graftkv runs in processes of its own, and an
// instrumented build would slow every scenario several times over. The
// build settings are deploy/build-image.sh's (static, -trimpath), so that
// in one `make test` the container tests reuse these compiled packages
// instead of compiling every dependency a second time.
func goBuild(out, pkg string) error {
	gobin, err := exec.LookPath("go")
	if err != nil {
		root := os.Getenv("GOROOT")
		if root == "" {
			return fmt.Errorf("no go command in PATH: %v", err)
		}
		gobin = filepath.Join(root, "bin", "go")
	}
	args := []string{"build", "-trimpath", "-o", out, pkg}
	start := time.Now()
	cmd := exec.Command(gobin, args...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if output, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, output)
	}
	fmt.Fprintf(os.Stderr, "faults: built %s in %v\n", pkg, time.Since(start).Round(time.Millisecond))
	return nil
}
