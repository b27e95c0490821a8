package kv

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	pebblevfs "github.com/cockroachdb/pebble/v2/vfs"

	"github.com/graft-raft/graft"
	"github.com/graft-raft/graft/snapshot"
	"github.com/graft-raft/graft/storage/metafile"
	"github.com/graft-raft/graft/storage/segment"
	"github.com/graft-raft/graft/throttle"
	"github.com/graft-raft/graft/transport"
	"github.com/graft-raft/graft/vfs"
)

// GroupID is the raft group every graftkv node belongs to.
const GroupID = "graftkv"

// Defaults of Config.
const (
	DefaultMaxKeySize     = 4 << 10
	DefaultMaxValueSize   = 1 << 20
	DefaultRequestTimeout = 10 * time.Second
)

// Config configures a Server: one graftkv node. Start from DefaultConfig.
// The process-wide parts (Transport, Router, FileService, Throttle,
// Resolver) are shared by every Server of a process and owned by the
// caller.
type Config struct {
	// ID is the node's peer id, stable for its lifetime.
	ID string
	// HTTPAddr is the host:port at which other nodes and clients reach
	// this node's HTTP API. It is recorded in the cluster so that
	// followers can redirect clients to the leader, so it must be an
	// address others can dial, not ":8001".
	HTTPAddr string
	// DataDir holds the node's state: raft/ (log, term and vote), snap/
	// (snapshots) and kv/ (the pebble database, rebuilt at every start).
	// One process at a time may use it (DataDir/LOCK).
	DataDir string
	// Peers is the configuration a new cluster starts with, this node
	// included. It is used only while DataDir holds no state; a node
	// joining an existing cluster leaves it empty.
	Peers []graft.Peer

	// ElectionTimeout is graft's base election timeout; heartbeats go
	// every tenth of it. Default 1s.
	ElectionTimeout time.Duration
	// SnapshotInterval takes a snapshot this often if anything was
	// applied since the last one. 0: off.
	SnapshotInterval time.Duration
	// SnapshotLogEntries takes a snapshot every this many applied
	// entries. It also bounds the log replayed at startup. 0: off.
	SnapshotLogEntries uint64
	// SnapshotTrailingEntries is how many entries before a snapshot stay
	// in the log for slightly lagging followers. 0: graft's default.
	SnapshotTrailingEntries uint64

	// MaxKeySize and MaxValueSize bound a key and a value, in bytes;
	// larger requests are refused before anything is written.
	MaxKeySize, MaxValueSize int
	// RequestTimeout bounds how long a request waits for its write to
	// commit or its read index. Default 10s.
	RequestTimeout time.Duration

	// Transport, Router, FileService and Throttle are the process's graft
	// plumbing (see graft.Options). FileService and Throttle may be nil:
	// then this node cannot send snapshots, or sends them unthrottled.
	Transport   transport.Transport
	Router      *transport.Router
	FileService *snapshot.FileService
	Throttle    *throttle.Throttle
	// Resolver, if set, is kept told of the configuration in force, for
	// the transport's address rewriting (--resolve).
	Resolver *Resolver

	// APIToken, if set, is required on the keys, /v1/status, /metrics and
	// the status page, as "Authorization: Bearer <token>": 401 without
	// it, 403 with a wrong one. Empty: they are open.
	APIToken string
	// AdminToken, if set, is required on /v1/admin/* (and accepted
	// everywhere APIToken is). Empty: the admin calls take APIToken if
	// that is set, else they are open. Tokens are printable ASCII
	// without spaces; send them only over HTTPS (HTTPClientTLS), and
	// give every node the same ones: nodes use them with each other.
	AdminToken string
	// HTTPClientTLS, if set, says that every node serves its HTTP API
	// over HTTPS (the caller serves Handler on a TLS listener):
	// redirects then name https:// URLs, and this node's own requests to
	// other nodes (recording its HTTP address with the leader, the status
	// page) use this configuration, which should trust the CA of the
	// nodes' certificates and present this node's certificate. A
	// request to /v1/internal/* whose client certificate the HTTPS server
	// verified (tls.VerifyClientCertIfGiven with that CA as ClientCAs)
	// needs no token.
	HTTPClientTLS *tls.Config
	// Logger receives the node's logs. nil discards them.
	Logger *slog.Logger
}

