package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// fakeNode is an httptest server faking a graftkv node's API. Handlers
// record every request they see.
type fakeNode struct {
	t   *testing.T
	srv *httptest.Server
	mux *http.ServeMux

	mu   sync.Mutex
	reqs []seen
}

// seen is a request as the fake received it.
type seen struct {
	Method, Path, EscapedPath, Query string
	Body                             string
}

func newFake(t *testing.T) *fakeNode {
	t.Helper()
	f := &fakeNode{t: t, mux: http.NewServeMux()}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		f.mu.Lock()
		f.reqs = append(f.reqs, seen{Method: r.Method, Path: r.URL.Path, EscapedPath: r.URL.EscapedPath(), Query: r.URL.RawQuery, Body: string(body)})
		f.mu.Unlock()
		f.mux.ServeHTTP(w, r)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeNode) addr() string { return strings.TrimPrefix(f.srv.URL, "http://") }

func (f *fakeNode) requests() []seen {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]seen(nil), f.reqs...)
}

func (f *fakeNode) only(t *testing.T) seen {
	t.Helper()
	rs := f.requests()
	if len(rs) != 1 {
		t.Fatalf("%s got %d requests, want 1: %+v", f.addr(), len(rs), rs)
	}
	return rs[0]
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// redirectTo makes every request to f answer 307 to the same URL on dst.
func (f *fakeNode) redirectTo(dst *fakeNode, code int) {
	f.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		u := *r.URL
		u.Scheme, u.Host = "http", dst.addr()
		w.Header().Set("Location", u.String())
		writeJSON(w, code, map[string]string{"error": "not the leader"})
	})
}

// graftctl runs the command with args and returns its exit code and output.
func graftctl(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), args, &out, &errb)
	t.Logf("graftctl %s → exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out.String(), errb.String())
	return code, out.String(), errb.String()
}

func wantExit(t *testing.T, got, want int) {
	t.Helper()
	if got != want {
		t.Fatalf("exit code %d, want %d", got, want)
	}
}

var sampleStatus = map[string]any{
	"id": "n2", "role": "follower", "term": 7, "leader_id": "n1", "leader_http": "127.0.0.1:8001",
	"commit_index": 120, "applied_index": 119, "first_log_index": 101, "last_log_index": 121,
	"snapshot": map[string]any{
		"last_included_index": 100, "last_included_term": 6, "state": "IDLE",
		"progress": map[string]any{"files_done": 3, "files_total": 3, "bytes_done": 4096, "bytes_total": 4096, "bytes_per_sec": 2048.0},
	},
	"peers":     []map[string]string{{"id": "n1", "addr": "127.0.0.1:7001"}, {"id": "n2", "addr": "127.0.0.1:7002"}},
	"old_peers": nil,
	"learners":  []map[string]string{{"id": "n9", "addr": "127.0.0.1:7009"}},
}

func TestStatus(t *testing.T) {
	f := newFake(t)
	f.mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, sampleStatus) })

	code, out, _ := graftctl(t, "--addr", f.addr(), "status")
	wantExit(t, code, 0)
	for _, want := range []string{"n2", "follower", "term:", "7", "n1  (127.0.0.1:8001)", "120", "119", "101..121",
		"index 100, term 6, IDLE", "files 3/3", "n1=127.0.0.1:7001, n2=127.0.0.1:7002", "learners:", "n9=127.0.0.1:7009"} {
		if !strings.Contains(out, want) {
			t.Errorf("status output lacks %q", want)
		}
	}

	code, out, _ = graftctl(t, "--addr", "http://"+f.addr()+"/", "status", "--json")
	wantExit(t, code, 0)
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("--json output is not JSON: %v", err)
	}
	if m["role"] != "follower" || m["applied_index"] != 119.0 {
		t.Errorf("--json output %v", m)
	}
}

