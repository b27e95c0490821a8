package dockertest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Labels on everything the tests create.
const (
	labelRun   = "graft.test"       // the run id
	labelOwner = "graft.test.owner" // host:pid of the test process
)

// dockerTimeout bounds one docker command; docker stop waits up to 30 s
// for a graceful exit before it kills.
const dockerTimeout = 2 * time.Minute

// owner is this process's graft.test.owner label.
func owner() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s:%d", host, os.Getpid())
}

// labels is the KEY=VALUE labels of this run's objects.
func labels() []string {
	return []string{labelRun + "=" + runID, labelOwner + "=" + owner()}
}

// labelArgs is labels as --label flags.
func labelArgs() []string {
	var args []string
	for _, l := range labels() {
		args = append(args, "--label", l)
	}
	return args
}

// docker runs the docker command with args and returns its standard
// output, trimmed. The error includes the standard error.
func docker(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), dockerTimeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "docker", args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return strings.TrimSpace(stdout.String()), fmt.Errorf("docker %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

// lines splits docker's output into non-empty lines.
func lines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// object is a Docker object kind and how to list and remove it.
type object struct {
	kind   string
	list   func(filter string) ([]string, error) // ids carrying the filter
	owner  func(id string) string                // its graft.test.owner label
	remove []string                              // command that takes ids
}

// objects in removal order: containers first, then what they use.
var objects = []object{
	{
		kind: "container",
		list: func(filter string) ([]string, error) {
			out, err := docker("ps", "-aq", "--no-trunc", "--filter", "label="+filter)
			return lines(out), err
		},
		owner:  func(id string) string { return inspectLabel("container", id) },
		remove: []string{"rm", "-f", "-v"},
	},
	{
		kind: "network",
		list: func(filter string) ([]string, error) {
			out, err := docker("network", "ls", "-q", "--no-trunc", "--filter", "label="+filter)
			return lines(out), err
		},
		owner:  func(id string) string { return inspectLabel("network", id) },
		remove: []string{"network", "rm"},
	},
	{
		kind: "volume",
		list: func(filter string) ([]string, error) {
			out, err := docker("volume", "ls", "-q", "--filter", "label="+filter)
			return lines(out), err
		},
		owner:  func(id string) string { return inspectLabel("volume", id) },
		remove: []string{"volume", "rm", "-f"},
	},
	{
		kind: "image",
		list: func(filter string) ([]string, error) {
			out, err := docker("image", "ls", "-q", "--no-trunc", "--filter", "label="+filter)
			return uniq(lines(out)), err
		},
		owner:  func(id string) string { return inspectLabel("image", id) },
		remove: []string{"image", "rm", "-f"},
	},
}

func uniq(ss []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range ss {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// inspectLabel returns the graft.test.owner label of a Docker object.
func inspectLabel(kind, id string) string {
	format := `{{index .Config.Labels "` + labelOwner + `"}}`
	if kind == "network" || kind == "volume" {
		format = `{{index .Labels "` + labelOwner + `"}}`
	}
	out, err := docker(kind, "inspect", "--format", format, id)
	if err != nil {
		return ""
	}
	return out
}

// sweepStale removes what earlier runs on this host left behind when
// their process is gone (killed by a timeout, say): objects with the
// graft.test label whose owner is host:pid of a process that no longer runs.
func sweepStale() {
	host, _ := os.Hostname()
	for _, o := range objects {
		ids, err := o.list(labelRun)
		if err != nil {
			fmt.Fprintf(os.Stderr, "dockertest: listing leftover %ss: %v\n", o.kind, err)
			continue
		}
		var dead []string
		for _, id := range ids {
			h, pidStr, ok := strings.Cut(o.owner(id), ":")
			pid, err := strconv.Atoi(pidStr)
			if ok && err == nil && h == host && !processRuns(pid) {
				dead = append(dead, id)
			}
		}
		if len(dead) > 0 {
			_, err := docker(append(o.remove, dead...)...)
			fmt.Fprintf(os.Stderr, "dockertest: removed %d %s(s) left behind by an earlier run (err: %v)\n", len(dead), o.kind, err)
		}
	}
}

// processRuns reports whether a process with pid exists.
func processRuns(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// sweepRun removes every object of this run that is still there, and
// reports them: each test removes its own, so any found is a harness bug.
func sweepRun() {
	for _, o := range objects {
		ids, err := o.list(labelRun + "=" + runID)
		if err != nil {
			fmt.Fprintf(os.Stderr, "dockertest: listing this run's %ss: %v\n", o.kind, err)
			continue
		}
		if len(ids) == 0 {
			continue
		}
		if _, err := docker(append(o.remove, ids...)...); err != nil {
			fmt.Fprintf(os.Stderr, "dockertest: removing this run's %ss: %v\n", o.kind, err)
		}
		if o.kind != "image" { // images are removed here, on purpose
			fmt.Fprintf(os.Stderr, "dockertest: removed %d %s(s) that a test left behind\n", len(ids), o.kind)
		}
	}
}

// execOutput runs a command and returns its standard output and error
// together.
func execOutput(ctx context.Context, name string, args ...string) ([]byte, error) {
	return exec.CommandContext(ctx, name, args...).CombinedOutput()
}
