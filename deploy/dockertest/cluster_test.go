package dockertest

// The harness: a cluster of graftkv containers, the client that reaches
// them through their published ports, Docker's faults, and waits on
// conditions with deadlines.

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
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	raftPort = "7000"
	httpPort = "8000"

	startTimeout  = 30 * time.Second // a container serves its HTTP API
	leaderTimeout = 30 * time.Second // the nodes agree on a leader
	catchUpTime   = 60 * time.Second // a node applies what the leader has committed
	reqTimeout    = 5 * time.Second  // one HTTP request
	pollInterval  = 50 * time.Millisecond

	// electionTimeout is graftkv's default; heartbeats go every 100 ms.
	electionTimeout = "1s"
)

// status is GET /v1/status (the fields the tests use).
type status struct {
	ID           string `json:"id"`
	Role         string `json:"role"`
	Term         uint64 `json:"term"`
	LeaderID     string `json:"leader_id"`
	LeaderHTTP   string `json:"leader_http"`
	CommitIndex  uint64 `json:"commit_index"`
	AppliedIndex uint64 `json:"applied_index"`
	FirstLog     uint64 `json:"first_log_index"`
	LastLog      uint64 `json:"last_log_index"`
	Snapshot     struct {
		LastIncludedIndex uint64 `json:"last_included_index"`
		State             string `json:"state"`
	} `json:"snapshot"`
	Peers []struct {
		ID   string `json:"id"`
		Addr string `json:"addr"`
	} `json:"peers"`
}

func (s *status) isLeader() bool { return strings.EqualFold(s.Role, "leader") }

func (s *status) peerIDs() []string {
	var ids []string
	for _, p := range s.Peers {
		ids = append(ids, p.ID)
	}
	slices.Sort(ids)
	return ids
}

// cluster is the nodes of one test, their networks and volumes.
type cluster struct {
	t       *testing.T
	prefix  string // of every Docker object's name: <run>-<seq>
	raftNet string // internal: peers reach each other here, by name
	flags   []string
	logDir  string // logs of containers already removed, and of the end

	tr     *http.Transport
	hc     *http.Client // does not follow redirects
	follow *http.Client // follows redirects, like curl -L

	mu struct {
		sync.Mutex
		created []string // "kind name", in creation order
	}
	nodes []*node
}

// node is one member: its peer id (also its host name and raft alias) and
// the container that runs it now. The test goroutine changes it; clients
// read published through the dialer, so mu guards what changes.
type node struct {
	c         *cluster
	id        string
	clientNet string // this node's alone: carries its published HTTP port
	volume    string // its data; set by the test goroutine only

	mu struct {
		sync.Mutex
		container string // "" before the first create
		gen       int    // containers created
		volumes   int    // volumes created
		published string // 127.0.0.1:PORT of the HTTP API; "" when not running
		state     string // running, killed, stopped, paused, isolated, removed
	}
}

// clusterOptions configures newCluster.
type clusterOptions struct {
	nodes int      // 3 if zero
	flags []string // extra flags for every node's serve command
}

var testSeq struct {
	sync.Mutex
	n int
}

// newCluster creates the networks and volumes of a cluster of o.nodes
// nodes n1, n2, ...; nothing runs yet. Everything is removed when the
// test ends; a failed test (or -docker.logs) logs every container's output.
func newCluster(t *testing.T, o clusterOptions) *cluster {
	t.Helper()
	requireDocker(t)
	if o.nodes == 0 {
		o.nodes = 3
	}
	testSeq.Lock()
	testSeq.n++
	seq := testSeq.n
	testSeq.Unlock()
	c := &cluster{t: t, prefix: fmt.Sprintf("%s-%d", runID, seq), logDir: t.TempDir()}
	c.flags = append([]string{"--election-timeout", electionTimeout}, o.flags...)
	c.initHTTP()
	t.Cleanup(c.cleanup)
	t.Logf("dockertest: cluster %s (image %s)", c.prefix, image)

	c.raftNet = c.prefix + "-raft"
	c.create("network", c.raftNet, "network", "create", "--internal")
	for i := range o.nodes {
		c.addNode(fmt.Sprintf("n%d", i+1))
	}
	return c
}

