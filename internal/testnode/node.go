// Package testnode runs graft nodes as real operating-system processes, for
// tests that kill them with SIGKILL and restart them on their data
// directories.
//
// The child side (Main, Start) is one graft node over transport/grpc with
// durable storage (storage/segment and storage/metafile on
// vfs.Default), a snapshot store (package snapshot) in its data
// directory, the process's snapshot FileService registered with its gRPC
// server, an optional throttle.Throttle shared by both, and a Recorder
// state machine (optionally in blob mode, see RecorderOptions), behind a
// small HTTP control API:
//
//	POST /apply    body is the command; 200 {"index","term"} once Apply
//	               returns, 421 {"leader_id"} when not the leader, 503 when
//	               shut down or leadership was lost, 504 on timeout
//	POST /snapshot 200 {"index"} once Node.Snapshot returns; 409 when busy
//	GET  /status   {"id","role","term","leader_id","commit","applied",
//	               "first_index","snapshot":{"state","index","term",
//	               "progress":{...}},"loads","rss","peak_rss",...}
//	GET  /applied  the record: every command covered by the last snapshot
//	               loaded and applied since, in order, as
//	               [{"index","term","cmd"}]
//	GET  /digest   the last index applied and each blob file's size and
//	               SHA-256, read from disk
//	GET  /snapshot/check
//	               the newest local snapshot, every file hashed against its
//	               meta table and read as LoadSnapshot would
//
// The parent side (Cluster, Load) starts children from the test binary
// itself: a test package's TestMain calls Main when IsChild reports that
// the process was started as a node:
//
//	func TestMain(m *testing.M) {
//		if testnode.IsChild() {
//			os.Exit(testnode.Main())
//		}
//		os.Exit(m.Run())
//	}
//
// A child exits when its standard input closes, so children never outlive
// the test process, however it ends.
package testnode

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/graft-raft/graft"
	"github.com/graft-raft/graft/snapshot"
	"github.com/graft-raft/graft/storage/metafile"
	"github.com/graft-raft/graft/storage/segment"
	"github.com/graft-raft/graft/throttle"
	"github.com/graft-raft/graft/transport"
	grpctransport "github.com/graft-raft/graft/transport/grpc"
	"github.com/graft-raft/graft/vfs"
)

// Environment variables that carry a child's Config.
const (
	envChild     = "GRAFT_TEST_NODE"
	envID        = "GRAFT_TEST_NODE_ID"
	envGroup     = "GRAFT_TEST_NODE_GROUP"
	envRaftAddr  = "GRAFT_TEST_NODE_RAFT_ADDR"
	envHTTPAddr  = "GRAFT_TEST_NODE_HTTP_ADDR"
	envDir       = "GRAFT_TEST_NODE_DIR"
	envPeers     = "GRAFT_TEST_NODE_PEERS"
	envElection  = "GRAFT_TEST_NODE_ELECTION_TIMEOUT"
	envHeartbeat = "GRAFT_TEST_NODE_HEARTBEAT_INTERVAL"

	envSnapEntries  = "GRAFT_TEST_NODE_SNAPSHOT_LOG_ENTRIES"
	envSnapInterval = "GRAFT_TEST_NODE_SNAPSHOT_INTERVAL"
	envSnapTrailing = "GRAFT_TEST_NODE_SNAPSHOT_TRAILING_ENTRIES"
	envThrottle     = "GRAFT_TEST_NODE_THROTTLE_BYTES_PER_SEC"
	envLogCache     = "GRAFT_TEST_NODE_LOG_CACHE_ENTRIES"
	envCopyParallel = "GRAFT_TEST_NODE_COPY_PARALLEL"
	envCopyChunk    = "GRAFT_TEST_NODE_COPY_CHUNK_SIZE"
	envBlobChunk    = "GRAFT_TEST_NODE_BLOB_CHUNK_SIZE"
	envVerifyLoads  = "GRAFT_TEST_NODE_VERIFY_LOADS"
	envNoSnapshots  = "GRAFT_TEST_NODE_NO_SNAPSHOTS"
)

// ReadyPrefix starts the line a child prints on standard output once it
// serves, followed by its control HTTP address.
const ReadyPrefix = "graft-testnode ready http="

// IsChild reports whether this process was started by a Cluster to run a
// node.
func IsChild() bool { return os.Getenv(envChild) == "1" }

