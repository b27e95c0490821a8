package memory

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/graft-raft/graft/transport"
)

// Errors returned by the Network. Test with errors.Is.
var (
	// ErrAddrInUse reports Listen on an address that already has a
	// listener.
	ErrAddrInUse = errors.New("memory: address in use")
)

// Link is a directed link from one address to another.
type Link struct {
	From, To string
}

// LinkStats counts the messages a directed link carried. Requests count on
// the link from caller to callee, responses on the link back.
type LinkStats struct {
	// Sent counts messages offered to the link, including duplicate
	// copies.
	Sent uint64
	// Delivered counts messages handed to the receiver: a handler
	// invoked, a response returned to the caller.
	Delivered uint64
	// Dropped counts messages lost: to the drop fault, a blocked link, or
	// a destination that went down.
	Dropped uint64
	// Duplicated counts extra copies made by the duplicate fault.
	Duplicated uint64
	// Reordered counts messages held back by the reorder fault.
	Reordered uint64
	// FileBytes counts GetFile data bytes delivered over the link (the
	// link from the serving process to the reader).
	FileBytes uint64
}

// Network is an in-process network of processes known by address. It is
// safe for concurrent use. Close it at the end of a test.
//
// Lock order: a pipeline's mutex before Network.mu; Network.mu is never
// held while calling a handler or taking another lock.
type Network struct {
	// ctx is cancelled by Close; every Endpoint's context derives from it.
	ctx    context.Context
	cancel context.CancelFunc
	// wg tracks every goroutine the Network starts.
	wg sync.WaitGroup

	mu struct {
		sync.Mutex
		closed       bool
		rng          *rand.Rand
		endpoints    map[string]*Endpoint
		faults       Faults
		linkFaults   map[Link]Faults
		disconnected map[string]bool
		cut          map[Link]bool
		partition    map[string]int // address → group; nil when healed
		stats        map[Link]*LinkStats
		pipes        map[*pipeline]struct{}
		fileHook     func(from, to string, n int)
	}
}

// NewNetwork returns an empty, fault-free Network whose random faults are
// drawn from a generator seeded with seed. Log the seed in tests that use
// random faults, so a failure can be replayed.
func NewNetwork(seed int64) *Network {
	n := &Network{}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	n.mu.rng = rand.New(rand.NewPCG(uint64(seed), uint64(seed)^0x9e3779b97f4a7c15))
	n.mu.endpoints = make(map[string]*Endpoint)
	n.mu.linkFaults = make(map[Link]Faults)
	n.mu.disconnected = make(map[string]bool)
	n.mu.cut = make(map[Link]bool)
	n.mu.stats = make(map[Link]*LinkStats)
	n.mu.pipes = make(map[*pipeline]struct{})
	return n
}

// Endpoint is a process listening on a Network: requests to its address
// are routed through its Router. It is safe for concurrent use.
type Endpoint struct {
	n      *Network
	addr   string
	router *transport.Router
	// ctx is cancelled when the endpoint stops listening; handlers get
	// contexts derived from it.
	ctx    context.Context
	cancel context.CancelFunc
}

// Addr returns the address the Endpoint listens on.
func (e *Endpoint) Addr() string { return e.addr }

// Close stops listening, like Network.Unlisten(e.Addr()), if e is still
// the address's listener.
func (e *Endpoint) Close() error {
	e.n.unlisten(e)
	return nil
}

// down is closed once the endpoint stops listening.
func (e *Endpoint) down() <-chan struct{} { return e.ctx.Done() }

// Listen registers router as the process at addr. It fails with
// ErrAddrInUse if addr already has a listener, and with transport.ErrClosed
// after Close. After Unlisten, the address can be listened on again (a
// restarted process).
func (n *Network) Listen(addr string, router *transport.Router) (*Endpoint, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.mu.closed {
		return nil, fmt.Errorf("memory: listen %s: %w", addr, transport.ErrClosed)
	}
	if _, ok := n.mu.endpoints[addr]; ok {
		return nil, fmt.Errorf("memory: listen %s: %w", addr, ErrAddrInUse)
	}
	e := &Endpoint{n: n, addr: addr, router: router}
	e.ctx, e.cancel = context.WithCancel(n.ctx)
	n.mu.endpoints[addr] = e
	return e, nil
}

// Unlisten models the crash of the process at addr: it stops listening,
// calls to and from it in progress fail with transport.ErrUnreachable, its
// pipelines (either end) break, and the contexts of its running handlers
// are cancelled. It is a no-op if nothing listens at addr.
func (n *Network) Unlisten(addr string) {
	n.mu.Lock()
	e := n.mu.endpoints[addr]
	n.mu.Unlock()
	if e != nil {
		n.unlisten(e)
	}
}