// initHTTP sets up the clients, which dial nX:8000 through nX's
// published port.
func (c *cluster) initHTTP() {
	c.tr = &http.Transport{
		DialContext:         c.dial,
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     30 * time.Second,
	}
	c.hc = &http.Client{Transport: c.tr, Timeout: reqTimeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	c.follow = &http.Client{Transport: c.tr, Timeout: reqTimeout}
}

// create runs docker args... name with this run's labels and records the
// object for cleanup.
func (c *cluster) create(kind, name string, args ...string) {
	c.t.Helper()
	args = append(append(args, labelArgs()...), name)
	c.mustDocker(args...)
	c.mu.Lock()
	c.mu.created = append(c.mu.created, kind+" "+name)
	c.mu.Unlock()
}

// addNode adds a node with its client network and a new volume; no
// container yet.
func (c *cluster) addNode(id string) *node {
	n := &node{c: c, id: id, clientNet: c.prefix + "-" + id + "-clients"}
	c.create("network", n.clientNet, "network", "create")
	n.newVolume()
	c.nodes = append(c.nodes, n)
	return n
}

// newVolume gives n a new, empty volume.
func (n *node) newVolume() {
	n.mu.Lock()
	n.mu.volumes++
	n.volume = fmt.Sprintf("%s-%s-data%d", n.c.prefix, n.id, n.mu.volumes)
	n.mu.Unlock()
	n.c.create("volume", n.volume, "volume", "create")
}

// cleanup saves and checks every container's log, then removes the
// containers, volumes and networks the test created.
func (c *cluster) cleanup() {
	c.tr.CloseIdleConnections()
	c.mu.Lock()
	created := slices.Clone(c.mu.created)
	c.mu.Unlock()
	for _, n := range c.nodes {
		if ctr := n.container(); ctr != "" {
			n.saveLog(ctr)
		}
	}
	c.checkLogs()
	if c.t.Failed() || *flagLogs {
		c.dumpLogs()
	}
	// Containers first: a volume or network in use cannot be removed.
	byKind := map[string][]string{}
	for _, o := range created {
		kind, name, _ := strings.Cut(o, " ")
		byKind[kind] = append(byKind[kind], name)
	}
	var errs []string
	for _, k := range []struct{ kind, cmd string }{
		{"container", "rm --force --volumes"}, {"volume", "volume rm --force"}, {"network", "network rm"},
	} {
		if len(byKind[k.kind]) == 0 {
			continue
		}
		_, err := docker(append(strings.Fields(k.cmd), byKind[k.kind]...)...)
		if err == nil {
			continue
		}
		for _, l := range strings.Split(err.Error(), "\n") {
			if !strings.Contains(l, "No such") && strings.TrimSpace(l) != "" {
				errs = append(errs, l)
			}
		}
	}
	if len(errs) > 0 {
		c.t.Errorf("dockertest: cleanup: %s", strings.Join(errs, "; "))
	}
}

func (c *cluster) mustDocker(args ...string) string {
	c.t.Helper()
	out, err := docker(args...)
	if err != nil {
		c.t.Fatalf("dockertest: %v", err)
	}
	return out
}

// node returns the node with id, or nil.
func (c *cluster) node(id string) *node {
	for _, n := range c.nodes {
		if n.id == id {
			return n
		}
	}
	return nil
}

// peersFlag is the --peers value naming nodes (all if none).
func (c *cluster) peersFlag(nodes ...*node) string {
	if len(nodes) == 0 {
		nodes = c.nodes
	}
	var parts []string
	for _, n := range nodes {
		parts = append(parts, n.id+"="+n.raftAddr())
	}
	return strings.Join(parts, ",")
}

// raftAddr is n's raft address, by name.
func (n *node) raftAddr() string { return n.id + ":" + raftPort }

func (n *node) container() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.mu.container
}

func (n *node) state() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.mu.state
}

func (n *node) setState(s string) {
	n.mu.Lock()
	n.mu.state = s
	if s != "running" && s != "isolated" && s != "paused" {
		n.mu.published = ""
	}
	n.mu.Unlock()
}

// up reports whether n runs and is connected: it should take part.
func (n *node) up() bool { return n.state() == "running" }

