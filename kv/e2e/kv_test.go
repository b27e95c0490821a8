//go:build unix

package e2e

import (
	"bytes"
	"fmt"
	"net/url"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestKV covers put, get, delete and both kinds of compare-and-set on the
// leader, and that followers apply the writes.
func TestKV(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOptions{})
	c.start()
	l := c.waitLeader()

	// put answers the index once committed and applied; get returns the
	// raw value.
	i1 := l.req("PUT", kvPath("greeting"), nil, []byte("hello")).want(t, "put", 200).index(t, "put")
	if got := l.req("GET", kvPath("greeting"), nil, nil).want(t, "get", 200).body; string(got) != "hello" {
		t.Fatalf("get: %q, want hello", got)
	}
	i2 := l.req("PUT", kvPath("greeting"), nil, []byte("hi")).want(t, "overwrite", 200).index(t, "overwrite")
	if i2 <= i1 {
		t.Errorf("indexes of two writes: %d then %d, want increasing", i1, i2)
	}
	if s := l.mustStatus(); s.AppliedIndex < i2 {
		t.Errorf("a put answered index %d before it was applied (applied_index %d)", i2, s.AppliedIndex)
	}

	// Missing keys.
	a := l.req("GET", kvPath("nosuch"), nil, nil).want(t, "get of a missing key", 404)
	a.jsonError(t, "get of a missing key")
	a = l.req("DELETE", kvPath("nosuch"), nil, nil).want(t, "delete of a missing key", 404)
	a.jsonError(t, "delete of a missing key")

	// Keys are path segments, escaped; values are bytes.
	odd := "odd key ?#%&=+ é 日本"
	bin := []byte{0, 1, 2, 0xfe, 0xff, '\n', 0}
	l.req("PUT", kvPath(odd), nil, bin).want(t, "put of an odd key", 200)
	if got := l.req("GET", kvPath(odd), nil, nil).want(t, "get of an odd key", 200).body; !bytes.Equal(got, bin) {
		t.Errorf("get of an odd key: %q, want %q", got, bin)
	}
	l.req("PUT", kvPath("empty"), nil, []byte{}).want(t, "put of an empty value", 200)
	if got := l.req("GET", kvPath("empty"), nil, nil).want(t, "get of an empty value", 200).body; len(got) != 0 {
		t.Errorf("get of an empty value: %q", got)
	}

	// Compare-and-set: ?prev=V.
	prev := func(v string) url.Values { return url.Values{"prev": {v}} }
	l.req("PUT", kvPath("greeting"), prev("hi"), []byte("hey")).want(t, "CAS with the right prev", 200)
	a = l.req("PUT", kvPath("greeting"), prev("hi"), []byte("nope")).want(t, "CAS with a stale prev", 412)
	a.jsonError(t, "CAS with a stale prev")
	a = l.req("PUT", kvPath("missing"), prev("x"), []byte("nope")).want(t, "CAS of a missing key", 412)
	a.jsonError(t, "CAS of a missing key")
	if got := string(l.req("GET", kvPath("greeting"), nil, nil).want(t, "get", 200).body); got != "hey" {
		t.Errorf("after a failed CAS the value is %q, want hey", got)
	}
	l.req("GET", kvPath("missing"), nil, nil).want(t, "get after a failed CAS of a missing key", 404)

	// Create only: ?prev-exist=false.
	create := url.Values{"prev-exist": {"false"}}
	l.req("PUT", kvPath("lock"), create, []byte("owner-1")).want(t, "create", 200)
	a = l.req("PUT", kvPath("lock"), create, []byte("owner-2")).want(t, "create of an existing key", 412)
	a.jsonError(t, "create of an existing key")
	if got := string(l.req("GET", kvPath("lock"), nil, nil).want(t, "get", 200).body); got != "owner-1" {
		t.Errorf("after a failed create the value is %q, want owner-1", got)
	}

	// Delete.
	l.req("DELETE", kvPath("lock"), nil, nil).want(t, "delete", 200)
	l.req("GET", kvPath("lock"), nil, nil).want(t, "get after delete", 404)
	l.req("DELETE", kvPath("lock"), nil, nil).want(t, "second delete", 404)
	l.req("PUT", kvPath("lock"), create, []byte("owner-3")).want(t, "create after delete", 200)

	// Every node applies the same state.
	want := map[string]string{"greeting": "hey", odd: string(bin), "empty": "", "lock": "owner-3"}
	missing := []string{"nosuch", "missing"}
	last := l.mustStatus().CommitIndex
	c.waitApplied(last)
	for _, n := range c.nodes {
		for k, v := range want {
			got, ok, err := c.staleGet(n, k)
			if err != nil || !ok || got != v {
				t.Errorf("%s: stale get %q = %q, %v, %v; want %q", n.id, k, got, ok, err, v)
			}
		}
		for _, k := range missing {
			if _, ok, err := c.staleGet(n, k); ok || err != nil {
				t.Errorf("%s: stale get %q: exists=%v err=%v; want 404", n.id, k, ok, err)
			}
		}
	}
}

