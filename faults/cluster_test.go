//go:build linux

package faults

// The cluster: graftkv processes on loopback whose raft links all go
// through fault proxies, and the process and disk faults.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

const (
	electionTimeout = 300 * time.Millisecond
	startTimeout    = 30 * time.Second // a node's HTTP API answers
	leaderTimeout   = 20 * time.Second // a cluster agrees on a leader
	exitTimeout     = 20 * time.Second // a process exits after a signal
	pollInterval    = 20 * time.Millisecond
	statusTimeout   = time.Second
)

// status is graftkv's GET /v1/status.
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
			FilesDone  int64 `json:"files_done"`
			FilesTotal int64 `json:"files_total"`
			BytesDone  int64 `json:"bytes_done"`
			BytesTotal int64 `json:"bytes_total"`
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

// isVoter reports whether id is a voter of the configuration s shows.
func (s *status) isVoter(id string) bool {
	return slices.ContainsFunc(s.Peers, func(p peer) bool { return p.ID == id }) ||
		slices.ContainsFunc(s.OldPeers, func(p peer) bool { return p.ID == id })
}

// cluster is the processes of one scenario run and the proxies between
// them. Every node's link to every other goes through a Proxy of its own:
// node a dials b at proxy(a, b) (graftkv --resolve), which forwards to b's
// raft port.
//
// graftkv's resolver maps a configured address to a peer id through the
// configuration in force, so a node being added is dialled directly, not
// through its proxy, until the configuration that adds it is in force;
// and the added node dials its peers directly until it has loaded a
// configuration. Faults on its links apply from then on.
type cluster struct {
	e       *env
	dir     string
	nodes   []*node
	initial int      // the first initial nodes form the cluster
	flags   []string // for every node
	proxies map[link]*Proxy
	hc      *http.Client // no redirects followed

	// members is the ids the scenario expects in the configuration at the
	// end (the convergence check reads these nodes).
	mu struct {
		sync.Mutex
		members []string
	}
}

// link is a directed pair of nodes: from dials to.
type link struct{ from, to string }

// node is one graftkv node over its restarts.
type node struct {
	c        *cluster
	id       string
	raftAddr string
	httpAddr string
	dir      string
	tmpfs    bool // dir is a tmpfs the test mounted

	mu struct {
		sync.Mutex
		proc *proc
		gen  int
	}
}

// proc is one run of a node's process.
type proc struct {
	cmd     *exec.Cmd
	log     string
	exited  chan struct{}
	waitErr error // set before exited is closed
	killed  atomic.Bool
	paused  atomic.Bool
}

func (p *proc) alive() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// newCluster prepares nodes n1..nN (nothing runs yet) with their proxies.
func newCluster(e *env, nodes, initial int, tmpfsSize string, flags []string) *cluster {
	t := e.t
	c := &cluster{e: e, dir: t.TempDir(), initial: initial, proxies: map[link]*Proxy{}}
	c.flags = append([]string{"--election-timeout", electionTimeout.String(), "--snapshot-log-entries", "500"}, flags...)
	c.hc = &http.Client{
		Transport:     &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true},
		Timeout:       statusTimeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	t.Cleanup(c.release) // after the env's own cleanup, which saves the results
	for i := range nodes {
		n := &node{c: c, id: fmt.Sprintf("n%d", i+1), raftAddr: freeAddr(t), httpAddr: freeAddr(t)}
		n.dir = filepath.Join(c.dir, n.id)
		if err := os.MkdirAll(n.dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if tmpfsSize != "" {
			if err := syscall.Mount("tmpfs", n.dir, "tmpfs", 0, "size="+tmpfsSize); err != nil {
				t.Skipf("faults: this scenario mounts a %s tmpfs as each node's data dir to fill it up, which needs root "+
					"(CAP_SYS_ADMIN); mount failed: %v — skipped", tmpfsSize, err)
			}
			n.tmpfs = true
		}
		c.nodes = append(c.nodes, n)
	}
	for _, a := range c.nodes {
		for _, b := range c.nodes {
			if a == b {
				continue
			}
			// Ports come from freeAddr, so that none is one of the
			// ports reserved for a node, which it binds only when it
			// starts.
			p, err := NewProxy(freeAddr(t), b.raftAddr, e.rng.Uint64())
			if err != nil {
				t.Fatal(err)
			}
			c.proxies[link{a.id, b.id}] = p
		}
	}
	for _, n := range c.nodes[:initial] {
		c.mu.members = append(c.mu.members, n.id)
	}
	return c
}

// killAll kills every process the cluster started.
func (c *cluster) killAll() {
	for _, n := range c.nodes {
		if p := n.current(); p != nil && p.alive() {
			p.killed.Store(true)
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			select {
			case <-p.exited:
			case <-time.After(exitTimeout):
			}
		}
	}
}

// release kills every process and releases the proxies and mounts.
func (c *cluster) release() {
	c.killAll()
	for _, p := range c.proxies {
		p.Close()
	}
	for _, n := range c.nodes {
		if n.tmpfs {
			if err := syscall.Unmount(n.dir, syscall.MNT_DETACH); err != nil {
				c.e.t.Errorf("faults: unmount %s: %v", n.dir, err)
			}
		}
	}
	c.hc.CloseIdleConnections()
}

var (
	portsMu   sync.Mutex
	portsUsed = map[string]bool{}
)

// freeAddr returns a loopback address whose port was free a moment ago
// and that no other run of this process was given.
func freeAddr(t testing.TB) string {
	t.Helper()
	portsMu.Lock()
	defer portsMu.Unlock()
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("faults: no free port: %v", err)
		}
		addr := l.Addr().String()
		l.Close()
		if !portsUsed[addr] {
			portsUsed[addr] = true
			return addr
		}
	}
}

