package graft

import (
	"errors"
	"fmt"
)

// Errors returned by a Node. Test with errors.Is.
var (
	// ErrNotLeader reports a request that only the leader can serve. The
	// error is a *NotLeaderError naming the leader, if one is known.
	ErrNotLeader = errors.New("graft: not leader")
	// ErrLeadershipLost reports a proposal whose leader stepped down before
	// it was applied. It may or may not commit later.
	ErrLeadershipLost = errors.New("graft: leadership lost, outcome unknown")
	// ErrShutdown reports a node that has been shut down.
	ErrShutdown = errors.New("graft: node shut down")
	// ErrBusy reports a node that cannot take the request now (for example
	// a snapshot or configuration change already in progress). Retry later.
	ErrBusy = errors.New("graft: busy")
	// ErrStateMachine reports that the state machine failed; the node stops
	// applying and steps down.
	ErrStateMachine = errors.New("graft: state machine failed")
	// ErrInvalidOptions reports Options that do not validate.
	ErrInvalidOptions = errors.New("graft: invalid options")
	// ErrTooLarge reports a proposal larger than Options.MaxEntrySize.
	ErrTooLarge = errors.New("graft: entry too large")
)

// NotLeaderError is the error returned for requests sent to a node that is
// not the leader. errors.Is(err, ErrNotLeader) holds for it.
type NotLeaderError struct {
	// LeaderID and LeaderAddr name the leader this node knows of; empty
	// when it knows none.
	LeaderID   string
	LeaderAddr string
}

func (e *NotLeaderError) Error() string {
	if e.LeaderID == "" {
		return "graft: not leader (no leader known)"
	}
	return fmt.Sprintf("graft: not leader (leader is %s at %s)", e.LeaderID, e.LeaderAddr)
}

// Is reports whether target is ErrNotLeader.
func (e *NotLeaderError) Is(target error) bool { return target == ErrNotLeader }
