package memory

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/graft-raft/graft/raftpb"
	"github.com/graft-raft/graft/transport"
)

// MaxPipelineOutstanding is how many requests a pipeline lets be sent and
// not yet answered through Recv; Send blocks beyond it.
const MaxPipelineOutstanding = 256

// Pipeline implements transport.Transport. See the package documentation
// for how pipelines behave under faults. The pipeline ends when ctx is
// done, on Close, on the first lost message, when either end's process
// goes down, or when the Transport or Network is closed. Opening one
// fails with transport.ErrUnreachable at once if nothing listens at addr,
// or after the link's LossDelay if it is blocked either way.
func (t *Transport) Pipeline(ctx context.Context, addr string) (transport.Pipeline, error) {
	const op = "Pipeline"
	n := t.n
	if err := t.usable(op, addr); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, ctxError(op, t.from, addr, err)
	}
	dst := n.endpoint(addr)
	if dst == nil {
		return nil, opError(op, t.from, addr, transport.ErrUnreachable, "nothing listens there")
	}
	n.mu.Lock()
	blocked := n.blockedLocked(t.from, addr) || n.blockedLocked(addr, t.from)
	loss := n.faultsLocked(t.from, addr).lossDelay()
	n.mu.Unlock()
	if blocked {
		// Like a connection attempt that times out.
		timer := time.NewTimer(loss)
		defer timer.Stop()
		select {
		case <-timer.C:
			return nil, opError(op, t.from, addr, transport.ErrUnreachable, "link blocked")
		case <-ctx.Done():
			return nil, ctxError(op, t.from, addr, ctx.Err())
		case <-t.closed:
			return nil, opError(op, t.from, addr, transport.ErrClosed, "transport closed")
		case <-n.closing():
			return nil, opError(op, t.from, addr, transport.ErrClosed, "network closed")
		}
	}
	p := &pipeline{
		n:      n,
		t:      t,
		from:   t.from,
		to:     addr,
		src:    n.endpoint(t.from),
		dst:    dst,
		window: make(chan struct{}, MaxPipelineOutstanding),
		stop:   make(chan struct{}),
		wake:   make(chan struct{}, 1),
		kick:   make(chan struct{}, 1),
	}
	p.mu.resps = make(map[uint64]respItem)
	p.mu.endSeq = math.MaxUint64
	if !n.addPipe(p) || !n.spawn(p.serve) {
		p.reset(nil)
		return nil, opError(op, t.from, addr, transport.ErrClosed, "network closed")
	}
	// Whatever went down or closed while the pipeline was being set up
	// missed it: check again now that it is registered.
	select {
	case <-dst.down():
		p.reset(opError(op, t.from, addr, transport.ErrUnreachable, addr+" went down"))
	case <-t.closed:
		p.reset(opError(op, t.from, addr, transport.ErrClosed, "transport closed"))
	default:
	}
	if p.src != nil {
		select {
		case <-p.src.down():
			p.reset(opError(op, t.from, addr, transport.ErrUnreachable, t.from+" went down"))
		default:
		}
	}
	if err := p.sendError(); err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { p.reset(ctxError(op, t.from, addr, ctx.Err())) })
	p.mu.Lock()
	ended := p.mu.err != nil
	if !ended {
		p.mu.stopCtx = stop
	}
	p.mu.Unlock()
	if ended {
		stop() // reset came first and could not deregister it
	}
	return p, nil
}

// pipeline is both ends of one pipeline stream.
//
// Requests wait in a queue ordered by arrival time; the server goroutine
// (serve) hands them to the peer's handler when due. Responses wait in a
// map by sequence number; Recv takes them in order, each once due.
type pipeline struct {
	n        *Network
	t        *Transport
	from, to string
	src, dst *Endpoint // src is nil if from does not listen

	// window holds a token per request sent and not yet answered by Recv.
	window chan struct{}
	// stop is closed when the stream ends.
	stop chan struct{}
	// wake tells Recv a response arrived; kick tells serve a request was
	// queued. Both have room for one signal.
	wake, kick chan struct{}

	// Only Send touches these.
	started     bool
	group, peer string

	mu struct {
		sync.Mutex
		// err ends the stream: Send and Recv fail with it.
		err error
		// sendErr, once the server has ended the stream, fails Send; Recv
		// goes on to the error response.
		sendErr error
		// serverDone: the server takes no more requests of the stream
		// from endSeq on (strays aside).
		serverDone bool
		endSeq     uint64
		nextSend   uint64
		nextRecv   uint64
		// fifo is the arrival time of the last in-order request: the next
		// one arrives no earlier.
		fifo    time.Time
		order   uint64
		queue   reqQueue
		resps   map[uint64]respItem
		stopCtx func() bool
	}
}

// reqItem is a message on its way to the server.
type reqItem struct {
	due   time.Time
	order uint64 // tie-break: queue order
	// seq numbers the requests of the stream; a break marker has the seq
	// of the lost request or response.
	seq uint64
	req *raftpb.AppendEntriesRequest
	// answer: the response goes back (false for duplicate copies).
	answer bool
	// stray: still delivered after the stream ends (held back or copy).
	stray bool
	// brk, if set, marks a lost message: the stream breaks with brk when
	// the item is due. respBreak marks a lost response.
	brk       error
	respBreak bool
}

