// Package faults is graft's fault-injection suite: it breaks real graftkv
// clusters on purpose — partitions, pauses, crashes, damaged and full
// disks, membership changes under load — while clients work, and checks
// that what the clients saw is linearizable and that nothing acknowledged
// was lost.
//
// The package holds two reusable parts, Proxy (a TCP proxy that blocks,
// delays, throttles and resets connections) and Model (a porcupine model
// of a key-value store with unknown outcomes and compare-and-set); its
// tests are the harness and the scenarios.
//
// # Running
//
//	go test ./faults                            # every scenario once, about two minutes (make test runs it)
//	go test ./faults -run '^TestKill9All$' -faults.seed=N   # one seed again
//	faults/soak.sh 2h 20                        # 20 seeds of every scenario, then a table
//
// The harness and the scenarios are Linux only (signals, tmpfs, /proc).
//
// TestMain builds ./cmd/graftkv once, without the race detector whatever
// the test binary has (the nodes are processes of their own), or takes
// -faults.bin (a patched build, to see the suite catch it). Flags:
//
//	-faults.seed=N          the seed of every run (default: a new one per run, printed)
//	-faults.soak=D          TestSoak runs every scenario over new seeds for D
//	-faults.soak-seeds=N    ... and at most N rounds
//	-faults.scenarios=RE    TestSoak runs only the scenarios matching RE
//	-faults.scale=F         multiply the scenarios' phase durations
//	-faults.results=DIR     where failed runs leave their evidence (default results/)
//	-faults.keep            leave the evidence of passing runs too
//	-faults.logs            print the nodes' logs at the end of every run
//	-faults.bin=PATH        run this graftkv binary
//
// A seed fixes the fault schedule and the clients' choices, not the
// timing of processes, so a run again with the same seed replays the same
// faults, not necessarily the same interleaving.
//
// # The harness
//
// A run starts 3 or 5 `graftkv serve` processes on loopback with data dirs
// under a temporary directory, a 300ms election timeout and a snapshot
// every 500 entries. Every directed link has its own Proxy: node a dials
// node b through proxy(a, b), given to a as `--resolve b=ADDR`, so a cut,
// delay or reset between two nodes touches only their connections. A
// gRPC connection carries requests one way and answers the other, so
// cutting what a sends to b blocks the up direction of proxy(a, b) and the
// down direction of proxy(b, a). Partitions are built from links: isolate
// one node, two random halves, a bridge (two pairs joined through a fifth
// node), a majorities ring (each of five nodes sees only its two
// neighbours). Process faults are SIGKILL, SIGSTOP/SIGCONT and restarts;
// disk faults are applied to a stopped node's files (a flipped byte in a
// snapshot file, a torn or cut log tail, the vote file removed) or fill a
// tmpfs that the test mounts as a node's data dir (root only; otherwise
// those scenarios skip and say why).
//
// Four closed-loop clients put, get (linearizable), compare-and-set and
// delete sixteen shared keys through any node, following redirects, and
// record each operation's call and return times. An operation without a
// definite answer (a timeout, a reset connection, a 5xx after the write
// may have been proposed) is recorded with an unknown outcome: it may
// take effect at any later time or never. A fifth client writes new keys
// one after another (the ledger), and scenarios that need long logs or
// large snapshots write many more (the filler).
//
// # The checks
//
// After the faults the run heals everything, restarts what is down, reads
// every shared key through the leader, and checks:
//
//   - at most one leader per term, from every node's /v1/status polled
//     every 50ms during the run;
//   - every member converges: each has applied the leader's commit index,
//     and stale reads of every key on every member agree;
//   - no acknowledged write is lost: every acknowledged ledger and filler
//     write is on every member, and every shared key ends as the effect
//     of a write no acknowledged write followed;
//   - the history is linearizable (porcupine, partitioned by key);
//   - no leftovers: no temp/ or stray file in any snapshot directory, no
//     *.tmp or half-loaded database, and every snapshot whole (its files
//     match the sizes and SHA-256 sums of its meta);
//   - no node panicked; and each scenario's own property (nothing sent to
//     an isolated old leader succeeds, no term grows during a one-way
//     cut, a damaged snapshot is never loaded, a torn tail is repaired,
//     a lagging or new node catches up through a snapshot).
//
// A failed run prints its seed and leaves in results/<test>-<seed>/ the
// history (history.txt and porcupine's history.html with the faults
// annotated), the fault events, the status samples, and every node's data
// dir and logs.
package faults
