package grpctransport

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	"github.com/graft-raft/graft/raftpb"
	"github.com/graft-raft/graft/transport"
)

// Defaults for Options.
const (
	// DefaultRPCTimeout bounds a unary RPC whose context has no deadline.
	DefaultRPCTimeout = 5 * time.Second
	// DefaultKeepaliveTime is how long a connection may be idle before a
	// keepalive ping checks that the peer is still there.
	DefaultKeepaliveTime = 10 * time.Second
	// DefaultKeepaliveTimeout is how long a keepalive ping may go
	// unanswered before the connection is closed.
	DefaultKeepaliveTimeout = 5 * time.Second
	// DefaultMaxReconnectDelay caps the backoff between attempts to
	// reconnect to a peer.
	DefaultMaxReconnectDelay = time.Second
)

// Options configure a Transport. The zero value of a field means its
// default; DefaultOptions spells them out.
type Options struct {
	// RPCTimeout bounds each unary RPC whose context has no deadline.
	// Zero means DefaultRPCTimeout; a negative value applies no bound.
	// Raft's own timeouts should normally set a deadline on the context;
	// this is the backstop. Pipelines are not bounded by it.
	RPCTimeout time.Duration

	// DialOptions are passed to grpc.NewClient after graft's defaults, so
	// they override them. Connections are insecure unless these set
	// transport credentials: ClientTLS for mutual TLS.
	DialOptions []grpc.DialOption

	// Resolve, if set, rewrites the address from a group's configuration
	// into the target dialled (a gRPC target such as "10.0.0.2:7000" or
	// "dns:///node2:7000"). Connections are pooled by the rewritten target.
	// It is called on every RPC and must be safe for concurrent use.
	Resolve func(addr string) string

	// MaxMessageSize is the largest message, in bytes, sent or received.
	// Zero means DefaultMaxMessageSize. Larger allows bigger AppendEntries
	// batches at the cost of memory per message; the peer's Server must
	// accept as much.
	MaxMessageSize int

	// KeepaliveTime is how long a connection may be idle before it is
	// pinged; gRPC enforces a minimum of 10s. It lets an open pipeline to
	// a vanished peer fail instead of waiting forever. Zero means
	// DefaultKeepaliveTime; a negative value disables pings.
	KeepaliveTime time.Duration

	// KeepaliveTimeout is how long a ping may go unanswered before the
	// connection is dropped. Zero means DefaultKeepaliveTimeout.
	KeepaliveTimeout time.Duration

	// MaxReconnectDelay caps the exponential backoff between attempts to
	// reconnect to an unreachable peer. Lower finds a restarted peer
	// sooner at the cost of more connection attempts while it is down.
	// Zero means DefaultMaxReconnectDelay.
	MaxReconnectDelay time.Duration
}

// DefaultOptions returns the default Options.
func DefaultOptions() Options {
	return Options{
		RPCTimeout:        DefaultRPCTimeout,
		MaxMessageSize:    DefaultMaxMessageSize,
		KeepaliveTime:     DefaultKeepaliveTime,
		KeepaliveTimeout:  DefaultKeepaliveTimeout,
		MaxReconnectDelay: DefaultMaxReconnectDelay,
	}
}

// Validate reports the first invalid field.
func (o Options) Validate() error {
	switch {
	case o.MaxMessageSize < 0:
		return fmt.Errorf("grpctransport: MaxMessageSize %d is negative", o.MaxMessageSize)
	case o.KeepaliveTimeout < 0:
		return fmt.Errorf("grpctransport: KeepaliveTimeout %v is negative", o.KeepaliveTimeout)
	case o.MaxReconnectDelay < 0:
		return fmt.Errorf("grpctransport: MaxReconnectDelay %v is negative", o.MaxReconnectDelay)
	}
	return nil
}

// withDefaults returns a copy of o with zero fields set to their defaults.
func (o Options) withDefaults() Options {
	d := DefaultOptions()
	if o.RPCTimeout == 0 {
		o.RPCTimeout = d.RPCTimeout
	}
	if o.MaxMessageSize == 0 {
		o.MaxMessageSize = d.MaxMessageSize
	}
	if o.KeepaliveTime == 0 {
		o.KeepaliveTime = d.KeepaliveTime
	}
	if o.KeepaliveTimeout == 0 {
		o.KeepaliveTimeout = d.KeepaliveTimeout
	}
	if o.MaxReconnectDelay == 0 {
		o.MaxReconnectDelay = d.MaxReconnectDelay
	}
	o.DialOptions = append([]grpc.DialOption(nil), o.DialOptions...)
	return o
}

// Transport is the client side: it implements transport.Transport over
// one lazily dialled, pooled *grpc.ClientConn per peer address. It is safe
// for concurrent use.
type Transport struct {
	opts     Options
	dialOpts []grpc.DialOption
	closed   atomic.Bool

	mu struct {
		sync.Mutex
		conns map[string]*peerConn // by dialled target
	}
}

