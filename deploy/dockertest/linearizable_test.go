package dockertest

import (
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// regInput is one operation on a register: a put of value, or a get.
type regInput struct {
	put   bool
	key   string
	value string
}

// registerModel is a set of registers, one per key, each starting empty
// (a get of a missing key returns ""). The same model as the root
// package's TestReadIndexLinearizable.
var registerModel = porcupine.Model{
	Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		for _, op := range h {
			k := op.Input.(regInput).key
			byKey[k] = append(byKey[k], op)
		}
		var out [][]porcupine.Operation
		for _, ops := range byKey {
			out = append(out, ops)
		}
		return out
	},
	Init: func() any { return "" },
	Step: func(state, input, output any) (bool, any) {
		in := input.(regInput)
		if in.put {
			return true, in.value
		}
		return output.(string) == state.(string), state
	},
	DescribeOperation: func(input, output any) string {
		in := input.(regInput)
		if in.put {
			return fmt.Sprintf("put(%s, %s)", in.key, in.value)
		}
		return fmt.Sprintf("get(%s) -> %q", in.key, output)
	},
}

// TestRegisterModel checks the checker: porcupine with registerModel
// accepts a linearizable history, one with a put of unknown outcome seen
// late, and rejects a stale read and a lost acknowledged put.
func TestRegisterModel(t *testing.T) {
	put := func(v string, call, ret int64) porcupine.Operation {
		return porcupine.Operation{ClientId: 0, Input: regInput{put: true, key: "k", value: v}, Call: call, Return: ret}
	}
	get := func(v string, call, ret int64) porcupine.Operation {
		return porcupine.Operation{ClientId: 1, Input: regInput{key: "k"}, Output: v, Call: call, Return: ret}
	}
	for _, tc := range []struct {
		name string
		h    []porcupine.Operation
		want bool // linearizable
	}{
		{"in order", []porcupine.Operation{put("a", 0, 10), get("a", 11, 20), put("b", 21, 30), get("b", 31, 40)}, true},
		{"overlapping", []porcupine.Operation{put("a", 0, 10), get("", 5, 8), get("a", 9, 20)}, true},
		{"unknown outcome seen late", []porcupine.Operation{put("a", 0, math.MaxInt64), get("", 5, 8), get("a", 100, 110)}, true},
		{"stale read", []porcupine.Operation{put("a", 0, 10), put("b", 11, 20), get("a", 21, 30)}, false},
		{"lost acknowledged put", []porcupine.Operation{put("a", 0, 10), get("", 11, 20)}, false},
	} {
		if got := porcupine.CheckOperations(registerModel, tc.h); got != tc.want {
			t.Errorf("%s: porcupine says linearizable=%v, want %v", tc.name, got, tc.want)
		}
	}
}

// history records client operations for porcupine.
type history struct {
	start time.Time
	mu    struct {
		sync.Mutex
		ops     []porcupine.Operation
		okPuts  []int64 // when acknowledged puts returned
		unknown int
	}
}

func (h *history) now() int64 { return int64(time.Since(h.start)) }

func (h *history) record(op porcupine.Operation) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.mu.ops = append(h.mu.ops, op)
	if op.Input.(regInput).put {
		if op.Return == math.MaxInt64 {
			h.mu.unknown++
		} else {
			h.mu.okPuts = append(h.mu.okPuts, op.Return)
		}
	}
}

func (h *history) counts() (ops, okPuts, unknown int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.mu.ops), len(h.mu.okPuts), h.mu.unknown
}

// longestGap is the longest time within [from, to] without an
// acknowledged put.
func (h *history) longestGap(from, to time.Time) time.Duration {
	lo, hi := int64(from.Sub(h.start)), int64(to.Sub(h.start))
	h.mu.Lock()
	acks := slices.Clone(h.mu.okPuts)
	h.mu.Unlock()
	slices.Sort(acks)
	prev, gap := lo, int64(0)
	for _, a := range acks {
		if a < lo || a > hi {
			continue
		}
		gap, prev = max(gap, a-prev), a
	}
	return time.Duration(max(gap, hi-prev))
}

