package testnode

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/graft-raft/graft"
	"github.com/graft-raft/graft/internal/leakcheck"
)

func TestConfigEnvironRoundTrip(t *testing.T) {
	want := Config{
		GroupID: "g", ID: "n2", RaftAddr: "127.0.0.1:7001", HTTPAddr: "127.0.0.1:0", Dir: "/tmp/x",
		Peers:           []graft.Peer{{ID: "n1", Addr: "127.0.0.1:7000"}, {ID: "n2", Addr: "127.0.0.1:7001"}},
		ElectionTimeout: 300 * time.Millisecond, HeartbeatInterval: 30 * time.Millisecond,
		NodeOptions: NodeOptions{
			SnapshotLogEntries: 100, SnapshotInterval: 3 * time.Second, SnapshotTrailingEntries: 7,
			ThrottleBytesPerSec: 1 << 20, LogCacheEntries: 16, CopyParallel: 2, CopyChunkSize: 64 << 10,
			BlobChunkSize: 1 << 20, VerifyLoads: true, NoSnapshots: true,
		},
	}
	for _, kv := range want.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	if !IsChild() {
		t.Error("IsChild() = false with the environment set")
	}
	got, err := ConfigFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ConfigFromEnv() = %+v, want %+v", got, want)
	}
}

// TestServerControlAPI runs a one-node group in this process and drives it
// through the control API.
func TestServerControlAPI(t *testing.T) {
	defer leakcheck.VerifyNone(t, goleak.IgnoreCurrent())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	s, err := Start(Config{
		GroupID: "g", ID: "n1", RaftAddr: addr, HTTPAddr: "127.0.0.1:0", Dir: t.TempDir(),
		Peers:           []graft.Peer{{ID: "n1", Addr: addr}},
		ElectionTimeout: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	base := "http://" + s.HTTPAddr()
	getJSON := func(path string, v any) {
		t.Helper()
		resp, err := client.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %s", path, resp.Status)
		}
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			t.Fatal(err)
		}
	}

	deadline := time.Now().Add(10 * time.Second)
	for !s.Node().IsLeader() {
		if time.Now().After(deadline) {
			t.Fatal("the single node did not become leader")
		}
		time.Sleep(10 * time.Millisecond) // polling interval
	}
	var want []Entry
	for _, cmd := range []string{"a", "b", "c"} {
		resp, err := client.Post(base+"/apply", "text/plain", strings.NewReader(cmd))
		if err != nil {
			t.Fatal(err)
		}
		var rep ApplyReply
		err = json.NewDecoder(resp.Body).Decode(&rep)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK || rep.Index == 0 {
			t.Fatalf("POST /apply %q: %s %+v %v", cmd, resp.Status, rep, err)
		}
		want = append(want, Entry{Index: rep.Index, Term: rep.Term, Cmd: cmd})
	}
	var got []Entry
	getJSON("/applied", &got)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("GET /applied = %+v, want %+v", got, want)
	}
	var st Status
	getJSON("/status", &st)
	if st.ID != "n1" || st.Role != "leader" || st.Term == 0 || st.Commit < want[2].Index || st.Applied < want[2].Index || st.Recorded != 3 {
		t.Errorf("GET /status = %+v", st)
	}
}

