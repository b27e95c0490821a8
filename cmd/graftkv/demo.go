package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/graft-raft/graft"
	"github.com/graft-raft/graft/kv"
)

// demoDir is where the demo keeps its data, relative to the working
// directory; a second run reuses it.
const demoDir = "graftkv-demo"

// demoNodes are the demo's fixed ids and addresses, so that a second run
// finds its cluster again.
var demoNodes = []struct{ id, raft, http string }{
	{"n1", "127.0.0.1:7001", "127.0.0.1:8001"},
	{"n2", "127.0.0.1:7002", "127.0.0.1:8002"},
	{"n3", "127.0.0.1:7003", "127.0.0.1:8003"},
}

func demoCommand() *cobra.Command {
	var verbose bool
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run a 3-node cluster in this process, with data in ./" + demoDir + "/",
		Long: `Run a 3-node graftkv cluster in one process on loopback: raft on
127.0.0.1:7001-7003, HTTP on 127.0.0.1:8001-8003, data in ./` + demoDir + `/.
It prints the URLs and example curl commands and serves until Ctrl-C.
A second run reuses the data; delete the directory to start afresh.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			level := slog.LevelWarn
			if verbose {
				level = slog.LevelInfo
			}
			return demo(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})))
		},
	}
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "log the nodes' internals")
	return cmd
}

func demo(log *slog.Logger) error {
	_, statErr := os.Stat(demoDir)
	reused := statErr == nil
	var peers []graft.Peer
	var raftLis, httpLis []net.Listener
	closeAll := func() {
		for _, l := range append(raftLis, httpLis...) {
			l.Close()
		}
	}
	for _, n := range demoNodes {
		peers = append(peers, graft.Peer{ID: n.id, Addr: n.raft})
		for _, a := range []struct {
			what, addr string
			lis        *[]net.Listener
		}{{n.id + "'s raft", n.raft, &raftLis}, {n.id + "'s HTTP", n.http, &httpLis}} {
			l, err := listen(a.what, a.addr)
			if err != nil {
				closeAll()
				return fmt.Errorf("%w\nthe demo needs ports 7001-7003 and 8001-8003 on 127.0.0.1", err)
			}
			*a.lis = append(*a.lis, l)
		}
	}
	p, err := newProcess(log, 0, nil, security{})
	if err != nil {
		closeAll()
		return err
	}
	for _, l := range raftLis {
		p.serveRaft(l) // one gRPC server for the three nodes
	}
	for i, n := range demoNodes {
		cfg := kv.DefaultConfig()
		cfg.ID, cfg.HTTPAddr, cfg.Peers = n.id, n.http, peers
		cfg.DataDir = filepath.Join(demoDir, n.id)
		cfg.Logger = log
		if _, err := p.startNode(cfg, httpLis[i]); err != nil {
			for _, l := range httpLis[i:] {
				l.Close()
			}
			_ = p.shutdown(false)
			return fmt.Errorf("starting %s: %w", n.id, err)
		}
	}
	if reused {
		fmt.Printf("graftkv demo: 3 nodes in this process, reusing the data in ./%s/ (delete it to start afresh)\n", demoDir)
	} else {
		fmt.Printf("graftkv demo: 3 nodes in this process, data in ./%s/ (a second run reuses it)\n", demoDir)
	}
	leader, follower, err := waitForCluster(p, 15*time.Second)
	if err != nil {
		fmt.Fprintln(os.Stderr, "graftkv demo: warning:", err)
	}
	printDemo(leader, follower)
	failed := p.wait()
	fmt.Println("\nshutting down...")
	return errors.Join(failed, p.shutdown(false))
}

// waitForCluster waits until a leader is elected and every node's HTTP
// address is recorded, so that redirects work, and returns the leader's
// and a follower's HTTP addresses.
func waitForCluster(p *process, timeout time.Duration) (leader, follower string, err error) {
	deadline := time.Now().Add(timeout)
	for {
		leader, follower = "", ""
		ready := true
		for i, n := range p.nodes {
			st := n.srv.Status()
			if st.Role == "leader" {
				leader = demoNodes[i].http
			} else {
				follower = demoNodes[i].http
			}
			if st.LeaderHTTP == "" || len(n.srv.FSM().Members()) < len(demoNodes) {
				ready = false
			}
		}
		if ready && leader != "" {
			return leader, follower, nil
		}
		if time.Now().After(deadline) {
			if leader == "" {
				leader = demoNodes[0].http
			}
			if follower == "" {
				follower = demoNodes[1].http
			}
			return leader, follower, errors.New("the cluster is not ready yet (no leader, or HTTP addresses not recorded); requests may answer 503 for now")
		}
		time.Sleep(50 * time.Millisecond) // polling the cluster's state, not synchronising
	}
}

func printDemo(leader, follower string) {
	var b strings.Builder
	b.WriteString("\n")
	for _, n := range demoNodes {
		role := ""
		if n.http == leader {
			role = "  (leader)"
		}
		fmt.Fprintf(&b, "  %s  http://%s/  raft %s%s\n", n.id, n.http, n.raft, role)
	}
	fmt.Fprintf(&b, `
Try it (writes and reads go to the leader; followers answer 307 and -L follows):

  curl -L -X PUT --data-binary 'world' http://%[1]s/v1/kv/hello
  curl -L http://%[2]s/v1/kv/hello
  curl 'http://%[2]s/v1/kv/hello?consistency=stale'
  curl -L -X PUT --data-binary 'there' 'http://%[1]s/v1/kv/hello?prev=world'
  curl -L -X PUT --data-binary 'first' 'http://%[1]s/v1/kv/new?prev-exist=false'
  curl -L -X DELETE http://%[2]s/v1/kv/hello
  curl http://%[2]s/v1/status
  curl -X POST http://%[1]s/v1/admin/snapshot
  curl -s http://%[1]s/metrics | grep '^graftkv_'

The first GET asks a follower, which redirects to the leader; the second
reads the follower's own state. ?prev= is compare-and-set, ?prev-exist=false
create only (both answer 412 when the condition fails). The cluster's status
page is http://%[1]s/ (any node's works).

Ctrl-C stops the cluster.
`, leader, follower)
	fmt.Print(b.String())
}
