package grpctransport

import "testing"

func TestDialTarget(t *testing.T) {
	for in, want := range map[string]string{
		"n1:7000":            "passthrough:///n1:7000",
		"10.0.0.1:7000":      "passthrough:///10.0.0.1:7000",
		"[fd00::1]:7000":     "passthrough:///[fd00::1]:7000",
		"dns:///n1:7000":     "dns:///n1:7000",
		"unix:///tmp/raft":   "unix:///tmp/raft",
		"unix:relative.sock": "unix:relative.sock",
	} {
		if got := dialTarget(in); got != want {
			t.Errorf("dialTarget(%q) = %q, want %q", in, got, want)
		}
	}
}