// Config describes one node process.
type Config struct {
	GroupID string
	ID      string
	// RaftAddr is where the node's gRPC server listens; it must be this
	// node's address in Peers.
	RaftAddr string
	// HTTPAddr is where the control API listens; "127.0.0.1:0" picks a
	// port, which Server.HTTPAddr reports.
	HTTPAddr string
	// Dir holds the node's log, meta file, snapshots (snap/) and the
	// Recorder's scratch state (state/); a restarted node reopens it.
	Dir   string
	Peers []graft.Peer
	// ElectionTimeout and HeartbeatInterval are the node's; zero means
	// graft's defaults.
	ElectionTimeout   time.Duration
	HeartbeatInterval time.Duration
	// ApplyTimeout bounds one POST /apply. Zero means 2s.
	ApplyTimeout time.Duration
	// Logger receives the node's logs. nil discards them.
	Logger *slog.Logger

	NodeOptions
}

// NodeOptions are a node's snapshot, throttle and state-machine settings.
// The zero value keeps graft's defaults: snapshots only on POST /snapshot,
// no throttle, the Recorder without blob mode.
type NodeOptions struct {
	// SnapshotLogEntries and SnapshotInterval are graft's automatic
	// snapshot triggers; 0 turns each off.
	SnapshotLogEntries uint64
	SnapshotInterval   time.Duration
	// SnapshotTrailingEntries is how many entries stay in the log before a
	// snapshot's index. 0 means graft's default (1024).
	SnapshotTrailingEntries uint64
	// ThrottleBytesPerSec limits the snapshot bytes the process serves
	// (FileService reads) and the bytes it downloads (Options.Throttle),
	// each. 0: unlimited.
	ThrottleBytesPerSec int64
	// LogCacheEntries is graft's in-memory log tail; 0 means graft's
	// default. Keep it small when entries are large.
	LogCacheEntries int
	// CopyParallel and CopyChunkSize tune snapshot downloads (files at
	// once, bytes per GetFile); 0 means the snapshot package's defaults.
	CopyParallel  int
	CopyChunkSize int64
	// BlobChunkSize > 0 puts the Recorder in blob mode with that chunk
	// size (see RecorderOptions.ChunkSize).
	BlobChunkSize int64
	// VerifyLoads makes the Recorder hash every snapshot file before it
	// loads it (see RecorderOptions.VerifyLoads).
	VerifyLoads bool
	// NoSnapshots runs the node without a snapshot store.
	NoSnapshots bool
}

// Environ returns the environment variables that make a child started
// with them run the node c describes (Logger and ApplyTimeout are not
// carried).
func (c Config) Environ() []string {
	peers := make([]string, len(c.Peers))
	for i, p := range c.Peers {
		peers[i] = p.ID + "=" + p.Addr
	}
	return []string{
		envChild + "=1",
		envGroup + "=" + c.GroupID,
		envID + "=" + c.ID,
		envRaftAddr + "=" + c.RaftAddr,
		envHTTPAddr + "=" + c.HTTPAddr,
		envDir + "=" + c.Dir,
		envPeers + "=" + strings.Join(peers, ","),
		envElection + "=" + c.ElectionTimeout.String(),
		envHeartbeat + "=" + c.HeartbeatInterval.String(),
		envSnapEntries + "=" + strconv.FormatUint(c.SnapshotLogEntries, 10),
		envSnapInterval + "=" + c.SnapshotInterval.String(),
		envSnapTrailing + "=" + strconv.FormatUint(c.SnapshotTrailingEntries, 10),
		envThrottle + "=" + strconv.FormatInt(c.ThrottleBytesPerSec, 10),
		envLogCache + "=" + strconv.Itoa(c.LogCacheEntries),
		envCopyParallel + "=" + strconv.Itoa(c.CopyParallel),
		envCopyChunk + "=" + strconv.FormatInt(c.CopyChunkSize, 10),
		envBlobChunk + "=" + strconv.FormatInt(c.BlobChunkSize, 10),
		envVerifyLoads + "=" + strconv.FormatBool(c.VerifyLoads),
		envNoSnapshots + "=" + strconv.FormatBool(c.NoSnapshots),
	}
}

