// Package kv is graftkv: a replicated key-value store built on graft and
// pebble, and the example to copy when building a service on graft.
//
// # Parts
//
//   - Command is one change (put, put-if-prev, create, delete, and the
//     members' HTTP addresses), encoded compactly and versioned; it is the
//     data of a raft log entry.
//   - FSM is the graft.StateMachine: a pebble database. Apply commits each
//     batch of entries as one pebble batch; a snapshot is a pebble
//     checkpoint, so saving costs a memtable flush and some hard links,
//     and an install sends only the SST files the follower lacks.
//   - Server is one node: the FSM, the graft.Node replicating it, and the
//     HTTP API with its metrics and status page.
//
// # Durability and startup
//
// The raft log is the durable source of truth; pebble is a cache rebuilt
// from it. At every start OpenFSM empties the database, graft loads the
// newest snapshot (FSM.LoadSnapshot swaps in its checkpoint: SSTs
// hard-linked, the few other files copied) and replays the log after it.
// So pebble commits without fsync, and neither a crash nor kill -9 loses
// an acknowledged write: an acknowledgement means the entry is on a
// quorum's disks.
//
// # Finding the leader's HTTP address
//
// The raft configuration knows each peer's raft address only. Each node
// therefore records its own HTTP address in the replicated state, outside
// the user's keys (OpSetMember): the leader applies its record as soon as
// it leads, and a follower posts its record to the leader's
// /v1/internal/members. A follower redirects a client (307) to the
// leader's recorded address, or answers 503 while there is none.
//
// # HTTP API
//
// Errors are JSON, {"error": "..."}.
//
//	PUT    /v1/kv/{key}        body = value → 200 {"index": N} once committed and applied
//	       ?prev=V             compare-and-set: 412 if the value differs or the key is missing
//	       ?prev-exist=false   create only: 412 if the key exists
//	GET    /v1/kv/{key}        200 raw value, 404 if missing; linearizable (ReadIndex)
//	       ?consistency=stale  read this node's state
//	DELETE /v1/kv/{key}        200 {"index": N}, 404 if missing
//	GET    /v1/status          Status as JSON
//	POST   /v1/admin/snapshot  take a snapshot now → {"index": N}
//	POST   /v1/admin/transfer-leader?to=ID
//	POST   /v1/admin/peers     {"add": {"id","addr"}}, {"remove": "ID"} or {"change": [{"id","addr"}, ...]}
//	GET    /metrics            Prometheus
//	GET    /                   HTML status page of the cluster
//
// Writes, linearizable reads and the admin calls that need the leader
// answer 307 on a follower, with Location at the leader's same URL, or
// 503 when no leader is known. A key over Config.MaxKeySize is 400, a
// value over Config.MaxValueSize 413; nothing is written then. A body over
// its limit is cut off there (the connection is then closed, not drained).
// A malformed query string, an unknown or repeated query parameter, or
// trailing data after a JSON body is 400.
//
// # Tokens and TLS
//
// Config.AdminToken protects /v1/admin/*; Config.APIToken everything else
// (the admin token is accepted there too; with only an API token, it
// guards the admin calls as well). A request then needs
// "Authorization: Bearer <token>": 401 without one, 403 with a wrong one.
// Tokens are compared by SHA-256 in constant time.
//
// POST /v1/internal/members is how a follower records its HTTP address
// with the leader; a forged record would redirect clients, tokens and all,
// to another host. It takes the admin-level token (nodes share the
// tokens), or, when the API is HTTPS, a client certificate the server
// verified against the nodes' CA: a node presents its own
// (Config.HTTPClientTLS), so a cluster under mutual TLS needs no token for
// it, and no one outside the CA can forge a record.
//
// With Config.HTTPClientTLS set, the caller serves Handler over HTTPS
// (verifying client certificates if given), redirects name https:// URLs
// and the node's own requests to other nodes use HTTPS.
package kv
