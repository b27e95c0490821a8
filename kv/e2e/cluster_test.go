//go:build unix

package e2e

// The harness: a cluster of graftkv processes on loopback, HTTP helpers,
// and waits on conditions with deadlines.

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	startTimeout  = 30 * time.Second // a node's HTTP API answers
	leaderTimeout = 20 * time.Second // a cluster agrees on a leader
	stopTimeout   = 20 * time.Second // a node exits after SIGTERM
	reqTimeout    = 15 * time.Second // one HTTP request (a 1 MiB PUT to a -race build can take seconds on a loaded machine)
	pollInterval  = 25 * time.Millisecond
)

// electionTimeout is what every node is started with: short, so tests that
// kill leaders stay quick.
const electionTimeout = "600ms"

// status is GET /v1/status.
type status struct {
	ID            string `json:"id"`
	Role          string `json:"role"`
	Term          uint64 `json:"term"`
	LeaderID      string `json:"leader_id"`
	LeaderHTTP    string `json:"leader_http"`
	CommitIndex   uint64 `json:"commit_index"`
	AppliedIndex  uint64 `json:"applied_index"`
	FirstLogIndex uint64 `json:"first_log_index"`
	LastLogIndex  uint64 `json:"last_log_index"`
	Snapshot      struct {
		LastIncludedIndex uint64 `json:"last_included_index"`
		LastIncludedTerm  uint64 `json:"last_included_term"`
		State             string `json:"state"`
		Progress          struct {
			FilesDone   int64   `json:"files_done"`
			FilesTotal  int64   `json:"files_total"`
			BytesDone   int64   `json:"bytes_done"`
			BytesTotal  int64   `json:"bytes_total"`
			BytesPerSec float64 `json:"bytes_per_sec"`
		} `json:"progress"`
	} `json:"snapshot"`
	Peers    []peer `json:"peers"`
	OldPeers []peer `json:"old_peers"`
	Learners []peer `json:"learners"`
}

type peer struct {
	ID   string `json:"id"`
	Addr string `json:"addr"`
}

func (s *status) isLeader() bool { return strings.EqualFold(s.Role, "leader") }

// cluster is a set of graftkv nodes started by one test.
type cluster struct {
	t      *testing.T
	dir    string
	nodes  []*node
	flags  []string     // passed to every node
	hc     *http.Client // does not follow redirects
	follow *http.Client // follows redirects, like curl -L
	// certs, if set, is the directory of the certificates (made by
	// graftkv gen-certs) with which every node serves mutual TLS and
	// HTTPS; scheme is the HTTP API's.
	certs, scheme string
}

// node is one graftkv process (over its restarts).
type node struct {
	c        *cluster
	id       string
	raftAddr string
	httpAddr string
	dir      string

	mu   sync.Mutex
	proc *proc // nil before the first start
	gen  int
}

// proc is one run of a node's process.
type proc struct {
	cmd     *exec.Cmd
	log     string // file with its stdout and stderr
	exited  chan struct{}
	waitErr error // set before exited is closed
}

func (p *proc) alive() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// clusterOptions configures newCluster.
type clusterOptions struct {
	nodes int      // 3 if zero
	flags []string // extra flags for every node's serve command
	// tls runs every node with --tls-cert, --tls-key and --tls-ca; the
	// test's clients trust the CA.
	tls bool
	// token, if set, is sent by the test's clients as a bearer token.
	token string
}