func (c *cluster) node(id string) *node {
	for _, n := range c.nodes {
		if n.id == id {
			return n
		}
	}
	c.e.t.Fatalf("faults: no node %q", id)
	return nil
}

// members returns the nodes expected in the configuration.
func (c *cluster) members() []*node {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*node
	for _, id := range c.mu.members {
		out = append(out, c.node(id))
	}
	return out
}

func (c *cluster) setMembers(ids ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.mu.members = slices.Clone(ids)
}

func ids(nodes []*node) []string {
	var out []string
	for _, n := range nodes {
		out = append(out, n.id)
	}
	return out
}

// running returns the members whose process runs (paused or not).
func (c *cluster) running() []*node {
	var out []*node
	for _, n := range c.members() {
		if n.running() {
			out = append(out, n)
		}
	}
	return out
}

func (c *cluster) peersFlag() string {
	var parts []string
	for _, n := range c.nodes[:c.initial] {
		parts = append(parts, n.id+"="+n.raftAddr)
	}
	return strings.Join(parts, ",")
}

// startAll starts every initial node and waits until each serves.
func (c *cluster) startAll() {
	for _, n := range c.nodes[:c.initial] {
		n.launch(true)
	}
	for _, n := range c.nodes[:c.initial] {
		n.waitServing()
	}
}

func (n *node) current() *proc {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.mu.proc
}

func (n *node) running() bool {
	p := n.current()
	return p != nil && p.alive()
}

// start starts n (with the initial --peers unless join) and waits until it
// serves.
func (n *node) start(join bool) {
	n.c.e.t.Helper()
	n.launch(!join)
	n.waitServing()
}

func (n *node) launch(bootstrap bool) {
	c := n.c
	t := c.e.t
	t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.mu.proc != nil && n.mu.proc.alive() {
		t.Fatalf("faults: %s is already running", n.id)
	}
	n.mu.gen++
	logPath := filepath.Join(c.dir, fmt.Sprintf("%s.%d.log", n.id, n.mu.gen))
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close() // the child has its own descriptor
	args := []string{"serve", "--id", n.id, "--raft-addr", n.raftAddr, "--http-addr", n.httpAddr, "--data-dir", n.dir}
	if bootstrap {
		args = append(args, "--peers", c.peersFlag())
	}
	for _, o := range c.nodes {
		if o != n {
			args = append(args, "--resolve", o.id+"="+c.proxies[link{n.id, o.id}].Addr())
		}
	}
	args = append(args, c.flags...)
	cmd := exec.Command(graftkvBin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("faults: start %s: %v", n.id, err)
	}
	p := &proc{cmd: cmd, log: logPath, exited: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.exited)
		if !p.killed.Load() {
			c.e.event("%s exited by itself: %v", n.id, p.waitErr)
		}
	}()
	n.mu.proc = p
	c.e.event("start %s (run %d, pid %d)", n.id, n.mu.gen, cmd.Process.Pid)
}

// waitServing waits until n's GET /v1/status answers.
func (n *node) waitServing() {
	t := n.c.e.t
	t.Helper()
	p := n.current()
	deadline := time.Now().Add(startTimeout)
	for {
		_, err := n.status()
		if err == nil {
			return
		}
		select {
		case <-p.exited:
			t.Fatalf("faults: %s exited before serving (%v):\n%s", n.id, p.waitErr, tail(p.log, 4<<10))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("faults: %s does not serve within %v: %v\n%s", n.id, startTimeout, err, tail(p.log, 4<<10))
		}
		time.Sleep(pollInterval) // polling interval
	}
}