// TestRecorderBlobSnapshots runs a one-node group in blob mode in this
// process: blob writes, a snapshot, writes after it (which must not touch
// the snapshot's files), a restart that loads the snapshot and replays the
// log after it, and a second snapshot that the next restart loads.
func TestRecorderBlobSnapshots(t *testing.T) {
	defer leakcheck.VerifyNone(t, goleak.IgnoreCurrent())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	cfg := Config{
		GroupID: "g", ID: "n1", RaftAddr: addr, HTTPAddr: "127.0.0.1:0", Dir: t.TempDir(),
		Peers:           []graft.Peer{{ID: "n1", Addr: addr}},
		ElectionTimeout: 100 * time.Millisecond,
		NodeOptions:     NodeOptions{BlobChunkSize: 4, VerifyLoads: true, SnapshotTrailingEntries: 1},
	}
	start := func() *Server {
		t.Helper()
		s, err := Start(cfg)
		if err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for !s.Node().IsLeader() {
			if time.Now().After(deadline) {
				t.Fatal("the single node did not become leader")
			}
			time.Sleep(10 * time.Millisecond) // polling interval
		}
		return s
	}
	apply := func(s *Server, cmd string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := s.Node().Apply(ctx, []byte(cmd)); err != nil {
			t.Fatalf("apply %.20q: %v", cmd, err)
		}
	}
	digest := func(s *Server) Digest {
		t.Helper()
		d, err := s.Recorder().Digest()
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	check := func(s *Server) SnapshotCheck {
		t.Helper()
		rec := httptest.NewRecorder()
		s.handleSnapshotCheck(rec, httptest.NewRequest("GET", "/snapshot/check", nil))
		var sc SnapshotCheck
		if err := json.NewDecoder(rec.Body).Decode(&sc); err != nil {
			t.Fatal(err)
		}
		return sc
	}

	s := start()
	apply(s, BlobCommand("a", 0, []byte("aaaa")))
	apply(s, BlobCommand("a", 2, []byte("AAAA")))
	apply(s, BlobCommand("b", 0, []byte("bb")))
	apply(s, "plain")
	snap1, err := s.Node().Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want1 := digest(s)
	// Copy on write: these must not change the snapshot's files.
	apply(s, BlobCommand("a", 1, []byte("xxxx")))
	apply(s, BlobCommand("c", 0, []byte("c")))
	if sc := check(s); sc.Index != snap1 || sc.Err != "" || sc.Files != 4 {
		t.Fatalf("after writes following snapshot %d: check = %+v", snap1, sc)
	}
	want2 := digest(s)
	wantEnts := s.Recorder().Entries()
	if got := wantEnts[4].Cmd; got != BlobRecord("a", 1, []byte("xxxx")) {
		t.Errorf("record of a blob write = %q", got)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = start()
	if loads := s.Recorder().Loads(); len(loads) != 1 || loads[0].Index != snap1 || !loads[0].Verified {
		t.Errorf("loads after restart = %+v, want snapshot %d verified", loads, snap1)
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.Recorder().Len() < len(wantEnts) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // polling interval
	}
	if got := digest(s); !reflect.DeepEqual(got.Blobs, want2.Blobs) {
		t.Errorf("state after restart = %+v, want %+v", got, want2)
	}
	if got := s.Recorder().Entries(); !reflect.DeepEqual(got[:len(wantEnts)], wantEnts) {
		t.Errorf("record after restart = %+v, want %+v", got, wantEnts)
	}
	snap2, err := s.Node().Snapshot(context.Background())
	if err != nil || snap2 <= snap1 {
		t.Fatalf("second snapshot = %d, %v (first %d)", snap2, err, snap1)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = start()
	defer s.Close()
	if loads := s.Recorder().Loads(); len(loads) != 1 || loads[0].Index != snap2 {
		t.Errorf("loads after second restart = %+v, want snapshot %d", loads, snap2)
	}
	if got := digest(s); !reflect.DeepEqual(got.Blobs, want2.Blobs) {
		t.Errorf("state after second restart = %+v, want %+v", got, want2)
	}
	if want1.Blobs[0].SHA256 == want2.Blobs[0].SHA256 {
		t.Errorf("blob a did not change: %+v", want2)
	}
	if err := s.Recorder().Err(); err != nil {
		t.Error(err)
	}
	rec := httptest.NewRecorder()
	s.handleStatus(rec, httptest.NewRequest("GET", "/status", nil))
	var st Status
	if err := json.NewDecoder(rec.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	if st.Snapshot.Index != snap2 || st.Snapshot.State != "IDLE" || st.FirstIndex == 0 || len(st.Loads) != 1 {
		t.Errorf("status = %+v", st)
	}
	if _, err := os.Stat("/proc/self/status"); err == nil && (st.RSS == 0 || st.PeakRSS < st.RSS || st.StartRSS == 0) {
		t.Errorf("status memory: rss %d, peak %d, start %d", st.RSS, st.PeakRSS, st.StartRSS)
	}
}
