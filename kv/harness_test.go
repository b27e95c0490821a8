package kv

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/graft-raft/graft"
	"github.com/graft-raft/graft/internal/leakcheck"
	"github.com/graft-raft/graft/snapshot"
	"github.com/graft-raft/graft/transport"
	"github.com/graft-raft/graft/transport/memory"
)

func TestMain(m *testing.M) {
	leakcheck.VerifyTestMain(m)
}

// cluster is a test cluster of real Servers — durable logs and pebble in
// a temporary directory — joined by an in-memory network, each with its
// HTTP API on a loopback httptest server.
type cluster struct {
	t     *testing.T
	net   *memory.Network
	dir   string
	peers []graft.Peer
	nodes []*tnode
	// configure adjusts each node's Config before it starts.
	configure func(*Config)
	// tls, if set, serves every node's HTTP API over HTTPS.
	tls *testTLS
}

// testTLS is the HTTPS setup of a cluster: the nodes' server and client
// configurations, with a certificate from the cluster's CA.
type testTLS struct {
	server, client *tls.Config
}

// tnode is one node of a cluster; srv is nil while it is stopped.
type tnode struct {
	id, raftAddr string
	http         *httptest.Server // keeps its address across restarts
	handler      atomicHandler
	srv          *Server
	trans        *memory.Transport
	files        *snapshot.FileService
}

// atomicHandler lets a restarted node serve on the same httptest server.
type atomicHandler struct {
	mu sync.Mutex
	h  http.Handler
}

func (a *atomicHandler) set(h http.Handler) {
	a.mu.Lock()
	a.h = h
	a.mu.Unlock()
}

func (a *atomicHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	h := a.h
	a.mu.Unlock()
	if h == nil {
		http.Error(w, "node down", http.StatusBadGateway)
		return
	}
	h.ServeHTTP(w, r)
}

// newCluster starts n voters (and extra nodes that are not in the initial
// configuration, named after them) and waits for a leader if n > 0.
func newCluster(t *testing.T, voters, extra int, configure func(*Config)) *cluster {
	t.Helper()
	return newTLSCluster(t, voters, extra, configure, nil)
}

// newTLSCluster is newCluster with the HTTP APIs served over HTTPS if
// tlsc is not nil.
func newTLSCluster(t *testing.T, voters, extra int, configure func(*Config), tlsc *testTLS) *cluster {
	t.Helper()
	c := &cluster{t: t, net: memory.NewNetwork(1), dir: t.TempDir(), configure: configure, tls: tlsc}
	for i := 1; i <= voters+extra; i++ {
		n := &tnode{id: fmt.Sprintf("n%d", i), raftAddr: fmt.Sprintf("raft-n%d", i)}
		if tlsc == nil {
			n.http = httptest.NewServer(&n.handler)
		} else {
			n.http = httptest.NewUnstartedServer(&n.handler)
			n.http.TLS = tlsc.server.Clone()
			n.http.StartTLS()
		}
		c.nodes = append(c.nodes, n)
		if i <= voters {
			c.peers = append(c.peers, graft.Peer{ID: n.id, Addr: n.raftAddr})
		}
	}
	t.Cleanup(c.close)
	for i := range c.nodes {
		c.start(i)
	}
	if voters > 0 {
		c.waitReady()
	}
	return c
}

