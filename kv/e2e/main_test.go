//go:build unix

package e2e

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
	flagSoak            = flag.Duration("e2e.soak", 0, "run the kill -9 soak for this long (0: skip it)")
	flagLogs            = flag.Bool("e2e.logs", false, "print every node's log at the end of its test, not only a failed test's")
	flagRace            = flag.String("e2e.race", "auto", "build graftkv with -race: auto (as the test binary is built), on or off")
	flagInstallChromium = flag.Bool("e2e.install-chromium", false, "install Debian's chromium with scripts/install-chromium.sh if it is missing (also done when $CI is set)")
	flagScreenshot      = flag.String("e2e.screenshot", "", "save the browser test's screenshot of the status page to this PNG file")
)

// raceEnabled is set when the test binary is built with -race.
var raceEnabled bool

// Paths of the binaries TestMain builds.
var (
	graftkvBin  string
	graftctlBin string
)

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		// Every test skips; do not spend time building.
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "graftkv-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	code := func() int {
		defer os.RemoveAll(dir)
		race := *flagRace == "on" || (*flagRace == "auto" && raceEnabled)
		graftkvBin = filepath.Join(dir, "graftkv")
		graftctlBin = filepath.Join(dir, "graftctl")
		for _, b := range []struct{ out, pkg string }{
			{graftkvBin, "github.com/graft-raft/graft/cmd/graftkv"},
			{graftctlBin, "github.com/graft-raft/graft/cmd/graftctl"},
		} {
			if err := goBuild(b.out, b.pkg, race); err != nil {
				fmt.Fprintf(os.Stderr, "e2e: building %s: %v\n", b.pkg, err)
				return 1
			}
		}
		return m.Run()
	}()
	os.Exit(code)
}

// goBuild builds pkg into out with the go command that runs the tests.
func goBuild(out, pkg string, race bool) error {
	gobin, err := exec.LookPath("go")
	if err != nil {
		if root := os.Getenv("GOROOT"); root != "" {
			gobin = filepath.Join(root, "bin", "go")
		} else {
			return fmt.Errorf("no go command in PATH: %v", err)
		}
	}
	args := []string{"build", "-o", out}
	if race {
		args = append(args, "-race")
	}
	args = append(args, pkg)
	start := time.Now()
	cmd := exec.Command(gobin, args...)
	output, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, output)
	}
	fmt.Fprintf(os.Stderr, "e2e: built %s (race=%v) in %v\n", pkg, race, time.Since(start).Round(time.Millisecond))
	return nil
}

// childEnv is the environment of the processes the tests start. A
// binary built with -race sleeps a second at exit to let late reports
// through (GORACE atexit_sleep_ms=1000), which every graftctl call and
// graceful stop would pay: turn that off, keeping any other GORACE option.
func childEnv() []string {
	env := os.Environ()
	if gr := os.Getenv("GORACE"); !strings.Contains(gr, "atexit_sleep_ms") {
		env = append(env, "GORACE="+strings.TrimSpace(gr+" atexit_sleep_ms=0"))
	}
	return env
}

// inCI reports whether $CI says the tests run in continuous integration.
func inCI() bool {
	switch strings.ToLower(os.Getenv("CI")) {
	case "", "0", "false", "no":
		return false
	}
	return true
}
