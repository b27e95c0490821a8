package main

import (
	"os"
	"testing"
)

func TestBytesFlag(t *testing.T) {
	for in, want := range map[string]int64{
		"0": 0, "1048576": 1 << 20, "512KiB": 512 << 10, "1MiB": 1 << 20, "2 GiB": 2 << 30,
		"10MB": 10_000_000, "4K": 4096, "100B": 100,
	} {
		var b bytesFlag
		if err := b.Set(in); err != nil || int64(b) != want {
			t.Errorf("Set(%q) = %d, %v; want %d", in, b, err, want)
		}
	}
	for _, in := range []string{"", "-1", "1.5MiB", "MiB", "12XB", "99999999999GiB"} {
		var b bytesFlag
		if err := b.Set(in); err == nil {
			t.Errorf("Set(%q) = %d, want an error", in, b)
		}
	}
}

func TestAdvertise(t *testing.T) {
	host, err := os.Hostname()
	if err != nil {
		t.Fatalf("os.Hostname: %v", err)
	}
	for _, tc := range []struct{ listen, fallback, want string }{
		{"10.0.0.1:8000", "10.0.0.9", "10.0.0.1:8000"},
		{"node1.example:8000", "", "node1.example:8000"},
		{":8000", "10.0.0.1", "10.0.0.1:8000"},
		{"0.0.0.0:8000", "node1.example", "node1.example:8000"},
		{"[::]:8000", "fd00::1", "[fd00::1]:8000"},
		{":8000", "0.0.0.0", host + ":8000"},
		{":8000", "", host + ":8000"},
	} {
		got, err := advertise(tc.listen, tc.fallback)
		if err != nil || got != tc.want {
			t.Errorf("advertise(%q, %q) = %q, %v; want %q", tc.listen, tc.fallback, got, err, tc.want)
		}
	}
	if _, err := advertise("8000", ""); err == nil {
		t.Error("advertise(8000) accepted a port without a host")
	}
}