// respItem is a response on its way back, or the error ending the stream
// at its place in the order.
type respItem struct {
	due  time.Time
	resp *raftpb.AppendEntriesResponse
	err  error
}

type reqQueue []reqItem

func (q reqQueue) Len() int { return len(q) }
func (q reqQueue) Less(i, j int) bool {
	if !q[i].due.Equal(q[j].due) {
		return q[i].due.Before(q[j].due)
	}
	return q[i].order < q[j].order
}
func (q reqQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *reqQueue) Push(x any)   { *q = append(*q, x.(reqItem)) }
func (q *reqQueue) Pop() any {
	old := *q
	it := old[len(old)-1]
	*q = old[:len(old)-1]
	return it
}

// filter keeps the items that outlive the stream (ended), or the
// server's end of the stream at endSeq: strays, lost responses, and
// requests before endSeq, whose answers Recv still waits for.
func (q *reqQueue) filter(ended bool, endSeq uint64) {
	kept := (*q)[:0]
	for _, it := range *q {
		if it.stray || (!ended && (it.respBreak || it.seq < endSeq)) {
			kept = append(kept, it)
		}
	}
	*q = kept
	heap.Init(q)
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// pushLocked queues it for the server.
func (p *pipeline) pushLocked(it reqItem) {
	it.order = p.mu.order
	p.mu.order++
	heap.Push(&p.mu.queue, it)
}

func (p *pipeline) push(it reqItem) {
	p.mu.Lock()
	p.pushLocked(it)
	p.mu.Unlock()
	signal(p.kick)
}

// reset ends the stream with err, unless it has ended already. A nil err
// means ErrClosed.
func (p *pipeline) reset(err error) {
	if err == nil {
		err = opError("Pipeline", p.from, p.to, transport.ErrClosed, "closed")
	}
	p.mu.Lock()
	if p.mu.err != nil {
		p.mu.Unlock()
		return
	}
	p.mu.err = err
	p.mu.serverDone = true
	stop := p.mu.stopCtx
	p.mu.Unlock()
	close(p.stop)
	if stop != nil {
		stop()
	}
	p.n.removePipe(p)
}

// endServer ends the stream from the server's side at request seq: Recv
// returns the responses before it, then err.
func (p *pipeline) endServer(seq uint64, err error) {
	err = fmt.Errorf("memory: Pipeline %s->%s: %w", p.from, p.to, err)
	p.mu.Lock()
	if p.mu.err != nil {
		p.mu.Unlock()
		return
	}
	p.mu.serverDone = true
	p.mu.endSeq = min(p.mu.endSeq, seq)
	if p.mu.sendErr == nil {
		p.mu.sendErr = opError("Pipeline.Send", p.from, p.to, transport.ErrUnreachable, "stream ended by the peer; Recv returns why")
	}
	p.mu.resps[seq] = respItem{due: time.Now(), err: err}
	p.mu.Unlock()
	signal(p.wake)
}

func (p *pipeline) lost(dir string) error {
	return opError("Pipeline", p.from, p.to, transport.ErrUnreachable, dir+" lost, stream broken")
}

// Send implements transport.Pipeline. It blocks while
// MaxPipelineOutstanding requests are unanswered. A request for another
// group or peer than the first one sent is refused (the stream stays
// usable).
func (p *pipeline) Send(req *raftpb.AppendEntriesRequest) error {
	if req == nil {
		return errors.New("memory: Pipeline.Send: nil request")
	}
	if !p.started {
		p.started, p.group, p.peer = true, req.GetGroupId(), req.GetPeerId()
	} else if req.GetGroupId() != p.group || req.GetPeerId() != p.peer {
		return fmt.Errorf("memory: pipeline %s->%s is for group %q peer %q, not group %q peer %q",
			p.from, p.to, p.group, p.peer, req.GetGroupId(), req.GetPeerId())
	}
	select {
	case p.window <- struct{}{}:
	case <-p.stop:
		return p.sendError()
	}
	if err := p.sendError(); err != nil {
		return err
	}
	v := p.n.judge(p.from, p.to, true)
	now := time.Now()
	p.mu.Lock()
	defer signal(p.kick)
	defer p.mu.Unlock()
	if p.mu.err != nil {
		return p.mu.err
	}
	seq := p.mu.nextSend
	p.mu.nextSend++
	base := now.Add(v.delay)
	inOrder := base
	if p.mu.fifo.After(inOrder) {
		inOrder = p.mu.fifo
	}
	if v.drop {
		// Nothing sent after it gets through either: the stream breaks
		// once the loss is noticed.
		due := inOrder.Add(v.loss)
		p.mu.fifo = due
		p.pushLocked(reqItem{due: due, seq: seq, brk: p.lost("request")})
		return nil
	}
	it := reqItem{seq: seq, req: proto.Clone(req).(*raftpb.AppendEntriesRequest), answer: true}
	if v.held {
		it.due, it.stray = base.Add(v.hold), true
	} else {
		it.due = inOrder
		p.mu.fifo = inOrder
	}
	p.pushLocked(it)
	if v.dup {
		p.pushLocked(reqItem{
			due:   it.due.Add(v.dupDelay),
			seq:   seq,
			req:   proto.Clone(req).(*raftpb.AppendEntriesRequest),
			stray: true,
		})
	}
	return nil
}

func (p *pipeline) sendError() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mu.err != nil {
		return p.mu.err
	}
	return p.mu.sendErr
}