// published is the host address of n's HTTP port, "" if it is not running.
func (n *node) published() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.mu.published
}

// start creates and starts n's container from image (the cluster's first
// image if ""), bootstrapping with --peers if peers is not "", and waits
// until it serves its HTTP API. The container is on its own client
// network, with its HTTP port published on 127.0.0.1, and on the raft
// network as n.id. Its host name is n.id too, so a node that joins without
// --peers advertises n.id:8000. (Docker's DNS answers a container's host
// name on each of its networks: had the nodes a client network in common,
// n1 might resolve to an address there and raft traffic would bypass the
// raft network, partitions and all.)
func (n *node) start(img, peers string) {
	c := n.c
	c.t.Helper()
	if img == "" {
		img = image
	}
	n.mu.Lock()
	n.mu.gen++
	name := fmt.Sprintf("%s-%s-%d", c.prefix, n.id, n.mu.gen)
	n.mu.container = name
	vol := n.volume
	n.mu.Unlock()
	args := []string{"create", "--pull", "never", "--hostname", n.id,
		"--network", n.clientNet, "--publish", "127.0.0.1::" + httpPort,
		"--volume", vol + ":/data", "--stop-timeout", "30", "--name", name}
	args = append(args, labelArgs()...)
	args = append(args, img, "serve", "--id", n.id, "--raft-addr", ":"+raftPort, "--http-addr", ":"+httpPort, "--data-dir", "/data")
	if peers != "" {
		args = append(args, "--peers", peers)
	}
	args = append(args, c.flags...)
	c.mustDocker(args...)
	c.mu.Lock()
	c.mu.created = append(c.mu.created, "container "+name)
	c.mu.Unlock()
	c.mustDocker("network", "connect", "--alias", n.id, c.raftNet, name)
	n.restart()
	c.t.Logf("dockertest: %s runs as container %s (%s)", n.id, name, img)
}

// restart starts n's stopped container and waits until it serves.
func (n *node) restart() {
	c := n.c
	c.t.Helper()
	ctr := n.container()
	c.mustDocker("start", ctr)
	out := c.mustDocker("port", ctr, httpPort+"/tcp")
	addr := lines(out)[0]
	n.mu.Lock()
	n.mu.published, n.mu.state = addr, "running"
	n.mu.Unlock()
	n.waitServing()
}

// waitServing waits until n's GET /v1/status answers.
func (n *node) waitServing() {
	n.c.t.Helper()
	waitFor(n.c.t, startTimeout, n.id+" to serve its HTTP API", func() (bool, string) {
		if _, err := n.status(); err != nil {
			if st, _ := docker("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", n.container()); !strings.HasPrefix(st, "running") {
				n.c.t.Fatalf("dockertest: %s's container is %s:\n%s", n.id, st, n.logTail())
			}
			return false, err.Error()
		}
		return true, ""
	})
}

// startAll starts every node with --peers naming them all.
func (c *cluster) startAll() {
	c.t.Helper()
	for _, n := range c.nodes {
		n.start("", c.peersFlag())
	}
}

// kill sends SIGKILL (docker kill) and waits until the container stopped.
func (n *node) kill() {
	n.c.t.Helper()
	n.setState("killed")
	n.c.mustDocker("kill", "--signal", "KILL", n.container())
	n.c.mustDocker("wait", n.container())
	n.c.tr.CloseIdleConnections()
	n.c.t.Logf("dockertest: docker kill %s (SIGKILL)", n.id)
}

// stop stops n gracefully (docker stop: SIGTERM) and checks that it exited
// with status 0.
func (n *node) stop() {
	c := n.c
	c.t.Helper()
	start := time.Now()
	n.setState("stopped")
	c.mustDocker("stop", "--time", "30", n.container())
	c.tr.CloseIdleConnections()
	if code := c.mustDocker("inspect", "--format", "{{.State.ExitCode}}", n.container()); code != "0" {
		c.t.Errorf("dockertest: %s exited with status %s after docker stop, want a graceful exit (0):\n%s", n.id, code, n.logTail())
	}
	c.t.Logf("dockertest: docker stop %s took %v", n.id, time.Since(start).Round(time.Millisecond))
}