// newCluster prepares a cluster (nothing runs yet): ids n1, n2, ...,
// free loopback ports and data directories. Every process it starts is
// killed when the test ends; a failed test (or -e2e.logs) logs their
// output.
func newCluster(t *testing.T, o clusterOptions) *cluster {
	t.Helper()
	if testing.Short() {
		t.Skip("e2e: starts graftkv processes; skipped in -short mode")
	}
	if o.nodes == 0 {
		o.nodes = 3
	}
	// The directory is made first so that it is removed after the
	// processes are killed (cleanups run last-in first-out).
	c := &cluster{t: t, dir: t.TempDir(), scheme: "http"}
	c.flags = append([]string{"--election-timeout", electionTimeout}, o.flags...)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if o.tls {
		c.certs, c.scheme = filepath.Join(c.dir, "certs"), "https"
		genCerts(t, c.certs, "--nodes", "", "--client", "client") // the CA, and a client certificate
		pool := x509.NewCertPool()
		pem, err := os.ReadFile(filepath.Join(c.certs, "ca.crt"))
		if err != nil || !pool.AppendCertsFromPEM(pem) {
			t.Fatalf("e2e: reading the CA: %v", err)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool}
	}
	var rt http.RoundTripper = tr
	if o.token != "" {
		rt = bearerTransport{token: o.token, next: tr}
	}
	c.hc = &http.Client{Transport: rt, Timeout: reqTimeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	c.follow = &http.Client{Transport: rt, Timeout: reqTimeout}
	for i := range o.nodes {
		c.addNode(fmt.Sprintf("n%d", i+1))
	}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		c.killAll()
		c.checkLogs()
		if t.Failed() || *flagLogs {
			c.dumpLogs()
		}
	})
	return c
}

// addNode adds a node that is not part of the initial configuration
// (peersFlag lists the nodes added before it).
func (c *cluster) addNode(id string) *node {
	n := &node{c: c, id: id, raftAddr: freeAddr(c.t), httpAddr: freeAddr(c.t), dir: filepath.Join(c.dir, id)}
	c.nodes = append(c.nodes, n)
	return n
}

var (
	portsMu   sync.Mutex
	portsUsed = map[string]bool{}
)

