package grpctransport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/graft-raft/graft/transport"
)

// toStatus turns a handler's error into the status error a gRPC method
// returns. A status error (or an error wrapping one) is kept as it is; the
// transport sentinels and context errors get their natural codes; anything
// else is codes.Unknown with the error's message.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if st, ok := status.FromError(err); ok {
		return st.Err()
	}
	switch {
	case errors.Is(err, transport.ErrUnknownGroup):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, transport.ErrClosed):
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	}
	return status.Error(codes.Unknown, err.Error())
}

// rpcError is the error the client returns for a failed call. It wraps
// the transport sentinels that apply (errors.Is) and carries the gRPC status
// (status.FromError, status.Code).
type rpcError struct {
	op, addr string
	st       *status.Status
	kinds    []error
}

func (e *rpcError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "grpctransport: %s %s: ", e.op, e.addr)
	msg := e.st.Message()
	for _, k := range e.kinds {
		if !strings.Contains(msg, k.Error()) {
			b.WriteString(k.Error())
			b.WriteString(": ")
		}
	}
	fmt.Fprintf(&b, "%s (%s)", msg, e.st.Code())
	return b.String()
}

// Unwrap returns the sentinels the error matches.
func (e *rpcError) Unwrap() []error { return e.kinds }

// GRPCStatus returns the call's gRPC status.
func (e *rpcError) GRPCStatus() *status.Status { return e.st }

// mapError turns an error from a gRPC call into an rpcError. ctx is the
// call's context, consulted to tell the caller's cancellation apart from a
// peer's; closed reports whether the Transport was closed.
func mapError(ctx context.Context, closed bool, op, addr string, err error) error {
	if err == io.EOF {
		// A stream ended without a status: the peer went away.
		err = status.Error(codes.Unavailable, "stream ended by peer")
	}
	st := status.Convert(err)
	var kinds []error
	switch code := st.Code(); {
	case closed:
		kinds = []error{transport.ErrClosed}
	case code == codes.NotFound && strings.Contains(st.Message(), transport.ErrUnknownGroup.Error()):
		kinds = []error{transport.ErrUnknownGroup}
	case code == codes.Unavailable:
		kinds = []error{transport.ErrUnreachable}
	case code == codes.DeadlineExceeded:
		// The peer did not answer in time: it may be down or partitioned.
		kinds = []error{transport.ErrUnreachable, context.DeadlineExceeded}
	case code == codes.Canceled:
		switch cerr := ctx.Err(); {
		case errors.Is(cerr, context.DeadlineExceeded):
			kinds = []error{transport.ErrUnreachable, cerr}
		case cerr != nil:
			kinds = []error{cerr}
		default:
			// Cancelled by the peer's side.
			kinds = []error{transport.ErrUnreachable}
		}
	}
	return &rpcError{op: op, addr: addr, st: st, kinds: kinds}
}