// ConfigFromEnv reads the Config that Environ wrote.
func ConfigFromEnv() (Config, error) {
	c := Config{
		GroupID:  os.Getenv(envGroup),
		ID:       os.Getenv(envID),
		RaftAddr: os.Getenv(envRaftAddr),
		HTTPAddr: os.Getenv(envHTTPAddr),
		Dir:      os.Getenv(envDir),
	}
	if c.ID == "" || c.RaftAddr == "" || c.Dir == "" {
		return c, fmt.Errorf("testnode: %s, %s and %s must be set", envID, envRaftAddr, envDir)
	}
	if c.GroupID == "" {
		c.GroupID = "testnode"
	}
	if c.HTTPAddr == "" {
		c.HTTPAddr = "127.0.0.1:0"
	}
	for _, kv := range strings.Split(os.Getenv(envPeers), ",") {
		if kv == "" {
			continue
		}
		id, addr, ok := strings.Cut(kv, "=")
		if !ok {
			return c, fmt.Errorf("testnode: %s: %q is not id=addr", envPeers, kv)
		}
		c.Peers = append(c.Peers, graft.Peer{ID: id, Addr: addr})
	}
	for _, d := range []struct {
		env string
		dst *time.Duration
	}{{envElection, &c.ElectionTimeout}, {envHeartbeat, &c.HeartbeatInterval}, {envSnapInterval, &c.SnapshotInterval}} {
		if v := os.Getenv(d.env); v != "" {
			x, err := time.ParseDuration(v)
			if err != nil {
				return c, fmt.Errorf("testnode: %s: %w", d.env, err)
			}
			*d.dst = x
		}
	}
	for _, d := range []struct {
		env string
		set func(int64)
	}{
		{envSnapEntries, func(v int64) { c.SnapshotLogEntries = uint64(v) }},
		{envSnapTrailing, func(v int64) { c.SnapshotTrailingEntries = uint64(v) }},
		{envThrottle, func(v int64) { c.ThrottleBytesPerSec = v }},
		{envLogCache, func(v int64) { c.LogCacheEntries = int(v) }},
		{envCopyParallel, func(v int64) { c.CopyParallel = int(v) }},
		{envCopyChunk, func(v int64) { c.CopyChunkSize = v }},
		{envBlobChunk, func(v int64) { c.BlobChunkSize = v }},
	} {
		if v := os.Getenv(d.env); v != "" {
			x, err := strconv.ParseInt(v, 10, 64)
			if err != nil || x < 0 {
				return c, fmt.Errorf("testnode: %s: %q is not a non-negative integer", d.env, v)
			}
			d.set(x)
		}
	}
	for _, d := range []struct {
		env string
		dst *bool
	}{{envVerifyLoads, &c.VerifyLoads}, {envNoSnapshots, &c.NoSnapshots}} {
		if v := os.Getenv(d.env); v != "" {
			x, err := strconv.ParseBool(v)
			if err != nil {
				return c, fmt.Errorf("testnode: %s: %w", d.env, err)
			}
			*d.dst = x
		}
	}
	return c, nil
}

// Main runs the node that the environment describes until its standard
// input closes or it receives SIGTERM or SIGINT, then shuts it down. It
// logs to standard error and returns the process's exit code.
func Main() int {
	cfg, err := ConfigFromEnv()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	s, err := Start(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testnode:", err)
		return 1
	}
	fmt.Fprintf(os.Stdout, "%s%s\n", ReadyPrefix, s.HTTPAddr())

	stdinClosed := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(stdinClosed)
	}()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	select {
	case <-stdinClosed:
		cfg.Logger.Info("standard input closed; stopping")
	case s := <-sig:
		cfg.Logger.Info("signalled; stopping", "signal", s.String())
	}
	if err := s.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "testnode: close:", err)
		return 1
	}
	return 0
}

// Server is one running node and its control API.
type Server struct {
	cfg      Config
	node     *graft.Node
	rec      *Recorder
	snaps    *snapshot.Storage // nil with NoSnapshots
	files    *snapshot.FileService
	rpc      *grpctransport.Server
	trans    *grpctransport.Transport
	http     *http.Server
	httpLis  net.Listener
	served   sync.WaitGroup
	startRSS int64 // VmRSS once the node serves, before it did any work
}