// signal sends sig to n's process group.
func (n *node) signal(sig syscall.Signal) *proc {
	p := n.current()
	if p == nil || !p.alive() {
		return nil
	}
	if err := syscall.Kill(-p.cmd.Process.Pid, sig); err != nil {
		n.c.e.t.Fatalf("faults: signal %v to %s: %v", sig, n.id, err)
	}
	return p
}

// kill sends SIGKILL and waits for the process to end.
func (n *node) kill() {
	n.c.e.t.Helper()
	p := n.current()
	if p == nil || !p.alive() {
		return
	}
	p.killed.Store(true)
	n.signal(syscall.SIGKILL)
	n.c.e.event("kill -9 %s", n.id)
	n.waitExit(p)
}

func (n *node) waitExit(p *proc) {
	select {
	case <-p.exited:
	case <-time.After(exitTimeout):
		n.c.e.t.Fatalf("faults: %s did not exit within %v", n.id, exitTimeout)
	}
}

// stop sends SIGTERM and waits for the process to end.
func (n *node) stop() {
	n.c.e.t.Helper()
	p := n.current()
	if p == nil || !p.alive() {
		return
	}
	p.killed.Store(true)
	n.signal(syscall.SIGTERM)
	n.c.e.event("stop %s (SIGTERM)", n.id)
	n.waitExit(p)
}

// pause stops n's process with SIGSTOP.
func (n *node) pause() {
	if p := n.signal(syscall.SIGSTOP); p != nil {
		p.paused.Store(true)
		n.c.e.event("pause %s (SIGSTOP)", n.id)
	}
}

// resume continues n's process with SIGCONT.
func (n *node) resume() {
	if p := n.signal(syscall.SIGCONT); p != nil {
		p.paused.Store(false)
		n.c.e.event("resume %s (SIGCONT)", n.id)
	}
}

func (n *node) paused() bool {
	p := n.current()
	return p != nil && p.alive() && p.paused.Load()
}

// killAllAtOnce sends SIGKILL to every running node, then waits.
func (c *cluster) killAllAtOnce() {
	var ps []*proc
	for _, n := range c.nodes {
		if p := n.current(); p != nil && p.alive() {
			p.killed.Store(true)
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			ps = append(ps, p)
		}
	}
	c.e.event("kill -9 every node (%d processes)", len(ps))
	for _, p := range ps {
		select {
		case <-p.exited:
		case <-time.After(exitTimeout):
			c.e.t.Fatalf("faults: a process did not exit within %v of SIGKILL", exitTimeout)
		}
	}
}

// ---- network faults ----

func (c *cluster) proxy(from, to string) *Proxy {
	p := c.proxies[link{from, to}]
	if p == nil {
		c.e.t.Fatalf("faults: no proxy %s→%s", from, to)
	}
	return p
}

// cutOneWay blackholes what from sends to to: from's requests to to and
// from's answers to to's requests. What to sends reaches from.
func (c *cluster) cutOneWay(from, to string) {
	c.proxy(from, to).Set(Up, Shape{Blocked: true})
	c.proxy(to, from).Set(Down, Shape{Blocked: true})
}

// cut blackholes both ways between a and b.
func (c *cluster) cut(a, b string) {
	c.cutOneWay(a, b)
	c.cutOneWay(b, a)
}

// partition cuts every link between nodes of different groups; nodes in
// no group are cut from everyone.
func (c *cluster) partition(groups ...[]string) {
	c.healQuiet()
	group := map[string]int{}
	for i, g := range groups {
		for _, id := range g {
			group[id] = i + 1
		}
	}
	for l := range c.proxies {
		if gf, gt := group[l.from], group[l.to]; gf == 0 || gt == 0 || gf != gt {
			p := c.proxies[l]
			p.Set(Up, Shape{Blocked: true})
			p.Set(Down, Shape{Blocked: true})
		}
	}
	var desc []string
	for _, g := range groups {
		desc = append(desc, "{"+strings.Join(g, " ")+"}")
	}
	c.e.event("partition %s", strings.Join(desc, " | "))
}

// isolate cuts id from every other node.
func (c *cluster) isolate(id string) {
	for _, n := range c.nodes {
		if n.id != id {
			c.cut(id, n.id)
		}
	}
	c.e.event("isolate %s", id)
}

