package vfs

import (
	"testing"

	"github.com/graft-raft/graft/internal/leakcheck"
)

func TestMain(m *testing.M) {
	leakcheck.VerifyTestMain(m)
}
