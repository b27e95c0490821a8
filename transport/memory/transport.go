package memory

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/graft-raft/graft/raftpb"
	"github.com/graft-raft/graft/transport"
)

// Transport is the client side of one process on a Network: it implements
// transport.Transport, sending on the links from its address. It is safe
// for concurrent use.
type Transport struct {
	n         *Network
	from      string
	closed    chan struct{}
	closeOnce sync.Once
}

var _ transport.Transport = (*Transport)(nil)

// Close fails the calls in progress with transport.ErrClosed, breaks the
// Transport's pipelines, and makes later calls fail the same way. Requests
// already in flight are still delivered. It is idempotent.
func (t *Transport) Close() error {
	t.closeOnce.Do(func() {
		close(t.closed)
		err := fmt.Errorf("memory: transport of %s closed: %w", t.from, transport.ErrClosed)
		for _, p := range t.n.pipesOf(t) {
			p.reset(err)
		}
	})
	return nil
}

// usable returns an error wrapping transport.ErrClosed once the Transport
// or the Network is closed.
func (t *Transport) usable(op, to string) error {
	select {
	case <-t.closed:
		return opError(op, t.from, to, transport.ErrClosed, "transport closed")
	case <-t.n.closing():
		return opError(op, t.from, to, transport.ErrClosed, "network closed")
	default:
		return nil
	}
}

func opError(op, from, to string, kind error, detail string) error {
	return fmt.Errorf("memory: %s %s->%s: %w: %s", op, from, to, kind, detail)
}

// ctxError is the error of a call whose context is done. An expired
// deadline is also ErrUnreachable: the peer did not answer in time.
func ctxError(op, from, to string, err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("memory: %s %s->%s: %w: %w", op, from, to, transport.ErrUnreachable, err)
	}
	return fmt.Errorf("memory: %s %s->%s: %w", op, from, to, err)
}

// route returns the handler of the process at e for (group, peer).
func route(e *Endpoint, group, peer string) (transport.Handler, error) {
	if group == "" {
		return nil, errors.New("memory: request has no group_id")
	}
	return e.router.Handler(group, peer)
}

var errNoResponse = errors.New("memory: handler returned neither a response nor an error")

// result is what comes back to a unary caller: a response, or news that
// the response was lost.
type result[Resp proto.Message] struct {
	resp Resp
	err  error
	lost bool
	loss time.Duration
}

// call sends one unary RPC. serve runs on the callee's side, on a
// goroutine of its own, with a copy of req.
func call[Req, Resp proto.Message](t *Transport, ctx context.Context, op, to string, req Req,
	serve func(ctx context.Context, e *Endpoint, req Req) (Resp, error)) (Resp, error) {
	var zero Resp
	n := t.n
	if err := t.usable(op, to); err != nil {
		return zero, err
	}
	if err := ctx.Err(); err != nil {
		return zero, ctxError(op, t.from, to, err)
	}
	dst := n.endpoint(to)
	if dst == nil {
		n.count(t.from, to, func(s *LinkStats) { s.Sent++; s.Dropped++ })
		return zero, opError(op, t.from, to, transport.ErrUnreachable, "nothing listens there")
	}
	var srcDown <-chan struct{}
	if src := n.endpoint(t.from); src != nil {
		srcDown = src.down()
	}

	v := n.judge(t.from, to, true)
	res := make(chan result[Resp], 1)
	if !v.drop {
		delay := v.delay
		if v.held {
			delay += v.hold
		}
		c := proto.Clone(req).(Req)
		n.spawn(func() { deliver(t, ctx, dst, c, delay, v.loss, serve, res) })
		if v.dup {
			dc := proto.Clone(req).(Req)
			discard := make(chan result[Resp], 1)
			n.spawn(func() { deliver(t, nil, dst, dc, delay+v.dupDelay, v.loss, serve, discard) })
		}
	}

	var lossTimer *time.Timer
	var lossC <-chan time.Time
	if v.drop {
		lossTimer = time.NewTimer(v.delay + v.loss)
		lossC = lossTimer.C
	}
	defer func() {
		if lossTimer != nil {
			lossTimer.Stop()
		}
	}()
	for {
		select {
		case r := <-res:
			if r.lost {
				lossTimer = time.NewTimer(r.loss)
				lossC = lossTimer.C
				continue
			}
			if r.err != nil {
				return zero, fmt.Errorf("memory: %s %s->%s: %w", op, t.from, to, r.err)
			}
			return r.resp, nil
		case <-lossC:
			return zero, opError(op, t.from, to, transport.ErrUnreachable, "message lost")
		case <-ctx.Done():
			return zero, ctxError(op, t.from, to, ctx.Err())
		case <-dst.down():
			return zero, opError(op, t.from, to, transport.ErrUnreachable, to+" went down")
		case <-srcDown:
			return zero, opError(op, t.from, to, transport.ErrUnreachable, t.from+" went down")
		case <-t.closed:
			return zero, opError(op, t.from, to, transport.ErrClosed, "transport closed")
		case <-n.closing():
			return zero, opError(op, t.from, to, transport.ErrClosed, "network closed")
		}
	}
}