func (n *Network) unlisten(e *Endpoint) {
	n.mu.Lock()
	if n.mu.endpoints[e.addr] != e {
		n.mu.Unlock()
		return
	}
	delete(n.mu.endpoints, e.addr)
	var broken []*pipeline
	for p := range n.mu.pipes {
		if p.dst == e || p.src == e {
			broken = append(broken, p)
		}
	}
	n.mu.Unlock()
	e.cancel()
	err := fmt.Errorf("memory: %s went down: %w", e.addr, transport.ErrUnreachable)
	for _, p := range broken {
		p.reset(err)
	}
}

// endpoint returns the listener at addr, or nil.
func (n *Network) endpoint(addr string) *Endpoint {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.mu.endpoints[addr]
}

// Transport returns the client side of the process at address from: the
// messages it sends travel the links from→to. from need not be listening.
// Each call returns a new Transport; Close it when the process stops.
func (n *Network) Transport(from string) *Transport {
	return &Transport{n: n, from: from, closed: make(chan struct{})}
}

// Disconnect isolates addr: every message to or from it is lost until
// Reconnect.
func (n *Network) Disconnect(addr string) {
	n.mu.Lock()
	n.mu.disconnected[addr] = true
	n.mu.Unlock()
}

// Reconnect undoes Disconnect(addr).
func (n *Network) Reconnect(addr string) {
	n.mu.Lock()
	delete(n.mu.disconnected, addr)
	n.mu.Unlock()
}

// Partition splits the network: addresses in different groups cannot
// reach each other. Addresses in no group form one more group of their
// own. It replaces any earlier partition.
func (n *Network) Partition(groups ...[]string) {
	p := make(map[string]int)
	for i, g := range groups {
		for _, addr := range g {
			p[addr] = i
		}
	}
	n.mu.Lock()
	n.mu.partition = p
	n.mu.Unlock()
}

// Heal removes the partition.
func (n *Network) Heal() {
	n.mu.Lock()
	n.mu.partition = nil
	n.mu.Unlock()
}

// Cut blocks the link from→to (one way) until Restore(from, to).
func (n *Network) Cut(from, to string) {
	n.mu.Lock()
	n.mu.cut[Link{from, to}] = true
	n.mu.Unlock()
}

// Restore undoes Cut(from, to).
func (n *Network) Restore(from, to string) {
	n.mu.Lock()
	delete(n.mu.cut, Link{from, to})
	n.mu.Unlock()
}

// SetFaults sets the random faults of every link that has no faults of
// its own (SetLinkFaults). It returns f.Validate's error, changing
// nothing, if f is invalid.
func (n *Network) SetFaults(f Faults) error {
	if err := f.Validate(); err != nil {
		return err
	}
	n.mu.Lock()
	n.mu.faults = f
	n.mu.Unlock()
	return nil
}

// SetLinkFaults sets the random faults of the link from→to, overriding
// SetFaults for it. It returns f.Validate's error, changing nothing, if f
// is invalid.
func (n *Network) SetLinkFaults(from, to string, f Faults) error {
	if err := f.Validate(); err != nil {
		return err
	}
	n.mu.Lock()
	n.mu.linkFaults[Link{from, to}] = f
	n.mu.Unlock()
	return nil
}

// ClearLinkFaults makes the link from→to follow SetFaults again.
func (n *Network) ClearLinkFaults(from, to string) {
	n.mu.Lock()
	delete(n.mu.linkFaults, Link{from, to})
	n.mu.Unlock()
}

// HealAll removes every fault: partition, cuts, disconnections, and random
// faults on every link. It does not relisten crashed processes.
func (n *Network) HealAll() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.mu.partition = nil
	clear(n.mu.cut)
	clear(n.mu.disconnected)
	clear(n.mu.linkFaults)
	n.mu.faults = Faults{}
}

// Stats returns a copy of every link's counters.
func (n *Network) Stats() map[Link]LinkStats {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make(map[Link]LinkStats, len(n.mu.stats))
	for l, s := range n.mu.stats {
		out[l] = *s
	}
	return out
}

// LinkStats returns the counters of the link from→to.
func (n *Network) LinkStats(from, to string) LinkStats {
	n.mu.Lock()
	defer n.mu.Unlock()
	if s := n.mu.stats[Link{from, to}]; s != nil {
		return *s
	}
	return LinkStats{}
}

// SetFileHook sets a function called after each GetFile response is
// delivered, with the reader's address (from), the serving process's (to)
// and the number of data bytes. It runs on the caller's goroutine and must
// not call back into the Network. nil removes the hook.
func (n *Network) SetFileHook(hook func(from, to string, bytes int)) {
	n.mu.Lock()
	n.mu.fileHook = hook
	n.mu.Unlock()
}

// Close stops the network: listeners are removed, calls in progress fail
// with transport.ErrClosed, pipelines break, handler contexts are
// cancelled, and Close waits for every goroutine the network started
// (handlers must return once their context is done). Later calls fail
// with transport.ErrClosed. It is idempotent.
func (n *Network) Close() error {
	n.mu.Lock()
	if n.mu.closed {
		n.mu.Unlock()
		return nil
	}
	n.mu.closed = true
	clear(n.mu.endpoints)
	var pipes []*pipeline
	for p := range n.mu.pipes {
		pipes = append(pipes, p)
	}
	n.mu.Unlock()
	n.cancel()
	for _, p := range pipes {
		p.reset(fmt.Errorf("memory: network closed: %w", transport.ErrClosed))
	}
	n.wg.Wait()
	return nil
}

