package main

import (
	"os"
	"syscall"
)

var fdatasync = func(f *os.File) error { return syscall.Fdatasync(int(f.Fd())) }
