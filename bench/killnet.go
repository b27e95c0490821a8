package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/graft-raft/graft"
	"github.com/graft-raft/graft/storage/metafile"
	"github.com/graft-raft/graft/storage/segment"
	"github.com/graft-raft/graft/transport"
	grpctransport "github.com/graft-raft/graft/transport/grpc"
	"github.com/graft-raft/graft/vfs"
	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
)

// errKilled is what a killed node's network returns.
var errKilled = errors.New("bench: node killed")

// cutNet is one node's network: its listener and every connection it
// accepted or dialled. kill closes them all at once and refuses every
// later accept and dial, which is what peers see of a process killed with
// SIGKILL: its sockets close (the kernel sends FIN or RST) and its port
// refuses connections, before the process could say or do anything else.
type cutNet struct {
	mu    sync.Mutex
	dead  bool
	lis   net.Listener
	conns map[*cutConn]struct{}
}

func newCutNet() *cutNet { return &cutNet{conns: map[*cutConn]struct{}{}} }

// listen opens the node's loopback listener.
func (c *cutNet) listen() (net.Listener, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.lis = lis
	c.mu.Unlock()
	return cutListener{lis, c}, nil
}

// dial connects to addr on behalf of the node.
func (c *cutNet) dial(ctx context.Context, addr string) (net.Conn, error) {
	c.mu.Lock()
	dead := c.dead
	c.mu.Unlock()
	if dead {
		return nil, errKilled
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return c.track(conn)
}

func (c *cutNet) track(conn net.Conn) (net.Conn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead {
		conn.Close()
		return nil, errKilled
	}
	cc := &cutConn{Conn: conn, net: c}
	c.conns[cc] = struct{}{}
	return cc, nil
}

// kill closes the listener and every connection, and refuses every later
// one.
func (c *cutNet) kill() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dead = true
	if c.lis != nil {
		c.lis.Close()
	}
	for cc := range c.conns {
		cc.Conn.Close()
	}
	clear(c.conns)
}

type cutListener struct {
	net.Listener
	net *cutNet
}

func (l cutListener) Accept() (net.Conn, error) {
	conn, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return l.net.track(conn)
}

// Close closes the listener; closing it again (after kill) is not an
// error.
func (l cutListener) Close() error {
	if err := l.Listener.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		return err
	}
	return nil
}

type cutConn struct {
	net.Conn
	net *cutNet
}

func (c *cutConn) Close() error {
	c.net.mu.Lock()
	delete(c.net.conns, c)
	c.net.mu.Unlock()
	return c.Conn.Close()
}

// cutStream is a hashicorp/raft StreamLayer over a cutNet, the same as
// raft.NewTCPTransport's TCP stream layer except that it can be killed.
type cutStream struct {
	net.Listener
	net *cutNet
}

func (s cutStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return s.net.dial(ctx, string(addr))
}