var _ transport.Transport = (*Transport)(nil)

// peerConn is the connection to one peer and its service stubs.
type peerConn struct {
	cc    *grpc.ClientConn
	raft  raftpb.RaftServiceClient
	files raftpb.FileServiceClient
}

// New returns a Transport. Zero fields of opts take their defaults. It
// panics if opts.Validate fails: options are the caller's code, not input.
func New(opts Options) *Transport {
	if err := opts.Validate(); err != nil {
		panic(err)
	}
	opts = opts.withDefaults()
	t := &Transport{opts: opts}
	t.mu.conns = make(map[string]*peerConn)
	t.dialOpts = []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(opts.MaxMessageSize),
			grpc.MaxCallSendMsgSize(opts.MaxMessageSize),
		),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay:  min(50*time.Millisecond, opts.MaxReconnectDelay),
				Multiplier: 1.6,
				Jitter:     0.2,
				MaxDelay:   opts.MaxReconnectDelay,
			},
			MinConnectTimeout: 5 * time.Second,
		}),
		grpc.WithInitialWindowSize(windowSize),
		grpc.WithInitialConnWindowSize(connWindowSize),
	}
	if opts.KeepaliveTime > 0 {
		t.dialOpts = append(t.dialOpts, grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time:    opts.KeepaliveTime,
			Timeout: opts.KeepaliveTimeout,
		}))
	}
	t.dialOpts = append(t.dialOpts, opts.DialOptions...)
	return t
}

// conn returns the pooled connection for addr, creating it on first use.
// gRPC connects lazily, on the first RPC.
func (t *Transport) conn(addr string) (*peerConn, error) {
	target := addr
	if t.opts.Resolve != nil {
		target = t.opts.Resolve(addr)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed.Load() {
		return nil, fmt.Errorf("grpctransport: %s: %w", addr, transport.ErrClosed)
	}
	if pc := t.mu.conns[target]; pc != nil {
		return pc, nil
	}
	cc, err := grpc.NewClient(dialTarget(target), t.dialOpts...)
	if err != nil {
		return nil, fmt.Errorf("grpctransport: dial %s (target %q): %w: %w", addr, target, transport.ErrUnreachable, err)
	}
	pc := &peerConn{
		cc:    cc,
		raft:  raftpb.NewRaftServiceClient(cc),
		files: raftpb.NewFileServiceClient(cc),
	}
	t.mu.conns[target] = pc
	return pc, nil
}

// dialTarget turns a peer's HOST:PORT into a gRPC target that resolves the
// host name on every connection attempt ("passthrough:///"), rather than
// through gRPC's DNS resolver, which caches an address for at least 30 s:
// a peer that comes back on a new IP (a restarted container) is reached
// at once. Targets with a scheme, or "unix:" sockets, are used as given.
func dialTarget(addr string) string {
	if strings.Contains(addr, "://") || strings.HasPrefix(addr, "unix:") {
		return addr
	}
	return "passthrough:///" + addr
}

// call runs one unary RPC with the default timeout and error mapping.
func call[R any](t *Transport, ctx context.Context, op, addr string, rpc func(context.Context, *peerConn) (R, error)) (R, error) {
	var zero R
	pc, err := t.conn(addr)
	if err != nil {
		return zero, err
	}
	if _, ok := ctx.Deadline(); !ok && t.opts.RPCTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, t.opts.RPCTimeout)
		defer cancel()
	}
	resp, err := rpc(ctx, pc)
	if err != nil {
		return zero, mapError(ctx, t.closed.Load(), op, addr, err)
	}
	return resp, nil
}

// RequestVote implements transport.Transport.
func (t *Transport) RequestVote(ctx context.Context, addr string, req *raftpb.RequestVoteRequest) (*raftpb.RequestVoteResponse, error) {
	return call(t, ctx, "RequestVote", addr, func(ctx context.Context, pc *peerConn) (*raftpb.RequestVoteResponse, error) {
		return pc.raft.RequestVote(ctx, req)
	})
}

// AppendEntries implements transport.Transport.
func (t *Transport) AppendEntries(ctx context.Context, addr string, req *raftpb.AppendEntriesRequest) (*raftpb.AppendEntriesResponse, error) {
	return call(t, ctx, "AppendEntries", addr, func(ctx context.Context, pc *peerConn) (*raftpb.AppendEntriesResponse, error) {
		return pc.raft.AppendEntries(ctx, req)
	})
}

// InstallSnapshot implements transport.Transport.
func (t *Transport) InstallSnapshot(ctx context.Context, addr string, req *raftpb.InstallSnapshotRequest) (*raftpb.InstallSnapshotResponse, error) {
	return call(t, ctx, "InstallSnapshot", addr, func(ctx context.Context, pc *peerConn) (*raftpb.InstallSnapshotResponse, error) {
		return pc.raft.InstallSnapshot(ctx, req)
	})
}

