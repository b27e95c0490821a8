package main

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestBucketRangeInvertsBucketOf(t *testing.T) {
	for _, v := range []uint64{0, 1, 127, 128, 129, 255, 256, 257, 1000, 123456789, 1 << 40, math.MaxUint64} {
		b := bucketOf(v)
		lo, w := bucketRange(b)
		if v < lo || v-lo >= w {
			t.Errorf("value %d: bucket %d covers [%d, %d+%d)", v, b, lo, lo, w)
		}
	}
}

func TestQuantileMatchesSortedSamples(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var h histogram
	var samples []time.Duration
	for range 100000 {
		d := time.Duration(r.ExpFloat64() * float64(time.Millisecond))
		h.record(d)
		samples = append(samples, d)
	}
	slices.Sort(samples)
	for _, q := range []float64{0.5, 0.99, 0.999, 1} {
		want := samples[int(math.Ceil(q*float64(len(samples))))-1]
		got := h.quantile(q)
		if rel := math.Abs(float64(got-want)) / float64(want); rel > 0.005 {
			t.Errorf("q%v = %v, sorted samples say %v (%.2f%% off)", q, got, want, 100*rel)
		}
	}
}

func TestHistogramJSONRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	var h histogram
	for range 50000 {
		// Spread over several powers of two, and some below 2^subBits ns.
		h.record(time.Duration(r.ExpFloat64() * float64(time.Duration(1)<<r.IntN(30))))
	}
	h.record(0)
	h.record(3 * time.Second)
	b, err := json.Marshal(&h)
	if err != nil {
		t.Fatal(err)
	}
	var back histogram
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.n != h.n || back.max != h.max || back.counts != h.counts {
		t.Fatalf("round trip changed the histogram: n %d → %d, max %d → %d", h.n, back.n, h.max, back.max)
	}
	for _, q := range []float64{0.001, 0.1, 0.5, 0.9, 0.99, 0.999, 0.9999, 1} {
		if got, want := back.quantile(q), h.quantile(q); got != want {
			t.Errorf("q%v = %v after the round trip, %v before", q, got, want)
		}
	}
	// The CDF ends at 1, at the maximum, and never falls.
	cdf := back.cdf()
	if last := cdf[len(cdf)-1]; last.frac != 1 || last.v != time.Duration(h.max) {
		t.Errorf("CDF ends at %v, %v; want 1 at the maximum %v", last.v, last.frac, time.Duration(h.max))
	}
	for i := 1; i < len(cdf); i++ {
		if cdf[i].v <= cdf[i-1].v || cdf[i].frac < cdf[i-1].frac {
			t.Fatalf("CDF not increasing at %d: %v then %v", i, cdf[i-1], cdf[i])
		}
	}

	var empty histogram
	b, err = json.Marshal(&empty)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &back); err != nil || back.n != 0 || back.quantile(0.5) != 0 {
		t.Errorf("empty histogram: %s → n %d, err %v", b, back.n, err)
	}
	for _, bad := range []string{
		`{"n":1,"max_ns":200,"buckets":[[129,2,1]]}`, // not a bucket of this layout
		`{"n":2,"max_ns":5,"buckets":[[5,1,1]]}`,     // counts do not add up
	} {
		if err := json.Unmarshal([]byte(bad), &back); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}
