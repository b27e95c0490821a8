package throttle_test

import (
	"context"
	"fmt"

	"github.com/graft-raft/graft/throttle"
)

func Example() {
	// 1 MiB/s in 10 cycles: each cycle grants ~100 KiB.
	t := throttle.New(throttle.Options{BytesPerSecond: 1 << 20, MaxConcurrentInstalls: 1})
	if !t.StartInstall() {
		return // answer "busy"
	}
	defer t.FinishInstall()

	n, err := t.Wait(context.Background(), 64<<10)
	if err != nil {
		return
	}
	used := n / 2 // the read came back short
	t.Return(n - used)
	fmt.Println(n, used)
	// Output: 65536 32768
}
