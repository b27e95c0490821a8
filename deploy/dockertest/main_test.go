package dockertest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/graft-raft/graft/internal/leakcheck"
)

var (
	flagLogs = flag.Bool("docker.logs", false, "print every container's log at the end of its test, not only a failed test's")
	flagSeed = flag.Uint64("docker.seed", 0, "seed of TestFaultsLinearizable's schedule (0: a new one, logged)")
)

// Set by TestMain.
var (
	// dockerUnusable says why the tests cannot run ("" if they can).
	dockerUnusable string
	// runID names this run's Docker objects and is their graft.test label.
	runID string
	// image is the tag of the image built for this run.
	image string
	// repoRoot is the repository's top directory.
	repoRoot string
)

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run()) // every test skips; build nothing
	}
	if why := dockerProblem(); why != "" {
		dockerUnusable = why
		fmt.Fprintf(os.Stderr, "dockertest: SKIPPING the multi-host tests: %s\n", why)
		os.Exit(m.Run())
	}
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	runID = "gt" + hex.EncodeToString(b)
	code := func() int {
		var err error
		if repoRoot, err = filepath.Abs(filepath.Join("..", "..")); err != nil {
			fmt.Fprintln(os.Stderr, "dockertest:", err)
			return 1
		}
		sweepStale()
		defer sweepRun()
		image = runID + "-graftkv:1"
		if err := buildImage(image, "1"); err != nil {
			fmt.Fprintln(os.Stderr, "dockertest:", err)
			return 1
		}
		code := m.Run()
		if err := leakcheck.Find(); code == 0 && err != nil {
			fmt.Fprintln(os.Stderr, "dockertest: goroutines left running:", err)
			code = 1
		}
		return code
	}()
	os.Exit(code)
}

// requireDocker skips t when Docker cannot run the tests, or in -short mode.
func requireDocker(t *testing.T) {
	t.Helper()
	switch {
	case testing.Short():
		t.Skip("dockertest: starts Docker containers; skipped in -short mode")
	case dockerUnusable != "":
		t.Skipf("dockertest: SKIPPED, multi-host tests need Docker: %s", dockerUnusable)
	}
}

// dockerProblem returns why Docker cannot be used, or "".
func dockerProblem() string {
	if _, err := exec.LookPath("docker"); err != nil {
		return "no docker command in PATH"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", "info", "--format", "{{.ServerVersion}} {{.OSType}}").CombinedOutput()
	if err != nil {
		return fmt.Sprintf("`docker info` failed (%v): %s", err, strings.TrimSpace(string(out)))
	}
	if f := strings.Fields(string(out)); len(f) != 2 || f[1] != "linux" {
		return fmt.Sprintf("the Docker daemon does not run Linux containers: %q", strings.TrimSpace(string(out)))
	}
	return ""
}

var buildMu sync.Mutex

// buildImage builds tag with deploy/build-image.sh, as a user would, with
// this run's labels and graft.test.build=build (so that two builds of the
// same code are different images).
func buildImage(tag, build string) error {
	buildMu.Lock()
	defer buildMu.Unlock()
	args := []string{tag, "--label", "graft.test.build=" + build}
	for _, l := range labels() {
		args = append(args, "--label", l)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	cmd := exec.CommandContext(ctx, filepath.Join(repoRoot, "deploy", "build-image.sh"), args...)
	cmd.Dir = repoRoot
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("deploy/build-image.sh %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	fmt.Fprintf(os.Stderr, "dockertest: built image %s in %v\n", tag, time.Since(start).Round(time.Millisecond))
	return nil
}
