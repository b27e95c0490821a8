package snapshot

import (
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/graft-raft/graft/storage"
)

// Errors returned by this package. Test with errors.Is. Errors of the
// FileService also carry a gRPC status (status.Code) that crosses the gRPC
// transport; the sentinel itself only survives in-process transports.
var (
	// ErrCorrupt reports a meta file or progress file that fails its
	// checksum or does not decode, or a snapshot directory that does not
	// match its meta table. It also matches storage.ErrCorrupt.
	ErrCorrupt error = &aliasError{msg: "snapshot: corrupt data", alias: storage.ErrCorrupt}
	// ErrBadName reports a file name that is empty, absolute, unclean,
	// escapes the snapshot directory, holds a NUL byte, is reserved
	// (starts with "__raft_"), is added twice, or is not a regular file
	// (a directory or symlink).
	ErrBadName = errors.New("snapshot: bad file name")
	// ErrNotFound reports an unknown or expired FileService reader, or a
	// snapshot file missing from disk.
	ErrNotFound = errors.New("snapshot: not found")
	// ErrDenied reports a GetFile for a name that is not part of the
	// reader's snapshot.
	ErrDenied = errors.New("snapshot: file not part of the snapshot")
	// ErrInvalid reports a malformed GetFile request (negative offset,
	// non-positive count) or URI.
	ErrInvalid = errors.New("snapshot: invalid request")
	// ErrChecksum reports a downloaded file whose checksum or size
	// differs from the remote meta table, after every retry.
	ErrChecksum = errors.New("snapshot: checksum mismatch")
	// ErrMismatch reports a remote snapshot whose index or term is not the
	// one Copy was asked for.
	ErrMismatch = errors.New("snapshot: remote snapshot is not the one requested")
	// ErrInterrupted reports a Copy ended by its context. The partial
	// download stays in temp/ for a later Copy to resume.
	ErrInterrupted = errors.New("snapshot: copy interrupted")
	// ErrStale reports a snapshot whose index is not above the newest
	// snapshot's.
	ErrStale = errors.New("snapshot: not newer than the newest snapshot")
	// ErrBusy reports Create or Copy while another Writer or Copy of the
	// same Storage is in progress.
	ErrBusy = errors.New("snapshot: another writer is in progress")
	// ErrClosed reports use of a closed Storage, Writer or FileService. It
	// also matches storage.ErrClosed.
	ErrClosed error = &aliasError{msg: "snapshot: closed", alias: storage.ErrClosed}
)

// aliasError is a sentinel that also matches another package's sentinel.
type aliasError struct {
	msg   string
	alias error
}

func (e *aliasError) Error() string        { return e.msg }
func (e *aliasError) Is(target error) bool { return target == e.alias }

// statusError is a FileService error: a Go error chain (for errors.Is)
// with the gRPC status code the transport sends.
type statusError struct {
	code codes.Code
	err  error
}

func (e *statusError) Error() string { return e.err.Error() }

// Unwrap returns the underlying error chain.
func (e *statusError) Unwrap() error { return e.err }

// GRPCStatus returns the status the gRPC transport sends for e.
func (e *statusError) GRPCStatus() *status.Status { return status.New(e.code, e.err.Error()) }

// statusErrorf returns a statusError with code whose chain wraps what the
// format's %w verbs name.
func statusErrorf(code codes.Code, format string, args ...any) error {
	return &statusError{code: code, err: fmt.Errorf(format, args...)}
}
