package main

import (
	"encoding/json"
	"fmt"
	"math/bits"
	"time"
)

// histogram is a log-linear latency histogram in the spirit of
// HdrHistogram: values below 2^subBits ns are exact, and every power of two
// above is split into 2^subBits equal buckets, so a reported quantile is
// within 1/2^(subBits+1) (0.4%) of the recorded value. Recording is a few
// instructions and never allocates. A histogram is not safe for concurrent
// use: each client goroutine keeps its own and they are merged at the end.
type histogram struct {
	counts [(64 - subBits + 1) << subBits]uint64
	n      uint64
	max    uint64
}

const subBits = 7

func bucketOf(v uint64) int {
	if v < 1<<subBits {
		return int(v)
	}
	k := bits.Len64(v) - 1 // v is in [2^k, 2^(k+1)), k >= subBits
	sub := (v >> (k - subBits)) & (1<<subBits - 1)
	return (k-subBits+1)<<subBits + int(sub)
}

// bucketRange returns the smallest value in bucket b and the bucket's width.
func bucketRange(b int) (lo, width uint64) {
	if b < 1<<subBits {
		return uint64(b), 1
	}
	k := b>>subBits - 1 + subBits
	sub := uint64(b & (1<<subBits - 1))
	return 1<<k | sub<<(k-subBits), 1 << (k - subBits)
}

func (h *histogram) record(d time.Duration) {
	v := uint64(max(d, 0))
	h.counts[bucketOf(v)]++
	h.n++
	h.max = max(h.max, v)
}

func (h *histogram) merge(o *histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.max = max(h.max, o.max)
}

// sub removes from h the values of o, an earlier copy of h. The maximum
// stays h's.
func (h *histogram) sub(o *histogram) {
	for i, c := range o.counts {
		h.counts[i] -= c
	}
	h.n -= o.n
}

func (h *histogram) latencies() latencies {
	return latencies{p50: h.quantile(0.5), p99: h.quantile(0.99), n: int(h.n)}
}

// quantile returns the value at quantile q (0 < q <= 1): the middle of the
// bucket holding the ceil(q*n)-th smallest value, capped at the maximum.
func (h *histogram) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q*float64(h.n) + 0.999999)
	rank = min(max(rank, 1), h.n)
	var seen uint64
	for b, c := range h.counts {
		seen += c
		if seen >= rank {
			lo, w := bucketRange(b)
			return time.Duration(min(lo+w/2, h.max))
		}
	}
	return time.Duration(h.max)
}

// histJSON is a histogram's JSON form: its count, its maximum and its
// non-empty buckets, each as [lowest value, width, count] in nanoseconds,
// in increasing order. A bucket holds the values in [lo, lo+width); with
// the counts that is enough to rebuild quantiles and the CDF without
// knowing the bucket layout, and UnmarshalJSON rebuilds the histogram
// exactly.
type histJSON struct {
	N       uint64      `json:"n"`
	MaxNs   uint64      `json:"max_ns"`
	Buckets [][3]uint64 `json:"buckets"`
}

// MarshalJSON writes h as a histJSON.
func (h *histogram) MarshalJSON() ([]byte, error) {
	j := histJSON{N: h.n, MaxNs: h.max, Buckets: [][3]uint64{}}
	for b, c := range h.counts {
		if c > 0 {
			lo, w := bucketRange(b)
			j.Buckets = append(j.Buckets, [3]uint64{lo, w, c})
		}
	}
	return json.Marshal(j)
}

// UnmarshalJSON reads a histJSON into h, replacing its contents. It
// refuses buckets that are not this histogram's (another layout) and
// counts that do not add up to n.
func (h *histogram) UnmarshalJSON(data []byte) error {
	var j histJSON
	if err := json.Unmarshal(data, &j); err != nil {
		return err
	}
	*h = histogram{n: j.N, max: j.MaxNs}
	var sum uint64
	for _, bk := range j.Buckets {
		lo, w, c := bk[0], bk[1], bk[2]
		b := bucketOf(lo)
		if blo, bw := bucketRange(b); blo != lo || bw != w {
			return fmt.Errorf("histogram bucket [%d, +%d) does not match the layout (subBits %d)", lo, w, subBits)
		}
		h.counts[b] += c
		sum += c
	}
	if sum != h.n {
		return fmt.Errorf("histogram buckets count %d values, n says %d", sum, h.n)
	}
	return nil
}

// cdfPoint is a point of a histogram's cumulative distribution: the
// share of values below v.
type cdfPoint struct {
	v    time.Duration
	frac float64
}

// cdf returns the cumulative distribution of h as a step at the top of
// every non-empty bucket (capped at the maximum), after a first point at
// the bottom of the lowest one with share 0. It is empty if h is.
func (h *histogram) cdf() []cdfPoint {
	if h.n == 0 {
		return nil
	}
	var out []cdfPoint
	var seen uint64
	for b, c := range h.counts {
		if c == 0 {
			continue
		}
		lo, w := bucketRange(b)
		if out == nil {
			out = append(out, cdfPoint{time.Duration(lo), 0})
		}
		seen += c
		out = append(out, cdfPoint{time.Duration(min(lo+w, max(h.max, lo+1))), float64(seen) / float64(h.n)})
	}
	return out
}