// freeAddr returns a loopback address whose port was free a moment ago
// and that no other test of this process was given. Ports come from below
// the kernel's ephemeral range (32768 and up on Linux), so that no outgoing
// connection of any process can take one between this check and the
// node's bind.
func freeAddr(t *testing.T) string {
	t.Helper()
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 1000 {
		addr := fmt.Sprintf("127.0.0.1:%d", 20000+rand.IntN(12000))
		if portsUsed[addr] {
			continue
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		l.Close()
		portsUsed[addr] = true
		return addr
	}
	t.Fatalf("e2e: no free port in 20000-31999")
	return ""
}

// node returns the node with id.
func (c *cluster) node(id string) *node {
	for _, n := range c.nodes {
		if n.id == id {
			return n
		}
	}
	c.t.Fatalf("e2e: no node %q", id)
	return nil
}

// peersFlag is the --peers value naming nodes (all if none).
func (c *cluster) peersFlag(nodes ...*node) string {
	if len(nodes) == 0 {
		nodes = c.nodes
	}
	var parts []string
	for _, n := range nodes {
		parts = append(parts, n.id+"="+n.raftAddr)
	}
	return strings.Join(parts, ",")
}

// serveArgs is the command line of node n, exactly as the spec's flags
// say; extra flags go last.
func (n *node) serveArgs(peers string, extra []string) []string {
	args := []string{"serve", "--id", n.id, "--raft-addr", n.raftAddr, "--http-addr", n.httpAddr, "--data-dir", n.dir}
	if peers != "" {
		args = append(args, "--peers", peers)
	}
	if n.c.certs != "" {
		if _, err := os.Stat(filepath.Join(n.c.certs, n.id+".crt")); err != nil {
			genCerts(n.c.t, n.c.certs, "--nodes", n.id, "--hosts", "127.0.0.1", "--client", "")
		}
		args = append(args, "--tls-ca", filepath.Join(n.c.certs, "ca.crt"),
			"--tls-cert", filepath.Join(n.c.certs, n.id+".crt"), "--tls-key", filepath.Join(n.c.certs, n.id+".key"))
	}
	args = append(args, n.c.flags...)
	return append(args, extra...)
}

// genCerts runs graftkv gen-certs --out dir with args.
func genCerts(t *testing.T, dir string, args ...string) {
	t.Helper()
	out, err := exec.Command(graftkvBin, append([]string{"gen-certs", "--out", dir}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("e2e: graftkv gen-certs %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// bearerTransport adds a bearer token to requests that have none.
type bearerTransport struct {
	token string
	next  http.RoundTripper
}

func (b bearerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Header.Get("Authorization") == "" {
		r = r.Clone(r.Context())
		r.Header.Set("Authorization", "Bearer "+b.token)
	}
	return b.next.RoundTrip(r)
}

// start starts every node given (all if none) and waits until each
// serves its HTTP API.
func (c *cluster) start(nodes ...*node) {
	c.t.Helper()
	if len(nodes) == 0 {
		nodes = c.nodes[:min(3, len(c.nodes))]
	}
	for _, n := range nodes {
		n.launch(c.peersFlag(c.initial()...), nil)
	}
	for _, n := range nodes {
		n.waitServing()
	}
}

// initial is the nodes of the initial configuration (the first three).
func (c *cluster) initial() []*node { return c.nodes[:min(3, len(c.nodes))] }

// start starts n with the cluster's --peers and extra flags and waits until it serves.
func (n *node) start(extra ...string) {
	n.c.t.Helper()
	n.launch(n.c.peersFlag(n.c.initial()...), extra)
	n.waitServing()
}

// launch starts n's process with --peers peers ("" for none).
func (n *node) launch(peers string, extra []string) {
	t := n.c.t
	t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.proc != nil && n.proc.alive() {
		t.Fatalf("e2e: %s is already running", n.id)
	}
	n.gen++
	logPath := filepath.Join(n.c.dir, fmt.Sprintf("%s.%d.log", n.id, n.gen))
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close() // the child has its own descriptor
	args := n.serveArgs(peers, extra)
	cmd := exec.Command(graftkvBin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = childEnv()
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		t.Fatalf("e2e: start %s: %v", n.id, err)
	}
	p := &proc{cmd: cmd, log: logPath, exited: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()
	n.proc = p
	t.Logf("e2e: started %s (run %d, pid %d): graftkv %s", n.id, n.gen, cmd.Process.Pid, strings.Join(args, " "))
}

func (n *node) current() *proc {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.proc
}

// waitServing waits until n's GET /v1/status answers 200.
func (n *node) waitServing() {
	t := n.c.t
	t.Helper()
	p := n.current()
	deadline := time.Now().Add(startTimeout)
	var last string
	for {
		_, err := n.status()
		if err == nil {
			return
		}
		last = err.Error()
		select {
		case <-p.exited:
			t.Fatalf("e2e: %s exited before serving (%v):\n%s", n.id, p.waitErr, tail(p.log, 4<<10))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("e2e: %s does not serve its HTTP API within %v: %s\n%s", n.id, startTimeout, last, tail(p.log, 4<<10))
		}
		time.Sleep(pollInterval) // polling interval
	}
}

// running reports whether n's process runs.
func (n *node) running() bool {
	p := n.current()
	return p != nil && p.alive()
}

// kill sends SIGKILL to n's process group and waits for the process to exit.
func (n *node) kill() {
	n.c.t.Helper()
	p := n.current()
	if p == nil || !p.alive() {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-p.exited:
		n.c.t.Logf("e2e: killed %s (kill -9)", n.id)
	case <-time.After(stopTimeout):
		n.c.t.Fatalf("e2e: %s did not exit within %v of SIGKILL", n.id, stopTimeout)
	}
}

// stop sends SIGTERM and waits for a graceful exit, which must be clean
// (status 0): the spec's SIGTERM is a graceful shutdown.
func (n *node) stop() {
	n.c.t.Helper()
	p := n.current()
	if p == nil || !p.alive() {
		return
	}
	start := time.Now()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		if p.waitErr != nil {
			n.c.t.Errorf("e2e: %s exited with %v after SIGTERM, want a graceful exit with status 0\n%s", n.id, p.waitErr, tail(p.log, 2<<10))
		} else {
			n.c.t.Logf("e2e: stopped %s (SIGTERM) in %v", n.id, time.Since(start).Round(time.Millisecond))
		}
	case <-time.After(stopTimeout):
		n.c.t.Errorf("e2e: %s did not exit within %v of SIGTERM; killing it", n.id, stopTimeout)
		n.kill()
	}
}

// stopAll stops the given nodes (all if none) at once, gracefully or with
// SIGKILL.
func (c *cluster) stopAll(graceful bool, nodes ...*node) {
	c.t.Helper()
	if len(nodes) == 0 {
		nodes = c.nodes
	}
	var ps []*proc
	for _, n := range nodes {
		if p := n.current(); p != nil && p.alive() {
			if graceful {
				_ = p.cmd.Process.Signal(syscall.SIGTERM)
			} else {
				_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			}
			ps = append(ps, p)
		}
	}
	for i, p := range ps {
		select {
		case <-p.exited:
			if graceful && p.waitErr != nil {
				c.t.Errorf("e2e: a node exited with %v after SIGTERM, want status 0\n%s", p.waitErr, tail(p.log, 2<<10))
			}
		case <-time.After(stopTimeout):
			c.t.Errorf("e2e: process %d did not exit within %v", i, stopTimeout)
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		}
	}
	c.t.Logf("e2e: stopped %d nodes (graceful=%v)", len(ps), graceful)
}

// killAll kills every process group the cluster started, for Cleanup.
func (c *cluster) killAll() {
	for _, n := range c.nodes {
		if p := n.current(); p != nil && p.alive() {
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			select {
			case <-p.exited:
			case <-time.After(stopTimeout):
			}
		}
	}
}

// dumpLogs logs the tail of every process's output.
func (c *cluster) dumpLogs() {
	files, _ := filepath.Glob(filepath.Join(c.dir, "*.log"))
	slices.Sort(files)
	for _, f := range files {
		c.t.Logf("e2e: ---- %s ----\n%s", filepath.Base(f), tail(f, 16<<10))
	}
}

// checkLogs fails the test if a node reported a data race (graftkv is
// built with -race when the tests are), panicked or hit a fatal error.
func (c *cluster) checkLogs() {
	files, _ := filepath.Glob(filepath.Join(c.dir, "*.log"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			c.t.Errorf("e2e: %v", err)
			continue
		}
		for _, bad := range []string{"WARNING: DATA RACE", "\npanic: ", "\nfatal error: "} {
			if i := bytes.Index(b, []byte(bad)); i >= 0 {
				end := min(len(b), i+8<<10)
				c.t.Errorf("e2e: %s reports %q:\n%s", filepath.Base(f), strings.TrimSpace(bad), b[i:end])
			}
		}
	}
}

// tail returns the last limit bytes of file.
func tail(file string, limit int64) string {
	f, err := os.Open(file)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err.Error()
	}
	off := max(fi.Size()-limit, 0)
	b := make([]byte, fi.Size()-off)
	_, _ = f.ReadAt(b, off)
	s := string(b)
	if off > 0 {
		s = "[...]\n" + s
	}
	return s
}

// url is n's HTTP URL of path (escaped) and query.
func (n *node) url(path string, q url.Values) string {
	u := n.c.scheme + "://" + n.httpAddr + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	return u
}

// kvPath is the escaped path of key.
func kvPath(key string) string { return "/v1/kv/" + url.PathEscape(key) }

// status fetches n's GET /v1/status.
func (n *node) status() (*status, error) {
	var s status
	_, err := n.statusRaw(&s)
	return &s, err
}

// statusRaw fetches GET /v1/status and decodes it into v.
func (n *node) statusRaw(v any) ([]byte, error) {
	code, body, err := n.c.do(n.c.hc, "GET", n.url("/v1/status", nil), nil)
	if err != nil {
		return nil, err
	}
	if code != 200 {
		return body, fmt.Errorf("%s: GET /v1/status: %d %s", n.id, code, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return body, fmt.Errorf("%s: GET /v1/status: %v in %s", n.id, err, body)
	}
	return body, nil
}

// mustStatus is status, failing the test on an error.
func (n *node) mustStatus() *status {
	n.c.t.Helper()
	s, err := n.status()
	if err != nil {
		n.c.t.Fatal(err)
	}
	return s
}

// do sends one request and reads the whole answer.
func (c *cluster) do(hc *http.Client, method, u string, body []byte) (int, []byte, error) {
	return doHeader(hc, method, u, body, nil)
}

func doHeader(hc *http.Client, method, u string, body []byte, hdr *http.Header) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body) // sets GetBody, so a 307 re-sends it
	}
	ctx, cancel := context.WithTimeout(context.Background(), reqTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return 0, nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if hdr != nil {
		*hdr = resp.Header
	}
	return resp.StatusCode, b, err
}

// answer is one HTTP exchange's result, for assertions.
type answer struct {
	code   int
	body   []byte
	header http.Header
}

// req sends method to n (no redirects followed) and fails the test on a
// transport error.
func (n *node) req(method, path string, q url.Values, body []byte) answer {
	n.c.t.Helper()
	return n.c.send(n.c.hc, method, n.url(path, q), body)
}

// reqFollow is req following redirects, like curl -L.
func (n *node) reqFollow(method, path string, q url.Values, body []byte) answer {
	n.c.t.Helper()
	return n.c.send(n.c.follow, method, n.url(path, q), body)
}

func (c *cluster) send(hc *http.Client, method, u string, body []byte) answer {
	c.t.Helper()
	var a answer
	var err error
	a.code, a.body, err = doHeader(hc, method, u, body, &a.header)
	if err != nil {
		c.t.Fatalf("e2e: %s %s: %v", method, u, err)
	}
	return a
}

// want checks the status code.
func (a answer) want(t *testing.T, what string, codes ...int) answer {
	t.Helper()
	if !slices.Contains(codes, a.code) {
		t.Fatalf("%s: answered %d %q, want %v", what, a.code, trunc(a.body), codes)
	}
	return a
}

// jsonError checks that the body is {"error": "..."} with a message, and
// returns the message.
func (a answer) jsonError(t *testing.T, what string) string {
	t.Helper()
	var e map[string]any
	if err := json.Unmarshal(a.body, &e); err != nil {
		t.Errorf("%s: the %d answer %q is not a JSON error: %v", what, a.code, trunc(a.body), err)
		return ""
	}
	msg, ok := e["error"].(string)
	if !ok || msg == "" {
		t.Errorf(`%s: the %d answer %q has no "error" message`, what, a.code, trunc(a.body))
	}
	return msg
}

// index decodes {"index": N}.
func (a answer) index(t *testing.T, what string) uint64 {
	t.Helper()
	var v struct {
		Index *uint64 `json:"index"`
	}
	if err := json.Unmarshal(a.body, &v); err != nil || v.Index == nil {
		t.Fatalf(`%s: answer %q is not {"index": N}`, what, trunc(a.body))
	}
	return *v.Index
}

func trunc(b []byte) string {
	if len(b) > 300 {
		return string(b[:300]) + "..."
	}
	return string(b)
}

// put sets key on n (redirects followed) and returns the index.
func (c *cluster) put(n *node, key, value string) uint64 {
	c.t.Helper()
	a := n.reqFollow("PUT", kvPath(key), nil, []byte(value)).want(c.t, "PUT "+key, 200)
	return a.index(c.t, "PUT "+key)
}

// waitFor polls cond until it is true or timeout passes; cond explains
// why not yet.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("e2e: timed out after %v waiting for %s: %s", timeout, what, why)
		}
		time.Sleep(pollInterval) // polling interval
	}
}