// Start opens the node's storage in cfg.Dir and starts the node, its gRPC
// server and its control API.
func Start(cfg Config) (_ *Server, err error) {
	if cfg.ApplyTimeout == 0 {
		cfg.ApplyTimeout = 2 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	var closers []func() error
	defer func() {
		if err != nil {
			for i := len(closers) - 1; i >= 0; i-- {
				_ = closers[i]()
			}
		}
	}()
	logs, err := segment.Open(vfs.Default, filepath.Join(cfg.Dir, "log"), segment.Options{Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	closers = append(closers, logs.Close)
	meta, err := metafile.Open(vfs.Default, cfg.Dir)
	if err != nil {
		return nil, err
	}
	closers = append(closers, meta.Close)
	s := &Server{cfg: cfg}
	if !cfg.NoSnapshots {
		s.snaps, err = snapshot.Open(filepath.Join(cfg.Dir, "snap"), snapshot.Options{Logger: cfg.Logger})
		if err != nil {
			return nil, err
		}
		closers = append(closers, s.snaps.Close)
	}
	s.rec, err = NewRecorder(RecorderOptions{
		Dir: filepath.Join(cfg.Dir, "state"), ChunkSize: cfg.BlobChunkSize, VerifyLoads: cfg.VerifyLoads,
	})
	if err != nil {
		return nil, err
	}
	var thr *throttle.Throttle
	if cfg.ThrottleBytesPerSec > 0 {
		thr = throttle.New(throttle.Options{BytesPerSecond: cfg.ThrottleBytesPerSec})
	}
	s.files = snapshot.NewFileService(snapshot.FileServiceOptions{Throttle: thr, Logger: cfg.Logger})
	closers = append(closers, func() error { s.files.Close(); return nil })
	// The previous incarnation's port may take a moment to free up.
	raftLis, err := listenRetry(cfg.RaftAddr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	closers = append(closers, raftLis.Close)
	s.httpLis, err = net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return nil, err
	}
	closers = append(closers, s.httpLis.Close)

	router := transport.NewRouter()
	router.SetFileHandler(s.files)
	s.rpc = grpctransport.NewServer(router)
	closers = append(closers, func() error { s.rpc.Stop(); return nil })
	topts := grpctransport.DefaultOptions()
	// Find a restarted peer quickly.
	topts.MaxReconnectDelay = 100 * time.Millisecond
	s.trans = grpctransport.New(topts)
	closers = append(closers, s.trans.Close)

	opts := graft.DefaultOptions()
	opts.GroupID = cfg.GroupID
	opts.ID = cfg.ID
	opts.InitialPeers = cfg.Peers
	if cfg.ElectionTimeout > 0 {
		opts.ElectionTimeout = cfg.ElectionTimeout
		opts.HeartbeatInterval = cfg.ElectionTimeout / 10
	}
	if cfg.HeartbeatInterval > 0 {
		opts.HeartbeatInterval = cfg.HeartbeatInterval
	}
	if s.snaps != nil {
		opts.Snapshots = s.snaps
		opts.FileService = s.files
	}
	opts.Throttle = thr
	opts.SnapshotLogEntries = cfg.SnapshotLogEntries
	opts.SnapshotInterval = cfg.SnapshotInterval
	if cfg.SnapshotTrailingEntries > 0 {
		opts.SnapshotTrailingEntries = cfg.SnapshotTrailingEntries
	}
	if cfg.LogCacheEntries > 0 {
		opts.LogCacheEntries = cfg.LogCacheEntries
	}
	opts.Copy.Parallel = cfg.CopyParallel
	opts.Copy.ChunkSize = cfg.CopyChunkSize
	opts.LogStorage = logs
	opts.MetaStorage = meta
	opts.Transport = s.trans
	opts.Router = router
	opts.StateMachine = s.rec
	opts.Logger = cfg.Logger
	s.node, err = graft.NewNode(opts)
	if err != nil {
		return nil, err
	}

	s.served.Add(2)
	go func() {
		defer s.served.Done()
		_ = s.rpc.Serve(raftLis)
	}()
	mux := http.NewServeMux()
	mux.HandleFunc("POST /apply", s.handleApply)
	mux.HandleFunc("POST /snapshot", s.handleSnapshot)
	mux.HandleFunc("GET /status", s.handleStatus)
	mux.HandleFunc("GET /applied", s.handleApplied)
	mux.HandleFunc("GET /digest", s.handleDigest)
	mux.HandleFunc("GET /snapshot/check", s.handleSnapshotCheck)
	s.http = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		defer s.served.Done()
		_ = s.http.Serve(s.httpLis)
	}()
	s.startRSS = ReadMemStatus().RSS
	return s, nil
}

func listenRetry(addr string, timeout time.Duration) (net.Listener, error) {
	deadline := time.Now().Add(timeout)
	for {
		lis, err := net.Listen("tcp", addr)
		if err == nil || !errors.Is(err, syscall.EADDRINUSE) || time.Now().After(deadline) {
			return lis, err
		}
		time.Sleep(50 * time.Millisecond) // retry backoff, not synchronisation
	}
}

// HTTPAddr returns the control API's address.
func (s *Server) HTTPAddr() string { return s.httpLis.Addr().String() }

// Node returns the node.
func (s *Server) Node() *graft.Node { return s.node }

// Recorder returns the node's state machine.
func (s *Server) Recorder() *Recorder { return s.rec }

// Close stops the node, its control API, gRPC server and transport.
func (s *Server) Close() error {
	// First the node, which fails the Apply calls in progress, so the
	// control API has no request left to wait for.
	nerr := s.node.Shutdown()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := s.http.Shutdown(ctx); err != nil {
		// A connection a client opened but never used counts as busy for
		// 5s; there is nothing to wait for on it.
		_ = s.http.Close()
	}
	s.rpc.Stop()
	terr := s.trans.Close()
	s.files.Close()
	s.served.Wait()
	return errors.Join(nerr, terr)
}

// ApplyReply is the body of a POST /apply answer.
type ApplyReply struct {
	Index    uint64 `json:"index,omitempty"`
	Term     uint64 `json:"term,omitempty"`
	LeaderID string `json:"leader_id,omitempty"`
	Error    string `json:"error,omitempty"`
}

// Status is the body of a GET /status answer.
type Status struct {
	ID         string `json:"id"`
	Role       string `json:"role"`
	Term       uint64 `json:"term"`
	LeaderID   string `json:"leader_id"`
	Commit     uint64 `json:"commit"`
	Applied    uint64 `json:"applied"`
	FirstIndex uint64 `json:"first_index"`
	LastIndex  uint64 `json:"last_index"`
	Recorded   int    `json:"recorded"`
	Err        string `json:"err,omitempty"`
	Violations string `json:"violations,omitempty"`

	// Snapshot is the node's snapshot executor.
	Snapshot SnapshotStatus `json:"snapshot"`
	// Loads are the snapshots the state machine loaded since the process
	// started (at startup or installed); Saves counts its saves.
	Loads []LoadInfo `json:"loads"`
	Saves int        `json:"saves"`

	// RSS and PeakRSS are the process's resident set size now (VmRSS) and
	// its peak (VmHWM), in bytes; StartRSS is VmRSS when the node had
	// just started serving. Zero where /proc is not available.
	RSS      int64 `json:"rss"`
	PeakRSS  int64 `json:"peak_rss"`
	StartRSS int64 `json:"start_rss"`
}

// SnapshotStatus is the snapshot part of Status.
type SnapshotStatus struct {
	// State is IDLE, SAVING, DOWNLOADING or LOADING.
	State string `json:"state"`
	// Index and Term are the last snapshot's (saved or installed).
	Index uint64 `json:"index"`
	Term  uint64 `json:"term"`
	// Progress is the install under way, or the last one of this process.
	Progress Progress `json:"progress"`
}

// Progress is an install's progress (snapshot.ProgressInfo).
type Progress struct {
	FilesDone    int     `json:"files_done"`
	FilesTotal   int     `json:"files_total"`
	BytesDone    int64   `json:"bytes_done"`
	BytesTotal   int64   `json:"bytes_total"`
	BytesFetched int64   `json:"bytes_fetched"`
	BytesReused  int64   `json:"bytes_reused"`
	BytesPerSec  float64 `json:"bytes_per_sec"`
	// Started is when the install's copy began (zero: none yet).
	Started time.Time `json:"started"`
}

// SnapshotCheck is the body of a GET /snapshot/check answer.
type SnapshotCheck struct {
	// Index and Term are the newest local snapshot's (0: none).
	Index uint64 `json:"index"`
	Term  uint64 `json:"term"`
	Files int    `json:"files"`
	Bytes int64  `json:"bytes"`
	// Err says what is wrong with it; empty when every file matches its
	// size and SHA-256 and the Recorder can read it.
	Err string `json:"err,omitempty"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func (s *Server) handleApply(w http.ResponseWriter, r *http.Request) {
	data, err := io.ReadAll(r.Body)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, ApplyReply{Error: err.Error()})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.ApplyTimeout)
	defer cancel()
	res, err := s.node.Apply(ctx, data)
	var nle *graft.NotLeaderError
	switch {
	case err == nil:
		writeJSON(w, http.StatusOK, ApplyReply{Index: res.Index, Term: res.Term})
	case errors.As(err, &nle):
		writeJSON(w, http.StatusMisdirectedRequest, ApplyReply{LeaderID: nle.LeaderID, Error: err.Error()})
	case errors.Is(err, graft.ErrShutdown), errors.Is(err, graft.ErrLeadershipLost):
		writeJSON(w, http.StatusServiceUnavailable, ApplyReply{Error: err.Error()})
	case errors.Is(err, context.DeadlineExceeded):
		writeJSON(w, http.StatusGatewayTimeout, ApplyReply{Error: err.Error()})
	default:
		writeJSON(w, http.StatusInternalServerError, ApplyReply{Error: err.Error()})
	}
}

func (s *Server) handleStatus(w http.ResponseWriter, _ *http.Request) {
	st := s.node.Status()
	p := st.Snapshot.Progress
	mem := ReadMemStatus()
	out := Status{
		ID: st.ID, Role: st.Role.String(), Term: st.Term, LeaderID: st.Leader.ID,
		Commit: st.CommitIndex, Applied: st.AppliedIndex, FirstIndex: st.FirstIndex, LastIndex: st.LastIndex,
		Recorded: s.rec.Len(),
		Snapshot: SnapshotStatus{
			State: st.Snapshot.State.String(), Index: st.Snapshot.LastIndex, Term: st.Snapshot.LastTerm,
			Progress: Progress{
				FilesDone: p.FilesDone, FilesTotal: p.FilesTotal, BytesDone: p.BytesDone, BytesTotal: p.BytesTotal,
				BytesFetched: p.BytesFetched, BytesReused: p.BytesReused, BytesPerSec: p.BytesPerSec, Started: p.Started,
			},
		},
		Loads: s.rec.Loads(), Saves: s.rec.Saves(),
		RSS: mem.RSS, PeakRSS: mem.PeakRSS, StartRSS: s.startRSS,
	}
	if st.Err != nil {
		out.Err = st.Err.Error()
	}
	if err := s.rec.Err(); err != nil {
		out.Violations = err.Error()
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleApplied(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.rec.Entries())
}

// SnapshotReply is the body of a POST /snapshot answer.
type SnapshotReply struct {
	Index uint64 `json:"index"`
	Error string `json:"error,omitempty"`
}

func (s *Server) handleSnapshot(w http.ResponseWriter, r *http.Request) {
	idx, err := s.node.Snapshot(r.Context())
	switch {
	case err == nil:
		writeJSON(w, http.StatusOK, SnapshotReply{Index: idx})
	case errors.Is(err, graft.ErrBusy):
		writeJSON(w, http.StatusConflict, SnapshotReply{Index: idx, Error: err.Error()})
	case errors.Is(err, graft.ErrShutdown):
		writeJSON(w, http.StatusServiceUnavailable, SnapshotReply{Index: idx, Error: err.Error()})
	default:
		writeJSON(w, http.StatusInternalServerError, SnapshotReply{Index: idx, Error: err.Error()})
	}
}

func (s *Server) handleDigest(w http.ResponseWriter, _ *http.Request) {
	d, err := s.rec.Digest()
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, d)
}

// handleSnapshotCheck hashes every file of the newest local snapshot
// against its meta table and reads it as the Recorder's LoadSnapshot
// would, without loading it.
func (s *Server) handleSnapshotCheck(w http.ResponseWriter, _ *http.Request) {
	if s.snaps == nil {
		writeJSON(w, http.StatusOK, SnapshotCheck{Err: "no snapshot store"})
		return
	}
	r, err := s.snaps.Open()
	if err != nil {
		writeJSON(w, http.StatusOK, SnapshotCheck{Err: err.Error()})
		return
	}
	if r == nil {
		writeJSON(w, http.StatusOK, SnapshotCheck{})
		return
	}
	defer r.Close()
	t := r.Table()
	out := SnapshotCheck{Index: t.GetMeta().GetLastIncludedIndex(), Term: t.GetMeta().GetLastIncludedTerm(), Files: len(t.GetFiles())}
	for _, f := range t.GetFiles() {
		out.Bytes += f.GetSize()
	}
	if err := s.rec.CheckSnapshot(r, true); err != nil {
		out.Err = err.Error()
	}
	writeJSON(w, http.StatusOK, out)
}

// Entry is one command as the state machine applied it.
type Entry struct {
	Index uint64 `json:"index"`
	Term  uint64 `json:"term"`
	Cmd   string `json:"cmd"`
}