// connectOnly leaves, among nodes, exactly the given pairs connected.
func (c *cluster) connectOnly(desc string, nodes []string, pairs [][2]string) {
	c.healQuiet()
	ok := map[link]bool{}
	for _, p := range pairs {
		ok[link{p[0], p[1]}], ok[link{p[1], p[0]}] = true, true
	}
	for _, a := range nodes {
		for _, b := range nodes {
			if a != b && !ok[link{a, b}] {
				c.cutOneWay(a, b)
			}
		}
	}
	c.e.event("%s", desc)
}

// heal removes every network fault and logs it.
func (c *cluster) heal() {
	c.healQuiet()
	c.e.event("heal the network")
}

func (c *cluster) healQuiet() {
	for _, p := range c.proxies {
		p.Heal()
	}
}

// shapeAll applies s to both directions of every link.
func (c *cluster) shapeAll(s Shape) {
	for _, p := range c.proxies {
		p.Set(Up, s)
		p.Set(Down, s)
	}
}

// resetAll resets every open connection between nodes.
func (c *cluster) resetAll() int {
	n := 0
	for _, p := range c.proxies {
		n += p.Reset()
	}
	c.e.event("reset %d connections", n)
	return n
}

// ---- HTTP ----

func (n *node) url(path string, q url.Values) string {
	u := "http://" + n.httpAddr + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	return u
}

func kvPath(key string) string { return "/v1/kv/" + url.PathEscape(key) }

// do sends one request with hc and reads the whole answer.
func do(ctx context.Context, hc *http.Client, method, u string, body []byte) (int, []byte, http.Header, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return 0, nil, nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, resp.Header, err
}

func (n *node) status() (*status, error) {
	return n.statusWith(n.c.hc)
}

func (n *node) statusWith(hc *http.Client) (*status, error) {
	code, body, _, err := do(context.Background(), hc, "GET", n.url("/v1/status", nil), nil)
	if err != nil {
		return nil, err
	}
	if code != 200 {
		return nil, fmt.Errorf("%s: GET /v1/status: %d %s", n.id, code, trunc(body))
	}
	var s status
	if err := json.Unmarshal(body, &s); err != nil {
		return nil, fmt.Errorf("%s: GET /v1/status: %v", n.id, err)
	}
	return &s, nil
}

// mustStatus returns n's status, which must be up. A request that times
// out or fails is tried again for up to 10 s, since one status request on
// a loaded machine can take longer than statusTimeout.
func (n *node) mustStatus() *status {
	n.c.e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s, err := n.status()
		if err == nil {
			return s
		}
		if time.Now().After(deadline) {
			n.c.e.t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond) // retry interval
	}
}

// admin POSTs to an admin endpoint of n, following redirects to the
// leader, and returns the answer.
func (n *node) admin(path string, q url.Values, body any) (int, string, error) {
	var b []byte
	if body != nil {
		b, _ = json.Marshal(body)
	}
	u := n.url(path, q)
	ctx, cancel := context.WithTimeout(context.Background(), 70*time.Second)
	defer cancel()
	hc := &http.Client{Transport: n.c.hc.Transport, CheckRedirect: n.c.hc.CheckRedirect}
	for range 5 {
		code, out, hdr, err := do(ctx, hc, "POST", u, b)
		if err != nil {
			return 0, "", err
		}
		if code == http.StatusTemporaryRedirect {
			u = hdr.Get("Location")
			continue
		}
		return code, strings.TrimSpace(string(out)), nil
	}
	return 0, "", errors.New("too many redirects")
}

func trunc(b []byte) string {
	if len(b) > 300 {
		return string(b[:300]) + "..."
	}
	return string(b)
}

// ---- waits ----

// waitFor polls cond until it holds or timeout passes; cond says why not.
func (e *env) waitFor(timeout time.Duration, what string, cond func() (bool, string)) {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if !e.expectExits {
			for _, n := range e.c.nodes {
				if p := n.current(); p != nil && !p.alive() && !p.killed.Load() {
					e.t.Fatalf("faults: waiting for %s: %s exited by itself (%v):\n%s", what, n.id, p.waitErr, tail(p.log, 6<<10))
				}
			}
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("faults: timed out after %v waiting for %s: %s", timeout, what, why)
		}
		time.Sleep(pollInterval) // polling interval
	}
}

// waitLeader waits until one of nodes (the running members if none) leads
// and all of them name it with its HTTP address, and returns it.
func (c *cluster) waitLeader(nodes ...*node) *node {
	c.e.t.Helper()
	var leader *node
	c.e.waitFor(leaderTimeout, "a leader", func() (bool, string) {
		var why string
		leader, why = c.leaderNow(nodes...)
		return leader != nil, why
	})
	return leader
}

