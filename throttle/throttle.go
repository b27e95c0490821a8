package throttle

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// DefaultCyclesPerSecond is the CyclesPerSecond used when
// Options.CyclesPerSecond is 0.
const DefaultCyclesPerSecond = 10

// Options configure a Throttle. The zero value is valid: no limits.
type Options struct {
	// BytesPerSecond is the number of bytes granted per second, over all
	// callers. 0 means unlimited; negative is invalid.
	BytesPerSecond int64
	// CyclesPerSecond is the number of refills per second; each cycle
	// grants BytesPerSecond/CyclesPerSecond bytes (at least 1). More
	// cycles mean smaller, smoother bursts; fewer mean less wake-ups for
	// waiting callers. 0 means DefaultCyclesPerSecond; negative or more
	// than 1000 is invalid.
	CyclesPerSecond int
	// MaxConcurrentInstalls is the number of snapshot installs that
	// StartInstall admits at once. 0 means unlimited; negative is invalid.
	MaxConcurrentInstalls int
}

// DefaultOptions returns the options used for zero fields.
func DefaultOptions() Options {
	return Options{CyclesPerSecond: DefaultCyclesPerSecond}
}

// Validate reports whether o can be used, naming the bad value if not.
func (o Options) Validate() error {
	switch {
	case o.BytesPerSecond < 0:
		return fmt.Errorf("throttle: Options.BytesPerSecond %d is negative", o.BytesPerSecond)
	case o.CyclesPerSecond < 0 || o.CyclesPerSecond > 1000:
		return fmt.Errorf("throttle: Options.CyclesPerSecond %d is outside [0, 1000]", o.CyclesPerSecond)
	case o.MaxConcurrentInstalls < 0:
		return fmt.Errorf("throttle: Options.MaxConcurrentInstalls %d is negative", o.MaxConcurrentInstalls)
	}
	return nil
}

// Throttle is a token bucket of bytes refilled in several cycles per
// second, plus a limit on concurrent snapshot installs. It is safe for
// concurrent use. A nil *Throttle grants everything and admits every
// install.
type Throttle struct {
	// perCycle is the budget of one cycle; 0 means unlimited.
	perCycle int64
	// cycle is the length of a cycle.
	cycle time.Duration
	// maxInstalls is the install limit; 0 means unlimited.
	maxInstalls int
	// now is the clock; tests replace it.
	now func() time.Time

	mu struct {
		sync.Mutex
		// epoch numbers the cycle whose budget used counts.
		epoch int64
		// used is the number of bytes granted in cycle epoch.
		used int64
		// installs is the number of installs running.
		installs int
	}
}

// New returns a Throttle with the given options. It does not validate
// them (call Options.Validate first): negative limits mean no limit and a
// CyclesPerSecond outside [1, 1000] means DefaultCyclesPerSecond.
func New(opts Options) *Throttle {
	cycles := opts.CyclesPerSecond
	if cycles <= 0 || cycles > 1000 {
		cycles = DefaultCyclesPerSecond
	}
	t := &Throttle{
		cycle:       time.Second / time.Duration(cycles),
		maxInstalls: max(opts.MaxConcurrentInstalls, 0),
		now:         time.Now,
	}
	if opts.BytesPerSecond > 0 {
		t.perCycle = max(opts.BytesPerSecond/int64(cycles), 1)
	}
	return t
}

// unlimited reports whether t grants any amount at once.
func (t *Throttle) unlimited() bool { return t == nil || t.perCycle == 0 }

// rollLocked starts a new cycle's budget if the clock has moved past the
// cycle of t.mu.used, and returns the current cycle's number. t.mu must be
// held.
func (t *Throttle) rollLocked(now time.Time) int64 {
	epoch := now.UnixNano() / int64(t.cycle)
	if epoch != t.mu.epoch {
		t.mu.epoch = epoch
		t.mu.used = 0
	}
	return epoch
}

// Acquire grants up to n bytes from the current cycle's budget without
// blocking. It returns 0 when the cycle's budget is spent (or n <= 0). The
// caller may give back what it does not use with Return.
func (t *Throttle) Acquire(n int64) int64 {
	if n <= 0 {
		return 0
	}
	if t.unlimited() {
		return n
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.rollLocked(t.now())
	g := min(n, t.perCycle-t.mu.used)
	t.mu.used += g
	return g
}

// Return gives back n bytes granted but not used, so other callers can
// use them in this cycle. Tokens are only worth anything in the cycle that
// granted them: once a new cycle has started (and refilled the budget),
// Return is ignored. Callers should return tokens right after the I/O they
// were granted for.
func (t *Throttle) Return(n int64) {
	if n <= 0 || t.unlimited() {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	before := t.mu.epoch
	if t.rollLocked(t.now()) != before {
		return
	}
	t.mu.used = max(t.mu.used-n, 0)
}

// Wait blocks until the throttle grants between 1 and n bytes, and
// returns the grant. It returns 0 and ctx's error if ctx ends first, and
// 0, nil if n <= 0.
func (t *Throttle) Wait(ctx context.Context, n int64) (int64, error) {
	if n <= 0 {
		return 0, nil
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if t.unlimited() {
		return n, nil
	}
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		if g := t.Acquire(n); g > 0 {
			return g, nil
		}
		// Sleep until the next cycle starts.
		now := t.now()
		next := (now.UnixNano()/int64(t.cycle) + 1) * int64(t.cycle)
		d := max(time.Duration(next-now.UnixNano()), time.Millisecond/10)
		if timer == nil {
			timer = time.NewTimer(d)
		} else {
			timer.Reset(d)
		}
		select {
		case <-timer.C:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// StartInstall admits one more snapshot install, or reports false if
// Options.MaxConcurrentInstalls are running. Each admitted install must
// end with FinishInstall.
func (t *Throttle) StartInstall() bool {
	if t == nil {
		return true
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.maxInstalls > 0 && t.mu.installs >= t.maxInstalls {
		return false
	}
	t.mu.installs++
	return true
}

// FinishInstall ends an install admitted by StartInstall. A call without
// a matching StartInstall is ignored.
func (t *Throttle) FinishInstall() {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.mu.installs > 0 {
		t.mu.installs--
	}
}

// Installs returns the number of installs running (admitted by
// StartInstall and not finished).
func (t *Throttle) Installs() int {
	if t == nil {
		return 0
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.mu.installs
}
