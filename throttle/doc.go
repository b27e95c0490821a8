// Package throttle limits the bandwidth and the number of snapshot
// installs of a process. One Throttle is shared by every raft group a
// process hosts: the leader side charges the bytes its FileService reads,
// the follower side the bytes its copiers write, so snapshot traffic cannot
// starve the log replication that shares the disk and the network.
//
// A Throttle is a token bucket refilled in cycles: the budget of one second
// (Options.BytesPerSecond) is split into Options.CyclesPerSecond equal
// parts, and each cycle starts with a fresh part; tokens left unused in a
// cycle are lost, so bursts stay short. A reader asks for what it would like
// to move and is granted what the cycle has left:
//
//	t := throttle.New(throttle.Options{BytesPerSecond: 40 << 20, MaxConcurrentInstalls: 4})
//	n, err := t.Wait(ctx, 128<<10) // blocks until the cycle grants 0 < n <= 128 KiB
//	if err != nil {
//		return err // ctx ended
//	}
//	read := readUpTo(n)
//	t.Return(n - read) // tokens not used go back to this cycle
//
// Acquire is the non-blocking form of Wait; it grants 0 bytes when the
// cycle is spent.
//
// StartInstall and FinishInstall bound the number of snapshot installs
// running at once in the process: a follower calls StartInstall before it
// starts downloading and answers "busy" to the leader when it is refused.
//
// A nil *Throttle is valid and means no limit at all, so code that throttles
// optionally needs no nil checks.
package throttle
