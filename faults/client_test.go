//go:build linux

package faults

// The clients: closed-loop goroutines doing get / put / compare-and-set /
// delete on a few shared keys, recording each operation with its call and
// return times for the linearizability check; and the filler, which
// writes many unique keys fast (to make logs long and snapshots large)
// and records which were acknowledged.

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/anishathalye/porcupine"
)

const (
	clients   = 4
	opTimeout = 2 * time.Second // a client gives up on an operation: outcome unknown
)

// outcome is how an operation ended.
type outcome int

const (
	definite outcome = iota // it happened, with the output observed
	unknown                 // it may have happened, or may yet
	noEffect                // it certainly did not happen (refused, redirected to no leader, a failed read)
)

// ledgerEntry is a filler key: its value and whether its write was
// acknowledged (else its outcome is unknown).
type ledgerEntry struct {
	value string
	acked bool
}

type workload struct {
	e    *env
	keys []string
	hc   *http.Client
	quit chan struct{}
	wg   sync.WaitGroup

	acks  atomic.Int64  // acknowledged writes of the clients
	ackCh chan struct{} // a token after each acknowledged write
	fills atomic.Int64  // rounds of filling, for unique keys
	html  []byte        // the visualisation, once checked

	mu struct {
		sync.Mutex
		ops        []porcupine.Operation
		nextClient int
		ledger     map[string]ledgerEntry
		final      map[string]State // each key's value read at the end
		stopped    bool
		answers    map[string]int // "op code" → count, for the log
	}
}

func startWorkload(e *env, keys int) *workload {
	w := &workload{e: e, quit: make(chan struct{}), ackCh: make(chan struct{}, 1)}
	for i := range keys {
		w.keys = append(w.keys, fmt.Sprintf("k%02d", i))
	}
	w.hc = &http.Client{
		Transport:     &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true},
		Timeout:       opTimeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	w.mu.ledger = map[string]ledgerEntry{}
	w.mu.answers = map[string]int{}
	w.mu.nextClient = clients
	for c := range clients {
		seed := e.rng.Uint64()
		w.wg.Go(func() { w.client(c, seed) })
	}
	seed := e.rng.Uint64()
	w.wg.Go(func() { w.ledgerWriter(seed) })
	return w
}

// ledgerWriter writes new keys one after another for as long as the
// clients run, recording in the ledger which were acknowledged: at the
// end every one of those must be on every member, whatever the faults.
func (w *workload) ledgerWriter(seed uint64) {
	rng := rand.New(rand.NewPCG(seed, seed+1))
	var target *node
	for seq := 0; ; seq++ {
		select {
		case <-w.quit:
			return
		default:
		}
		members := w.e.c.members()
		if target == nil || !slices.Contains(members, target) {
			target = members[rng.IntN(len(members))]
		}
		key, value := fmt.Sprintf("ledger-%06d", seq), fmt.Sprintf("v%d-%x", seq, rng.Uint64())
		_, oc, meta := w.exec(target, Input{Op: OpPut, Key: key, Value: value})
		switch oc {
		case definite:
			w.ledger(key, value, true)
		case unknown:
			w.ledger(key, value, false)
		}
		target = w.e.c.answeredBy(porcupine.Operation{Metadata: meta})
		if oc != definite {
			select { // back off while the cluster recovers (workload pacing)
			case <-w.quit:
				return
			case <-time.After(time.Duration(10+rng.IntN(30)) * time.Millisecond):
			}
		}
	}
}

// newClientID returns a fresh client id: a client whose operation's
// outcome is unknown carries on as a new client, so that every client's
// operations stay sequential.
func (w *workload) newClientID() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	id := w.mu.nextClient
	w.mu.nextClient++
	return id
}

func (w *workload) client(id int, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, seed+1))
	seen := map[string]string{} // the last value this client saw per key
	var target *node
	for seq := 0; ; seq++ {
		select {
		case <-w.quit:
			return
		default:
		}
		key := w.keys[rng.IntN(len(w.keys))]
		in := Input{Key: key}
		switch r := rng.IntN(100); {
		case r < 45:
			in.Op = OpGet
		case r < 75:
			in.Op = OpPut
		case r < 92:
			in.Op = OpCAS
			in.Prev = seen[key]
			if in.Prev == "" || rng.IntN(4) == 0 {
				in.Prev = fmt.Sprintf("c%d-%d", rng.IntN(clients), rng.IntN(max(seq, 1)))
			}
		default:
			in.Op = OpDelete
		}
		if in.Op == OpPut || in.Op == OpCAS {
			in.Value = fmt.Sprintf("c%d-%d", id, seq)
		}
		// A client sticks to the node that last answered it (the
		// leader, after a redirect), and now and then tries another.
		members := w.e.c.members()
		if target == nil || !slices.Contains(members, target) || rng.IntN(8) == 0 {
			target = members[rng.IntN(len(members))]
		}
		op, oc := w.do(id, target, in)
		target = w.e.c.answeredBy(op)
		switch oc {
		case definite:
			if in.Op == OpGet && op.Output.(Output).Exists {
				seen[key] = op.Output.(Output).Value
			}
			if in.Op == OpPut || (in.Op == OpCAS && op.Output.(Output).OK) {
				seen[key] = in.Value
			}
		case unknown:
			id = w.newClientID()
		}
		if oc != definite {
			// Back off a little while the cluster recovers (workload pacing).
			select {
			case <-w.quit:
				return
			case <-time.After(time.Duration(10+rng.IntN(30)) * time.Millisecond):
			}
		}
	}
}