// TestRedirect: a node without a known leader answers 503; a follower
// answers 307 with Location = the leader's same URL, and clients that
// follow redirects (Go's, curl -L) just work.
func TestRedirect(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOptions{})
	n1, n2, n3 := c.nodes[0], c.nodes[1], c.nodes[2]

	// n1 alone cannot elect anyone: no leader is known.
	c.start(n1)
	if s := n1.mustStatus(); s.LeaderID != "" || s.isLeader() {
		t.Fatalf("n1 alone of three: role %s, leader %q", s.Role, s.LeaderID)
	}
	a := n1.req("PUT", kvPath("k"), nil, []byte("v")).want(t, "put without a leader", 503)
	a.jsonError(t, "put without a leader")
	n1.req("GET", kvPath("k"), nil, nil).want(t, "linearizable get without a leader", 503)
	n1.req("DELETE", kvPath("k"), nil, nil).want(t, "delete without a leader", 503)
	n1.req("GET", kvPath("k"), url.Values{"consistency": {"stale"}}, nil).want(t, "stale get without a leader", 404)

	c.start(n2, n3)
	l := c.waitLeader()
	f := c.followers(l)[0]
	t.Logf("leader %s (http %s), follower %s (http %s)", l.id, l.httpAddr, f.id, f.httpAddr)

	checkRedirect := func(method, key string, q url.Values, body []byte) {
		t.Helper()
		what := fmt.Sprintf("%s %s on follower %s", method, key, f.id)
		a := f.req(method, kvPath(key), q, body).want(t, what, 307)
		loc, err := url.Parse(a.header.Get("Location"))
		if err != nil || !loc.IsAbs() {
			t.Fatalf("%s: Location %q is not an absolute URL (%v)", what, a.header.Get("Location"), err)
		}
		if loc.Host != l.httpAddr || loc.EscapedPath() != kvPath(key) || loc.Query().Encode() != q.Encode() {
			t.Errorf("%s: Location %s, want %s (the leader's same URL)", what, loc, l.url(kvPath(key), q))
		}
	}
	create := url.Values{"prev-exist": {"false"}}
	checkRedirect("PUT", "r/1 é", create, []byte("v1"))
	checkRedirect("PUT", "r1", nil, []byte("v1"))
	checkRedirect("DELETE", "r1", nil, nil)

	// Following the redirect re-sends method, query and body.
	idx := f.reqFollow("PUT", kvPath("r/1 é"), create, []byte("v1")).want(t, "put through a follower", 200).index(t, "put through a follower")
	f.reqFollow("PUT", kvPath("r/1 é"), create, []byte("v2")).want(t, "create through a follower of an existing key", 412)
	if got := string(l.req("GET", kvPath("r/1 é"), nil, nil).want(t, "get", 200).body); got != "v1" {
		t.Errorf("after a put through a follower the leader has %q, want v1", got)
	}

	// A linearizable read on a follower is redirected to the leader (or
	// served by the follower itself with the committed value).
	a = f.req("GET", kvPath("r/1 é"), nil, nil).want(t, "linearizable get on a follower", 307, 200)
	if a.code == 200 && string(a.body) != "v1" {
		t.Errorf("linearizable get on follower %s: %q, want v1", f.id, a.body)
	}
	if got := string(f.reqFollow("GET", kvPath("r/1 é"), nil, nil).want(t, "get through a follower", 200).body); got != "v1" {
		t.Errorf("get through a follower: %q, want v1", got)
	}
	// A stale read is served locally, without a redirect.
	c.waitApplied(idx, f)
	if got := string(f.req("GET", kvPath("r/1 é"), url.Values{"consistency": {"stale"}}, nil).want(t, "stale get on a follower", 200).body); got != "v1" {
		t.Errorf("stale get on follower: %q, want v1", got)
	}
	// Status is local too.
	f.req("GET", "/v1/status", nil, nil).want(t, "status on a follower", 200)
	f.reqFollow("DELETE", kvPath("r/1 é"), nil, nil).want(t, "delete through a follower", 200)
	l.req("GET", kvPath("r/1 é"), nil, nil).want(t, "get after a delete through a follower", 404)

	// curl -L, as the README's examples use it.
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Logf("no curl in PATH; skipping the curl -L check")
		return
	}
	out, err := exec.Command(curl, "-sS", "-f", "-L", "-X", "PUT", "--data-binary", "from curl", f.url(kvPath("curl"), nil)).CombinedOutput()
	if err != nil {
		t.Fatalf("curl -L -X PUT via follower: %v\n%s", err, out)
	}
	out, err = exec.Command(curl, "-sS", "-f", "-L", f.url(kvPath("curl"), nil)).CombinedOutput()
	if err != nil || string(out) != "from curl" {
		t.Errorf("curl -L GET via follower: %q, %v; want \"from curl\"", out, err)
	}
}

