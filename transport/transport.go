// Package transport defines how graft nodes talk to each other: the
// client side a node uses to send RPCs to a peer (Transport) and the server
// side through which a process routes incoming RPCs to the node of the
// right group (Handler, registered with a Server).
//
// One Server per process hosts every group: requests carry group_id and the
// target peer_id, and the Server routes them to the Handler registered for
// that pair. An unknown pair is ErrUnknownGroup, never a panic.
//
// Implementations: transport/grpc (production) and transport/memory (an
// in-process network with fault injection, for tests).
package transport

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/graft-raft/graft/raftpb"
)

// Errors returned by transports. Test with errors.Is.
var (
	// ErrUnknownGroup reports a request for a (group, peer) the receiving
	// process does not host.
	ErrUnknownGroup = errors.New("transport: unknown group or peer")
	// ErrUnreachable reports that the peer could not be reached (dropped,
	// partitioned, connection refused). The request may or may not have
	// been delivered.
	ErrUnreachable = errors.New("transport: peer unreachable")
	// ErrClosed reports use of a closed transport, server or pipeline.
	ErrClosed = errors.New("transport: closed")
)

// Transport sends RPCs to peers. Addresses are "host:port" strings as they
// appear in a group's configuration. All methods are safe for concurrent
// use. Every request names its group and target peer; a transport never
// modifies a request or holds on to it after the call returns.
type Transport interface {
	RequestVote(ctx context.Context, addr string, req *raftpb.RequestVoteRequest) (*raftpb.RequestVoteResponse, error)
	AppendEntries(ctx context.Context, addr string, req *raftpb.AppendEntriesRequest) (*raftpb.AppendEntriesResponse, error)
	InstallSnapshot(ctx context.Context, addr string, req *raftpb.InstallSnapshotRequest) (*raftpb.InstallSnapshotResponse, error)
	TimeoutNow(ctx context.Context, addr string, req *raftpb.TimeoutNowRequest) (*raftpb.TimeoutNowResponse, error)
	ReadIndex(ctx context.Context, addr string, req *raftpb.ReadIndexRequest) (*raftpb.ReadIndexResponse, error)
	// GetFile reads a chunk of a file from the FileService of the process
	// at addr. Snapshot downloads use it; it carries no group: reader ids
	// are unique per process.
	GetFile(ctx context.Context, addr string, req *raftpb.GetFileRequest) (*raftpb.GetFileResponse, error)
	// Pipeline opens an ordered stream of AppendEntries to the peer at
	// addr. The stream ends when ctx is done, on Close, or on the first
	// error.
	Pipeline(ctx context.Context, addr string) (Pipeline, error)
	// Close closes every connection the transport holds.
	Close() error
}

// Pipeline is an ordered stream of AppendEntries requests to one peer and
// their responses, in the same order. Send and Recv may be called from two
// different goroutines; neither is safe for concurrent use with itself.
type Pipeline interface {
	// Send queues a request; it may block while the stream is full. The
	// caller must not modify req afterwards.
	Send(req *raftpb.AppendEntriesRequest) error
	// Recv returns the response to the oldest request not yet answered.
	Recv() (*raftpb.AppendEntriesResponse, error)
	// Close ends the stream; a blocked Send or Recv returns an error.
	Close() error
}

// Handler is a node's server side, one per (group, peer) in a process.
// Methods are called concurrently from many goroutines.
type Handler interface {
	HandleRequestVote(ctx context.Context, req *raftpb.RequestVoteRequest) (*raftpb.RequestVoteResponse, error)
	// HandleAppendEntries handles req and calls done exactly once, possibly
	// from another goroutine, when the response is ready (for a follower:
	// once the entries are durable). For requests of one pipeline, done is
	// called in request order.
	HandleAppendEntries(req *raftpb.AppendEntriesRequest, done func(*raftpb.AppendEntriesResponse, error))
	HandleInstallSnapshot(ctx context.Context, req *raftpb.InstallSnapshotRequest) (*raftpb.InstallSnapshotResponse, error)
	HandleTimeoutNow(ctx context.Context, req *raftpb.TimeoutNowRequest) (*raftpb.TimeoutNowResponse, error)
	HandleReadIndex(ctx context.Context, req *raftpb.ReadIndexRequest) (*raftpb.ReadIndexResponse, error)
}

// FileHandler serves GetFile requests; one per process (the snapshot
// FileService). A response's Data passes to the transport, which may give
// it to RecycleChunk once sent: a handler draws it from ChunkBuffer, or at
// least never keeps or shares it.
type FileHandler interface {
	HandleGetFile(ctx context.Context, req *raftpb.GetFileRequest) (*raftpb.GetFileResponse, error)
}

// Router maps (group, peer) pairs to the Handlers a process hosts, plus the
// process's one FileHandler. Servers route incoming requests through it. It
// is safe for concurrent use.
type Router struct {
	mu       sync.RWMutex
	handlers map[routeKey]Handler
	files    FileHandler
}

type routeKey struct{ group, peer string }

// NewRouter returns an empty Router.
func NewRouter() *Router {
	return &Router{handlers: make(map[routeKey]Handler)}
}

// Register routes requests for (group, peer) to h. Registering a pair twice
// is an error.
func (r *Router) Register(group, peer string, h Handler) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := routeKey{group, peer}
	if _, ok := r.handlers[k]; ok {
		return fmt.Errorf("transport: group %q peer %q already registered", group, peer)
	}
	r.handlers[k] = h
	return nil
}

// Unregister removes the route for (group, peer), if any.
func (r *Router) Unregister(group, peer string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.handlers, routeKey{group, peer})
}

// Handler returns the Handler for (group, peer), or an error wrapping
// ErrUnknownGroup.
func (r *Router) Handler(group, peer string) (Handler, error) {
	r.mu.RLock()
	h, ok := r.handlers[routeKey{group, peer}]
	r.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("%w: group %q peer %q", ErrUnknownGroup, group, peer)
	}
	return h, nil
}

// SetFileHandler sets the process's FileHandler.
func (r *Router) SetFileHandler(h FileHandler) {
	r.mu.Lock()
	r.files = h
	r.mu.Unlock()
}

// FileHandler returns the process's FileHandler, or an error if none is set.
func (r *Router) FileHandler() (FileHandler, error) {
	r.mu.RLock()
	h := r.files
	r.mu.RUnlock()
	if h == nil {
		return nil, errors.New("transport: no file service in this process")
	}
	return h, nil
}
