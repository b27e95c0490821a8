package dockertest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// composeCommand returns the docker-compose command line: docker-compose
// (v1) or the docker compose plugin (v2), or nil if there is neither.
func composeCommand() []string {
	if _, err := exec.LookPath("docker-compose"); err == nil {
		return []string{"docker-compose"}
	}
	if _, err := docker("compose", "version"); err == nil {
		return []string{"docker", "compose"}
	}
	return nil
}

// TestCompose brings up deploy/docker-compose.yml as the README says, with
// this run's image and free ports, writes through one node (redirected to
// the leader), reads through the others and with graftctl inside a
// container, and takes it down with its volumes. An override file labels
// what compose creates, like everything else here.
func TestCompose(t *testing.T) {
	requireDocker(t)
	compose := composeCommand()
	if compose == nil {
		t.Skip("dockertest: SKIPPED, neither docker-compose nor the docker compose plugin is installed")
	}
	project := runID + "-compose"
	override := filepath.Join(t.TempDir(), "labels.yml")
	var b strings.Builder
	b.WriteString("services:\n")
	for _, n := range []string{"n1", "n2", "n3"} {
		fmt.Fprintf(&b, "  %s:\n    labels: {%q: %q, %q: %q}\n", n, labelRun, runID, labelOwner, owner())
	}
	fmt.Fprintf(&b, "networks:\n  graftkv:\n    labels: {%q: %q, %q: %q}\nvolumes:\n", labelRun, runID, labelOwner, owner())
	for _, n := range []string{"n1", "n2", "n3"} {
		fmt.Fprintf(&b, "  %s:\n    labels: {%q: %q, %q: %q}\n", n, labelRun, runID, labelOwner, owner())
	}
	if err := os.WriteFile(override, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (string, error) {
		args = append(append(compose[1:], "--project-name", project,
			"--file", filepath.Join(repoRoot, "deploy", "docker-compose.yml"), "--file", override), args...)
		cmd := exec.Command(compose[0], args...)
		cmd.Env = append(os.Environ(), "GRAFTKV_IMAGE="+image,
			"GRAFTKV_N1_HTTP=127.0.0.1:", "GRAFTKV_N2_HTTP=127.0.0.1:", "GRAFTKV_N3_HTTP=127.0.0.1:")
		out, err := cmd.CombinedOutput()
		if err != nil {
			return string(out), fmt.Errorf("%s %s: %v\n%s", compose[0], strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out)), nil
	}
	t.Cleanup(func() {
		if t.Failed() || *flagLogs {
			out, _ := run("logs", "--no-color")
			t.Logf("dockertest: compose logs:\n%s", out)
		}
		if _, err := run("down", "--volumes", "--timeout", "30"); err != nil {
			t.Error(err)
		}
		if left, _ := docker("ps", "-aq", "--filter", "label=com.docker.compose.project="+project); left != "" {
			t.Errorf("docker-compose down left containers: %s", left)
		}
	})
	if _, err := run("up", "-d"); err != nil {
		t.Fatal(err)
	}

	c := &cluster{t: t}
	c.initHTTP()
	t.Cleanup(c.tr.CloseIdleConnections)
	for _, id := range []string{"n1", "n2", "n3"} {
		n := &node{c: c, id: id}
		out, err := run("port", id, httpPort)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(out, "127.0.0.1:") {
			t.Fatalf("%s's HTTP port is published on %q, want 127.0.0.1 only", id, out)
		}
		n.mu.published, n.mu.state = lines(out)[0], "running"
		if n.mu.container, err = run("ps", "-q", id); err != nil {
			t.Fatal(err)
		}
		c.nodes = append(c.nodes, n)
	}
	for _, n := range c.nodes {
		n.waitServing()
	}
	l := c.waitLeader()
	t.Logf("compose cluster up; %s leads", l.id)

	// curl -L -X PUT --data-binary world http://n1:8000/v1/kv/hello, and reads.
	var follower *node
	for _, n := range c.nodes {
		if n != l {
			follower = n
		}
	}
	if code, body, err := do(c.follow, "PUT", follower.url(kvPath("hello"), nil), []byte("world")); err != nil || code != 200 {
		t.Fatalf("PUT hello through %s: %d %s %v", follower.id, code, trunc(body), err)
	}
	for _, n := range c.nodes {
		if code, body, err := do(c.follow, "GET", n.url(kvPath("hello"), nil), nil); err != nil || code != 200 || string(body) != "world" {
			t.Errorf("GET hello through %s: %d %q %v, want 200 world", n.id, code, trunc(body), err)
		}
	}
	out, err := run("exec", "-T", follower.id, "graftctl", "get", "hello")
	if err != nil || out != "world" {
		t.Errorf("graftctl get hello in %s: %q %v, want world", follower.id, out, err)
	}
	c.waitCaughtUp()
	for _, n := range c.nodes {
		if v, ok, err := n.staleGet("hello"); err != nil || !ok || v != "world" {
			t.Errorf("stale GET hello on %s: %q %v %v, want world", n.id, v, ok, err)
		}
	}
}
