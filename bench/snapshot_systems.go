package main

// The two systems of the snapshot workload, each with a state machine that
// is "a directory of files": its snapshot is those files. The parent runs
// a 2-node group of each in this process; the follower that catches up
// runs alone in a child process (snapshot_child.go).

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"time"

	"github.com/graft-raft/graft"
	"github.com/graft-raft/graft/snapshot"
	"github.com/graft-raft/graft/storage/metafile"
	"github.com/graft-raft/graft/storage/segment"
	"github.com/graft-raft/graft/transport"
	grpctransport "github.com/graft-raft/graft/transport/grpc"
	"github.com/graft-raft/graft/vfs"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"google.golang.org/grpc"
)

const (
	// snapGroup is the graft group id of the workload.
	snapGroup = "bench-snapshot"
	// snapTrailing is the log entries kept behind a snapshot by both
	// systems (graft SnapshotTrailingEntries, hashicorp TrailingLogs), so
	// that a new or lagging follower needs an install.
	snapTrailing = 16
)

// ---- a directory of files ----

// snapStateFiles lists the regular files of dir, sorted.
func snapStateFiles(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if e.Type().IsRegular() {
			out = append(out, e.Name())
		}
	}
	slices.Sort(out)
	return out, nil
}

// snapLinkOrCopy hard-links src to dst, or copies it (and syncs the copy) if
// linking fails.
func snapLinkOrCopy(src, dst string) error {
	if err := os.Link(src, dst); err == nil {
		return nil
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func snapSyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// snapReplaceDir replaces dir with a directory that fill populates: fill
// writes into a fresh sibling, which is synced and renamed over dir.
func snapReplaceDir(dir string, fill func(tmp string) error) error {
	tmp := dir + ".new"
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return err
	}
	if err := fill(tmp); err != nil {
		return err
	}
	if err := snapSyncDir(tmp); err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return err
	}
	return snapSyncDir(filepath.Dir(dir))
}

// ---- graft ----

// graftDirFSM is a graft state machine whose state is the files of dir.
// Applies only count: the files are the state "as if built by applies".
type graftDirFSM struct {
	dir string
	n   atomic.Uint64
}

func (f *graftDirFSM) Apply(it *graft.Iterator) error {
	var k uint64
	for it.Next() {
		k++
	}
	f.n.Add(k)
	return nil
}

// SaveSnapshot hard-links the state files into the writer's directory (a
// point-in-time view: the files are immutable) and adds each.
func (f *graftDirFSM) SaveSnapshot(w graft.SnapshotWriter, done func(error)) {
	done(func() error {
		names, err := snapStateFiles(f.dir)
		if err != nil {
			return err
		}
		for _, name := range names {
			if err := snapLinkOrCopy(filepath.Join(f.dir, name), filepath.Join(w.Path(), name)); err != nil {
				return err
			}
			if err := w.AddFile(name, nil); err != nil {
				return err
			}
		}
		return nil
	}())
}

// LoadSnapshot makes the snapshot's files the state: they are durable in
// the snapshot directory already, so they are hard-linked, not copied.
func (f *graftDirFSM) LoadSnapshot(r graft.SnapshotReader) error {
	return snapReplaceDir(f.dir, func(tmp string) error {
		for _, name := range r.Files() {
			if err := snapLinkOrCopy(filepath.Join(r.Path(), filepath.FromSlash(name)), filepath.Join(tmp, name)); err != nil {
				return err
			}
		}
		return nil
	})
}

// graftSnapProc is one "process" hosting one graft node: gRPC server,
// router, client transport, snapshot file service.
type graftSnapProc struct {
	id     string
	server *grpctransport.Server
	trans  *grpctransport.Transport
	files  *snapshot.FileService
	node   *graft.Node
	fsm    *graftDirFSM
}

// graftChildExtras are what the child changes in its graft node: a
// counting dialer, Copy options, clocks on its snapshot I/O.
type graftChildExtras struct {
	dial  func(context.Context, string) (net.Conn, error)
	copy  snapshot.CopyOptions
	times *snapIOTimes
}

