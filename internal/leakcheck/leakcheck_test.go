package leakcheck

import (
	"testing"
	"time"
)

// A goroutine that ends later than goleak's own retries last is not a
// leak for leakcheck.
func TestWaitsForSlowGoroutine(t *testing.T) {
	done := make(chan struct{})
	go func() {
		// Stands for a connection goroutine that takes a while to unwind.
		time.Sleep(time.Second)
		close(done)
	}()
	if err := Find(); err != nil {
		t.Fatalf("Find with a goroutine ending after 1s: %v", err)
	}
	select {
	case <-done:
	default:
		t.Fatal("Find returned before the goroutine ended")
	}
}