// pause freezes n's container (docker pause: the cgroup freezer).
func (n *node) pause() {
	n.c.t.Helper()
	n.c.mustDocker("pause", n.container())
	n.setState("paused")
	n.c.t.Logf("dockertest: docker pause %s", n.id)
}

func (n *node) unpause() {
	n.c.t.Helper()
	n.c.mustDocker("unpause", n.container())
	n.setState("running")
	n.c.t.Logf("dockertest: docker unpause %s", n.id)
}

// isolate disconnects n from the raft network: its peers cannot reach it
// nor it them, while clients still can.
func (n *node) isolate() {
	n.c.t.Helper()
	n.c.mustDocker("network", "disconnect", n.c.raftNet, n.container())
	n.setState("isolated")
	n.c.t.Logf("dockertest: docker network disconnect %s from its peers", n.id)
}

func (n *node) reconnect() {
	n.c.t.Helper()
	n.c.mustDocker("network", "connect", "--alias", n.id, n.c.raftNet, n.container())
	n.setState("running")
	n.c.t.Logf("dockertest: docker network connect %s to its peers", n.id)
}

// remove saves the log of n's container and removes it (docker rm -f).
func (n *node) remove() {
	n.c.t.Helper()
	ctr := n.container()
	n.saveLog(ctr)
	n.setState("removed")
	n.c.mustDocker("rm", "--force", "--volumes", ctr)
	n.c.tr.CloseIdleConnections()
}

// wipe replaces n's volume with a new, empty one.
func (n *node) wipe() {
	n.c.t.Helper()
	n.mu.Lock()
	old := n.volume
	n.mu.Unlock()
	n.c.mustDocker("volume", "rm", old)
	n.newVolume()
}

// graftctl runs graftctl inside n's container (GRAFTCTL_ADDR is its own
// HTTP API; redirects go to the leader by name on the raft network).
func (n *node) graftctl(args ...string) (string, error) {
	return docker(append([]string{"exec", n.container(), "graftctl"}, args...)...)
}

// imageID is the image n's container runs.
func (n *node) imageID() string {
	n.c.t.Helper()
	return n.c.mustDocker("inspect", "--format", "{{.Image}}", n.container())
}

// ---- logs ----

var logNameRE = regexp.MustCompile(`[^a-zA-Z0-9_.-]`)

// saveLog writes container ctr's output under the test's log directory.
func (n *node) saveLog(ctr string) {
	out, err := dockerLogs(ctr)
	if err != nil {
		out = []byte(err.Error())
	}
	_ = os.WriteFile(filepath.Join(n.c.logDir, logNameRE.ReplaceAllString(ctr, "_")+".log"), out, 0o644)
}

func dockerLogs(ctr string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), dockerTimeout)
	defer cancel()
	return execOutput(ctx, "docker", "logs", ctr)
}

// logTail is the end of n's current container's log.
func (n *node) logTail() string {
	out, err := dockerLogs(n.container())
	if err != nil {
		return err.Error()
	}
	if len(out) > 4<<10 {
		out = append([]byte("[...]\n"), out[len(out)-4<<10:]...)
	}
	return string(out)
}

// checkLogs fails the test if a node panicked or hit a fatal error.
func (c *cluster) checkLogs() {
	files, _ := filepath.Glob(filepath.Join(c.logDir, "*.log"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		for _, bad := range []string{"\npanic: ", "\nfatal error: ", "DATA RACE"} {
			if i := bytes.Index(b, []byte(bad)); i >= 0 {
				c.t.Errorf("dockertest: %s reports %q:\n%s", filepath.Base(f), strings.TrimSpace(bad), b[i:min(len(b), i+8<<10)])
			}
		}
	}
}

func (c *cluster) dumpLogs() {
	files, _ := filepath.Glob(filepath.Join(c.logDir, "*.log"))
	slices.Sort(files)
	for _, f := range files {
		b, _ := os.ReadFile(f)
		if len(b) > 16<<10 {
			b = append([]byte("[...]\n"), b[len(b)-16<<10:]...)
		}
		c.t.Logf("dockertest: ---- %s ----\n%s", filepath.Base(f), b)
	}
}

// ---- HTTP ----

// errNodeDown is the dial error for a node that does not run: the request
// was not sent.
var errNodeDown = errors.New("dockertest: node not running")

// dial connects to nX:8000 through nX's published port, so that URLs and
// the cluster's redirects name nodes as they know each other.
func (c *cluster) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	n := c.node(host)
	if n == nil || port != httpPort {
		return nil, fmt.Errorf("dockertest: %s is not a node's HTTP address", addr)
	}
	pub := n.published()
	if pub == "" {
		return nil, fmt.Errorf("%s: %w", n.id, errNodeDown)
	}
	var d net.Dialer
	return d.DialContext(ctx, network, pub)
}

