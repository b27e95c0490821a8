package testnode

import (
	"bufio"
	"os"
	"strconv"
	"strings"
)

// MemStatus is a process's memory use as /proc/self/status reports it.
type MemStatus struct {
	// RSS is the resident set size now (VmRSS), in bytes.
	RSS int64
	// PeakRSS is the highest resident set size since the process started
	// (VmHWM), in bytes.
	PeakRSS int64
}

// ReadMemStatus reads this process's MemStatus; fields are zero where
// /proc/self/status is not available (outside Linux).
func ReadMemStatus() MemStatus {
	var m MemStatus
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return m
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		var dst *int64
		switch key {
		case "VmRSS":
			dst = &m.RSS
		case "VmHWM":
			dst = &m.PeakRSS
		default:
			continue
		}
		// "   123456 kB"
		fields := strings.Fields(val)
		if len(fields) == 2 && fields[1] == "kB" {
			if n, err := strconv.ParseInt(fields[0], 10, 64); err == nil {
				*dst = n << 10
			}
		}
	}
	return m
}
