// Package memory is an in-process network implementing graft's transport
// interfaces, with fault injection, for tests.
//
// A Network joins processes by address. Each process listens with the
// transport.Router that hosts its groups (as a gRPC server would) and sends
// through the Transport for its own address, so every message travels a
// directed link from one address to another and faults can target links:
//
//	net := memory.NewNetwork(seed)
//	defer net.Close()
//	net.Listen("n1", router1)
//	net.Listen("n2", router2)
//	tr1 := net.Transport("n1") // n1's client side
//	resp, err := tr1.RequestVote(ctx, "n2", req)
//
// # Faults
//
// Faults can be changed at any time, between any two calls:
//
//   - Disconnect/Reconnect isolate a process from every other one.
//   - Partition splits addresses into groups that cannot reach each
//     other; Heal removes the partition.
//   - Cut/Restore block one direction of one link.
//   - SetFaults (every link) and SetLinkFaults (one directed link) set
//     random drop, duplication, reordering and delay (see Faults).
//   - Unlisten models a crash: calls and pipelines to or from the address
//     fail at once, and its handlers' contexts are cancelled.
//   - HealAll undoes all of the above except Unlisten.
//
// A message is lost if its link is blocked when it is sent or when it
// would arrive, or if the drop fault hits it. A lost request or response of
// a unary RPC makes the call fail with transport.ErrUnreachable once the
// message's delay and Faults.LossDelay have passed (or sooner, with the
// caller's context). A lost request has not run its handler; a lost
// response has. A call whose context expires fails with an error wrapping
// both context.DeadlineExceeded and transport.ErrUnreachable.
//
// Random choices come from one PCG generator seeded by NewNetwork's seed.
// Goroutine scheduling decides the order in which messages draw from it, so
// a seed makes a run's faults reproducible in distribution, not exactly.
//
// # Pipelines
//
// A pipeline behaves like a stream over a TCP connection that can be reset:
//
//   - Requests are handed to the peer's HandleAppendEntries one at a time,
//     on the pipeline's own server goroutine, in the order sent (each after
//     its link delay, never overtaking an earlier one) — unless the
//     reorder or duplicate faults say otherwise, below.
//   - Responses come back from Recv strictly in request order, whatever
//     order the handler calls done in: every response is matched to its
//     request, so the sender's bookkeeping stays right.
//   - A lost message (request or response; drop fault or blocked link)
//     breaks the stream: LossDelay after the message would have arrived,
//     Send and Recv fail with transport.ErrUnreachable, and requests not
//     yet delivered are discarded, as on a connection reset. Open a new
//     pipeline to go on.
//   - Reordering holds a request back (Faults.ReorderDelay) while later
//     ones are delivered before it. Duplication delivers a second copy of a
//     request, also late; the handler's answer to the copy is discarded.
//     Both show a follower the stale and repeated AppendEntries it must
//     handle safely. Held-back requests and copies are strays in the
//     network: they are still delivered after their pipeline breaks or is
//     closed (their answers discarded), unless the destination is down or
//     the network closed.
//   - A handler's error, or a request for a group the peer does not host,
//     ends the stream in order: Recv returns the responses to earlier
//     requests, then the error. Send fails from then on.
//   - Send blocks while MaxPipelineOutstanding requests are unanswered by
//     Recv.
//
// # Copies and goroutines
//
// Every message is deep-copied (proto.Clone) when sent and again for each
// delivery, so neither side aliases the other's. Unary handlers run on a
// goroutine of their own per call; each pipeline has one server goroutine.
// A unary handler's context is cancelled when the caller's context is done
// (as gRPC propagates cancellation), when its process is unlistened, or
// when the network closes; a duplicate copy's only by the last two.
// Network.Close stops everything and waits for every goroutine the Network
// started.
package memory