// TestOversized: a key over 4 KiB or a value over 1 MiB is refused (413
// or 400, with a JSON error) and nothing is written; keys and values at
// the limits are accepted.
func TestOversized(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOptions{})
	c.start()
	l := c.waitLeader()
	c.put(l, "warmup", "x") // the leader's first entries are behind us

	maxKey := strings.Repeat("k", 4<<10)
	maxValue := bytes.Repeat([]byte("v"), 1<<20)
	l.req("PUT", kvPath(maxKey), nil, []byte("ok")).want(t, "put of a 4 KiB key", 200)
	if got := string(l.req("GET", kvPath(maxKey), nil, nil).want(t, "get of a 4 KiB key", 200).body); got != "ok" {
		t.Errorf("get of a 4 KiB key: %q", got)
	}
	l.req("PUT", kvPath("max-value"), nil, maxValue).want(t, "put of a 1 MiB value", 200)
	if got := l.req("GET", kvPath("max-value"), nil, nil).want(t, "get of a 1 MiB value", 200).body; !bytes.Equal(got, maxValue) {
		t.Errorf("get of a 1 MiB value: %d bytes back", len(got))
	}

	// Each node records its HTTP address in the log soon after it learns
	// the leader's; wait for those entries so that the log stands still.
	before := l.waitQuiet(500 * time.Millisecond)
	longKey := maxKey + "k"
	a := l.req("PUT", kvPath(longKey), nil, []byte("v")).want(t, "put of a 4 KiB + 1 key", 413, 400)
	t.Logf("a 4 KiB + 1 key: %d %s", a.code, a.body)
	a.jsonError(t, "put of a 4 KiB + 1 key")
	a = l.req("PUT", kvPath("big"), nil, append(maxValue, 'v')).want(t, "put of a 1 MiB + 1 value", 413)
	t.Logf("a 1 MiB + 1 value: %d %s", a.code, a.body)
	a.jsonError(t, "put of a 1 MiB + 1 value")
	a = l.req("PUT", kvPath("big"), url.Values{"prev-exist": {"false"}}, bytes.Repeat([]byte("v"), 1<<20+4<<10)).want(t, "create with a 1 MiB + 4 KiB value", 413)
	a.jsonError(t, "create with a 1 MiB + 4 KiB value")
	a = l.req("PUT", kvPath("max-value"), url.Values{"prev": {string(maxValue)}}, append(maxValue, 'v')).want(t, "CAS to a 1 MiB + 1 value", 413)
	a.jsonError(t, "CAS to a 1 MiB + 1 value")

	// Nothing was written: no log entry, and the keys are absent.
	after := l.mustStatus()
	if after.LastLogIndex != before.LastLogIndex {
		t.Errorf("the leader's log grew from %d to %d entries while oversized requests were refused", before.LastLogIndex, after.LastLogIndex)
	}
	l.req("GET", kvPath("big"), nil, nil).want(t, "get of the key an oversized value was refused for", 404)
	if a := l.req("GET", kvPath(longKey), nil, nil); a.code == 200 {
		t.Errorf("get of the refused 4 KiB + 1 key answered 200 %q", trunc(a.body))
	}
	if got := l.req("GET", kvPath("max-value"), nil, nil).want(t, "get after a refused CAS", 200).body; !bytes.Equal(got, maxValue) {
		t.Errorf("a refused CAS changed the value (%d bytes now)", len(got))
	}
}

