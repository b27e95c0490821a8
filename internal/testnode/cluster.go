package testnode

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/graft-raft/graft"
)

// ClusterOptions configure a Cluster.
type ClusterOptions struct {
	// N is the number of nodes, named n1..nN. Default 3.
	N int
	// ElectionTimeout and HeartbeatInterval are passed to every node.
	// Defaults 300ms and 30ms.
	ElectionTimeout   time.Duration
	HeartbeatInterval time.Duration
	// Command returns a fresh command that runs a child node; the Cluster
	// adds the node's environment, standard input and outputs. Default:
	// the test binary itself, running no tests (its TestMain must call
	// Main when IsChild).
	Command func() *exec.Cmd
	// StartTimeout bounds how long a child may take to report that it
	// serves. Default 10s.
	StartTimeout time.Duration
	// Node is every node's snapshot, throttle and state-machine settings;
	// SetNodeOptions changes them for one node's next start.
	Node NodeOptions
}

// Cluster is a raft group whose nodes are child processes, which a test
// starts, kills with SIGKILL and restarts on their data directories. Data
// directories live under t.TempDir(). Every child is killed when the test
// ends; a child's standard error is kept in memory and logged only if the
// test failed. A child that exits without being killed, or reports a data
// race, a panic or a fatal error on standard error, fails the test.
//
// Methods other than Start, Kill, KillAll and WaitLeader may be called
// from any goroutine.
type Cluster struct {
	t      testing.TB
	opts   ClusterOptions
	dir    string
	peers  []graft.Peer
	httpTr *http.Transport
	client *http.Client

	mu struct {
		sync.Mutex
		procs map[string]*proc // each node's latest incarnation
		all   []*proc          // every incarnation, for the logs
		node  map[string]NodeOptions
	}
}

type proc struct {
	id       string
	gen      int
	cmd      *exec.Cmd
	stdin    io.WriteCloser
	stdout   *readyWriter
	stderr   *tailBuffer
	exited   chan struct{} // closed once waitErr is set
	waitErr  error
	killed   bool   // guarded by Cluster.mu
	httpAddr string // guarded by Cluster.mu
}

func (p *proc) name() string { return fmt.Sprintf("%s#%d", p.id, p.gen) }

func (p *proc) alive() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// NewCluster reserves a loopback port for each node. It starts none.
func NewCluster(t testing.TB, opts ClusterOptions) *Cluster {
	t.Helper()
	if opts.N == 0 {
		opts.N = 3
	}
	if opts.ElectionTimeout == 0 {
		opts.ElectionTimeout = 300 * time.Millisecond
	}
	if opts.HeartbeatInterval == 0 {
		opts.HeartbeatInterval = 30 * time.Millisecond
	}
	if opts.Command == nil {
		opts.Command = func() *exec.Cmd { return exec.Command(os.Args[0], "-test.run=^$") }
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 10 * time.Second
	}
	c := &Cluster{t: t, opts: opts, dir: t.TempDir()}
	c.httpTr = &http.Transport{MaxIdleConnsPerHost: 16}
	c.client = &http.Client{Transport: c.httpTr, Timeout: 10 * time.Second}
	c.mu.procs = make(map[string]*proc)
	c.mu.node = make(map[string]NodeOptions)
	for i := 1; i <= opts.N; i++ {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		c.peers = append(c.peers, graft.Peer{ID: fmt.Sprintf("n%d", i), Addr: lis.Addr().String()})
		lis.Close()
	}
	t.Cleanup(c.close)
	return c
}

// IDs returns the nodes' ids.
func (c *Cluster) IDs() []string {
	ids := make([]string, len(c.peers))
	for i, p := range c.peers {
		ids[i] = p.ID
	}
	return ids
}

// Dir returns node id's data directory.
func (c *Cluster) Dir(id string) string { return filepath.Join(c.dir, id) }

// SetNodeOptions sets the snapshot, throttle and state-machine settings
// node id runs with from its next start on.
func (c *Cluster) SetNodeOptions(id string, o NodeOptions) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.mu.node[id] = o
}

