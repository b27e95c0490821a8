//go:build !linux

package main

import "os"

var fdatasync func(*os.File) error