// waitPuts waits for n more acknowledged puts.
func (h *history) waitPuts(t *testing.T, n int, what string) {
	t.Helper()
	_, base, _ := h.counts()
	waitFor(t, leaderTimeout, fmt.Sprintf("%d acknowledged puts %s", n, what), func() (bool, string) {
		ops, ok, unknown := h.counts()
		return ok >= base+n, fmt.Sprintf("%d operations, %d puts acknowledged, %d unknown", ops, ok, unknown)
	})
}

// client does puts and linearizable gets of keys on random nodes,
// following redirects, until stop is closed. A put that got no answer may
// take effect at any later time (Return = MaxInt64); one never sent, and a
// get without an answer, has no effect and is left out. Like a client with
// a health check, it avoids a node for a second after a request to it
// failed without an answer (a frozen host would hold every request for
// the whole timeout).
func (c *cluster) client(hc *http.Client, h *history, id int, seed uint64, keys int, stop <-chan struct{}) {
	rng := rand.New(rand.NewPCG(seed, uint64(id)))
	avoid := map[*node]time.Time{}
	for j := 0; ; j++ {
		select {
		case <-stop:
			return
		default:
		}
		var ok []*node
		for _, n := range c.nodes {
			if time.Now().After(avoid[n]) {
				ok = append(ok, n)
			}
		}
		if len(ok) == 0 {
			ok = c.nodes
		}
		n := ok[rng.IntN(len(ok))]
		key := fmt.Sprintf("k%d", rng.IntN(keys))
		if rng.IntN(2) == 0 {
			value := fmt.Sprintf("c%d-%d", id, j)
			op := porcupine.Operation{ClientId: id, Input: regInput{put: true, key: key, value: value}, Call: h.now()}
			code, _, err := do(hc, "PUT", n.url(kvPath(key), nil), []byte(value))
			if err != nil {
				avoid[n] = time.Now().Add(time.Second)
			}
			switch {
			case err == nil && code == 200:
				op.Return = h.now()
			case err != nil && notSent(err):
				continue
			default:
				op.Return = math.MaxInt64
			}
			h.record(op)
		} else {
			op := porcupine.Operation{ClientId: id, Input: regInput{key: key}, Call: h.now()}
			code, body, err := do(hc, "GET", n.url(kvPath(key), nil), nil)
			if err != nil {
				avoid[n] = time.Now().Add(time.Second)
			}
			switch {
			case err == nil && code == 200:
				op.Output = string(body)
			case err == nil && code == 404:
				op.Output = ""
			default:
				continue
			}
			op.Return = h.now()
			h.record(op)
		}
		if rng.IntN(4) == 0 {
			time.Sleep(time.Duration(rng.IntN(10)) * time.Millisecond) // think time, so clients interleave
		}
	}
}

// clientTimeout bounds a request of TestFaultsLinearizable's clients;
// what takes longer has an unknown outcome.
const clientTimeout = 2 * time.Second

// holdFault is how long each fault of TestFaultsLinearizable lasts at
// least: three election timeouts.
const holdFault = 3 * time.Second

// fault is one kind of failure Docker injects, and its repair.
type fault struct {
	name   string
	inject func(*node)
	heal   func(*node)
}

var faults = []fault{
	{"docker kill (SIGKILL)", (*node).kill, (*node).restart},
	{"docker pause", (*node).pause, (*node).unpause},
	{"docker network disconnect", (*node).isolate, (*node).reconnect},
}