// NodeOptions returns the settings node id starts with.
func (c *Cluster) NodeOptions(id string) NodeOptions {
	c.mu.Lock()
	defer c.mu.Unlock()
	if o, ok := c.mu.node[id]; ok {
		return o
	}
	return c.opts.Node
}

// Wipe deletes node id's data directory, as if its disk were replaced.
// The node must not be running.
func (c *Cluster) Wipe(id string) {
	c.t.Helper()
	c.mu.Lock()
	p := c.mu.procs[id]
	c.mu.Unlock()
	if p != nil && p.alive() {
		c.t.Fatalf("testnode: wipe of %s while it runs", p.name())
	}
	if err := os.RemoveAll(c.Dir(id)); err != nil {
		c.t.Fatalf("testnode: wipe %s: %v", id, err)
	}
}

// Start starts node id (again, on its data directory) and waits until it
// serves. The node must not be running.
func (c *Cluster) Start(id string) {
	c.t.Helper()
	var self graft.Peer
	for _, p := range c.peers {
		if p.ID == id {
			self = p
		}
	}
	if self.ID == "" {
		c.t.Fatalf("testnode: no node %q", id)
	}
	c.mu.Lock()
	prev := c.mu.procs[id]
	c.mu.Unlock()
	if prev != nil && prev.alive() {
		c.t.Fatalf("testnode: %s is already running", prev.name())
	}
	cfg := Config{
		GroupID: "testnode", ID: id, RaftAddr: self.Addr, HTTPAddr: "127.0.0.1:0",
		Dir: c.Dir(id), Peers: c.peers,
		ElectionTimeout: c.opts.ElectionTimeout, HeartbeatInterval: c.opts.HeartbeatInterval,
		NodeOptions: c.NodeOptions(id),
	}
	p := &proc{id: id, gen: 1, stdout: newReadyWriter(), stderr: &tailBuffer{max: 256 << 10}, exited: make(chan struct{})}
	if prev != nil {
		p.gen = prev.gen + 1
	}
	p.cmd = c.opts.Command()
	p.cmd.Env = append(os.Environ(), cfg.Environ()...)
	p.cmd.Stdout = p.stdout
	p.cmd.Stderr = p.stderr
	stdin, err := p.cmd.StdinPipe()
	if err != nil {
		c.t.Fatal(err)
	}
	p.stdin = stdin
	if err := p.cmd.Start(); err != nil {
		c.t.Fatalf("testnode: start %s: %v", p.name(), err)
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.exited)
	}()
	c.mu.Lock()
	c.mu.procs[id] = p
	c.mu.all = append(c.mu.all, p)
	c.mu.Unlock()

	timer := time.NewTimer(c.opts.StartTimeout)
	defer timer.Stop()
	select {
	case <-p.stdout.ready:
		c.mu.Lock()
		p.httpAddr = p.stdout.addr()
		c.mu.Unlock()
		c.t.Logf("testnode: %s started (pid %d, raft %s, http %s)", p.name(), p.cmd.Process.Pid, self.Addr, p.httpAddr)
	case <-p.exited:
		c.t.Fatalf("testnode: %s exited before serving: %v\n%s", p.name(), p.waitErr, p.stderr.String())
	case <-timer.C:
		c.t.Fatalf("testnode: %s did not serve within %v\n%s", p.name(), c.opts.StartTimeout, p.stderr.String())
	}
}

// StartAll starts every node.
func (c *Cluster) StartAll() {
	c.t.Helper()
	for _, id := range c.IDs() {
		c.Start(id)
	}
}

// Kill kills node id with SIGKILL and waits for it to exit.
func (c *Cluster) Kill(id string) {
	c.t.Helper()
	c.KillAll(id)
}

// KillAll sends SIGKILL to every node named (every node if none is
// named) before it waits for any of them, so they die together.
func (c *Cluster) KillAll(ids ...string) {
	c.t.Helper()
	if len(ids) == 0 {
		ids = c.IDs()
	}
	var ps []*proc
	c.mu.Lock()
	for _, id := range ids {
		if p := c.mu.procs[id]; p != nil && p.alive() {
			p.killed = true
			ps = append(ps, p)
		}
	}
	c.mu.Unlock()
	for _, p := range ps {
		if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
			c.t.Errorf("testnode: kill %s: %v", p.name(), err)
		}
	}
	for _, p := range ps {
		select {
		case <-p.exited:
			c.t.Logf("testnode: %s killed: %v", p.name(), p.waitErr)
		case <-time.After(10 * time.Second):
			c.t.Fatalf("testnode: %s did not exit within 10s of SIGKILL", p.name())
		}
	}
}

