// Package e2e holds the end-to-end tests of graftkv: they build the
// graftkv and graftctl binaries, start real `graftkv serve` processes (three
// nodes on loopback ports, data under t.TempDir()) and drive them over the
// HTTP API, with graftctl, and in headless Chromium, exactly as a user
// would.
//
// The default suite takes well under a minute:
//
//	go test ./kv/e2e
//
// Flags go after the package, e.g. go test ./kv/e2e -run TestSoak -e2e.soak=5m:
//
//	-e2e.soak=5m            also run the kill -9 soak for that long
//	-e2e.logs               print every node's log, not only a failed test's
//	-e2e.race=auto|on|off   build graftkv with -race (auto: as the test binary is built)
//	-e2e.install-chromium   install Debian's chromium (scripts/install-chromium.sh) if it is
//	                        missing; also done when $CI is set
//	-e2e.screenshot=FILE    save the browser test's screenshot of the status page
//
// Without Chromium the browser test skips, or fails if $CI is true. In
// -short mode every test here skips. Node processes run in their own
// process group, are killed (the group) when their test ends, and on Linux
// die with the test binary (Pdeathsig).
package e2e