// TestStatusFields checks that GET /v1/status has exactly the spec's
// fields, nested too, with plausible values, on the leader and a follower.
func TestStatusFields(t *testing.T) {
	t.Parallel()
	c := newCluster(t, clusterOptions{})
	c.start()
	l := c.waitLeader()
	c.put(l, "k", "v")
	c.waitApplied(l.mustStatus().CommitIndex)

	top := []string{"id", "role", "term", "leader_id", "leader_http", "commit_index", "applied_index",
		"first_log_index", "last_log_index", "snapshot", "peers", "old_peers", "learners"}
	snap := []string{"last_included_index", "last_included_term", "state", "progress"}
	prog := []string{"files_done", "files_total", "bytes_done", "bytes_total", "bytes_per_sec"}
	peerKeys := []string{"id", "addr"}
	numbers := []string{"term", "commit_index", "applied_index", "first_log_index", "last_log_index"}

	var raftAddrs []string
	for _, n := range c.nodes {
		raftAddrs = append(raftAddrs, n.id+"="+n.raftAddr)
	}
	slices.Sort(raftAddrs)

	for _, n := range c.nodes {
		var m map[string]any
		body, err := n.statusRaw(&m)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %s", n.id, body)
		checkKeys(t, n.id+" status", m, top)
		for _, k := range []string{"id", "role", "leader_id", "leader_http"} {
			if _, ok := m[k].(string); !ok {
				t.Errorf("%s: %q is %T, want a string", n.id, k, m[k])
			}
		}
		for _, k := range numbers {
			if _, ok := m[k].(float64); !ok {
				t.Errorf("%s: %q is %T, want a number", n.id, k, m[k])
			}
		}
		if s, ok := m["snapshot"].(map[string]any); !ok {
			t.Errorf("%s: snapshot is %T, want an object", n.id, m["snapshot"])
		} else {
			checkKeys(t, n.id+" snapshot", s, snap)
			if p, ok := s["progress"].(map[string]any); !ok {
				t.Errorf("%s: snapshot.progress is %T, want an object", n.id, s["progress"])
			} else {
				checkKeys(t, n.id+" snapshot.progress", p, prog)
				for _, k := range prog {
					if _, ok := p[k].(float64); !ok {
						t.Errorf("%s: snapshot.progress.%s is %T, want a number", n.id, k, p[k])
					}
				}
			}
			if st, _ := s["state"].(string); !slices.Contains([]string{"IDLE", "SAVING", "DOWNLOADING", "LOADING"}, strings.ToUpper(st)) {
				t.Errorf("%s: snapshot.state %q, want IDLE, SAVING, DOWNLOADING or LOADING", n.id, st)
			}
		}
		for _, list := range []string{"peers", "old_peers", "learners"} {
			if m[list] == nil {
				if list == "peers" {
					t.Errorf("%s: peers is null", n.id)
				}
				continue
			}
			ps, ok := m[list].([]any)
			if !ok {
				t.Errorf("%s: %s is %T, want a list", n.id, list, m[list])
				continue
			}
			for i, p := range ps {
				pm, ok := p.(map[string]any)
				if !ok {
					t.Errorf("%s: %s[%d] is %T, want an object", n.id, list, i, p)
					continue
				}
				checkKeys(t, fmt.Sprintf("%s %s[%d]", n.id, list, i), pm, peerKeys)
			}
		}

		// Values.
		s := n.mustStatus()
		if s.ID != n.id {
			t.Errorf("%s: id %q", n.id, s.ID)
		}
		if (n == l) != s.isLeader() || (n != l && !strings.EqualFold(s.Role, "follower")) {
			t.Errorf("%s: role %q (the leader is %s)", n.id, s.Role, l.id)
		}
		if s.LeaderID != l.id {
			t.Errorf("%s: leader_id %q, want %s", n.id, s.LeaderID, l.id)
		}
		if h := strings.TrimSuffix(strings.TrimPrefix(s.LeaderHTTP, "http://"), "/"); h != l.httpAddr {
			t.Errorf("%s: leader_http %q, want %s (the leader's --http-addr)", n.id, s.LeaderHTTP, l.httpAddr)
		}
		if s.Term == 0 || s.CommitIndex == 0 || s.AppliedIndex > s.CommitIndex || s.FirstLogIndex > s.LastLogIndex+1 || s.CommitIndex > s.LastLogIndex {
			t.Errorf("%s: implausible indexes: term %d commit %d applied %d log %d..%d", n.id, s.Term, s.CommitIndex, s.AppliedIndex, s.FirstLogIndex, s.LastLogIndex)
		}
		var got []string
		for _, p := range s.Peers {
			got = append(got, p.ID+"="+p.Addr)
		}
		slices.Sort(got)
		if !slices.Equal(got, raftAddrs) {
			t.Errorf("%s: peers %v, want %v", n.id, got, raftAddrs)
		}
		if len(s.OldPeers) != 0 || len(s.Learners) != 0 {
			t.Errorf("%s: old_peers %v, learners %v; want none", n.id, s.OldPeers, s.Learners)
		}
	}
}

// checkKeys reports keys of m that are missing or not in want.
func checkKeys(t *testing.T, what string, m map[string]any, want []string) {
	t.Helper()
	var got []string
	for k := range m {
		got = append(got, k)
	}
	slices.Sort(got)
	w := slices.Sorted(slices.Values(want))
	if !slices.Equal(got, w) {
		var missing, extra []string
		for _, k := range w {
			if _, ok := m[k]; !ok {
				missing = append(missing, k)
			}
		}
		for _, k := range got {
			if !slices.Contains(w, k) {
				extra = append(extra, k)
			}
		}
		t.Errorf("%s: fields %v; missing %v, not in the spec %v", what, got, missing, extra)
	}
}
