// Package graft is a Raft consensus library with braft's architecture.
//
// A Node is one peer of one raft group. It replicates the commands
// proposed with Node.Apply to a quorum of its group's peers, durably, and
// hands them once committed to the user's StateMachine, in the same order
// on every peer. Many groups may share a process: they share one
// transport.Router served by one server (transport/grpc), and one client
// Transport.
//
// # Walk-through
//
// Give each node its durable storage (storage/segment for the log,
// storage/metafile for term and vote), the process's Transport and Router,
// and a StateMachine; list the group's peers in InitialPeers when the
// group is new. NewNode starts the node: after an election timeout one
// peer wins a pre-vote and then an election, and leads. The leader appends
// each proposal to its log and, in parallel, streams it to every follower
// through a replicator that keeps several AppendEntries in flight. An
// entry commits once a quorum has written it durably (the leader's own
// write counts); the apply loop then calls StateMachine.Apply with batches
// of committed entries, and each proposer's Apply call returns its entry's
// result.
//
// Followers refuse votes while they hear from a live leader, and a leader
// that loses contact with a quorum steps down (check-quorum), so a
// partitioned or flapping peer cannot disrupt a healthy group.
//
// The parts of a node live in internal packages: the log manager (memory
// view of the log, group commit), the ballot (quorum arithmetic), and conf
// (membership). Package rafttest runs whole groups in one process with
// fault injection, for tests.
package graft