// startGraftWith starts a 3-node graft group on loopback (the wiring of
// every graft cluster the writes, reads and failover workloads run: a
// segment log and a meta file per node under dir, the gRPC transport), after
// edit (if not nil) changed each node's Options, and waits for a leader
// that has committed an entry. With nets, the
// nodes listen and dial through a cutNet each, returned in node order, so
// that a node can be killed.
func startGraftWith(dir string, tune graftTuning, edit func(*graft.Options), nets bool) (c *graftCluster, cuts []*cutNet, err error) {
	c = &graftCluster{}
	defer func() {
		if err != nil {
			c.close()
		}
	}()
	var peers []graft.Peer
	var listeners []net.Listener
	for i := 1; i <= 3; i++ {
		var lis net.Listener
		var err error
		if nets {
			cut := newCutNet()
			cuts = append(cuts, cut)
			lis, err = cut.listen()
		} else {
			lis, err = net.Listen("tcp", "127.0.0.1:0")
		}
		if err != nil {
			for _, l := range listeners {
				l.Close()
			}
			return c, nil, err
		}
		listeners = append(listeners, lis)
		peers = append(peers, graft.Peer{ID: fmt.Sprintf("n%d", i), Addr: lis.Addr().String()})
	}
	for i, p := range peers {
		pdir := filepath.Join(dir, p.ID)
		if err := os.MkdirAll(pdir, 0o755); err != nil {
			return c, nil, err
		}
		logs, err := segment.Open(vfs.Default, filepath.Join(pdir, "log"), segment.Options{Preallocate: tune.preallocate})
		if err != nil {
			return c, nil, err
		}
		meta, err := metafile.Open(vfs.Default, pdir)
		if err != nil {
			logs.Close()
			return c, nil, err
		}
		router := transport.NewRouter()
		srv := grpctransport.NewServer(router)
		go srv.Serve(listeners[i])
		topts := grpctransport.DefaultOptions()
		if nets {
			topts.DialOptions = append(topts.DialOptions, grpc.WithContextDialer(cuts[i].dial))
		}
		trans := grpctransport.New(topts)
		opts := graft.DefaultOptions()
		opts.GroupID = "bench"
		opts.ID = p.ID
		opts.InitialPeers = peers
		if tune.maxInflightAppends > 0 {
			opts.MaxInflightAppends = tune.maxInflightAppends
		}
		if tune.maxAppendEntries > 0 {
			opts.MaxAppendEntries = tune.maxAppendEntries
		}
		if edit != nil {
			edit(&opts)
		}
		opts.LogStorage = countingLog{logs, &c.ctr}
		opts.MetaStorage = meta
		opts.Transport = countingTransport{trans, &c.ctr}
		opts.Router = router
		fsm := &graftCounter{}
		opts.StateMachine = fsm
		node, err := graft.NewNode(opts)
		if err != nil {
			srv.Stop()
			trans.Close()
			return c, nil, err
		}
		c.procs = append(c.procs, &graftProc{server: srv, trans: trans, node: node, fsm: fsm})
	}
	err = pollUntil(20*time.Second, func() bool {
		for _, p := range c.procs {
			if p.node.IsLeader() {
				c.leader, c.lfsm = p.node, p.fsm
				return true
			}
		}
		return false
	})
	if err != nil {
		return c, nil, fmt.Errorf("graft: no leader elected: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.leader.Apply(ctx, []byte("ready")); err != nil {
		return c, nil, fmt.Errorf("graft: first apply: %w", err)
	}
	return c, cuts, nil
}

// startHashicorpWith starts the 3-node hashicorp/raft cluster every
// workload but snapshot runs (set up as startHashicorp describes), after
// edit (if not nil) changed each node's Config; with nets, each node's TCP stream layer is on a cutNet (returned
// in node order) so that a node can be killed.
func startHashicorpWith(dir string, tune hcTuning, edit func(*raft.Config), nets bool) (c *hcCluster, cuts []*cutNet, err error) {
	c = &hcCluster{}
	defer func() {
		if err != nil {
			c.close()
		}
	}()
	var servers []raft.Server
	for i := 1; i <= 3; i++ {
		pdir := filepath.Join(dir, fmt.Sprintf("n%d", i))
		if err := os.MkdirAll(pdir, 0o755); err != nil {
			return c, nil, err
		}
		store, err := openHCStore(pdir, tune)
		if err != nil {
			return c, nil, err
		}
		var trans *raft.NetworkTransport
		if nets {
			cut := newCutNet()
			lis, err := cut.listen()
			if err != nil {
				store.Close()
				return c, nil, err
			}
			cuts = append(cuts, cut)
			trans = raft.NewNetworkTransport(cutStream{lis, cut}, 3, 10*time.Second, io.Discard)
		} else if trans, err = raft.NewTCPTransport("127.0.0.1:0", nil, 3, 10*time.Second, io.Discard); err != nil {
			store.Close()
			return c, nil, err
		}
		c.nodes = append(c.nodes, &hcNode{trans: trans, store: store, fsm: &hcCounter{}})
		servers = append(servers, raft.Server{ID: raft.ServerID(fmt.Sprintf("n%d", i)), Address: trans.LocalAddr()})
	}
	for i, n := range c.nodes {
		cfg := raft.DefaultConfig()
		cfg.LocalID = servers[i].ID
		cfg.BatchApplyCh = true
		cfg.MaxAppendEntries = 1024
		cfg.SnapshotThreshold = 1 << 62
		cfg.SnapshotInterval = time.Hour
		cfg.LogOutput = io.Discard
		if edit != nil {
			edit(cfg)
		}
		snaps, err := raft.NewFileSnapshotStore(filepath.Join(dir, string(servers[i].ID)), 1, io.Discard)
		if err != nil {
			return c, nil, err
		}
		var logs raft.LogStore = countingLogStore{n.store, &c.ctr}
		if tune.logCache > 0 {
			if logs, err = raft.NewLogCache(tune.logCache, logs); err != nil {
				return c, nil, err
			}
		}
		n.raft, err = raft.NewRaft(cfg, n.fsm, logs, n.store, snaps, n.trans)
		if err != nil {
			return c, nil, err
		}
	}
	if err := c.nodes[0].raft.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil {
		return c, nil, fmt.Errorf("hashicorp: bootstrap: %w", err)
	}
	err = pollUntil(20*time.Second, func() bool {
		for _, n := range c.nodes {
			if n.raft.State() == raft.Leader {
				c.leader = n
				return true
			}
		}
		return false
	})
	if err != nil {
		return c, nil, fmt.Errorf("hashicorp: no leader elected: %w", err)
	}
	if err := c.leader.raft.Apply([]byte("ready"), 10*time.Second).Error(); err != nil {
		return c, nil, fmt.Errorf("hashicorp: first apply: %w", err)
	}
	return c, cuts, nil
}

// pollUntil calls cond every 2 ms until it returns true, or fails once
// timeout has passed.
func pollUntil(timeout time.Duration, cond func() bool) error {
	return pollEvery(2*time.Millisecond, timeout, cond)
}