// DefaultConfig returns a Config with every tunable at its default.
func DefaultConfig() Config {
	return Config{
		ElectionTimeout:    time.Second,
		SnapshotInterval:   30 * time.Minute,
		SnapshotLogEntries: 100_000,
		MaxKeySize:         DefaultMaxKeySize,
		MaxValueSize:       DefaultMaxValueSize,
		RequestTimeout:     DefaultRequestTimeout,
	}
}

// Validate checks c and returns an error wrapping ErrInvalidConfig that
// names the first bad field and value.
func (c *Config) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...))
	}
	if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		return bad("HTTPAddr %q is not host:port", c.HTTPAddr)
	}
	switch {
	case c.ID == "":
		return bad("ID is empty")
	case c.DataDir == "":
		return bad("DataDir is empty")
	case c.ElectionTimeout < 10*time.Millisecond:
		return bad("ElectionTimeout %v is below 10ms", c.ElectionTimeout)
	case c.SnapshotInterval < 0:
		return bad("SnapshotInterval %v is negative", c.SnapshotInterval)
	case c.MaxKeySize < 1:
		return bad("MaxKeySize %d must be at least 1", c.MaxKeySize)
	case c.MaxValueSize < 0:
		return bad("MaxValueSize %d is negative", c.MaxValueSize)
	case c.RequestTimeout <= 0:
		return bad("RequestTimeout %v must be positive", c.RequestTimeout)
	case c.Transport == nil:
		return bad("Transport is nil")
	case c.Router == nil:
		return bad("Router is nil")
	case c.APIToken != "" && c.APIToken == c.AdminToken:
		return bad("APIToken and AdminToken are the same: API users would be administrators")
	}
	for _, t := range []struct{ name, token string }{{"APIToken", c.APIToken}, {"AdminToken", c.AdminToken}} {
		if err := checkToken(t.name, t.token); err != nil {
			return bad("%v", err)
		}
	}
	if len(c.Peers) > 0 {
		conf := graft.Configuration{Peers: c.Peers}
		if err := conf.Validate(); err != nil {
			return bad("Peers: %v", err)
		}
		if !conf.Contains(c.ID) {
			return bad("Peers %v do not include this node's ID %q", c.Peers, c.ID)
		}
	}
	return nil
}

// Server is one graftkv node: the pebble state machine, the graft node
// replicating it and the HTTP API (Handler). Create it with NewServer;
// serve Handler on Config.HTTPAddr; Close it after the HTTP server has
// shut down. Its methods are safe for concurrent use.
type Server struct {
	cfg     Config
	log     *slog.Logger
	fsm     *FSM
	node    *graft.Node
	metrics *metrics
	client  *http.Client // to the leader (announcing) and peers (status page)
	scheme  string       // of the nodes' HTTP APIs: "http" or "https"
	guard   guard        // the tokens each endpoint accepts
	handler http.Handler
	lock    io.Closer // on DataDir/LOCK

	running  atomic.Bool    // set once NewNode returned: loads after that are installs
	installs chan time.Time // when installs finished loading, for the watcher
	failed   chan error     // the fatal error that stopped the node, once
	stop     chan struct{}
	wg       sync.WaitGroup // the background loops
	closed   sync.Once
	closeErr error
}