// TestFaultsLinearizable runs clients doing puts and linearizable gets on
// a few keys through every node while Docker kills (SIGKILL), freezes
// (pause) and cuts off (network disconnect) the leader and a follower, in
// a seeded order; the clients keep the cut-off node reachable. The history
// is checked with porcupine, final linearizable reads included, and the
// replicas' local states must agree with them.
func TestFaultsLinearizable(t *testing.T) {
	c := newCluster(t, clusterOptions{})
	seed := *flagSeed
	if seed == 0 {
		seed = rand.Uint64()
	}
	t.Logf("seed %d (replay the schedule with -docker.seed=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	c.startAll()
	c.waitLeader()

	const keys = 40 // many keys keep each porcupine partition small enough to check quickly
	h := &history{start: time.Now()}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	hc := &http.Client{Transport: c.tr, Timeout: clientTimeout}
	for id := range 4 {
		s := rng.Uint64()
		wg.Go(func() { c.client(hc, h, id, s, keys, stop) })
	}
	stopClients := sync.OnceFunc(func() { close(stop); wg.Wait() })
	t.Cleanup(stopClients)
	h.waitPuts(t, 30, "before any fault")

	type step struct {
		f      fault
		leader bool
	}
	var steps []step
	for _, f := range faults {
		steps = append(steps, step{f, true}, step{f, false})
	}
	rng.Shuffle(len(steps), func(i, j int) { steps[i], steps[j] = steps[j], steps[i] })
	for i, s := range steps {
		l := c.waitLeader()
		target, role := l, "leader"
		if !s.leader {
			fs := c.followers(l)
			target, role = fs[rng.IntN(len(fs))], "follower"
		}
		t.Logf("step %d: %s of the %s %s", i+1, s.f.name, role, target.id)
		start := time.Now()
		s.f.inject(target)
		if s.leader {
			nl := c.waitLeader()
			t.Logf("step %d: %s leads %v after the fault", i+1, nl.id, time.Since(start).Round(time.Millisecond))
			if target.state() == "isolated" {
				// Clients still reach the cut-off leader: it must step
				// down (check-quorum), not keep answering as leader.
				waitFor(t, leaderTimeout, target.id+", cut off, to step down", func() (bool, string) {
					st, err := target.status()
					if err != nil {
						return false, err.Error()
					}
					return !st.isLeader(), fmt.Sprintf("%s is %s in term %d", target.id, st.Role, st.Term)
				})
			}
		}
		h.waitPuts(t, 20, fmt.Sprintf("with %s's fault in place", target.id))
		// The fault lasts a few election timeouts, long enough for a
		// cut-off node's pre-votes and for a frozen leader's lease to
		// lapse: the scenario's length, not a wait for a condition.
		time.Sleep(time.Until(start.Add(holdFault)))
		healed := time.Now()
		s.f.heal(target)
		c.waitCaughtUp()
		h.waitPuts(t, 10, "after the repair")
		t.Logf("step %d: fault held %v, repaired and caught up in %v; longest time without an acknowledged put: %v", i+1,
			healed.Sub(start).Round(time.Millisecond), time.Since(healed).Round(time.Millisecond),
			h.longestGap(start, time.Now()).Round(time.Millisecond))
	}
	stopClients()

	// Final linearizable reads of every key, part of the history.
	l := c.waitLeader()
	c.waitCaughtUp()
	final := map[string]string{}
	for k := range keys {
		key := fmt.Sprintf("k%d", k)
		op := porcupine.Operation{ClientId: 100, Input: regInput{key: key}, Call: h.now()}
		code, body, err := do(c.follow, "GET", l.url(kvPath(key), nil), nil)
		if err != nil || (code != 200 && code != 404) {
			t.Fatalf("final read of %s: %d %s %v", key, code, trunc(body), err)
		}
		if code == 200 {
			final[key] = string(body)
		}
		op.Output, op.Return = final[key], h.now()
		h.record(op)
	}
	ops, okPuts, unknown := h.counts()
	h.mu.Lock()
	hist := h.mu.ops
	h.mu.Unlock()
	start := time.Now()
	res, info := porcupine.CheckOperationsVerbose(registerModel, hist, 2*time.Minute)
	t.Logf("porcupine: %d operations (%d puts acknowledged, %d with unknown outcome): %s in %v",
		ops, okPuts, unknown, res, time.Since(start).Round(time.Millisecond))
	if res != porcupine.Ok {
		path := filepath.Join(os.TempDir(), fmt.Sprintf("graft-dockertest-%d.html", seed))
		if err := porcupine.VisualizePath(registerModel, info, path); err == nil {
			t.Logf("visualisation: %s", path)
		}
		t.Fatalf("the history is not linearizable (%s); seed %d", res, seed)
	}

	// Every replica holds what the final reads returned.
	var names []string
	for k := range keys {
		names = append(names, fmt.Sprintf("k%d", k))
	}
	waitFor(t, catchUpTime, "every node's local state to match the final reads", func() (bool, string) {
		vals, err := c.staleValues(c.nodes, names)
		if err != nil {
			return false, err.Error()
		}
		for i, n := range c.nodes {
			for _, k := range names {
				if vals[i][k] != final[k] {
					return false, fmt.Sprintf("%s has %s=%q, the final read %q", n.id, k, vals[i][k], final[k])
				}
			}
		}
		return true, ""
	})
}