// waitLeader waits until one of nodes (the running ones if none) is leader
// and every one of them names it and knows its HTTP address (so that
// followers redirect rather than answer 503); it returns the leader.
func (c *cluster) waitLeader(nodes ...*node) *node {
	c.t.Helper()
	var leader *node
	waitFor(c.t, leaderTimeout, "a leader", func() (bool, string) {
		var why string
		leader, why = c.leaderNow(nodes...)
		return leader != nil, why
	})
	c.t.Logf("e2e: leader is %s", leader.id)
	return leader
}

// leaderNow returns the leader if one of nodes (the running ones if none)
// is leader and all of them name it, or else why not.
func (c *cluster) leaderNow(nodes ...*node) (*node, string) {
	if len(nodes) == 0 {
		for _, n := range c.nodes {
			if n.running() {
				nodes = append(nodes, n)
			}
		}
	}
	var leader *node
	var views []string
	agree := true
	var leaderID string
	for _, n := range nodes {
		s, err := n.status()
		if err != nil {
			return nil, err.Error()
		}
		views = append(views, fmt.Sprintf("%s: %s term %d leader %q (http %q)", n.id, s.Role, s.Term, s.LeaderID, s.LeaderHTTP))
		if s.isLeader() {
			if leader != nil {
				agree = false
			}
			leader = n
		}
		if leaderID == "" {
			leaderID = s.LeaderID
		}
		if s.LeaderID == "" || s.LeaderID != leaderID || s.LeaderHTTP == "" {
			agree = false
		}
	}
	if leader == nil || !agree || leaderID != leader.id {
		return nil, strings.Join(views, "; ")
	}
	return leader, ""
}

