package kv

import (
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// wantError checks a JSON error answer.
func wantError(t *testing.T, what string, code int, h http.Header, body string, wantCode int, mention string) {
	t.Helper()
	if code != wantCode {
		t.Fatalf("%s: status %d, want %d (body %s)", what, code, wantCode, body)
	}
	if ct := h.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("%s: Content-Type %q, want application/json", what, ct)
	}
	var e map[string]any
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		t.Fatalf("%s: body %q is not JSON: %v", what, body, err)
	}
	msg, ok := e["error"].(string)
	if !ok || len(e) != 1 || msg == "" {
		t.Fatalf(`%s: body %s, want {"error": "..."}`, what, body)
	}
	if !strings.Contains(msg, mention) {
		t.Fatalf("%s: error %q does not mention %q", what, msg, mention)
	}
}

// wantIndex checks a {"index": N} answer and returns N.
func wantIndex(t *testing.T, what string, code int, body string) uint64 {
	t.Helper()
	if code != http.StatusOK {
		t.Fatalf("%s: status %d, want 200 (body %s)", what, code, body)
	}
	var r struct {
		Index *uint64 `json:"index"`
	}
	if err := json.Unmarshal([]byte(body), &r); err != nil || r.Index == nil || *r.Index == 0 {
		t.Fatalf(`%s: body %q, want {"index": N}`, what, body)
	}
	return *r.Index
}