// do runs one operation against n, following redirects, and records it.
func (w *workload) do(client int, n *node, in Input) (porcupine.Operation, outcome) {
	op := porcupine.Operation{ClientId: client, Input: in, Call: w.e.now()}
	out, oc, meta := w.exec(n, in)
	op.Output, op.Metadata = out, meta
	switch oc {
	case definite:
		op.Return = w.e.now()
	case unknown:
		op.Return = Infinity
	case noEffect:
		return op, oc
	}
	w.record(op)
	if oc == definite && in.Op.IsWrite() && (in.Op != OpCAS || out.OK) {
		w.acks.Add(1)
		select {
		case w.ackCh <- struct{}{}:
		default:
		}
	}
	return op, oc
}

func (w *workload) record(op porcupine.Operation) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.mu.ops = append(w.mu.ops, op)
}

// exec sends in to n and classifies the answer.
func (w *workload) exec(n *node, in Input) (Output, outcome, string) {
	var method string
	var body []byte
	q := url.Values{}
	switch in.Op {
	case OpGet:
		method = "GET"
	case OpPut:
		method, body = "PUT", []byte(in.Value)
	case OpCAS:
		method, body = "PUT", []byte(in.Value)
		q.Set("prev", in.Prev)
	case OpDelete:
		method = "DELETE"
	}
	u := n.url(kvPath(in.Key), q)
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	via := n.id
	for hop := 0; ; hop++ {
		code, b, hdr, err := do(ctx, w.hc, method, u, body)
		answer := fmt.Sprintf("%s %d", via, code)
		if err != nil {
			answer = via + " " + errKind(err)
		}
		w.count(in.Op.String() + " " + strings.SplitN(answer, " ", 2)[1])
		switch {
		case err != nil:
			if in.Op == OpGet || refused(err) {
				return Output{}, noEffect, answer
			}
			return Output{Unknown: true}, unknown, answer
		case code == http.StatusTemporaryRedirect && hop < 3:
			u = hdr.Get("Location")
			if lu, err := url.Parse(u); err == nil {
				via += "→" + lu.Host
			}
			continue
		case code == http.StatusTemporaryRedirect:
			return Output{}, noEffect, answer
		}
		switch in.Op {
		case OpGet:
			switch code {
			case 200:
				return Output{Exists: true, Value: string(b)}, definite, answer
			case 404:
				return Output{}, definite, answer
			}
			return Output{}, noEffect, answer // a failed read has no effect
		case OpPut:
			if code == 200 {
				return Output{}, definite, answer
			}
		case OpCAS:
			switch code {
			case 200:
				return Output{OK: true}, definite, answer
			case 412:
				return Output{}, definite, answer
			}
		case OpDelete:
			switch code {
			case 200:
				return Output{Exists: true}, definite, answer
			case 404:
				return Output{}, definite, answer
			}
		}
		if notProposed(code, b) {
			return Output{}, noEffect, answer
		}
		if code == 400 || code == 413 {
			w.e.t.Errorf("faults: %s %s answered %d %s", method, u, code, trunc(b))
			return Output{}, noEffect, answer
		}
		return Output{Unknown: true}, unknown, answer
	}
}

// notProposed reports whether an error answer means the write was never
// handed to raft: no leader to redirect to, or a leadership transfer or
// membership change refusing it (409, ErrBusy).
func notProposed(code int, body []byte) bool {
	switch code {
	case http.StatusConflict:
		return true
	case http.StatusServiceUnavailable:
		s := string(body)
		return strings.Contains(s, "no leader known") || strings.Contains(s, "has not recorded its HTTP address")
	}
	return false
}

// refused reports whether err means the request was never sent.
func refused(err error) bool {
	if errors.Is(err, syscall.ECONNREFUSED) {
		return true
	}
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

func errKind(err error) string {
	switch {
	case refused(err):
		return "refused"
	case errors.Is(err, context.DeadlineExceeded), strings.Contains(err.Error(), "Timeout"):
		return "timeout"
	case errors.Is(err, syscall.ECONNRESET), strings.Contains(err.Error(), "reset"), strings.Contains(err.Error(), "EOF"):
		return "reset"
	}
	return "error"
}

func (w *workload) count(answer string) {
	w.mu.Lock()
	w.mu.answers[answer]++
	w.mu.Unlock()
}

// answers summarises the answers the clients got.
func (w *workload) answers() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	keys := make([]string, 0, len(w.mu.answers))
	for k := range w.mu.answers {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s: %d", k, w.mu.answers[k]))
	}
	return strings.Join(parts, ", ")
}