func TestPutGetDelete(t *testing.T) {
	f := newFake(t)
	store := map[string]string{}
	var mu sync.Mutex
	f.mux.HandleFunc("PUT /v1/kv/{key}", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		body, _ := io.ReadAll(r.Body)
		store[r.PathValue("key")] = string(body)
		writeJSON(w, 200, map[string]any{"index": 42})
	})
	f.mux.HandleFunc("GET /v1/kv/{key}", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		v, ok := store[r.PathValue("key")]
		if !ok {
			writeJSON(w, 404, map[string]string{"error": "key not found"})
			return
		}
		_, _ = io.WriteString(w, v)
	})
	f.mux.HandleFunc("DELETE /v1/kv/{key}", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if _, ok := store[r.PathValue("key")]; !ok {
			writeJSON(w, 404, map[string]string{"error": "key not found"})
			return
		}
		delete(store, r.PathValue("key"))
		writeJSON(w, 200, map[string]any{"index": 43})
	})
	addr := f.addr()

	key := "a b/c?d#é"
	code, out, _ := graftctl(t, "--addr", addr, "put", key, "hello world")
	wantExit(t, code, 0)
	if out != "OK (index 42)\n" {
		t.Errorf("put output %q", out)
	}
	if r := f.requests()[0]; r.EscapedPath != "/v1/kv/a%20b%2Fc%3Fd%23%C3%A9" || r.Body != "hello world" {
		t.Errorf("put sent %+v", r)
	}
	if store[key] != "hello world" {
		t.Errorf("the fake's mux saw the key as %v", store)
	}

	code, out, _ = graftctl(t, "--addr", addr, "get", key)
	wantExit(t, code, 0)
	if out != "hello world\n" {
		t.Errorf("get output %q", out)
	}
	code, out, _ = graftctl(t, "--addr", addr, "--json", "get", key)
	wantExit(t, code, 0)
	if out != `{"key":"a b/c?d#é","value":"hello world"}`+"\n" {
		t.Errorf("get --json output %q", out)
	}

	code, out, _ = graftctl(t, "--addr", addr, "--json", "put", "k", "v")
	wantExit(t, code, 0)
	if strings.TrimSpace(out) != `{"index":42}` {
		t.Errorf("put --json output %q", out)
	}

	code, out, _ = graftctl(t, "--addr", addr, "delete", key)
	wantExit(t, code, 0)
	if out != "deleted (index 43)\n" {
		t.Errorf("delete output %q", out)
	}
	code, _, errOut := graftctl(t, "--addr", addr, "get", key)
	wantExit(t, code, 1)
	if !strings.Contains(errOut, "not found") || !strings.Contains(errOut, "404") {
		t.Errorf("get of a missing key: stderr %q", errOut)
	}
	code, _, errOut = graftctl(t, "--addr", addr, "delete", key)
	wantExit(t, code, 1)
	if !strings.Contains(errOut, "key not found") {
		t.Errorf("delete of a missing key: stderr %q", errOut)
	}
}

func TestPutConditions(t *testing.T) {
	f := newFake(t)
	f.mux.HandleFunc("PUT /v1/kv/{key}", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("prev") == "old" || r.URL.Query().Get("prev-exist") == "false" {
			writeJSON(w, 412, map[string]string{"error": "compare failed: current value differs"})
			return
		}
		writeJSON(w, 200, map[string]any{"index": 5})
	})
	code, _, errOut := graftctl(t, "--addr", f.addr(), "put", "k", "new", "--prev", "old")
	wantExit(t, code, 1)
	for _, want := range []string{"condition failed", "412", "compare failed: current value differs"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr %q lacks %q", errOut, want)
		}
	}
	code, _, _ = graftctl(t, "--addr", f.addr(), "put", "k", "new", "--prev-exist=false")
	wantExit(t, code, 1)
	code, _, _ = graftctl(t, "--addr", f.addr(), "put", "k", "new", "--prev", "")
	wantExit(t, code, 0)
	rs := f.requests()
	if len(rs) != 3 || rs[0].Query != "prev=old" || rs[1].Query != "prev-exist=false" || rs[2].Query != "prev=" {
		t.Errorf("queries sent: %+v", rs)
	}
	// A plain put sends no condition.
	code, _, _ = graftctl(t, "--addr", f.addr(), "put", "k", "new")
	wantExit(t, code, 0)
	if q := f.requests()[3].Query; q != "" {
		t.Errorf("a plain put sent query %q", q)
	}
	code, _, errOut = graftctl(t, "--addr", f.addr(), "put", "k", "new", "--prev-exist=true")
	wantExit(t, code, 1)
	if !strings.Contains(errOut, "--prev-exist=false") {
		t.Errorf("stderr %q", errOut)
	}
}