// Recv implements transport.Pipeline.
func (p *pipeline) Recv() (*raftpb.AppendEntriesResponse, error) {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		var timerC <-chan time.Time
		p.mu.Lock()
		if err := p.mu.err; err != nil {
			p.mu.Unlock()
			return nil, err
		}
		seq := p.mu.nextRecv
		if it, ok := p.mu.resps[seq]; ok {
			wait := time.Until(it.due)
			if wait <= 0 {
				delete(p.mu.resps, seq)
				p.mu.nextRecv++
				p.mu.Unlock()
				if it.err != nil {
					p.reset(it.err)
					return nil, it.err
				}
				if !p.n.arrive(p.to, p.from) {
					err := p.lost("response")
					p.reset(err)
					return nil, err
				}
				<-p.window
				return it.resp, nil
			}
			if timer == nil {
				timer = time.NewTimer(wait)
			} else {
				timer.Reset(wait)
			}
			timerC = timer.C
		}
		p.mu.Unlock()
		select {
		case <-p.wake:
		case <-timerC:
		case <-p.stop:
		}
	}
}

// Close implements transport.Pipeline: a blocked Send or Recv, and later
// ones, fail with an error wrapping transport.ErrClosed. Requests already
// in flight may still be delivered. It is idempotent.
func (p *pipeline) Close() error {
	p.reset(opError("Pipeline", p.from, p.to, transport.ErrClosed, "pipeline closed"))
	return nil
}

// serve is the pipeline's server goroutine: it hands each request to the
// handler when due, in arrival order. It returns once the stream has ended
// and no stray is left, or when the destination goes down or the network
// closes.
func (p *pipeline) serve() {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		var (
			it     reqItem
			due    bool
			timerC <-chan time.Time
		)
		p.mu.Lock()
		ended := p.mu.err != nil
		if ended || p.mu.serverDone {
			p.mu.queue.filter(ended, p.mu.endSeq)
		}
		if ended && len(p.mu.queue) == 0 {
			p.mu.Unlock()
			return
		}
		if len(p.mu.queue) > 0 {
			if wait := time.Until(p.mu.queue[0].due); wait <= 0 {
				it, due = heap.Pop(&p.mu.queue).(reqItem), true
			} else {
				if timer == nil {
					timer = time.NewTimer(wait)
				} else {
					timer.Reset(wait)
				}
				timerC = timer.C
			}
		}
		p.mu.Unlock()
		if due {
			p.process(it)
			continue
		}
		stop := p.stop
		if ended {
			stop = nil
		}
		select {
		case <-p.kick:
		case <-timerC:
		case <-stop:
		case <-p.dst.down():
			return
		case <-p.n.closing():
			return
		}
	}
}

// process delivers one due item.
func (p *pipeline) process(it reqItem) {
	if it.brk != nil {
		p.reset(it.brk)
		return
	}
	select {
	case <-p.dst.down():
		return
	default:
	}
	if !p.n.arrive(p.from, p.to) {
		if it.answer {
			p.reset(p.lost("request"))
		}
		return
	}
	h, err := route(p.dst, it.req.GetGroupId(), it.req.GetPeerId())
	if err != nil {
		if it.answer {
			p.endServer(it.seq, err)
		}
		return
	}
	done := func(*raftpb.AppendEntriesResponse, error) {}
	if it.answer {
		done = p.doneFunc(it.seq)
	}
	h.HandleAppendEntries(it.req, done)
}

// doneFunc returns the done callback for request seq: it sends the
// response back, or ends the stream with the handler's error.
func (p *pipeline) doneFunc(seq uint64) func(*raftpb.AppendEntriesResponse, error) {
	var called atomic.Bool
	return func(resp *raftpb.AppendEntriesResponse, err error) {
		if called.Swap(true) {
			return // a second call breaks the Handler contract; ignore it
		}
		if err == nil && resp == nil {
			err = errNoResponse
		}
		if err != nil {
			p.endServer(seq, err)
			return
		}
		select {
		case <-p.stop:
			return // nobody is listening
		default:
		}
		v := p.n.judge(p.to, p.from, false)
		now := time.Now()
		if v.drop {
			p.push(reqItem{due: now.Add(v.delay + v.loss), seq: seq, brk: p.lost("response"), respBreak: true})
			return
		}
		due := now.Add(v.delay)
		if v.held {
			due = due.Add(v.hold)
		}
		c := proto.Clone(resp).(*raftpb.AppendEntriesResponse)
		p.mu.Lock()
		if p.mu.err == nil {
			p.mu.resps[seq] = respItem{due: due, resp: c}
		}
		p.mu.Unlock()
		signal(p.wake)
	}
}
