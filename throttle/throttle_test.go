package throttle

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/graft-raft/graft/internal/leakcheck"
)

func TestMain(m *testing.M) {
	leakcheck.VerifyTestMain(m)
}

// fakeClock is a settable clock.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// newFake returns a throttle on a fake clock set to the start of a cycle.
func newFake(opts Options) (*Throttle, *fakeClock) {
	t := New(opts)
	c := &fakeClock{now: time.Unix(1_700_000_000, 0)}
	t.now = c.Now
	return t, c
}

func TestAcquireGrantsPerCycleExactly(t *testing.T) {
	th, clk := newFake(Options{BytesPerSecond: 1000, CyclesPerSecond: 10})
	if g := th.Acquire(60); g != 60 {
		t.Fatalf("first Acquire(60) = %d, want 60", g)
	}
	if g := th.Acquire(60); g != 40 {
		t.Fatalf("second Acquire(60) = %d, want the 40 left of a 100-byte cycle", g)
	}
	if g := th.Acquire(1); g != 0 {
		t.Fatalf("Acquire on a spent cycle = %d, want 0", g)
	}
	clk.Advance(99 * time.Millisecond)
	if g := th.Acquire(1); g != 0 {
		t.Fatalf("Acquire 99ms into the cycle = %d, want 0", g)
	}
	clk.Advance(time.Millisecond)
	if g := th.Acquire(500); g != 100 {
		t.Fatalf("Acquire(500) in the next cycle = %d, want 100", g)
	}
	// Over a simulated second, exactly BytesPerSecond is granted.
	var total int64
	for range 10 {
		clk.Advance(100 * time.Millisecond)
		for {
			g := th.Acquire(7)
			if g == 0 {
				break
			}
			total += g
		}
	}
	if total != 1000 {
		t.Fatalf("granted %d bytes over one second, want 1000", total)
	}
}

func TestAcquireNonPositive(t *testing.T) {
	th, _ := newFake(Options{BytesPerSecond: 1000})
	if g := th.Acquire(0); g != 0 {
		t.Fatalf("Acquire(0) = %d", g)
	}
	if g := th.Acquire(-5); g != 0 {
		t.Fatalf("Acquire(-5) = %d", g)
	}
}

func TestSmallRateGrantsAtLeastOneBytePerCycle(t *testing.T) {
	th, _ := newFake(Options{BytesPerSecond: 3, CyclesPerSecond: 10})
	if g := th.Acquire(10); g != 1 {
		t.Fatalf("Acquire = %d, want 1", g)
	}
}

func TestReturnUnusedTokens(t *testing.T) {
	th, clk := newFake(Options{BytesPerSecond: 1000, CyclesPerSecond: 10})
	g := th.Acquire(100)
	if g != 100 {
		t.Fatalf("Acquire = %d", g)
	}
	th.Return(30) // used only 70
	if g := th.Acquire(100); g != 30 {
		t.Fatalf("Acquire after returning 30 = %d, want 30", g)
	}
	// Returning more than was granted cannot create budget.
	th.Return(1000)
	if g := th.Acquire(1000); g != 100 {
		t.Fatalf("Acquire after over-return = %d, want the cycle's 100", g)
	}
	// Tokens returned in a later cycle are ignored.
	clk.Advance(100 * time.Millisecond)
	th.Return(50)
	if g := th.Acquire(1000); g != 100 {
		t.Fatalf("Acquire after a stale return = %d, want 100", g)
	}
}

func TestNilAndUnlimited(t *testing.T) {
	for name, th := range map[string]*Throttle{"nil": nil, "zero": New(Options{})} {
		t.Run(name, func(t *testing.T) {
			if g := th.Acquire(1 << 40); g != 1<<40 {
				t.Fatalf("Acquire = %d", g)
			}
			th.Return(5)
			g, err := th.Wait(context.Background(), 77)
			if g != 77 || err != nil {
				t.Fatalf("Wait = %d, %v", g, err)
			}
			for range 100 {
				if !th.StartInstall() {
					t.Fatal("StartInstall refused without a limit")
				}
			}
			th.FinishInstall()
		})
	}
}