// stop stops the clients and waits for them.
func (w *workload) stop() {
	w.mu.Lock()
	stopped := w.mu.stopped
	w.mu.stopped = true
	w.mu.Unlock()
	if !stopped {
		close(w.quit)
	}
	w.wg.Wait()
}

// count returns the number of operations recorded.
func (w *workload) countOps() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.mu.ops)
}

// history returns a copy of the recorded operations.
func (w *workload) history() []porcupine.Operation {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.mu.ops)
}

// waitAcked waits until the clients have had n more writes acknowledged.
func (w *workload) waitAcked(n int64, what string) {
	w.e.t.Helper()
	want := w.acks.Load() + n
	w.e.waitFor(leaderTimeout, fmt.Sprintf("%d more acknowledged writes %s", n, what), func() (bool, string) {
		return w.acks.Load() >= want, "answers: " + w.answers()
	})
}

// nextAck waits for the next acknowledged write after the call.
func (w *workload) nextAck() {
	w.e.t.Helper()
	select {
	case <-w.ackCh: // an earlier one
	default:
	}
	select {
	case <-w.ackCh:
	case <-time.After(leaderTimeout):
		w.e.t.Fatalf("faults: no write acknowledged within %v; answers: %s", leaderTimeout, w.answers())
	}
}

// finalReads reads every key through the leader and records the reads in
// the history: the state the cluster ends in.
func (w *workload) finalReads() {
	w.e.t.Helper()
	final := map[string]State{}
	client := w.newClientID()
	for _, k := range w.keys {
		w.e.waitFor(leaderTimeout, "a final read of "+k, func() (bool, string) {
			n := w.e.c.waitLeader()
			op, oc := w.do(client, n, Input{Op: OpGet, Key: k})
			if oc != definite {
				return false, fmt.Sprint(op.Metadata)
			}
			out := op.Output.(Output)
			final[k] = State{Exists: out.Exists, Value: out.Value}
			return true, ""
		})
	}
	w.mu.Lock()
	w.mu.final = final
	w.mu.Unlock()
}

// fill writes n new keys of size random bytes each (hex, which does not
// compress) with conc writers through the leader, until n writes are
// acknowledged, and records them in the ledger.
func (w *workload) fill(n, size, conc int) {
	e := w.e
	e.t.Helper()
	round := w.fills.Add(1)
	e.event("fill: writing %d keys of %d bytes", n, size)
	start := time.Now()
	var next, acked atomic.Int64
	var wg sync.WaitGroup
	deadline := time.Now().Add(60 * time.Second)
	hc := &http.Client{Transport: w.hc.Transport, Timeout: opTimeout}
	for g := range conc {
		seed := e.rng.Uint64()
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(seed, uint64(g)))
			raw := make([]byte, size/2)
			for acked.Load() < int64(n) && time.Now().Before(deadline) {
				i := next.Add(1)
				key := fmt.Sprintf("fill-%d-%06d", round, i)
				for j := range raw {
					raw[j] = byte(rng.Uint32())
				}
				value := hex.EncodeToString(raw)
				targets := e.c.reachable(false)
				if len(targets) == 0 {
					targets = e.c.members()
				}
				target := targets[rng.IntN(len(targets))]
				code, b, _, err := do(context.Background(), hc, "PUT", target.url(kvPath(key), nil), []byte(value))
				switch {
				case err == nil && code == 200:
					acked.Add(1)
					w.ledger(key, value, true)
				case err != nil && refused(err), err == nil && notProposed(code, b):
					// never written
				default:
					w.ledger(key, value, false)
				}
				if err != nil || code != 200 {
					select { // back off while the cluster recovers (workload pacing)
					case <-time.After(20 * time.Millisecond):
					case <-w.quit:
						return
					}
				}
			}
		})
	}
	wg.Wait()
	if acked.Load() < int64(n) {
		e.t.Fatalf("faults: fill: only %d of %d writes acknowledged in 60s", acked.Load(), n)
	}
	e.event("fill: %d writes acknowledged in %v", acked.Load(), time.Since(start).Round(time.Millisecond))
}

func (w *workload) ledger(key, value string, acked bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.mu.ledger[key] = ledgerEntry{value: value, acked: acked}
}

// dump renders the history as text, in call order.
func (w *workload) dump() string {
	ops := w.history()
	slices.SortStableFunc(ops, func(a, b porcupine.Operation) int { return int(a.Call - b.Call) })
	var b strings.Builder
	for _, op := range ops {
		ret := "?"
		if op.Return != Infinity {
			ret = fmt.Sprintf("%.6f", time.Duration(op.Return).Seconds())
		}
		fmt.Fprintf(&b, "%.6f\t%s\tclient %d\t%s\t[%v]\n", time.Duration(op.Call).Seconds(), ret, op.ClientId,
			Model.DescribeOperation(op.Input, op.Output), op.Metadata)
	}
	return b.String()
}