// startGraftSnapProc starts a graft node in pdir (log, meta, snap, state)
// serving on lis. peers is InitialPeers (nil for a node that waits to be
// added or that has state already).
func startGraftSnapProc(id, pdir string, peers []graft.Peer, lis net.Listener, x graftChildExtras, logger *slog.Logger) (*graftSnapProc, error) {
	fsm := &graftDirFSM{dir: filepath.Join(pdir, "state")}
	if err := os.MkdirAll(fsm.dir, 0o755); err != nil {
		return nil, err
	}
	logs, err := segment.Open(vfs.Default, filepath.Join(pdir, "log"), segment.Options{})
	if err != nil {
		return nil, err
	}
	meta, err := metafile.Open(vfs.Default, pdir)
	if err != nil {
		logs.Close()
		return nil, err
	}
	sopts := snapshot.Options{Logger: logger}
	if x.times != nil {
		sopts.FS = timedFS{vfs.Default, x.times}
	}
	snaps, err := snapshot.Open(filepath.Join(pdir, "snap"), sopts)
	if err != nil {
		logs.Close()
		meta.Close()
		return nil, err
	}
	p := &graftSnapProc{id: id, fsm: fsm}
	router := transport.NewRouter()
	p.files = snapshot.NewFileService(snapshot.FileServiceOptions{Logger: logger})
	router.SetFileHandler(p.files)
	p.server = grpctransport.NewServer(router)
	topts := grpctransport.DefaultOptions()
	if x.dial != nil {
		topts.DialOptions = append(topts.DialOptions, grpc.WithContextDialer(x.dial))
	}
	p.trans = grpctransport.New(topts)
	opts := graft.DefaultOptions()
	opts.GroupID = snapGroup
	opts.ID = id
	if logs.LastIndex() == 0 {
		if idx, _ := snaps.LastIndex(); idx == 0 {
			opts.InitialPeers = peers
		}
	}
	opts.Snapshots = snaps
	opts.FileService = p.files
	opts.Throttle = nil // unlimited
	opts.SnapshotTrailingEntries = snapTrailing
	opts.Copy = x.copy
	opts.LogStorage = logs
	opts.MetaStorage = meta
	opts.Transport = p.trans
	if x.times != nil {
		opts.Transport = timedTransport{p.trans, x.times}
	}
	opts.Router = router
	opts.StateMachine = fsm
	opts.Logger = logger
	node, err := graft.NewNode(opts)
	if err != nil {
		p.files.Close()
		p.trans.Close()
		return nil, err
	}
	p.node = node
	go p.server.Serve(lis)
	return p, nil
}

func (p *graftSnapProc) close() error {
	p.server.Stop()
	err := errors.Join(p.node.Shutdown(), p.trans.Close())
	p.files.Close()
	return err
}

func (p *graftSnapProc) applied() uint64 { return p.node.Status().AppliedIndex }

// graftSnapCluster is the parent's 2-node graft group.
type graftSnapCluster struct {
	procs []*graftSnapProc
}

func startGraftSnap(dir string, state []string, logger *slog.Logger) (c *graftSnapCluster, err error) {
	c = &graftSnapCluster{}
	defer func() {
		if err != nil {
			c.close()
		}
	}()
	var peers []graft.Peer
	var listeners []net.Listener
	for i := 1; i <= 2; i++ {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			for _, l := range listeners {
				l.Close()
			}
			return c, err
		}
		listeners = append(listeners, lis)
		peers = append(peers, graft.Peer{ID: fmt.Sprintf("n%d", i), Addr: lis.Addr().String()})
	}
	for i, p := range peers {
		pdir := filepath.Join(dir, p.ID)
		if err := snapSeedState(filepath.Join(pdir, "state"), state); err != nil {
			return c, err
		}
		proc, err := startGraftSnapProc(p.ID, pdir, peers, listeners[i], graftChildExtras{}, logger.With("node", p.ID))
		if err != nil {
			for _, l := range listeners[i:] {
				l.Close()
			}
			return c, err
		}
		c.procs = append(c.procs, proc)
	}
	if _, err := c.leader(20 * time.Second); err != nil {
		return c, err
	}
	return c, nil
}

// snapSeedState makes dir hold hard links to the files in state.
func snapSeedState(dir string, state []string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, src := range state {
		if err := snapLinkOrCopy(src, filepath.Join(dir, filepath.Base(src))); err != nil {
			return err
		}
	}
	return snapSyncDir(dir)
}