// url is n's URL of path (escaped) and query.
func (n *node) url(path string, q url.Values) string {
	u := "http://" + n.id + ":" + httpPort + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	return u
}

// kvPath is the escaped path of key.
func kvPath(key string) string { return "/v1/kv/" + url.PathEscape(key) }

// do sends one request and reads the whole answer.
func do(hc *http.Client, method, u string, body []byte) (int, []byte, error) {
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
	return resp.StatusCode, b, err
}

// status fetches n's GET /v1/status.
func (n *node) status() (*status, error) {
	code, body, err := do(n.c.hc, "GET", n.url("/v1/status", nil), nil)
	if err != nil {
		return nil, err
	}
	if code != 200 {
		return nil, fmt.Errorf("%s: GET /v1/status: %d %s", n.id, code, trunc(body))
	}
	var s status
	if err := json.Unmarshal(body, &s); err != nil {
		return nil, fmt.Errorf("%s: GET /v1/status: %v in %s", n.id, err, trunc(body))
	}
	return &s, nil
}

func (n *node) mustStatus() *status {
	n.c.t.Helper()
	s, err := n.status()
	if err != nil {
		n.c.t.Fatal(err)
	}
	return s
}

// staleGet reads key from n's local state: the value and whether it exists.
func (n *node) staleGet(key string) (string, bool, error) {
	code, body, err := do(n.c.hc, "GET", n.url(kvPath(key), url.Values{"consistency": {"stale"}}), nil)
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

func trunc(b []byte) string {
	if len(b) > 300 {
		return string(b[:300]) + "..."
	}
	return string(b)
}

// ---- waits ----

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
			t.Fatalf("dockertest: timed out after %v waiting for %s: %s", timeout, what, why)
		}
		time.Sleep(pollInterval) // polling interval
	}
}

// upNodes is the nodes that run connected to their peers.
func (c *cluster) upNodes() []*node {
	var up []*node
	for _, n := range c.nodes {
		if n.up() {
			up = append(up, n)
		}
	}
	return up
}

// waitLeader waits until one of nodes (the up ones if none) is leader and
// all of them name it and know its HTTP address, and returns it.
func (c *cluster) waitLeader(nodes ...*node) *node {
	c.t.Helper()
	if len(nodes) == 0 {
		nodes = c.upNodes()
	}
	var leader *node
	waitFor(c.t, leaderTimeout, "a leader", func() (bool, string) {
		var why string
		leader, why = c.leaderNow(nodes)
		return leader != nil, why
	})
	return leader
}

func (c *cluster) leaderNow(nodes []*node) (*node, string) {
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

// waitCaughtUp waits until every node given (the up ones if none) has
// applied what the leader had committed when the wait began.
func (c *cluster) waitCaughtUp(nodes ...*node) {
	c.t.Helper()
	if len(nodes) == 0 {
		nodes = c.upNodes()
	}
	l := c.waitLeader()
	commit := l.mustStatus().CommitIndex
	waitFor(c.t, catchUpTime, fmt.Sprintf("%d nodes to apply index %d", len(nodes), commit), func() (bool, string) {
		for _, n := range nodes {
			s, err := n.status()
			if err != nil {
				return false, err.Error()
			}
			if s.AppliedIndex < commit {
				return false, fmt.Sprintf("%s applied %d", n.id, s.AppliedIndex)
			}
		}
		return true, ""
	})
}

// followers returns the up nodes other than leader.
func (c *cluster) followers(leader *node) []*node {
	var fs []*node
	for _, n := range c.upNodes() {
		if n != leader {
			fs = append(fs, n)
		}
	}
	return fs
}