// deliver carries one request to dst after delay, runs serve, and carries
// the response back into res (which has room for one result). callerCtx,
// if not nil, cancels the handler's context when the caller gives up; a
// duplicate copy passes nil. loss is the request link's LossDelay.
func deliver[Req, Resp proto.Message](t *Transport, callerCtx context.Context, dst *Endpoint, req Req, delay, loss time.Duration,
	serve func(context.Context, *Endpoint, Req) (Resp, error), res chan<- result[Resp]) {
	n, from, to := t.n, t.from, dst.addr
	if !n.sleep(delay, dst.down()) {
		n.count(from, to, func(s *LinkStats) { s.Dropped++ })
		return // the caller sees dst go down
	}
	if !n.arrive(from, to) {
		res <- result[Resp]{lost: true, loss: loss}
		return
	}
	hctx, cancel := context.WithCancel(dst.ctx)
	defer cancel()
	if callerCtx != nil {
		stop := context.AfterFunc(callerCtx, cancel)
		defer stop()
	}
	resp, err := serve(hctx, dst, req)
	if err == nil && !resp.ProtoReflect().IsValid() {
		err = errNoResponse
	}

	// The way back.
	v := n.judge(to, from, false)
	if v.drop {
		res <- result[Resp]{lost: true, loss: v.delay + v.loss}
		return
	}
	back := v.delay
	if v.held {
		back += v.hold
	}
	// A process that went down sends nothing more; the caller sees it go
	// down.
	if !n.sleep(back, dst.down()) {
		return
	}
	if !n.arrive(to, from) {
		res <- result[Resp]{lost: true, loss: v.loss}
		return
	}
	if err != nil {
		res <- result[Resp]{err: err}
		return
	}
	res <- result[Resp]{resp: proto.Clone(resp).(Resp)}
}

// sleep waits for d. It reports false if down (nil: never) or the
// network's closing comes first.
func (n *Network) sleep(d time.Duration, down <-chan struct{}) bool {
	return n.sleepUntil(time.Now().Add(d), down)
}

// sleepUntil waits until t. It reports false if down (nil: never) or the
// network's closing comes first.
func (n *Network) sleepUntil(t time.Time, down <-chan struct{}) bool {
	d := time.Until(t)
	if d <= 0 {
		select {
		case <-down:
			return false
		case <-n.closing():
			return false
		default:
			return true
		}
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-down:
		return false
	case <-n.closing():
		return false
	}
}

