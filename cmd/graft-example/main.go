// Command graft-example starts a 3-node graft group on loopback with
// durable storage, replicates a few entries, kills the leader, writes
// through the new leader, restarts the old leader and shows that every
// node ends with the same log.
//
//	go run ./cmd/graft-example [-dir DIR]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/graft-raft/graft"
	"github.com/graft-raft/graft/storage/metafile"
	"github.com/graft-raft/graft/storage/segment"
	"github.com/graft-raft/graft/transport"
	grpctransport "github.com/graft-raft/graft/transport/grpc"
	"github.com/graft-raft/graft/vfs"
)

// journal is the example's state machine: an ordered list of messages.
type journal struct {
	mu   sync.Mutex
	msgs []string
}

func (j *journal) Apply(it *graft.Iterator) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	for it.Next() {
		j.msgs = append(j.msgs, string(it.Data()))
		it.SetResult(len(j.msgs))
	}
	return nil
}

func (j *journal) SaveSnapshot(w graft.SnapshotWriter, done func(error)) { done(nil) }
func (j *journal) LoadSnapshot(r graft.SnapshotReader) error             { return nil }

func (j *journal) snapshot() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return append([]string(nil), j.msgs...)
}

// process is one "server": a gRPC listener hosting one node.
type process struct {
	id     string
	addr   string
	dir    string
	server *grpctransport.Server
	trans  *grpctransport.Transport
	node   *graft.Node
	fsm    *journal
}

func main() {
	dir := flag.String("dir", "", "data directory (default: a fresh temporary directory)")
	verbose := flag.Bool("v", false, "log the nodes' internals")
	flag.Parse()
	if err := run(*dir, *verbose); err != nil {
		fmt.Fprintln(os.Stderr, "graft-example:", err)
		os.Exit(1)
	}
}

func run(dir string, verbose bool) error {
	if dir == "" {
		d, err := os.MkdirTemp("", "graft-example-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	level := slog.LevelWarn
	if verbose {
		level = slog.LevelInfo
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	// Reserve three loopback ports; they become the group's configuration.
	var peers []graft.Peer
	for i := 1; i <= 3; i++ {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		peers = append(peers, graft.Peer{ID: fmt.Sprintf("n%d", i), Addr: lis.Addr().String()})
		lis.Close()
	}
	fmt.Printf("data in %s\nstarting 3 nodes: %v\n", dir, peers)
	procs := map[string]*process{}
	for _, p := range peers {
		pr, err := start(p, peers, dir, logger)
		if err != nil {
			return err
		}
		procs[p.ID] = pr
	}
	defer func() {
		for _, pr := range procs {
			pr.stop()
		}
	}()

	leader, err := waitLeader(procs, 10*time.Second)
	if err != nil {
		return err
	}
	fmt.Printf("leader elected: %s (term %d)\n", leader.id, leader.node.Status().Term)
	if err := write(procs, "hello", "from", "graft"); err != nil {
		return err
	}

	fmt.Printf("killing the leader %s\n", leader.id)
	leader.stop()
	delete(procs, leader.id)
	t0 := time.Now()
	next, err := waitLeader(procs, 10*time.Second)
	if err != nil {
		return err
	}
	fmt.Printf("new leader: %s (term %d) after %v\n", next.id, next.node.Status().Term, time.Since(t0).Round(time.Millisecond))
	if err := write(procs, "written", "while", leader.id, "was", "down"); err != nil {
		return err
	}

	fmt.Printf("restarting %s from its data directory\n", leader.id)
	var self graft.Peer
	for _, p := range peers {
		if p.ID == leader.id {
			self = p
		}
	}
	back, err := start(self, peers, dir, logger)
	if err != nil {
		return err
	}
	procs[back.id] = back
	want := next.fsm.snapshot()
	deadline := time.Now().Add(10 * time.Second)
	for len(back.fsm.snapshot()) < len(want) {
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not catch up: has %d of %d entries", back.id, len(back.fsm.snapshot()), len(want))
		}
		time.Sleep(20 * time.Millisecond)
	}
	fmt.Println("every node's state machine:")
	for _, p := range peers {
		pr := procs[p.ID]
		st := pr.node.Status()
		fmt.Printf("  %s %-9s term=%d commit=%d applied=%d  %s\n", pr.id, st.Role, st.Term, st.CommitIndex, st.AppliedIndex,
			strings.Join(pr.fsm.snapshot(), " "))
	}
	return nil
}

func start(self graft.Peer, peers []graft.Peer, dir string, logger *slog.Logger) (*process, error) {
	pdir := filepath.Join(dir, self.ID)
	if err := os.MkdirAll(pdir, 0o755); err != nil {
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
	router := transport.NewRouter()
	srv := grpctransport.NewServer(router)
	lis, err := net.Listen("tcp", self.Addr)
	if err != nil {
		logs.Close()
		meta.Close()
		return nil, err
	}
	go srv.Serve(lis)
	trans := grpctransport.New(grpctransport.DefaultOptions())
	opts := graft.DefaultOptions()
	opts.GroupID = "example"
	opts.ID = self.ID
	opts.InitialPeers = peers
	opts.ElectionTimeout = 500 * time.Millisecond
	opts.HeartbeatInterval = 50 * time.Millisecond
	opts.LogStorage = logs
	opts.MetaStorage = meta
	opts.Transport = trans
	opts.Router = router
	fsm := &journal{}
	opts.StateMachine = fsm
	opts.Logger = logger
	node, err := graft.NewNode(opts)
	if err != nil {
		srv.Stop()
		trans.Close()
		return nil, err
	}
	return &process{id: self.ID, addr: self.Addr, dir: pdir, server: srv, trans: trans, node: node, fsm: fsm}, nil
}

func (p *process) stop() {
	p.server.Stop()
	p.node.Shutdown()
	p.trans.Close()
}

func waitLeader(procs map[string]*process, timeout time.Duration) (*process, error) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		for _, p := range procs {
			if p.node.IsLeader() {
				return p, nil
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil, errors.New("no leader elected")
}

// write applies each message through whichever node leads, following
// redirects.
func write(procs map[string]*process, msgs ...string) error {
	for _, m := range msgs {
		deadline := time.Now().Add(10 * time.Second)
		for {
			l, err := waitLeader(procs, time.Until(deadline))
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			res, err := l.node.Apply(ctx, []byte(m))
			cancel()
			if err == nil {
				fmt.Printf("  applied %-8q at index %d, term %d, via %s\n", m, res.Index, res.Term, l.id)
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("apply %q: %w", m, err)
			}
		}
	}
	return nil
}