func (c *graftSnapCluster) leader(wait time.Duration) (*graftSnapProc, error) {
	deadline := time.Now().Add(wait)
	for {
		for _, p := range c.procs {
			if p.node.IsLeader() {
				return p, nil
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("graft: no leader within %v", wait)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (c *graftSnapCluster) apply(n int, cmd []byte) error {
	l, err := c.leader(10 * time.Second)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for range n {
		if _, err := l.node.Apply(ctx, cmd); err != nil {
			return fmt.Errorf("graft: apply: %w", err)
		}
	}
	return nil
}

func (c *graftSnapCluster) snapshotAll() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	for _, p := range c.procs {
		if _, err := p.node.Snapshot(ctx); err != nil {
			return fmt.Errorf("graft: snapshot on %s: %w", p.id, err)
		}
	}
	return nil
}

func (c *graftSnapCluster) lastIndex() (uint64, error) {
	l, err := c.leader(10 * time.Second)
	if err != nil {
		return 0, err
	}
	return l.node.Status().LastIndex, nil
}

func (c *graftSnapCluster) addStateFile(src string) error {
	for _, p := range c.procs {
		if err := snapLinkOrCopy(src, filepath.Join(p.fsm.dir, filepath.Base(src))); err != nil {
			return err
		}
		if err := snapSyncDir(p.fsm.dir); err != nil {
			return err
		}
	}
	return nil
}

// addChild adds the child as a voter: the leader catches it up (with an
// install) before the configuration change.
func (c *graftSnapCluster) addChild(ctx context.Context, id, addr string) error {
	l, err := c.leader(10 * time.Second)
	if err != nil {
		return err
	}
	return l.node.AddPeer(ctx, graft.Peer{ID: id, Addr: addr})
}

func (c *graftSnapCluster) close() error {
	var errs []error
	for _, p := range c.procs {
		errs = append(errs, p.close())
	}
	return errors.Join(errs...)
}

// ---- hashicorp ----

// hcDirFSM is a hashicorp/raft FSM whose state is the files of dir.
type hcDirFSM struct {
	dir string
	n   atomic.Uint64
}

func (f *hcDirFSM) Apply(l *raft.Log) any {
	if l.Type == raft.LogCommand {
		f.n.Add(1)
	}
	return nil
}

func (f *hcDirFSM) ApplyBatch(logs []*raft.Log) []any {
	var k uint64
	for _, l := range logs {
		if l.Type == raft.LogCommand {
			k++
		}
	}
	f.n.Add(k)
	return make([]any, len(logs))
}

// Snapshot takes a point-in-time view of the state by hard-linking its
// files into a private directory, as graft's SaveSnapshot does into the
// writer's.
func (f *hcDirFSM) Snapshot() (raft.FSMSnapshot, error) {
	names, err := snapStateFiles(f.dir)
	if err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(f.dir), "fsm-snapshot-")
	if err != nil {
		return nil, err
	}
	s := &hcDirSnapshot{dir: tmp}
	for _, name := range names {
		p := filepath.Join(tmp, name)
		if err := snapLinkOrCopy(filepath.Join(f.dir, name), p); err != nil {
			os.RemoveAll(tmp)
			return nil, err
		}
		fi, err := os.Stat(p)
		if err != nil {
			os.RemoveAll(tmp)
			return nil, err
		}
		s.names = append(s.names, name)
		s.sizes = append(s.sizes, fi.Size())
	}
	return s, nil
}

// Restore writes the streamed files into a fresh directory, syncing each
// (graft's copier syncs each downloaded file too), and makes it the state.
func (f *hcDirFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	br := bufio.NewReaderSize(rc, 1<<20)
	names, sizes, err := readSnapHeader(br)
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	return snapReplaceDir(f.dir, func(tmp string) error {
		for i, name := range names {
			out, err := os.OpenFile(filepath.Join(tmp, name), os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o644)
			if err != nil {
				return err
			}
			if _, err := io.CopyBuffer(struct{ io.Writer }{out}, io.LimitReader(br, sizes[i]), buf); err != nil {
				out.Close()
				return err
			}
			if fi, err := out.Stat(); err != nil || fi.Size() != sizes[i] {
				out.Close()
				return fmt.Errorf("restore %s: short file (%v)", name, err)
			}
			if err := out.Sync(); err != nil {
				out.Close()
				return err
			}
			if err := out.Close(); err != nil {
				return err
			}
		}
		return nil
	})
}

// hcDirSnapshot streams its files into the sink after a small header:
// the number of files, then each one's name and size.
type hcDirSnapshot struct {
	dir   string
	names []string
	sizes []int64
}

const snapMagic = "GBSNAP01"

func (s *hcDirSnapshot) Persist(sink raft.SnapshotSink) error {
	err := func() error {
		hdr := []byte(snapMagic)
		hdr = binary.BigEndian.AppendUint32(hdr, uint32(len(s.names)))
		for i, name := range s.names {
			hdr = binary.BigEndian.AppendUint16(hdr, uint16(len(name)))
			hdr = append(hdr, name...)
			hdr = binary.BigEndian.AppendUint64(hdr, uint64(s.sizes[i]))
		}
		if _, err := sink.Write(hdr); err != nil {
			return err
		}
		buf := make([]byte, 1<<20)
		for i, name := range s.names {
			in, err := os.Open(filepath.Join(s.dir, name))
			if err != nil {
				return err
			}
			n, err := io.CopyBuffer(sink, struct{ io.Reader }{in}, buf)
			in.Close()
			if err != nil {
				return err
			}
			if n != s.sizes[i] {
				return fmt.Errorf("persist %s: %d bytes, want %d", name, n, s.sizes[i])
			}
		}
		return nil
	}()
	if err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *hcDirSnapshot) Release() { os.RemoveAll(s.dir) }

func readSnapHeader(r io.Reader) (names []string, sizes []int64, err error) {
	var fixed [len(snapMagic) + 4]byte
	if _, err := io.ReadFull(r, fixed[:]); err != nil {
		return nil, nil, fmt.Errorf("snapshot header: %w", err)
	}
	if string(fixed[:len(snapMagic)]) != snapMagic {
		return nil, nil, errors.New("snapshot header: bad magic")
	}
	n := binary.BigEndian.Uint32(fixed[len(snapMagic):])
	for range n {
		var l [2]byte
		if _, err := io.ReadFull(r, l[:]); err != nil {
			return nil, nil, err
		}
		name := make([]byte, binary.BigEndian.Uint16(l[:]))
		if _, err := io.ReadFull(r, name); err != nil {
			return nil, nil, err
		}
		if filepath.Base(string(name)) != string(name) || string(name) == "." || string(name) == ".." {
			return nil, nil, fmt.Errorf("snapshot header: bad file name %q", name)
		}
		var sz [8]byte
		if _, err := io.ReadFull(r, sz[:]); err != nil {
			return nil, nil, err
		}
		names = append(names, string(name))
		sizes = append(sizes, int64(binary.BigEndian.Uint64(sz[:])))
	}
	return names, sizes, nil
}

// hcSnapNode is one hashicorp/raft node with a directory FSM.
type hcSnapNode struct {
	id    string
	raft  *raft.Raft
	trans *raft.NetworkTransport
	store *raftboltdb.BoltStore
	fsm   *hcDirFSM
}

// hcSnapConfig is shared/PEERS.md's fair setup with TrailingLogs small.
func hcSnapConfig(id string) *raft.Config {
	cfg := raft.DefaultConfig()
	cfg.LocalID = raft.ServerID(id)
	cfg.BatchApplyCh = true
	cfg.MaxAppendEntries = 1024
	cfg.SnapshotThreshold = 1 << 62
	cfg.SnapshotInterval = time.Hour
	cfg.TrailingLogs = snapTrailing
	cfg.LogOutput = io.Discard
	return cfg
}

// startHCSnapNode starts a hashicorp node in pdir on trans. With
// noRestore the node does not restore its local snapshot into the FSM at
// startup (the FSM's files are durable on their own).
func startHCSnapNode(id, pdir string, trans *raft.NetworkTransport, noRestore bool, logOut io.Writer) (*hcSnapNode, error) {
	fsm := &hcDirFSM{dir: filepath.Join(pdir, "state")}
	if err := os.MkdirAll(fsm.dir, 0o755); err != nil {
		return nil, err
	}
	store, err := raftboltdb.NewBoltStore(filepath.Join(pdir, "raft.db"))
	if err != nil {
		return nil, err
	}
	snaps, err := raft.NewFileSnapshotStore(pdir, 1, io.Discard)
	if err != nil {
		store.Close()
		return nil, err
	}
	cfg := hcSnapConfig(id)
	cfg.NoSnapshotRestoreOnStart = noRestore
	if logOut != nil {
		cfg.LogOutput = logOut
		cfg.LogLevel = "WARN"
	}
	r, err := raft.NewRaft(cfg, fsm, store, store, snaps, trans)
	if err != nil {
		store.Close()
		return nil, err
	}
	return &hcSnapNode{id: id, raft: r, trans: trans, store: store, fsm: fsm}, nil
}

func (n *hcSnapNode) close() error {
	return errors.Join(n.raft.Shutdown().Error(), n.trans.Close(), n.store.Close())
}

func (n *hcSnapNode) applied() uint64 { return n.raft.AppliedIndex() }

// hcSnapCluster is the parent's 2-node hashicorp group.
type hcSnapCluster struct {
	nodes []*hcSnapNode
}

func startHCSnap(dir string, state []string) (c *hcSnapCluster, err error) {
	c = &hcSnapCluster{}
	defer func() {
		if err != nil {
			c.close()
		}
	}()
	var servers []raft.Server
	var transports []*raft.NetworkTransport
	for i := 1; i <= 2; i++ {
		trans, err := raft.NewTCPTransport("127.0.0.1:0", nil, 3, 10*time.Second, io.Discard)
		if err != nil {
			for _, t := range transports {
				t.Close()
			}
			return c, err
		}
		transports = append(transports, trans)
		servers = append(servers, raft.Server{ID: raft.ServerID(fmt.Sprintf("n%d", i)), Address: trans.LocalAddr()})
	}
	for i, s := range servers {
		pdir := filepath.Join(dir, string(s.ID))
		if err := snapSeedState(filepath.Join(pdir, "state"), state); err != nil {
			return c, err
		}
		n, err := startHCSnapNode(string(s.ID), pdir, transports[i], false, nil)
		if err != nil {
			for _, t := range transports[i:] {
				t.Close()
			}
			return c, err
		}
		c.nodes = append(c.nodes, n)
	}
	if err := c.nodes[0].raft.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil {
		return c, fmt.Errorf("hashicorp: bootstrap: %w", err)
	}
	if _, err := c.leader(20 * time.Second); err != nil {
		return c, err
	}
	return c, nil
}

func (c *hcSnapCluster) leader(wait time.Duration) (*hcSnapNode, error) {
	deadline := time.Now().Add(wait)
	for {
		for _, n := range c.nodes {
			if n.raft.State() == raft.Leader {
				return n, nil
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("hashicorp: no leader within %v", wait)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (c *hcSnapCluster) apply(n int, cmd []byte) error {
	l, err := c.leader(10 * time.Second)
	if err != nil {
		return err
	}
	for range n {
		if err := l.raft.Apply(cmd, time.Minute).Error(); err != nil {
			return fmt.Errorf("hashicorp: apply: %w", err)
		}
	}
	return nil
}

func (c *hcSnapCluster) snapshotAll() error {
	for _, n := range c.nodes {
		if err := n.raft.Snapshot().Error(); err != nil {
			return fmt.Errorf("hashicorp: snapshot on %s: %w", n.id, err)
		}
	}
	return nil
}

func (c *hcSnapCluster) lastIndex() (uint64, error) {
	l, err := c.leader(10 * time.Second)
	if err != nil {
		return 0, err
	}
	return l.raft.LastIndex(), nil
}

func (c *hcSnapCluster) addStateFile(src string) error {
	for _, n := range c.nodes {
		if err := snapLinkOrCopy(src, filepath.Join(n.fsm.dir, filepath.Base(src))); err != nil {
			return err
		}
		if err := snapSyncDir(n.fsm.dir); err != nil {
			return err
		}
	}
	return nil
}

func (c *hcSnapCluster) addChild(ctx context.Context, id, addr string) error {
	l, err := c.leader(10 * time.Second)
	if err != nil {
		return err
	}
	f := l.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, 0)
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *hcSnapCluster) close() error {
	var errs []error
	for _, n := range c.nodes {
		errs = append(errs, n.close())
	}
	return errors.Join(errs...)
}

// hcWireStream is a raft.StreamLayer over a counting, gated listener
// whose outgoing connections are counted too.
type hcWireStream struct {
	*wireListener
}

func (s hcWireStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return wireDial(ctx, s.c, string(addr))
}