// RequestVote implements transport.Transport.
func (t *Transport) RequestVote(ctx context.Context, addr string, req *raftpb.RequestVoteRequest) (*raftpb.RequestVoteResponse, error) {
	return call(t, ctx, "RequestVote", addr, req, func(ctx context.Context, e *Endpoint, req *raftpb.RequestVoteRequest) (*raftpb.RequestVoteResponse, error) {
		h, err := route(e, req.GetGroupId(), req.GetPeerId())
		if err != nil {
			return nil, err
		}
		return h.HandleRequestVote(ctx, req)
	})
}

// AppendEntries implements transport.Transport.
func (t *Transport) AppendEntries(ctx context.Context, addr string, req *raftpb.AppendEntriesRequest) (*raftpb.AppendEntriesResponse, error) {
	return call(t, ctx, "AppendEntries", addr, req, func(ctx context.Context, e *Endpoint, req *raftpb.AppendEntriesRequest) (*raftpb.AppendEntriesResponse, error) {
		h, err := route(e, req.GetGroupId(), req.GetPeerId())
		if err != nil {
			return nil, err
		}
		type answer struct {
			resp *raftpb.AppendEntriesResponse
			err  error
		}
		ch := make(chan answer, 1)
		h.HandleAppendEntries(req, func(resp *raftpb.AppendEntriesResponse, err error) {
			select {
			case ch <- answer{resp, err}:
			default: // a second call breaks the Handler contract; ignore it
			}
		})
		select {
		case a := <-ch:
			return a.resp, a.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	})
}

// InstallSnapshot implements transport.Transport.
func (t *Transport) InstallSnapshot(ctx context.Context, addr string, req *raftpb.InstallSnapshotRequest) (*raftpb.InstallSnapshotResponse, error) {
	return call(t, ctx, "InstallSnapshot", addr, req, func(ctx context.Context, e *Endpoint, req *raftpb.InstallSnapshotRequest) (*raftpb.InstallSnapshotResponse, error) {
		h, err := route(e, req.GetGroupId(), req.GetPeerId())
		if err != nil {
			return nil, err
		}
		return h.HandleInstallSnapshot(ctx, req)
	})
}

// ReadIndex implements transport.Transport.
func (t *Transport) ReadIndex(ctx context.Context, addr string, req *raftpb.ReadIndexRequest) (*raftpb.ReadIndexResponse, error) {
	return call(t, ctx, "ReadIndex", addr, req, func(ctx context.Context, e *Endpoint, req *raftpb.ReadIndexRequest) (*raftpb.ReadIndexResponse, error) {
		h, err := route(e, req.GetGroupId(), req.GetPeerId())
		if err != nil {
			return nil, err
		}
		return h.HandleReadIndex(ctx, req)
	})
}

// TimeoutNow implements transport.Transport.
func (t *Transport) TimeoutNow(ctx context.Context, addr string, req *raftpb.TimeoutNowRequest) (*raftpb.TimeoutNowResponse, error) {
	return call(t, ctx, "TimeoutNow", addr, req, func(ctx context.Context, e *Endpoint, req *raftpb.TimeoutNowRequest) (*raftpb.TimeoutNowResponse, error) {
		h, err := route(e, req.GetGroupId(), req.GetPeerId())
		if err != nil {
			return nil, err
		}
		return h.HandleTimeoutNow(ctx, req)
	})
}

// GetFile implements transport.Transport. The FileHandler's errors,
// status errors included, reach the caller wrapped. Delivered data counts
// in LinkStats.FileBytes and is reported to the hook set by SetFileHook.
func (t *Transport) GetFile(ctx context.Context, addr string, req *raftpb.GetFileRequest) (*raftpb.GetFileResponse, error) {
	resp, err := call(t, ctx, "GetFile", addr, req, func(ctx context.Context, e *Endpoint, req *raftpb.GetFileRequest) (*raftpb.GetFileResponse, error) {
		h, err := e.router.FileHandler()
		if err != nil {
			return nil, err
		}
		return h.HandleGetFile(ctx, req)
	})
	if err == nil {
		t.n.fileDelivered(t.from, addr, len(resp.GetData()))
	}
	return resp, err
}