func TestHTTPAPI(t *testing.T) {
	c := newCluster(t, 3, 0, nil)
	client := noRedirects(t)
	l := c.leader()
	f := c.follower()
	leaderURL := func(path string) string { return c.url(c.leader(), path) }

	t.Run("put get delete", func(t *testing.T) {
		code, _, body := do(t, client, "PUT", leaderURL("/v1/kv/greeting"), "hello")
		i1 := wantIndex(t, "put", code, body)
		code, h, body := do(t, client, "GET", leaderURL("/v1/kv/greeting"), "")
		if code != 200 || body != "hello" || h.Get("Content-Type") != "application/octet-stream" {
			t.Fatalf("get: %d %q %q", code, body, h.Get("Content-Type"))
		}
		code, _, body = do(t, client, "PUT", leaderURL("/v1/kv/greeting"), "hi")
		if i2 := wantIndex(t, "overwrite", code, body); i2 <= i1 {
			t.Fatalf("second put at index %d, not after %d", i2, i1)
		}
		code, _, body = do(t, client, "PUT", leaderURL("/v1/kv/empty"), "")
		wantIndex(t, "put empty value", code, body)
		if code, _, body = do(t, client, "GET", leaderURL("/v1/kv/empty"), ""); code != 200 || body != "" {
			t.Fatalf("get empty value: %d %q", code, body)
		}
		code, _, body = do(t, client, "DELETE", leaderURL("/v1/kv/greeting"), "")
		wantIndex(t, "delete", code, body)
		code, h, body = do(t, client, "GET", leaderURL("/v1/kv/greeting"), "")
		wantError(t, "get deleted", code, h, body, 404, "not found")
		code, h, body = do(t, client, "DELETE", leaderURL("/v1/kv/greeting"), "")
		wantError(t, "delete missing", code, h, body, 404, "not found")
	})

	t.Run("keys are taken from the path as sent", func(t *testing.T) {
		for _, key := range []string{"a/b/c", "a//b", "../up", "sp ace", "%"} {
			esc := strings.ReplaceAll(strings.ReplaceAll(key, "%", "%25"), " ", "%20")
			code, _, body := do(t, client, "PUT", leaderURL("/v1/kv/"+esc), "v-"+key)
			wantIndex(t, "put "+key, code, body)
			if v, ok, err := c.nodes[c.leader()].srv.FSM().Get([]byte(key)); err != nil || !ok || string(v) != "v-"+key {
				t.Fatalf("key %q stored as %q, %v, %v", key, v, ok, err)
			}
		}
	})

	t.Run("compare-and-set and create", func(t *testing.T) {
		code, _, body := do(t, client, "PUT", leaderURL("/v1/kv/cas"), "one")
		wantIndex(t, "put", code, body)
		code, h, body := do(t, client, "PUT", leaderURL("/v1/kv/cas?prev=zero"), "two")
		wantError(t, "cas mismatch", code, h, body, 412, "compare failed")
		code, _, body = do(t, client, "PUT", leaderURL("/v1/kv/cas?prev=one"), "two")
		wantIndex(t, "cas", code, body)
		code, h, body = do(t, client, "PUT", leaderURL("/v1/kv/missing?prev=one"), "two")
		wantError(t, "cas on a missing key", code, h, body, 412, "does not exist")
		code, h, body = do(t, client, "PUT", leaderURL("/v1/kv/cas?prev-exist=false"), "three")
		wantError(t, "create existing", code, h, body, 412, "already exists")
		code, _, body = do(t, client, "PUT", leaderURL("/v1/kv/fresh?prev-exist=false"), "new")
		wantIndex(t, "create", code, body)
		if code, _, body = do(t, client, "GET", leaderURL("/v1/kv/cas"), ""); code != 200 || body != "two" {
			t.Fatalf("after the failed create: %d %q", code, body)
		}
	})

	t.Run("a follower redirects to the leader", func(t *testing.T) {
		for _, tc := range []struct{ method, path, body string }{
			{"PUT", "/v1/kv/redirected?prev-exist=false", "v"},
			{"GET", "/v1/kv/redirected", ""},
			{"DELETE", "/v1/kv/redirected", ""},
			{"POST", "/v1/admin/transfer-leader?to=" + c.nodes[f].id, ""},
			{"POST", "/v1/admin/peers", `{"remove": "n9"}`},
		} {
			code, h, body := do(t, client, tc.method, c.url(f, tc.path), tc.body)
			wantError(t, tc.method+" "+tc.path, code, h, body, http.StatusTemporaryRedirect, "not the leader")
			if loc, want := h.Get("Location"), c.url(l, tc.path); loc != want {
				t.Fatalf("%s %s: Location %q, want %q", tc.method, tc.path, loc, want)
			}
		}
		// Go's client follows 307 with the method and body.
		follow := &http.Client{}
		defer follow.CloseIdleConnections()
		code, _, body := do(t, follow, "PUT", c.url(f, "/v1/kv/redirected"), "followed")
		idx := wantIndex(t, "put through a follower", code, body)
		if code, _, body = do(t, follow, "GET", c.url(f, "/v1/kv/redirected"), ""); code != 200 || body != "followed" {
			t.Fatalf("get through a follower: %d %q", code, body)
		}
		c.waitFor("the follower to apply the put", func() bool { return c.nodes[f].srv.Status().AppliedIndex >= idx })
		code, _, body = do(t, client, "GET", c.url(f, "/v1/kv/redirected?consistency=stale"), "")
		if code != 200 || body != "followed" {
			t.Fatalf("stale read on the follower: %d %q", code, body)
		}
	})

	t.Run("limits", func(t *testing.T) {
		long := strings.Repeat("k", DefaultMaxKeySize+1)
		code, h, body := do(t, client, "PUT", leaderURL("/v1/kv/"+long), "v")
		wantError(t, "long key", code, h, body, 400, "over the limit of 4096 bytes")
		code, h, body = do(t, client, "GET", leaderURL("/v1/kv/"+long), "")
		wantError(t, "get long key", code, h, body, 400, "over the limit")
		code, _, body = do(t, client, "PUT", leaderURL("/v1/kv/"+long[1:]), "v")
		wantIndex(t, "key at the limit", code, body)

		big := strings.Repeat("v", DefaultMaxValueSize+1)
		code, h, body = do(t, client, "PUT", leaderURL("/v1/kv/big"), big)
		wantError(t, "big value", code, h, body, 413, "over the limit of 1048576 bytes")
		code, h, body = do(t, client, "PUT", c.url(f, "/v1/kv/big"), big)
		wantError(t, "big value on a follower", code, h, body, 413, "over the limit")
		// Without a Content-Length the leader finds out by reading.
		req, _ := http.NewRequest("PUT", leaderURL("/v1/kv/big"), io.MultiReader(strings.NewReader(big)))
		req.ContentLength = -1
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		wantError(t, "big chunked value", resp.StatusCode, resp.Header, string(b), 413, "over the limit")
		code, _, body = do(t, client, "PUT", leaderURL("/v1/kv/big"), big[1:])
		wantIndex(t, "value at the limit", code, body)
		code, _, _ = do(t, client, "DELETE", leaderURL("/v1/kv/big"), "")
		if code != 200 {
			t.Fatalf("delete big: %d", code)
		}
		code, h, body = do(t, client, "GET", leaderURL("/v1/kv/big"), "")
		wantError(t, "refused writes wrote nothing", code, h, body, 404, "not found")
	})

	t.Run("bad requests", func(t *testing.T) {
		for _, tc := range []struct {
			method, path, body string
			code               int
			mention            string
		}{
			{"PUT", "/v1/kv/", "v", 400, "empty key"},
			{"PUT", "/v1/kv/k?prev-exist=true", "v", 400, "only prev-exist=false"},
			{"PUT", "/v1/kv/k?prev=a&prev-exist=false", "v", 400, "contradict"},
			{"GET", "/v1/kv/k?consistency=eventual", "", 400, "consistency"},
			{"PATCH", "/v1/kv/k", "v", 405, "not allowed"},
			{"GET", "/v1/admin/snapshot", "", 405, "use POST"},
			{"GET", "/v2/kv/k", "", 404, "no such endpoint"},
			{"POST", "/v1/admin/transfer-leader?to=nobody", "", 400, "not a voter"},
			{"POST", "/v1/admin/peers", ``, 400, "bad body"},
			{"POST", "/v1/admin/peers", `{}`, 400, "exactly one"},
			{"POST", "/v1/admin/peers", `{"remove": "n2", "add": {"id": "n4", "addr": "h:1"}}`, 400, "exactly one"},
			{"POST", "/v1/admin/peers", `{"add": {"id": "n4"}}`, 400, "needs an id and an addr"},
			{"POST", "/v1/admin/peers", `{"add": {"id": "n4", "addr": "nohost"}}`, 400, "not host:port"},
			{"POST", "/v1/admin/peers", `{"add": {"id": "n4", "addr": "h:1", "x": 1}}`, 400, "unknown field"},
			{"POST", "/v1/admin/peers", `{"change": []}`, 400, "change"},
			{"POST", "/v1/admin/peers", `{"change": ["n1=h:1", "n1=h:2"]}`, 400, "change"},
			{"POST", "/v1/admin/peers", `{"remove": "nosuch"}`, 400, "not a member"},
			{"POST", "/v1/internal/members", `{"id": "n1", "http": "nohost"}`, 400, "not host:port"},
			{"POST", "/v1/internal/members", `{"id": "stranger", "http": "h:1"}`, 400, "not a member"},
		} {
			code, h, body := do(t, client, tc.method, leaderURL(tc.path), tc.body)
			wantError(t, tc.method+" "+tc.path+" "+tc.body, code, h, body, tc.code, tc.mention)
		}
	})

	t.Run("status", func(t *testing.T) {
		code, h, body := do(t, client, "GET", c.url(f, "/v1/status"), "")
		if code != 200 || h.Get("Content-Type") != "application/json" {
			t.Fatalf("status: %d %q", code, h.Get("Content-Type"))
		}
		var st map[string]any
		if err := json.Unmarshal([]byte(body), &st); err != nil {
			t.Fatal(err)
		}
		wantKeys := func(what string, m map[string]any, keys ...string) {
			t.Helper()
			if got := slices.Sorted(maps.Keys(m)); !slices.Equal(got, slices.Sorted(slices.Values(keys))) {
				t.Fatalf("%s fields %v, want %v", what, got, keys)
			}
		}
		wantKeys("status", st, "id", "role", "term", "leader_id", "leader_http", "commit_index", "applied_index",
			"first_log_index", "last_log_index", "snapshot", "peers", "old_peers", "learners")
		snap, _ := st["snapshot"].(map[string]any)
		wantKeys("snapshot", snap, "last_included_index", "last_included_term", "state", "progress")
		prog, _ := snap["progress"].(map[string]any)
		wantKeys("progress", prog, "files_done", "files_total", "bytes_done", "bytes_total", "bytes_per_sec")
		peers, _ := st["peers"].([]any)
		if len(peers) != 3 {
			t.Fatalf("peers %v, want 3", st["peers"])
		}
		for _, p := range peers {
			p, _ := p.(map[string]any)
			wantKeys("peer", p, "id", "addr")
		}
		for _, k := range []string{"old_peers", "learners"} {
			if v, ok := st[k].([]any); !ok || len(v) != 0 {
				t.Fatalf("%s = %v, want []", k, st[k])
			}
		}
		var s Status
		if err := json.Unmarshal([]byte(body), &s); err != nil {
			t.Fatal(err)
		}
		lid := c.nodes[c.leader()].id
		if s.ID != c.nodes[f].id || s.Role != "follower" || s.LeaderID != lid || s.LeaderHTTP != strings.TrimPrefix(leaderURL(""), "http://") ||
			s.Term == 0 || s.CommitIndex == 0 || s.AppliedIndex == 0 || s.FirstLogIndex != 1 || s.LastLogIndex < s.CommitIndex || s.Snapshot.State != "IDLE" {
			t.Fatalf("status %+v", s)
		}
	})

	t.Run("snapshot", func(t *testing.T) {
		code, _, body := do(t, client, "POST", c.url(f, "/v1/admin/snapshot"), "")
		idx := wantIndex(t, "snapshot", code, body)
		if got := c.nodes[f].srv.Status().Snapshot.LastIncludedIndex; got != idx {
			t.Fatalf("snapshot index %d, status says %d", idx, got)
		}
		code, _, body = do(t, client, "POST", c.url(f, "/v1/admin/snapshot"), "")
		if again := wantIndex(t, "snapshot again", code, body); again != idx {
			t.Fatalf("a second snapshot with nothing new applied is %d, want %d", again, idx)
		}
	})

	t.Run("metrics", func(t *testing.T) {
		code, _, body := do(t, client, "GET", leaderURL("/metrics"), "")
		if code != 200 {
			t.Fatalf("metrics: %d", code)
		}
		for _, want := range []string{
			`graftkv_raft_role{role="leader"} 1`,
			`graftkv_raft_role{role="follower"} 0`,
			"graftkv_raft_term ",
			"graftkv_raft_commit_index ",
			"graftkv_raft_applied_index ",
			`graftkv_apply_duration_seconds_count{op="put"} `,
			"graftkv_raft_log_append_duration_seconds_count ",
			"graftkv_raft_log_fsync_duration_seconds_count ",
			`graftkv_snapshot_state{state="IDLE"} 1`,
			"graftkv_snapshot_install_done_bytes ",
			`graftkv_http_requests_total{code="412",method="PUT"} `,
		} {
			if !strings.Contains(body, want) {
				t.Errorf("metrics lack %q", want)
			}
		}
		// The FSM reports a save (OnSave) after handing graft its files,
		// so POST /v1/admin/snapshot can answer before the histogram
		// counts it: wait for the count.
		const saved = "graftkv_snapshot_save_duration_seconds_count 1"
		deadline := time.Now().Add(10 * time.Second)
		for {
			_, _, body = do(t, client, "GET", c.url(f, "/metrics"), "")
			if strings.Contains(body, saved) {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("the follower's metrics do not count its snapshot save")
				break
			}
			time.Sleep(5 * time.Millisecond) // polling interval
		}
	})

	t.Run("status page", func(t *testing.T) {
		var (
			code int
			h    http.Header
			body string
		)
		pollPage(t, func() string {
			code, h, body = do(t, client, "GET", c.url(f, "/"), "")
			return body
		})
		if code != 200 || !strings.HasPrefix(h.Get("Content-Type"), "text/html") {
			t.Fatalf("page: %d %q", code, h.Get("Content-Type"))
		}
		for _, want := range []string{`http-equiv="refresh"`, `id="self-role" class="role-follower">follower<`,
			`<b id="leader">` + c.nodes[c.leader()].id + `</b>`, `class="role role-leader">leader<`} {
			if !strings.Contains(body, want) {
				t.Errorf("page lacks %q", want)
			}
		}
		for _, n := range c.nodes {
			if !strings.Contains(body, `id="node-`+n.id+`"`) || !strings.Contains(body, n.http.URL+"/") {
				t.Errorf("page lacks node %s or its link", n.id)
			}
		}
		if strings.Contains(body, "cannot see it") {
			t.Errorf("page could not fetch a peer's status:\n%s", body)
		}
	})

	t.Run("transfer leadership", func(t *testing.T) {
		to := c.nodes[f].id
		code, h, body := do(t, client, "POST", leaderURL("/v1/admin/transfer-leader?to="+to), "")
		if code != 200 || h.Get("Content-Type") != "application/json" {
			t.Fatalf("transfer: %d %s", code, body)
		}
		c.waitFor("the new leader", func() bool { return c.nodes[f].srv.Node().IsLeader() })
	})
}