// closing is closed by Close.
func (n *Network) closing() <-chan struct{} { return n.ctx.Done() }

// spawn runs fn on a goroutine Close waits for. It returns false, without
// running fn, once the network is closed.
func (n *Network) spawn(fn func()) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.mu.closed {
		return false
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		fn()
	}()
	return true
}

// statsLocked returns the counters of from→to, creating them.
func (n *Network) statsLocked(from, to string) *LinkStats {
	l := Link{from, to}
	s := n.mu.stats[l]
	if s == nil {
		s = new(LinkStats)
		n.mu.stats[l] = s
	}
	return s
}

// count updates the counters of from→to.
func (n *Network) count(from, to string, f func(*LinkStats)) {
	n.mu.Lock()
	f(n.statsLocked(from, to))
	n.mu.Unlock()
}

func (n *Network) blockedLocked(from, to string) bool {
	if from == to {
		return false
	}
	if n.mu.disconnected[from] || n.mu.disconnected[to] || n.mu.cut[Link{from, to}] {
		return true
	}
	if n.mu.partition != nil {
		gf, ok := n.mu.partition[from]
		if !ok {
			gf = -1
		}
		gt, ok := n.mu.partition[to]
		if !ok {
			gt = -1
		}
		return gf != gt
	}
	return false
}

// faultsLocked returns the faults of from→to.
func (n *Network) faultsLocked(from, to string) Faults {
	if f, ok := n.mu.linkFaults[Link{from, to}]; ok {
		return f
	}
	return n.mu.faults
}

// arrive decides whether a message on from→to that is due now gets
// through, counting it as delivered or dropped.
func (n *Network) arrive(from, to string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	s := n.statsLocked(from, to)
	if n.blockedLocked(from, to) {
		s.Dropped++
		return false
	}
	s.Delivered++
	return true
}

// verdict is the fate of one message, drawn when it is sent.
type verdict struct {
	drop  bool          // lost
	delay time.Duration // link latency
	held  bool          // reordered: delivered hold later than otherwise
	hold  time.Duration
	dup   bool // a second copy is delivered dupDelay after the first
	// dupDelay is the copy's extra delay.
	dupDelay time.Duration
	loss     time.Duration // Faults.lossDelay()
}

// judge draws the fate of a message sent on from→to and counts it.
// Duplication applies only where dupOK.
func (n *Network) judge(from, to string, dupOK bool) verdict {
	n.mu.Lock()
	defer n.mu.Unlock()
	s := n.statsLocked(from, to)
	s.Sent++
	if from == to {
		return verdict{}
	}
	f := n.faultsLocked(from, to)
	r := n.mu.rng
	reorder := f.reorderDelay()
	// Draw every number for every message, so that the sequence of draws
	// depends only on the sequence of messages.
	pDrop, pDup, pHold := r.Float64(), r.Float64(), r.Float64()
	v := verdict{
		delay:    f.MinDelay + randDuration(r, f.MaxDelay-f.MinDelay),
		hold:     reorder/2 + randDuration(r, reorder-reorder/2),
		dupDelay: randDuration(r, reorder),
		loss:     f.lossDelay(),
	}
	if n.blockedLocked(from, to) || pDrop < f.DropRate {
		v.drop = true
		s.Dropped++
		return v
	}
	if pHold < f.ReorderRate {
		v.held = true
		s.Reordered++
	}
	if dupOK && pDup < f.DuplicateRate {
		v.dup = true
		s.Duplicated++
		s.Sent++
	}
	return v
}

// randDuration returns a uniform duration in [0, d].
func randDuration(r *rand.Rand, d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return time.Duration(r.Int64N(int64(d) + 1))
}

// fileDelivered counts a GetFile response's bytes and calls the hook.
func (n *Network) fileDelivered(from, to string, bytes int) {
	n.mu.Lock()
	n.statsLocked(to, from).FileBytes += uint64(bytes)
	hook := n.mu.fileHook
	n.mu.Unlock()
	if hook != nil {
		hook(from, to, bytes)
	}
}

// addPipe registers p so Unlisten and Close can break it. It fails once
// the network is closed.
func (n *Network) addPipe(p *pipeline) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.mu.closed {
		return false
	}
	n.mu.pipes[p] = struct{}{}
	return true
}

func (n *Network) removePipe(p *pipeline) {
	n.mu.Lock()
	delete(n.mu.pipes, p)
	n.mu.Unlock()
}

// pipesFrom returns the open pipelines of t.
func (n *Network) pipesOf(t *Transport) []*pipeline {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []*pipeline
	for p := range n.mu.pipes {
		if p.t == t {
			out = append(out, p)
		}
	}
	return out
}
