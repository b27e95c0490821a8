package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// statusScript serves a sequence of statuses, one per poll, repeating the
// last; entries that are nil answer 503.
type statusScript struct {
	mu    sync.Mutex
	steps []map[string]any
	polls int
	// polled is signalled after each poll.
	polled chan int
}

func (s *statusScript) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	st := s.steps[min(s.polls, len(s.steps)-1)]
	s.polls++
	n := s.polls
	s.mu.Unlock()
	if st == nil {
		writeJSON(w, 503, map[string]string{"error": "starting"})
	} else {
		writeJSON(w, 200, st)
	}
	select {
	case s.polled <- n:
	default:
	}
}

// snapStatus is sampleStatus with the given snapshot part.
func snapStatus(index int, state string, filesDone, filesTotal, bytesDone, bytesTotal int) map[string]any {
	m := map[string]any{}
	b, _ := json.Marshal(sampleStatus)
	_ = json.Unmarshal(b, &m)
	m["snapshot"] = map[string]any{
		"last_included_index": index, "last_included_term": 6, "state": state,
		"progress": map[string]any{"files_done": filesDone, "files_total": filesTotal, "bytes_done": bytesDone, "bytes_total": bytesTotal, "bytes_per_sec": 1 << 20},
	}
	return m
}

// runWatch runs graftctl watch against script until it exits or a deadline
// passes.
func runWatch(t *testing.T, ctx context.Context, script *statusScript, extra ...string) (int, string, string) {
	t.Helper()
	f := newFake(t)
	f.mux.Handle("GET /v1/status", script)
	var out, errb bytes.Buffer
	done := make(chan int, 1)
	args := append([]string{"--addr", f.addr(), "watch", "--interval=5ms"}, extra...)
	go func() { done <- run(ctx, args, &out, &errb) }()
	select {
	case code := <-done:
		t.Logf("watch exit %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errb.String())
		return code, out.String(), errb.String()
	case <-time.After(10 * time.Second):
		t.Fatalf("watch did not exit within 10s; stdout so far:\n%s", out.String())
		return 0, "", ""
	}
}

func TestWatchInstall(t *testing.T) {
	script := &statusScript{polled: make(chan int, 1), steps: []map[string]any{
		nil, // the node is restarting
		snapStatus(10, "IDLE", 0, 0, 0, 0),
		snapStatus(10, "DOWNLOADING", 0, 4, 0, 4<<20),
		snapStatus(10, "DOWNLOADING", 2, 4, 2<<20, 4<<20),
		snapStatus(10, "LOADING", 4, 4, 4<<20, 4<<20),
		snapStatus(50, "IDLE", 4, 4, 4<<20, 4<<20),
	}}
	code, out, _ := runWatch(t, context.Background(), script)
	wantExit(t, code, 0)
	for _, want := range []string{"503", "n2 follower term 7", "DOWNLOADING · files 2/4, 2.0 MiB/4.0 MiB, 1.0 MiB/s, ETA 2s", "LOADING", "snapshot installed: index 50, term 6 (4 files, 4.0 MiB)"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
}

// TestWatchInstallBetweenPolls: an install that starts and ends between two
// polls is recognised by its new, complete progress and newer index; a
// local save (newer index, same progress) is not an install.
func TestWatchInstallBetweenPolls(t *testing.T) {
	script := &statusScript{polled: make(chan int, 1), steps: []map[string]any{
		snapStatus(10, "IDLE", 2, 2, 100, 100), // an old install
		snapStatus(20, "SAVING", 2, 2, 100, 100),
		snapStatus(20, "IDLE", 2, 2, 100, 100), // a local save
		snapStatus(90, "IDLE", 3, 3, 300, 300),
	}}
	code, out, _ := runWatch(t, context.Background(), script)
	wantExit(t, code, 0)
	if !strings.Contains(out, "snapshot installed: index 90") {
		t.Errorf("output lacks the install")
	}
	script.mu.Lock()
	defer script.mu.Unlock()
	if script.polls != 4 {
		t.Errorf("watch exited after %d polls, want 4", script.polls)
	}
}

// TestWatchInterruptedInstall: an install that ends without a newer
// snapshot is reported and the watch goes on.
func TestWatchInterruptedInstall(t *testing.T) {
	script := &statusScript{polled: make(chan int, 1), steps: []map[string]any{
		snapStatus(10, "DOWNLOADING", 1, 4, 1, 4),
		snapStatus(10, "IDLE", 1, 4, 1, 4),
		snapStatus(10, "DOWNLOADING", 2, 4, 2, 4),
		snapStatus(30, "IDLE", 4, 4, 4, 4),
	}}
	code, out, _ := runWatch(t, context.Background(), script, "--json")
	wantExit(t, code, 0)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 {
		t.Fatalf("--json printed %d lines, want 4 (one per distinct status)", len(lines))
	}
	for _, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Errorf("line %q is not JSON: %v", l, err)
		}
	}
}

// TestWatchUntilInterrupted: with no install, watch runs until its context
// ends (Ctrl-C) and exits 0.
func TestWatchUntilInterrupted(t *testing.T) {
	script := &statusScript{polled: make(chan int, 1), steps: []map[string]any{snapStatus(10, "IDLE", 0, 0, 0, 0)}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		for n := range script.polled {
			if n >= 3 {
				cancel()
				return
			}
		}
	}()
	code, out, _ := runWatch(t, ctx, script)
	wantExit(t, code, 0)
	if strings.Count(out, "n2 follower term 7") != 1 {
		t.Errorf("an unchanged status was printed more than once")
	}
}