// Live returns the ids of the nodes whose process is running.
func (c *Cluster) Live() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ids []string
	for _, id := range c.IDs() {
		if p := c.mu.procs[id]; p != nil && p.alive() {
			ids = append(ids, id)
		}
	}
	return ids
}

func (c *Cluster) httpAddr(id string) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.mu.procs[id]
	if p == nil || !p.alive() || p.httpAddr == "" {
		return "", fmt.Errorf("testnode: %s is not serving", id)
	}
	return p.httpAddr, nil
}

func (c *Cluster) get(ctx context.Context, id, path string, v any) error {
	addr, err := c.httpAddr(id)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return err
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("testnode: GET %s on %s: %s: %s", path, id, resp.Status, b)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// Status returns node id's status.
func (c *Cluster) Status(ctx context.Context, id string) (Status, error) {
	var st Status
	err := c.get(ctx, id, "/status", &st)
	return st, err
}

// Applied returns every command node id applied since it started.
func (c *Cluster) Applied(ctx context.Context, id string) ([]Entry, error) {
	var ents []Entry
	err := c.get(ctx, id, "/applied", &ents)
	return ents, err
}

// Apply posts cmd to node id and returns the HTTP status code and the
// answer. An error means no answer came (the outcome is unknown).
func (c *Cluster) Apply(ctx context.Context, id, cmd string) (int, ApplyReply, error) {
	addr, err := c.httpAddr(id)
	if err != nil {
		return 0, ApplyReply{}, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/apply", strings.NewReader(cmd))
	if err != nil {
		return 0, ApplyReply{}, err
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return 0, ApplyReply{}, err
	}
	defer resp.Body.Close()
	var rep ApplyReply
	if err := json.NewDecoder(resp.Body).Decode(&rep); err != nil {
		return resp.StatusCode, rep, fmt.Errorf("testnode: decoding /apply answer (%s): %w", resp.Status, err)
	}
	return resp.StatusCode, rep, nil
}

// Snapshot asks node id to take a snapshot now (POST /snapshot) and
// returns the index it covers.
func (c *Cluster) Snapshot(ctx context.Context, id string) (uint64, error) {
	var rep SnapshotReply
	if err := c.post(ctx, id, "/snapshot", "", &rep); err != nil {
		return 0, err
	}
	return rep.Index, nil
}

// Digest returns node id's state: last index applied and blob digests.
func (c *Cluster) Digest(ctx context.Context, id string) (Digest, error) {
	var d Digest
	err := c.get(ctx, id, "/digest", &d)
	return d, err
}

// CheckSnapshot has node id check its newest local snapshot.
func (c *Cluster) CheckSnapshot(ctx context.Context, id string) (SnapshotCheck, error) {
	var sc SnapshotCheck
	err := c.get(ctx, id, "/snapshot/check", &sc)
	return sc, err
}

// post sends body to path on node id and decodes a 200 answer into v.
func (c *Cluster) post(ctx context.Context, id, path, body string, v any) error {
	addr, err := c.httpAddr(id)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+path, strings.NewReader(body))
	if err != nil {
		return err
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("testnode: POST %s on %s: %s: %s", path, id, resp.Status, bytes.TrimSpace(b))
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// ApplyLeader applies cmd through whichever node leads, retrying on
// redirects, lost leadership and timeouts until it is acknowledged or ctx
// ends. A retried command may be applied more than once, so use it only
// for idempotent commands (such as blob writes).
func (c *Cluster) ApplyLeader(ctx context.Context, cmd string) (ApplyReply, error) {
	var last error
	for {
		if id, _, ok := c.Leader(ctx); ok {
			code, rep, err := c.Apply(ctx, id, cmd)
			if err == nil && code == http.StatusOK {
				return rep, nil
			}
			last = fmt.Errorf("apply on %s: %d %s %v", id, code, rep.Error, err)
		} else {
			last = errors.New("no leader")
		}
		t := time.NewTimer(20 * time.Millisecond) // retry backoff
		select {
		case <-ctx.Done():
			t.Stop()
			return ApplyReply{}, fmt.Errorf("testnode: %w (last: %v)", ctx.Err(), last)
		case <-t.C:
		}
	}
}

// Leader returns the live node that reports itself leader in the highest
// term, if any.
func (c *Cluster) Leader(ctx context.Context) (string, Status, bool) {
	var (
		best  string
		bestS Status
	)
	for _, id := range c.Live() {
		st, err := c.Status(ctx, id)
		if err == nil && st.Role == graft.Leader.String() && (best == "" || st.Term > bestS.Term) {
			best, bestS = id, st
		}
	}
	return best, bestS, best != ""
}

// WaitLeader waits up to timeout for a live node to lead, and returns it.
// With ids, only those nodes count.
func (c *Cluster) WaitLeader(timeout time.Duration, ids ...string) string {
	c.t.Helper()
	var id string
	c.WaitFor(timeout, "a leader", func() bool {
		l, _, ok := c.Leader(context.Background())
		id = l
		return ok && (len(ids) == 0 || slices.Contains(ids, l))
	})
	return id
}

// WaitFor polls cond every 10ms until it holds, and fails the test if it
// does not within timeout.
func (c *Cluster) WaitFor(timeout time.Duration, what string, cond func() bool) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			c.t.Fatalf("testnode: timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond) // polling interval
	}
}

// close kills every child and checks and, on failure, logs their output.
func (c *Cluster) close() {
	c.mu.Lock()
	var live []*proc
	for _, p := range c.mu.procs {
		if p.alive() {
			p.killed = true
			live = append(live, p)
		}
	}
	all := append([]*proc(nil), c.mu.all...)
	c.mu.Unlock()
	for _, p := range live {
		_ = p.stdin.Close()
		_ = p.cmd.Process.Kill()
	}
	for _, p := range live {
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
			c.t.Errorf("testnode: %s did not exit within 10s of SIGKILL", p.name())
		}
	}
	c.httpTr.CloseIdleConnections()

	for _, p := range all {
		c.mu.Lock()
		killed := p.killed
		c.mu.Unlock()
		if !killed {
			c.t.Errorf("testnode: %s exited on its own: %v", p.name(), p.waitErr)
		}
		out := p.stderr.String()
		for _, bad := range []string{"WARNING: DATA RACE", "panic: ", "fatal error: "} {
			if strings.Contains(out, bad) {
				c.t.Errorf("testnode: %s reported %q on standard error", p.name(), strings.TrimSpace(bad))
			}
		}
	}
	if c.t.Failed() {
		for _, p := range all {
			c.t.Logf("testnode: standard error of %s (last %d bytes kept):\n%s", p.name(), p.stderr.max, p.stderr.String())
		}
	}
}

// readyWriter is a child's standard output: it watches for the ready line.
type readyWriter struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	http  string
	ready chan struct{}
}

func newReadyWriter() *readyWriter { return &readyWriter{ready: make(chan struct{})} }

func (w *readyWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.http != "" {
		return len(b), nil
	}
	w.buf.Write(b)
	out := w.buf.String()
	if i := strings.Index(out, ReadyPrefix); i >= 0 {
		if line, _, ok := strings.Cut(out[i+len(ReadyPrefix):], "\n"); ok {
			w.http = strings.TrimSpace(line)
			close(w.ready)
		}
	}
	return len(b), nil
}

func (w *readyWriter) addr() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.http
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
	max int
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - b.max; over > 0 {
		b.buf = append(b.buf[:0], b.buf[over:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

// Logger returns a logger at level whose output is kept in memory and
// logged through t when the test ends, only if it failed.
func Logger(t testing.TB, level slog.Level) *slog.Logger {
	buf := &tailBuffer{max: 1 << 20}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("node logs (last %d bytes kept):\n%s", buf.max, buf.String())
		}
	})
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: level}))
}
