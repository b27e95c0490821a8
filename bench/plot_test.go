package main

import (
	"image/png"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

// TestResultsJSONAndPlots saves made-up results as the writes workload
// does, reads them back as -workload plot does, and draws the plots.
func TestResultsJSONAndPlots(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	rep := &report{
		cfg:   config{workload: "writes", systems: []string{"graft", "hashicorp"}, clients: []int{1, 16, 64}, sizes: []int{256, 1024}, runs: 2, duration: time.Second},
		args:  []string{"-runs", "2"},
		start: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC),
	}
	rep.end = rep.start.Add(time.Minute)
	for _, size := range rep.cfg.sizes {
		for _, c := range rep.cfg.clients {
			for run := 1; run <= rep.cfg.runs; run++ {
				for i, sys := range rep.cfg.systems {
					r := &result{system: sys, clients: c, size: size, run: run, elapsed: time.Second, cpu: time.Second / 2,
						cpuPressure: 0.25, ioPressure: -1, errs: uint64(run - 1)}
					r.ctr = counters{logWrites: 10, logEntries: 20, logWriteTime: time.Millisecond, logWriteHist: &histogram{}, appendRequests: 3, appendEntries: 9}
					r.ctr.logWriteHist.record(time.Millisecond)
					for range 1000 * c {
						r.hist.record(time.Duration(float64(time.Millisecond) * float64(i+1) * (0.5 + rng.ExpFloat64())))
						r.ops++
					}
					rep.results = append(rep.results, r)
				}
			}
		}
	}
	dir := t.TempDir()
	raw := filepath.Join(dir, "w.json")
	if err := rep.writeJSON(raw); err != nil {
		t.Fatal(err)
	}
	j, rs, err := readResults(raw)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(j.Systems, rep.cfg.systems) || !reflect.DeepEqual(j.Clients, rep.cfg.clients) || !j.Start.Equal(rep.start) {
		t.Errorf("read back systems %v, clients %v, start %v", j.Systems, j.Clients, j.Start)
	}
	if len(rs) != len(rep.results) {
		t.Fatalf("read back %d runs, wrote %d", len(rs), len(rep.results))
	}
	for i, r := range rs {
		w := rep.results[i]
		if !reflect.DeepEqual(r, w) {
			t.Fatalf("run %d: read back\n%+v\nwrote\n%+v", i, *r, *w)
		}
	}

	files, err := renderPlots(j, rs, dir, "w")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"w-throughput.png", "w-latency-cdf-1c.png", "w-latency-cdf-16c.png", "w-latency-cdf-64c.png"}
	if len(files) != len(want) {
		t.Fatalf("wrote %v, want %v", files, want)
	}
	for i, f := range files {
		if filepath.Base(f) != want[i] {
			t.Errorf("file %d is %s, want %s", i, f, want[i])
		}
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(fh)
		fh.Close()
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if b := img.Bounds(); b.Dx() < 1000 || b.Dy() < 600 {
			t.Errorf("%s is %v, smaller than expected", f, b)
		}
	}
}