// ReadIndex implements transport.Transport.
func (t *Transport) ReadIndex(ctx context.Context, addr string, req *raftpb.ReadIndexRequest) (*raftpb.ReadIndexResponse, error) {
	return call(t, ctx, "ReadIndex", addr, func(ctx context.Context, pc *peerConn) (*raftpb.ReadIndexResponse, error) {
		return pc.raft.ReadIndex(ctx, req)
	})
}

// TimeoutNow implements transport.Transport.
func (t *Transport) TimeoutNow(ctx context.Context, addr string, req *raftpb.TimeoutNowRequest) (*raftpb.TimeoutNowResponse, error) {
	return call(t, ctx, "TimeoutNow", addr, func(ctx context.Context, pc *peerConn) (*raftpb.TimeoutNowResponse, error) {
		return pc.raft.TimeoutNow(ctx, req)
	})
}

// GetFile implements transport.Transport. Status errors of the peer's
// FileHandler (NotFound, PermissionDenied, ...) reach the caller with their
// code: test them with status.Code.
func (t *Transport) GetFile(ctx context.Context, addr string, req *raftpb.GetFileRequest) (*raftpb.GetFileResponse, error) {
	return call(t, ctx, "GetFile", addr, func(ctx context.Context, pc *peerConn) (*raftpb.GetFileResponse, error) {
		return pc.files.GetFile(ctx, req, grpc.ForceCodecV2(newClientCodec()))
	})
}

// Pipeline implements transport.Transport: it opens a PipelineEntries
// stream to addr. The stream is not bounded by Options.RPCTimeout; it ends
// when ctx is done, on Close, or on the first error. Every request sent on
// it must name the same group and peer.
func (t *Transport) Pipeline(ctx context.Context, addr string) (transport.Pipeline, error) {
	pc, err := t.conn(addr)
	if err != nil {
		return nil, err
	}
	sctx, cancel := context.WithCancel(ctx)
	stream, err := pc.raft.PipelineEntries(sctx)
	if err != nil {
		cancel()
		return nil, mapError(sctx, t.closed.Load(), "Pipeline", addr, err)
	}
	return &pipeline{t: t, addr: addr, ctx: sctx, cancel: cancel, stream: stream}, nil
}

// Close closes every connection; calls in progress and open pipelines fail
// with transport.ErrClosed, and so do later calls. It is idempotent.
func (t *Transport) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed.Swap(true) {
		return nil
	}
	var errs []error
	for target, pc := range t.mu.conns {
		if err := pc.cc.Close(); err != nil {
			errs = append(errs, fmt.Errorf("grpctransport: close %s: %w", target, err))
		}
	}
	t.mu.conns = nil
	return errors.Join(errs...)
}

// pipeline is the client side of a PipelineEntries stream.
type pipeline struct {
	t      *Transport
	addr   string
	ctx    context.Context
	cancel context.CancelFunc
	stream raftpb.RaftService_PipelineEntriesClient
	closed atomic.Bool

	// Touched only by Send.
	started     bool
	group, peer string
}

// Send implements transport.Pipeline. It blocks while HTTP/2 flow control
// holds the stream back. A request for another group or peer than the
// first one sent is refused (the stream stays usable).
func (p *pipeline) Send(req *raftpb.AppendEntriesRequest) error {
	if p.closed.Load() {
		return fmt.Errorf("grpctransport: Pipeline.Send %s: %w", p.addr, transport.ErrClosed)
	}
	if !p.started {
		p.started, p.group, p.peer = true, req.GetGroupId(), req.GetPeerId()
	} else if req.GetGroupId() != p.group || req.GetPeerId() != p.peer {
		return fmt.Errorf("grpctransport: pipeline to %s is for group %q peer %q, not group %q peer %q",
			p.addr, p.group, p.peer, req.GetGroupId(), req.GetPeerId())
	}
	if err := p.stream.Send(req); err != nil {
		// io.EOF means the stream has ended; Recv reports why.
		return mapError(p.ctx, p.closed.Load() || p.t.closed.Load(), "Pipeline.Send", p.addr, err)
	}
	return nil
}

// Recv implements transport.Pipeline.
func (p *pipeline) Recv() (*raftpb.AppendEntriesResponse, error) {
	resp, err := p.stream.Recv()
	if err != nil {
		err = mapError(p.ctx, p.closed.Load() || p.t.closed.Load(), "Pipeline.Recv", p.addr, err)
		// The stream is over: release its context now rather than on Close.
		p.cancel()
		return nil, err
	}
	return resp, nil
}

// Close implements transport.Pipeline: it cancels the stream, which makes
// a blocked Send or Recv return an error wrapping transport.ErrClosed. It
// is idempotent.
func (p *pipeline) Close() error {
	if p.closed.CompareAndSwap(false, true) {
		p.cancel()
	}
	return nil
}
