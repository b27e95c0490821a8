package kv

import "errors"

// Errors returned by this package. Test with errors.Is.
var (
	// ErrBadCommand reports bytes that do not decode as a Command: a
	// corrupt log entry or one written by a newer graftkv.
	ErrBadCommand = errors.New("kv: malformed command")
	// ErrBadSnapshot reports a snapshot whose files are not a pebble
	// checkpoint written by SaveSnapshot.
	ErrBadSnapshot = errors.New("kv: bad snapshot")
	// ErrClosed reports use of a closed FSM or Server.
	ErrClosed = errors.New("kv: closed")
	// ErrInvalidConfig reports a Config that does not validate.
	ErrInvalidConfig = errors.New("kv: invalid config")
)