func (c *cluster) config(i int) Config {
	n := c.nodes[i]
	cfg := DefaultConfig()
	cfg.ID = n.id
	cfg.HTTPAddr = n.http.Listener.Addr().String()
	if c.tls != nil {
		cfg.HTTPClientTLS = c.tls.client
	}
	cfg.DataDir = filepath.Join(c.dir, n.id)
	if i < len(c.peers) {
		cfg.Peers = c.peers
	}
	// Short enough for quick elections, long enough that a -race build
	// on a loaded 2-core machine does not lose its leader to scheduling
	// delays (at 150 ms, check-quorum step-downs failed TestHTTPAPI there).
	cfg.ElectionTimeout = 500 * time.Millisecond
	cfg.SnapshotInterval = 0
	cfg.SnapshotLogEntries = 0
	cfg.RequestTimeout = 5 * time.Second
	cfg.Logger = slog.New(slog.NewTextHandler(tlogWriter{c.t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if c.configure != nil {
		c.configure(&cfg)
	}
	return cfg
}

// start starts node i (again) from its data directory.
func (c *cluster) start(i int) {
	c.t.Helper()
	n := c.nodes[i]
	router := transport.NewRouter()
	n.files = snapshot.NewFileService(snapshot.FileServiceOptions{})
	router.SetFileHandler(n.files)
	if _, err := c.net.Listen(n.raftAddr, router); err != nil {
		c.t.Fatal(err)
	}
	n.trans = c.net.Transport(n.raftAddr)
	cfg := c.config(i)
	cfg.Transport, cfg.Router, cfg.FileService = n.trans, router, n.files
	srv, err := NewServer(cfg)
	if err != nil {
		c.t.Fatalf("starting %s: %v", n.id, err)
	}
	n.srv = srv
	n.handler.set(srv.Handler())
}

// stop stops node i cleanly.
func (c *cluster) stop(i int) {
	c.t.Helper()
	n := c.nodes[i]
	if n.srv == nil {
		return
	}
	n.handler.set(nil)
	c.net.Unlisten(n.raftAddr)
	if err := n.srv.Close(); err != nil {
		c.t.Errorf("closing %s: %v", n.id, err)
	}
	n.trans.Close()
	n.files.Close()
	n.srv = nil
}

func (c *cluster) close() {
	for i := range c.nodes {
		c.stop(i)
	}
	for _, n := range c.nodes {
		n.http.Close()
	}
	c.net.Close()
}

// waitFor polls cond until it holds or the deadline passes.
func (c *cluster) waitFor(what string, cond func() bool) {
	c.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			c.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond) // polling a condition, not synchronising
	}
}

// leader returns the index of the running node that leads.
func (c *cluster) leader() int {
	c.t.Helper()
	l := -1
	c.waitFor("a leader", func() bool {
		for i, n := range c.nodes {
			if n.srv != nil && n.srv.Node().IsLeader() {
				l = i
				return true
			}
		}
		return false
	})
	return l
}

// follower returns the index of a running node that is not the leader.
func (c *cluster) follower() int {
	l := c.leader()
	for i, n := range c.nodes {
		if i != l && n.srv != nil && i < len(c.peers) {
			return i
		}
	}
	c.t.Fatal("no follower running")
	return -1
}

// waitReady waits for a leader and for every running voter to know the
// leader and have every voter's HTTP address.
func (c *cluster) waitReady() {
	c.t.Helper()
	c.leader()
	c.waitFor("HTTP addresses recorded", func() bool {
		for _, n := range c.nodes[:len(c.peers)] {
			if n.srv == nil {
				continue
			}
			if n.srv.Status().LeaderHTTP == "" || len(n.srv.FSM().Members()) < len(c.peers) {
				return false
			}
		}
		return true
	})
}

// url returns node i's URL for path.
func (c *cluster) url(i int, path string) string { return c.nodes[i].http.URL + path }

// contents returns node i's keys and values.
func (c *cluster) contents(i int) map[string]string {
	c.t.Helper()
	return fsmContents(c.t, c.nodes[i].srv.FSM())
}

func fsmContents(t *testing.T, f *FSM) map[string]string {
	t.Helper()
	m := map[string]string{}
	if err := f.Scan(func(k, v []byte) bool {
		m[string(k)] = string(v)
		return true
	}); err != nil {
		t.Fatal(err)
	}
	return m
}

// put writes key=value through the leader's node directly.
func (c *cluster) apply(cmd Command) (uint64, Code) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := c.nodes[c.leader()].srv.Node().Apply(ctx, cmd.Encode(nil))
	if err != nil {
		c.t.Fatalf("apply %s %q: %v", cmd.Op, cmd.Key, err)
	}
	return res.Index, res.Result.(Code)
}

// noRedirects is an HTTP client that returns redirects instead of
// following them.
func noRedirects(t *testing.T) *http.Client {
	c := &http.Client{
		Timeout:       10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

// do sends a request and returns the status code, headers and body.
func do(t *testing.T, client *http.Client, method, url, body string) (int, http.Header, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

// pollPage fetches the status page with get until it shows every peer's
// status, at most for 10s, and leaves the last answer to the caller's
// checks. The page fetches each peer's status when it is asked for, with
// peerStatusTimeout (700ms), which a loaded machine can exceed once; a
// page that never sees a peer still fails the caller's "cannot see it"
// check.
func pollPage(t *testing.T, get func() (body string)) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for strings.Contains(get(), "cannot see it") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // polling interval
	}
}

// tlogWriter sends log lines to t.Log.
type tlogWriter struct{ t *testing.T }

func (w tlogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}