// NewServer opens the node's storage in cfg.DataDir and starts it.
func NewServer(cfg Config) (_ *Server, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cfg.Peers = append([]graft.Peer(nil), cfg.Peers...)
	s := &Server{
		cfg:      cfg,
		log:      cfg.Logger,
		client:   &http.Client{Timeout: 2 * time.Second},
		scheme:   "http",
		guard:    newGuard(cfg.APIToken, cfg.AdminToken),
		installs: make(chan time.Time, 4),
		failed:   make(chan error, 1),
		stop:     make(chan struct{}),
	}
	if cfg.HTTPClientTLS != nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = cfg.HTTPClientTLS.Clone()
		s.client.Transport = tr
		s.scheme = "https"
	}
	s.metrics = newMetrics(func() graft.Status { return s.node.Status() })
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("kv: create data dir: %w", err)
	}
	// One process per data dir: a second one would wipe the first's
	// database (OpenFSM) and interleave writes to its log.
	s.lock, err = pebblevfs.Default.Lock(filepath.Join(cfg.DataDir, "LOCK"))
	if err != nil {
		return nil, fmt.Errorf("kv: data dir %s is in use by another process: %w", cfg.DataDir, err)
	}
	defer func() {
		if err != nil {
			s.lock.Close()
		}
	}()
	s.fsm, err = OpenFSM(filepath.Join(cfg.DataDir, "kv"), FSMOptions{
		Logger: cfg.Logger,
		OnSave: s.metrics.saved,
		OnLoad: s.onLoad,
		OnError: func(err error) {
			select {
			case s.failed <- err:
			default:
			}
		},
	})
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			s.fsm.Close()
		}
	}()
	opts, err := s.graftOptions()
	if err != nil {
		return nil, err
	}
	s.node, err = graft.NewNode(opts)
	if err != nil {
		return nil, err
	}
	s.running.Store(true)
	s.handler = s.routes()
	if cfg.Resolver != nil {
		cfg.Resolver.SetPeers(s.node.Status().Configuration.Members())
	}
	s.wg.Add(2)
	go s.watch()
	go s.announce()
	return s, nil
}

// graftOptions opens the raft storage and fills in the node's options.
// The node owns the storage from NewNode on.
func (s *Server) graftOptions() (graft.Options, error) {
	cfg := s.cfg
	raftDir := filepath.Join(cfg.DataDir, "raft")
	logs, err := segment.Open(timedFS{vfs.Default, s.metrics.logFsync}, filepath.Join(raftDir, "log"), segment.Options{Logger: cfg.Logger})
	if err != nil {
		return graft.Options{}, err
	}
	meta, err := metafile.Open(vfs.Default, raftDir)
	if err != nil {
		logs.Close()
		return graft.Options{}, err
	}
	snaps, err := snapshot.Open(filepath.Join(cfg.DataDir, "snap"), snapshot.Options{Logger: cfg.Logger})
	if err != nil {
		logs.Close()
		meta.Close()
		return graft.Options{}, err
	}
	opts := graft.DefaultOptions()
	opts.GroupID = GroupID
	opts.ID = cfg.ID
	snapIndex, _ := snaps.LastIndex()
	switch {
	case logs.LastIndex() == 0 && snapIndex == 0:
		opts.InitialPeers = cfg.Peers
	case len(cfg.Peers) > 0:
		s.log.Info("the data dir holds state; ignoring --peers", "dir", cfg.DataDir,
			"last_log_index", logs.LastIndex(), "snapshot_index", snapIndex)
	}
	opts.ElectionTimeout = cfg.ElectionTimeout
	opts.HeartbeatInterval = cfg.ElectionTimeout / 10
	// A put-if-prev carries the previous value and the new one.
	opts.MaxEntrySize = max(opts.MaxEntrySize, cfg.MaxKeySize+2*cfg.MaxValueSize+64)
	opts.Snapshots = snaps
	opts.FileService = cfg.FileService
	opts.Throttle = cfg.Throttle
	opts.SnapshotInterval = cfg.SnapshotInterval
	opts.SnapshotLogEntries = cfg.SnapshotLogEntries
	if cfg.SnapshotTrailingEntries > 0 {
		opts.SnapshotTrailingEntries = cfg.SnapshotTrailingEntries
	}
	opts.LogStorage = timedLog{logs, s.metrics.logAppend}
	opts.MetaStorage = meta
	opts.Transport = cfg.Transport
	opts.Router = cfg.Router
	opts.StateMachine = s.fsm
	opts.Logger = cfg.Logger
	return opts, nil
}

// Node returns the graft node, for inspection and administration.
func (s *Server) Node() *graft.Node { return s.node }

// FSM returns the state machine, for reads.
func (s *Server) FSM() *FSM { return s.fsm }

// Failed delivers the error that stopped the node, if a fatal one does
// (a failing disk, a command this version cannot apply). The node serves
// no more writes then; a process should shut down and report it.
func (s *Server) Failed() <-chan error { return s.failed }