func TestGetStale(t *testing.T) {
	f := newFake(t)
	f.mux.HandleFunc("GET /v1/kv/{key}", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte{0xff, 0x00}) })
	code, out, _ := graftctl(t, "--addr", f.addr(), "get", "k", "--consistency=stale", "--json")
	wantExit(t, code, 0)
	if q := f.only(t).Query; q != "consistency=stale" {
		t.Errorf("query %q", q)
	}
	if strings.TrimSpace(out) != `{"key":"k","value_base64":"/wA="}` {
		t.Errorf("output %q", out)
	}
	code, _, _ = graftctl(t, "--addr", f.addr(), "get", "k", "--consistency=eventual")
	wantExit(t, code, 1)
}

// TestRedirectResendsBody checks that writes a follower redirects reach the
// leader with their method, query and body.
func TestRedirectResendsBody(t *testing.T) {
	for _, code := range []int{307, 308} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			leader, follower := newFake(t), newFake(t)
			follower.redirectTo(leader, code)
			leader.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, map[string]any{"index": 9}) })

			cases := []struct {
				args []string
				want seen
			}{
				{[]string{"put", "k", "v1", "--prev", "v0"}, seen{Method: "PUT", EscapedPath: "/v1/kv/k", Query: "prev=v0", Body: "v1"}},
				{[]string{"delete", "k"}, seen{Method: "DELETE", EscapedPath: "/v1/kv/k"}},
				{[]string{"get", "k"}, seen{Method: "GET", EscapedPath: "/v1/kv/k"}},
				{[]string{"snapshot"}, seen{Method: "POST", EscapedPath: "/v1/admin/snapshot"}},
				{[]string{"transfer-leader", "n3"}, seen{Method: "POST", EscapedPath: "/v1/admin/transfer-leader", Query: "to=n3"}},
				{[]string{"add-peer", "n4", "127.0.0.1:7004"}, seen{Method: "POST", EscapedPath: "/v1/admin/peers", Body: `{"add":{"id":"n4","addr":"127.0.0.1:7004"}}`}},
			}
			for i, c := range cases {
				exit, _, _ := graftctl(t, append([]string{"--addr", follower.addr(), "-v"}, c.args...)...)
				wantExit(t, exit, 0)
				got := leader.requests()
				if len(got) != i+1 {
					t.Fatalf("%v: the leader got %d requests, want %d", c.args, len(got), i+1)
				}
				g := got[i]
				g.Path = ""
				if g != c.want {
					t.Errorf("%v: the leader got %+v, want %+v", c.args, g, c.want)
				}
				if fr := follower.requests(); fr[len(fr)-1].Body != c.want.Body {
					t.Errorf("%v: the follower got body %q", c.args, fr[len(fr)-1].Body)
				}
			}
		})
	}
}

func TestHTTPErrors(t *testing.T) {
	f := newFake(t)
	f.mux.HandleFunc("/v1/kv/noleader", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 503, map[string]string{"error": "no leader"})
	})
	f.mux.HandleFunc("/v1/kv/toolarge", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 413, map[string]string{"error": "value is 2097152 bytes, the limit is 1048576"})
	})
	f.mux.HandleFunc("/v1/kv/plain", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "something broke\nsecond line", 500)
	})
	f.mux.HandleFunc("/v1/kv/noloc", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTemporaryRedirect) })
	f.mux.HandleFunc("/v1/kv/loop", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/v1/kv/loop", http.StatusTemporaryRedirect)
	})
	f.mux.HandleFunc("/v1/status", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "not json") })

	cases := []struct {
		args []string
		want []string
	}{
		{[]string{"put", "noleader", "v"}, []string{"503", "no leader", "electing a leader"}},
		{[]string{"put", "toolarge", "v"}, []string{"413", "the limit is 1048576"}},
		{[]string{"get", "plain"}, []string{"500", "something broke"}},
		{[]string{"get", "noloc"}, []string{"without a Location"}},
		{[]string{"delete", "loop"}, []string{"more than 10 redirects"}},
		{[]string{"status"}, []string{"bad status answer"}},
	}
	for _, c := range cases {
		code, out, errOut := graftctl(t, append([]string{"--addr", f.addr()}, c.args...)...)
		wantExit(t, code, 1)
		if out != "" {
			t.Errorf("%v: stdout %q, want nothing", c.args, out)
		}
		if !strings.HasPrefix(errOut, "graftctl: ") {
			t.Errorf("%v: stderr %q does not start with graftctl:", c.args, errOut)
		}
		for _, w := range c.want {
			if !strings.Contains(errOut, w) {
				t.Errorf("%v: stderr %q lacks %q", c.args, errOut, w)
			}
		}
		if strings.Contains(errOut, "second line") {
			t.Errorf("%v: stderr %q has more than the first line of a plain-text error", c.args, errOut)
		}
	}
}

func TestUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	code, _, errOut := graftctl(t, "--addr", addr, "status")
	wantExit(t, code, 1)
	if !strings.Contains(errOut, "cannot reach "+addr) {
		t.Errorf("stderr %q", errOut)
	}
}

func TestUsageErrors(t *testing.T) {
	t.Setenv("GRAFTCTL_ADDR", "")
	for _, args := range [][]string{
		{"status"}, // no --addr
		{"--addr", "127.0.0.1:1", "put", "k"},
		{"--addr", "127.0.0.1:1", "get"},
		{"--addr", "127.0.0.1:1", "get", ""},
		{"--addr", "127.0.0.1:1", "delete", "a", "b"},
		{"--addr", "127.0.0.1:1", "--bogus", "status"},
		{"--addr", "127.0.0.1:1", "nosuchcommand"},
		{"--addr", "127.0.0.1:1", "add-peer", "n4", "nohostport"},
		{"--addr", "127.0.0.1:1", "change-peers", "n1=a:1,n1=b:2"},
		{"--addr", "127.0.0.1:1", "change-peers", "n1"},
		{"--addr", "127.0.0.1:1", "watch", "--interval=0s"},
		{"--addr", "ftp://x", "status"},
	} {
		code, _, errOut := graftctl(t, args...)
		if code != 1 || !strings.HasPrefix(errOut, "graftctl: ") {
			t.Errorf("%v: exit %d, stderr %q; want exit 1 and a message", args, code, errOut)
		}
	}
}

func TestAddrFromEnv(t *testing.T) {
	f := newFake(t)
	f.mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, sampleStatus) })
	t.Setenv("GRAFTCTL_ADDR", f.addr())
	code, _, _ := graftctl(t, "status")
	wantExit(t, code, 0)
}

func TestAdmin(t *testing.T) {
	f := newFake(t)
	f.mux.HandleFunc("POST /v1/admin/snapshot", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, map[string]any{"index": 77}) })
	f.mux.HandleFunc("POST /v1/admin/transfer-leader", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("to") == "n9" {
			writeJSON(w, 400, map[string]string{"error": "n9 is not a voter"})
			return
		}
		writeJSON(w, 200, map[string]any{})
	})
	f.mux.HandleFunc("POST /v1/admin/peers", func(w http.ResponseWriter, r *http.Request) {
		var req map[string]json.RawMessage
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || len(req) != 1 {
			writeJSON(w, 400, map[string]string{"error": "bad request"})
			return
		}
		writeJSON(w, 200, map[string]any{"peers": []peer{{"n1", "h:1"}, {"n4", "h:4"}}})
	})

	code, out, _ := graftctl(t, "--addr", f.addr(), "snapshot")
	wantExit(t, code, 0)
	if out != "snapshot taken at index 77\n" {
		t.Errorf("snapshot output %q", out)
	}
	code, out, _ = graftctl(t, "--addr", f.addr(), "transfer-leader", "n2")
	wantExit(t, code, 0)
	if !strings.Contains(out, "n2") {
		t.Errorf("transfer-leader output %q", out)
	}
	code, _, errOut := graftctl(t, "--addr", f.addr(), "transfer-leader", "n9")
	wantExit(t, code, 1)
	if !strings.Contains(errOut, "n9 is not a voter") {
		t.Errorf("transfer-leader stderr %q", errOut)
	}
	code, out, _ = graftctl(t, "--addr", f.addr(), "remove-peer", "n2")
	wantExit(t, code, 0)
	if !strings.Contains(out, "peers: n1=h:1, n4=h:4") {
		t.Errorf("remove-peer output %q", out)
	}
	code, _, _ = graftctl(t, "--addr", f.addr(), "change-peers", "n1=127.0.0.1:7001, n2=127.0.0.1:7002,")
	wantExit(t, code, 0)

	var bodies []string
	for _, r := range f.requests() {
		if r.Path == "/v1/admin/peers" {
			bodies = append(bodies, r.Body)
		}
	}
	want := []string{`{"remove":"n2"}`, `{"change":[{"id":"n1","addr":"127.0.0.1:7001"},{"id":"n2","addr":"127.0.0.1:7002"}]}`}
	if strings.Join(bodies, "\n") != strings.Join(want, "\n") {
		t.Errorf("peer bodies\n%s\nwant\n%s", strings.Join(bodies, "\n"), strings.Join(want, "\n"))
	}
}