// TestNoLeader covers a node that knows no leader: requests that need one
// answer 503; local ones work.
func TestNoLeader(t *testing.T) {
	c := newCluster(t, 0, 1, nil) // a node outside any configuration
	client := noRedirects(t)
	for _, tc := range []struct{ method, path, body string }{
		{"PUT", "/v1/kv/k", "v"},
		{"GET", "/v1/kv/k", ""},
		{"DELETE", "/v1/kv/k", ""},
		{"POST", "/v1/admin/peers", `{"add": {"id": "n2", "addr": "h:1"}}`},
	} {
		code, h, body := do(t, client, tc.method, c.url(0, tc.path), tc.body)
		wantError(t, tc.method+" "+tc.path, code, h, body, 503, "no leader known")
		if h.Get("Retry-After") == "" {
			t.Errorf("%s %s: no Retry-After", tc.method, tc.path)
		}
	}
	code, h, body := do(t, client, "GET", c.url(0, "/v1/kv/k?consistency=stale"), "")
	wantError(t, "stale read", code, h, body, 404, "not found")
	var s Status
	code, _, body = do(t, client, "GET", c.url(0, "/v1/status"), "")
	if err := json.Unmarshal([]byte(body), &s); code != 200 || err != nil || s.LeaderID != "" || s.LeaderHTTP != "" || len(s.Peers) != 0 || s.Peers == nil {
		t.Fatalf("status: %d %s", code, body)
	}
	if code, _, body = do(t, client, "GET", c.url(0, "/"), ""); code != 200 || !strings.Contains(body, "none known") {
		t.Fatalf("page: %d %s", code, body)
	}
}

// TestConfiguredLimits checks that the limits come from the Config, the
// compared value included.
func TestConfiguredLimits(t *testing.T) {
	c := newCluster(t, 1, 0, func(cfg *Config) { cfg.MaxKeySize, cfg.MaxValueSize = 8, 16 })
	client := noRedirects(t)
	for _, tc := range []struct {
		path, body string
		code       int
		mention    string
	}{
		{"/v1/kv/123456789", "v", 400, "key is 9 bytes, over the limit of 8 bytes"},
		{"/v1/kv/k", "12345678901234567", 413, "value is 17 bytes, over the limit of 16 bytes"},
		{"/v1/kv/k?prev=12345678901234567", "v", 400, "prev is 17 bytes, over the value limit of 16 bytes"},
	} {
		code, h, body := do(t, client, "PUT", c.url(0, tc.path), tc.body)
		wantError(t, tc.path, code, h, body, tc.code, tc.mention)
	}
	code, _, body := do(t, client, "PUT", c.url(0, "/v1/kv/12345678"), "1234567890123456")
	wantIndex(t, "at the limits", code, body)
	if got := c.contents(0); len(got) != 1 {
		t.Fatalf("contents %v, want only the write within the limits", got)
	}
}