func TestWaitBlocksUntilNextCycle(t *testing.T) {
	// A real clock: 100 bytes per 10ms cycle.
	th := New(Options{BytesPerSecond: 10_000, CyclesPerSecond: 100})
	ctx := context.Background()
	var total int64
	start := time.Now()
	for total < 350 {
		g, err := th.Wait(ctx, 100)
		if err != nil || g <= 0 || g > 100 {
			t.Fatalf("Wait = %d, %v", g, err)
		}
		total += g
	}
	// 350 bytes need at least four cycles: three full waits after the
	// first cycle's budget.
	if el := time.Since(start); el < 20*time.Millisecond {
		t.Fatalf("350 bytes at 10 KB/s took %v, want >= 20ms", el)
	}
}

func TestWaitRespectsContext(t *testing.T) {
	th, _ := newFake(Options{BytesPerSecond: 100, CyclesPerSecond: 1})
	if g := th.Acquire(100); g != 100 {
		t.Fatalf("Acquire = %d", g)
	}
	// The fake clock never moves: the budget never refills.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		g, err := th.Wait(ctx, 10)
		if g != 0 {
			err = errors.New("granted bytes from a spent budget")
		}
		done <- err
	}()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Wait = %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Wait did not return after cancel")
	}
	// An expired context fails at once even with budget.
	th2, _ := newFake(Options{BytesPerSecond: 100})
	if g, err := th2.Wait(ctx, 10); g != 0 || !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait on a done ctx = %d, %v", g, err)
	}
	if g, err := th2.Wait(context.Background(), 0); g != 0 || err != nil {
		t.Fatalf("Wait(0) = %d, %v", g, err)
	}
}

func TestConcurrentWaitersShareBudget(t *testing.T) {
	th := New(Options{BytesPerSecond: 4 << 20, CyclesPerSecond: 100})
	var total atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range 8 {
		wg.Go(func() {
			for range 20 {
				g, err := th.Wait(context.Background(), 4096)
				if err != nil {
					t.Error(err)
					return
				}
				total.Add(g)
			}
		})
	}
	wg.Wait()
	// 8*20 grants of at most 4 KiB: at most 640 KiB; the rate bounds the
	// time from below by (total - one cycle) / rate.
	el := time.Since(start)
	minDur := time.Duration(float64(total.Load()-(4<<20)/100) / float64(4<<20) * float64(time.Second))
	if el < minDur-5*time.Millisecond {
		t.Fatalf("%d bytes took %v, faster than the rate allows (%v)", total.Load(), el, minDur)
	}
}

func TestInstallLimit(t *testing.T) {
	th := New(Options{MaxConcurrentInstalls: 2})
	for i := range 2 {
		if !th.StartInstall() {
			t.Fatalf("install %d refused", i+1)
		}
	}
	if th.StartInstall() {
		t.Fatal("third install admitted over a limit of 2")
	}
	if n := th.Installs(); n != 2 {
		t.Fatalf("Installs = %d", n)
	}
	th.FinishInstall()
	if !th.StartInstall() {
		t.Fatal("install refused after one finished")
	}
	th.FinishInstall()
	th.FinishInstall()
	th.FinishInstall() // unmatched: ignored
	if n := th.Installs(); n != 0 {
		t.Fatalf("Installs = %d after all finished", n)
	}
}

func TestValidate(t *testing.T) {
	for _, o := range []Options{
		{BytesPerSecond: -1},
		{CyclesPerSecond: -1},
		{CyclesPerSecond: 1001},
		{MaxConcurrentInstalls: -1},
	} {
		if err := o.Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil", o)
		}
	}
	if err := DefaultOptions().Validate(); err != nil {
		t.Fatal(err)
	}
}

func BenchmarkThrottle(b *testing.B) {
	b.Run("Acquire", func(b *testing.B) {
		th := New(Options{BytesPerSecond: 1 << 50})
		for b.Loop() {
			th.Return(th.Acquire(4096) / 2)
		}
	})
	b.Run("AcquireParallel", func(b *testing.B) {
		th := New(Options{BytesPerSecond: 1 << 50})
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				th.Acquire(4096)
			}
		})
	})
	b.Run("Nil", func(b *testing.B) {
		var th *Throttle
		ctx := context.Background()
		for b.Loop() {
			_, _ = th.Wait(ctx, 4096)
		}
	})
}