func (c *cluster) leaderNow(nodes ...*node) (*node, string) {
	if len(nodes) == 0 {
		nodes = c.reachable(false)
	}
	if len(nodes) == 0 {
		return nil, "no node runs"
	}
	var leader *node
	var views []string
	agree := true
	leaderID := ""
	for _, n := range nodes {
		s, err := n.status()
		if err != nil {
			return nil, err.Error()
		}
		views = append(views, fmt.Sprintf("%s: %s term %d leader %q", n.id, s.Role, s.Term, s.LeaderID))
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

// reachable returns the running members (or, if any, every node whose
// process runs) that are neither paused nor cut off on purpose.
func (c *cluster) reachable(any bool) []*node {
	from := c.members()
	if any {
		from = c.nodes
	}
	var out []*node
	for _, n := range from {
		if n.running() && !n.paused() && !slices.Contains(c.e.laggard, n) {
			out = append(out, n)
		}
	}
	return out
}

// followers returns the running, unpaused members other than leader.
func (c *cluster) followers(leader *node) []*node {
	var out []*node
	for _, n := range c.running() {
		if n != leader && !n.paused() {
			out = append(out, n)
		}
	}
	return out
}

// waitCaughtUp waits until every node given has applied the leader's
// commit index as it is now.
func (c *cluster) waitCaughtUp(timeout time.Duration, nodes ...*node) {
	c.e.t.Helper()
	leader := c.waitLeader()
	target := leader.mustStatus().CommitIndex
	c.e.waitFor(timeout, fmt.Sprintf("%v to apply index %d", ids(nodes), target), func() (bool, string) {
		for _, n := range nodes {
			s, err := n.status()
			if err != nil {
				return false, err.Error()
			}
			if s.AppliedIndex < target {
				return false, fmt.Sprintf("%s applied %d (snapshot %d, %s)", n.id, s.AppliedIndex, s.Snapshot.LastIncludedIndex, s.Snapshot.State)
			}
		}
		return true, ""
	})
}

// ---- disk ----

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

// logs returns the contents of every log n's runs wrote.
func (n *node) logs() string {
	files, _ := filepath.Glob(filepath.Join(n.c.dir, n.id+".*.log"))
	var b strings.Builder
	for _, f := range files {
		data, _ := os.ReadFile(f)
		b.Write(data)
	}
	return b.String()
}

// newestSnapshot returns the path of n's newest snapshot directory, or "".
func (n *node) newestSnapshot() string {
	dirs, _ := filepath.Glob(filepath.Join(n.dir, "snap", "snapshot_*"))
	slices.Sort(dirs)
	if len(dirs) == 0 {
		return ""
	}
	return dirs[len(dirs)-1]
}

// inprogressSegment returns the path of n's in-progress log segment.
func (n *node) inprogressSegment() string {
	segs, _ := filepath.Glob(filepath.Join(n.dir, "raft", "log", "log_inprogress_*"))
	slices.Sort(segs)
	if len(segs) == 0 {
		return ""
	}
	return segs[len(segs)-1]
}

// fillDisk writes a file into n's data dir until leave bytes are free and
// returns its path.
func (n *node) fillDisk(leave int64) string {
	t := n.c.e.t
	var st syscall.Statfs_t
	if err := syscall.Statfs(n.dir, &st); err != nil {
		t.Fatal(err)
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	path := filepath.Join(n.dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for left := free - leave; left > 0; {
		w, err := f.Write(buf[:min(int64(len(buf)), left)])
		left -= int64(w)
		if err != nil {
			break // full already
		}
	}
	n.c.e.event("fill %s's disk (%d KiB were free, %d KiB left)", n.id, free>>10, leave>>10)
	return path
}

func (n *node) diskFree() int64 {
	var st syscall.Statfs_t
	if err := syscall.Statfs(n.dir, &st); err != nil {
		return -1
	}
	return int64(st.Bavail) * int64(st.Bsize)
}

// answeredBy returns the node that gave op its answer (after redirects),
// or nil if none did.
func (c *cluster) answeredBy(op porcupine.Operation) *node {
	meta, _ := op.Metadata.(string)
	fields := strings.Fields(meta)
	if len(fields) != 2 || !strings.HasPrefix(fields[1], "2") && !strings.HasPrefix(fields[1], "4") {
		return nil
	}
	hops := strings.Split(fields[0], "→")
	last := hops[len(hops)-1]
	for _, n := range c.nodes {
		if n.id == last || n.httpAddr == last {
			return n
		}
	}
	return nil
}