// Handler returns the HTTP API.
func (s *Server) Handler() http.Handler { return s.handler }

// Close stops the node: it finishes applying what is committed, fails
// pending requests and closes pebble. Shut the HTTP server down first so
// that requests in flight complete; a leader may hand leadership over
// first (Node().TransferLeadership) to spare the cluster an election
// timeout.
func (s *Server) Close() error {
	s.closed.Do(func() {
		close(s.stop)
		s.wg.Wait()
		s.closeErr = errors.Join(s.node.Shutdown(), s.fsm.Close(), s.lock.Close())
		s.client.CloseIdleConnections()
	})
	return s.closeErr
}

// onLoad runs on the apply goroutine after each snapshot load.
func (s *Server) onLoad(info LoadInfo) {
	s.metrics.loaded(info)
	if !s.running.Load() {
		return // the startup load, not an install
	}
	select {
	case s.installs <- time.Now():
	default: // the watcher is behind; lose one duration sample
	}
}

// watch keeps the resolver told of the configuration and records
// installs' metrics, until Close.
func (s *Server) watch() {
	defer s.wg.Done()
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			if s.cfg.Resolver != nil {
				s.cfg.Resolver.SetPeers(s.node.Status().Configuration.Members())
			}
		case end := <-s.installs:
			s.metrics.installed(end, s.node.Status().Snapshot.Progress)
		}
	}
}

// announce records this node's HTTP address in the cluster (OpSetMember)
// until the record is applied here, and again whenever it differs — after
// a restart with a new address, or a snapshot from before the node
// joined. The leader records its own directly; a follower asks the
// leader through POST /v1/internal/members, which needs the leader's
// record: the leader announces first, so that is there soon after each
// election.
func (s *Server) announce() {
	defer s.wg.Done()
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	var next time.Time // no attempt before, after a failure
	published := false
	for {
		select {
		case <-s.stop:
			return
		case now := <-t.C:
			if a, ok := s.fsm.Member(s.cfg.ID); ok && a == s.cfg.HTTPAddr {
				if !published {
					s.log.Info("HTTP address recorded in the cluster", "http", a)
					published = true
				}
				continue
			}
			published = false
			if now.Before(next) {
				continue
			}
			switch err := s.announceOnce(); {
			case errors.Is(err, errNoLeaderHTTP):
				// Wait for an election or the leader's own record.
			case err != nil:
				s.log.Debug("recording the HTTP address failed; retrying", "err", err)
				next = now.Add(500 * time.Millisecond)
			}
		}
	}
}

var errNoLeaderHTTP = errors.New("kv: no leader with a known HTTP address")

func (s *Server) announceOnce() error {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.RequestTimeout)
	defer cancel()
	go func() {
		select {
		case <-s.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	if s.node.IsLeader() {
		c := Command{Op: OpSetMember, Key: []byte(s.cfg.ID), Value: []byte(s.cfg.HTTPAddr)}
		_, err := s.node.Apply(ctx, c.Encode(nil))
		return err
	}
	id, addr := s.leader()
	if id == "" || addr == "" {
		return errNoLeaderHTTP
	}
	body, _ := json.Marshal(memberRequest{ID: s.cfg.ID, HTTP: s.cfg.HTTPAddr})
	req, err := s.newPeerRequest(ctx, http.MethodPost, addr, "/v1/internal/members", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e errorResponse
		_ = json.NewDecoder(resp.Body).Decode(&e)
		return fmt.Errorf("kv: leader %s answered %s: %s", id, resp.Status, e.Error)
	}
	return nil
}

// newPeerRequest returns a request to another node's HTTP API, with the
// scheme and token it needs.
func (s *Server) newPeerRequest(ctx context.Context, method, addr, path string, body io.Reader) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, s.scheme+"://"+addr+path, body)
	if err != nil {
		return nil, err
	}
	if token := s.cfg.outgoingToken(accessOf(path)); token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return req, nil
}

// leader returns the leader's id ("" if none is known) and its HTTP
// address ("" if not recorded yet).
func (s *Server) leader() (id, httpAddr string) {
	p, ok := s.node.Leader()
	if !ok {
		return "", ""
	}
	a, _ := s.fsm.Member(p.ID)
	return p.ID, a
}
