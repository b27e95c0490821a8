//go:build unix

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// ctl runs the graftctl binary and returns its exit code and output.
func ctl(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, graftctlBin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Env = childEnv()
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatalf("graftctl %s: %v", strings.Join(args, " "), err)
	}
	t.Logf("graftctl %s → exit %d; stdout %q; stderr %q", strings.Join(args, " "), code, trunc(out.Bytes()), trunc(errb.Bytes()))
	return code, out.String(), errb.String()
}

// ctlWant runs graftctl and checks its exit code and that stdout (exit 0)
// or stderr (exit 1) contains each of want.
func ctlWant(t *testing.T, wantCode int, want []string, args ...string) string {
	t.Helper()
	code, out, errOut := ctl(t, args...)
	if code != wantCode {
		t.Fatalf("graftctl %s: exit %d, want %d (stderr %q)", strings.Join(args, " "), code, wantCode, errOut)
	}
	where := out
	if code != 0 {
		where = errOut
		if !strings.HasPrefix(errOut, "graftctl: ") {
			t.Errorf("graftctl %s: stderr %q is not a graftctl error message", strings.Join(args, " "), errOut)
		}
	}
	for _, w := range want {
		if !strings.Contains(where, w) {
			t.Errorf("graftctl %s: output %q lacks %q", strings.Join(args, " "), where, w)
		}
	}
	return out
}

// TestGraftctl runs the graftctl binary against a live cluster, through a
// follower (so every write is redirected): exit codes, output and the
// server's errors.
func TestGraftctl(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOptions{})
	c.start()
	l := c.waitLeader()
	f := c.followers(l)[0]
	at := []string{"--addr", f.httpAddr}
	args := func(a ...string) []string { return append(slices.Clone(at), a...) }

	out := ctlWant(t, 0, []string{"id:", f.id, "role:", "leader:", l.id}, args("status")...)
	if !strings.Contains(strings.ToLower(out), "follower") {
		t.Errorf("status of follower %s does not say follower:\n%s", f.id, out)
	}
	out = ctlWant(t, 0, nil, "--addr", l.httpAddr, "--json", "status")
	var st status
	if err := json.Unmarshal([]byte(out), &st); err != nil || !st.isLeader() || st.ID != l.id {
		t.Errorf("status --json of the leader: %+v, %v", st, err)
	}

	out = ctlWant(t, 0, nil, args("put", "ctl key", "v1")...)
	if !regexp.MustCompile(`^OK \(index \d+\)\n$`).MatchString(out) {
		t.Errorf("put output %q, want OK (index N)", out)
	}
	if out := ctlWant(t, 0, nil, args("get", "ctl key")...); out != "v1\n" {
		t.Errorf("get output %q, want v1", out)
	}
	waitFor(t, 10*time.Second, "a stale read on the follower to see the put", func() (bool, string) {
		code, out, errOut := ctl(t, args("get", "ctl key", "--consistency=stale")...)
		return code == 0 && out == "v1\n", fmt.Sprintf("exit %d, %q %q", code, out, errOut)
	})
	ctlWant(t, 1, []string{"412"}, args("put", "ctl key", "x", "--prev-exist=false")...)
	ctlWant(t, 0, nil, args("put", "ctl key", "v2", "--prev", "v1")...)
	ctlWant(t, 1, []string{"412"}, args("put", "ctl key", "v3", "--prev", "v1")...)
	if out := ctlWant(t, 0, nil, args("--json", "get", "ctl key")...); strings.TrimSpace(out) != `{"key":"ctl key","value":"v2"}` {
		t.Errorf("get --json output %q", out)
	}
	ctlWant(t, 1, []string{"404", "not found"}, args("get", "no such key")...)
	ctlWant(t, 0, nil, args("delete", "ctl key")...)
	ctlWant(t, 1, []string{"404"}, args("delete", "ctl key")...)
	if _, _, errOut := ctl(t, args("put", strings.Repeat("k", 4<<10+1), "v")...); !strings.Contains(errOut, "413") && !strings.Contains(errOut, "400") {
		t.Errorf("put of a 4 KiB + 1 key: stderr %q, want the server's 413 or 400", errOut)
	}
	ctlWant(t, 0, []string{"snapshot taken"}, "--addr", l.httpAddr, "snapshot")
	ctlWant(t, 1, []string{"cannot reach"}, "--addr", freeAddr(t), "status")
	ctlWant(t, 1, nil, args("put", "only-a-key")...)

	// Leadership transfer, then writes through the old leader reach the new.
	ctlWant(t, 0, nil, args("transfer-leader", f.id)...)
	waitFor(t, leaderTimeout, "leadership to move to "+f.id, func() (bool, string) {
		s, err := f.status()
		if err != nil {
			return false, err.Error()
		}
		return s.isLeader(), fmt.Sprintf("%s is %s, leader %q", f.id, s.Role, s.LeaderID)
	})
	c.waitLeader()
	ctlWant(t, 0, nil, "--addr", l.httpAddr, "put", "after-transfer", "yes")
	if out := ctlWant(t, 0, nil, "--addr", f.httpAddr, "get", "after-transfer"); out != "yes\n" {
		t.Errorf("get after the transfer: %q", out)
	}
}

// TestMembership adds a fourth node with graftctl add-peer (it starts with
// no --peers and waits to be contacted), takes it out again with
// change-peers (joint consensus), and removes a voter with remove-peer.
func TestMembership(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOptions{nodes: 4})
	c.start()
	l := c.waitLeader()
	f := c.followers(l)[0]
	n4 := c.node("n4")
	n4.launch("", nil) // no --peers: joins when the leader contacts it
	n4.waitServing()
	c.put(l, "before-n4", "x")

	peerIDs := func(n *node) []string {
		var ids []string
		for _, p := range n.mustStatus().Peers {
			ids = append(ids, p.ID)
		}
		slices.Sort(ids)
		return ids
	}
	// waitPeers waits until members agree on a leader whose configuration
	// is want.
	waitPeers := func(members []*node, want ...string) *node {
		t.Helper()
		var ld *node
		waitFor(t, leaderTimeout, fmt.Sprintf("the configuration %v", want), func() (bool, string) {
			var why string
			if ld, why = c.leaderNow(members...); ld == nil {
				return false, why
			}
			got := peerIDs(ld)
			return slices.Equal(got, want), fmt.Sprintf("%s has peers %v", ld.id, got)
		})
		return ld
	}

	ctlWant(t, 0, nil, "--addr", f.httpAddr, "add-peer", "n4", n4.raftAddr)
	l = waitPeers(c.nodes, "n1", "n2", "n3", "n4")
	idx := c.put(l, "with-n4", "y")
	c.waitApplied(idx, n4)
	if v, ok, err := c.staleGet(n4, "before-n4"); err != nil || !ok || v != "x" {
		t.Errorf("n4 after joining: before-n4 = %q, %v, %v", v, ok, err)
	}

	ctlWant(t, 0, nil, "--addr", f.httpAddr, "change-peers", c.peersFlag(c.initial()...))
	l = waitPeers(c.initial(), "n1", "n2", "n3")
	n4.kill()

	victim := c.followers(l)[0]
	ctlWant(t, 0, nil, "--addr", l.httpAddr, "remove-peer", victim.id)
	var rest []*node
	var restIDs []string
	for _, n := range c.initial() {
		if n != victim {
			rest = append(rest, n)
			restIDs = append(restIDs, n.id)
		}
	}
	l = waitPeers(rest, restIDs...)
	victim.kill()
	c.put(l, "after-remove", "z")
}
