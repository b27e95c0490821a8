package memory

import (
	"fmt"
	"time"
)

// Defaults for zero Faults fields.
const (
	// DefaultReorderDelay bounds the hold-back of a reordered message
	// when Faults.ReorderDelay is zero.
	DefaultReorderDelay = 20 * time.Millisecond
	// DefaultLossDelay is how long a lost message takes to be noticed when
	// Faults.LossDelay is zero.
	DefaultLossDelay = 5 * time.Millisecond
)

// Faults are the random faults of a link. Each message sent on the link
// draws its own: rates are probabilities in [0, 1]. The zero value is a
// perfect link with no delay (blocked links still lose messages).
type Faults struct {
	// DropRate is the probability that a message is lost. A lost unary
	// request or response fails the call with transport.ErrUnreachable;
	// a lost pipeline message breaks the pipeline.
	DropRate float64
	// DuplicateRate is the probability that a request is delivered twice;
	// the copy comes up to ReorderDelay after the original and its answer
	// is discarded. Responses are never duplicated: the caller could not
	// tell.
	DuplicateRate float64
	// ReorderRate is the probability that a message is held back for an
	// extra delay in [ReorderDelay/2, ReorderDelay], so that messages sent
	// after it arrive first.
	ReorderRate float64
	// ReorderDelay bounds the hold-back of reordered messages and the lag
	// of duplicate copies. Zero means DefaultReorderDelay. Make it longer
	// than MaxDelay for messages to overtake each other often.
	ReorderDelay time.Duration
	// MinDelay and MaxDelay bound the latency of every message, drawn
	// uniformly from [MinDelay, MaxDelay]. On a pipeline a message never
	// overtakes an earlier one because of latency alone.
	MinDelay, MaxDelay time.Duration
	// LossDelay is how long after a lost message would have arrived its
	// sender learns of the loss (the failed call returns, the pipeline
	// breaks), and how long opening a pipeline over a blocked link takes
	// to fail: think of a retransmission timeout. It keeps a sender that
	// retries at once from spinning. Zero means DefaultLossDelay.
	LossDelay time.Duration
}

// Validate reports the first invalid field.
func (f Faults) Validate() error {
	rates := []struct {
		name string
		v    float64
	}{{"DropRate", f.DropRate}, {"DuplicateRate", f.DuplicateRate}, {"ReorderRate", f.ReorderRate}}
	for _, r := range rates {
		if !(r.v >= 0 && r.v <= 1) {
			return fmt.Errorf("memory: Faults.%s %v is not in [0, 1]", r.name, r.v)
		}
	}
	delays := []struct {
		name string
		v    time.Duration
	}{{"ReorderDelay", f.ReorderDelay}, {"MinDelay", f.MinDelay}, {"MaxDelay", f.MaxDelay}, {"LossDelay", f.LossDelay}}
	for _, d := range delays {
		if d.v < 0 {
			return fmt.Errorf("memory: Faults.%s %v is negative", d.name, d.v)
		}
	}
	if f.MinDelay > f.MaxDelay {
		return fmt.Errorf("memory: Faults.MinDelay %v exceeds MaxDelay %v", f.MinDelay, f.MaxDelay)
	}
	return nil
}

func (f Faults) lossDelay() time.Duration {
	if f.LossDelay == 0 {
		return DefaultLossDelay
	}
	return f.LossDelay
}

func (f Faults) reorderDelay() time.Duration {
	if f.ReorderDelay == 0 {
		return DefaultReorderDelay
	}
	return f.ReorderDelay
}