// waitQuiet waits until n's log has not grown for quiet, with every entry
// committed, and returns the status then.
func (n *node) waitQuiet(quiet time.Duration) *status {
	n.c.t.Helper()
	var last *status
	var since time.Time
	waitFor(n.c.t, leaderTimeout, fmt.Sprintf("%s's log to stand still for %v", n.id, quiet), func() (bool, string) {
		s, err := n.status()
		if err != nil {
			return false, err.Error()
		}
		if last == nil || s.LastLogIndex != last.LastLogIndex || s.CommitIndex != s.LastLogIndex {
			last, since = s, time.Now()
			return false, fmt.Sprintf("log %d..%d, commit %d", s.FirstLogIndex, s.LastLogIndex, s.CommitIndex)
		}
		return time.Since(since) >= quiet, ""
	})
	return last
}

// followers returns the running nodes other than leader.
func (c *cluster) followers(leader *node) []*node {
	var fs []*node
	for _, n := range c.nodes {
		if n != leader && n.running() {
			fs = append(fs, n)
		}
	}
	return fs
}

// waitApplied waits until every node given (the running ones if none) has
// applied at least index.
func (c *cluster) waitApplied(index uint64, nodes ...*node) {
	c.t.Helper()
	if len(nodes) == 0 {
		for _, n := range c.nodes {
			if n.running() {
				nodes = append(nodes, n)
			}
		}
	}
	waitFor(c.t, leaderTimeout, fmt.Sprintf("every node to apply index %d", index), func() (bool, string) {
		for _, n := range nodes {
			s, err := n.status()
			if err != nil {
				return false, err.Error()
			}
			if s.AppliedIndex < index {
				return false, fmt.Sprintf("%s applied %d", n.id, s.AppliedIndex)
			}
		}
		return true, ""
	})
}

// staleGet reads key from n's local state: the value and whether it exists.
func (c *cluster) staleGet(n *node, key string) (string, bool, error) {
	code, body, err := c.do(c.hc, "GET", n.url(kvPath(key), url.Values{"consistency": {"stale"}}), nil)
	switch {
	case err != nil:
		return "", false, err
	case code == 200:
		return string(body), true, nil
	case code == 404:
		return "", false, nil
	}
	return "", false, fmt.Errorf("%s: stale GET %q: %d %s", n.id, key, code, trunc(body))
}
