//go:build unix

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// chromiumNames are the executables looked for in PATH.
var chromiumNames = []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "headless-shell"}

var installChromium struct {
	once sync.Once
	out  []byte
	err  error
}

// chromium returns the path of a Chromium, installing Debian's package
// with scripts/install-chromium.sh first if it is missing and $CI is set
// or -e2e.install-chromium asks. Without one the test fails in CI and
// skips elsewhere, saying why.
func chromium(t *testing.T) string {
	t.Helper()
	find := func() string {
		for _, name := range chromiumNames {
			if p, err := exec.LookPath(name); err == nil {
				return p
			}
		}
		return ""
	}
	if p := find(); p != "" {
		return p
	}
	why := fmt.Sprintf("no Chromium in PATH (looked for %s)", strings.Join(chromiumNames, ", "))
	if inCI() || *flagInstallChromium {
		installChromium.once.Do(func() {
			script, err := filepath.Abs(filepath.Join("..", "..", "scripts", "install-chromium.sh"))
			if err != nil {
				installChromium.err = err
				return
			}
			start := time.Now()
			installChromium.out, installChromium.err = exec.Command(script).CombinedOutput()
			t.Logf("e2e: %s took %v", script, time.Since(start).Round(time.Second))
		})
		if p := find(); p != "" {
			return p
		}
		why += fmt.Sprintf(", and scripts/install-chromium.sh did not install one (%v):\n%s", installChromium.err, tail1(installChromium.out, 2<<10))
	} else {
		why += "; install Debian's chromium (scripts/install-chromium.sh, as root) or run with -e2e.install-chromium or CI=true"
	}
	if inCI() {
		t.Fatalf("e2e: the status page test needs Chromium in CI: %s", why)
	}
	t.Skipf("e2e: skipping the status page test: %s", why)
	return ""
}

func tail1(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// TestStatusPageBrowser renders GET / in headless Chromium and checks that
// it shows the node's role and its index, and that it refreshes itself as
// the index moves.
func TestStatusPageBrowser(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("e2e: skipped in -short mode")
	}
	exe := chromium(t)
	c := newCluster(t, clusterOptions{})
	c.start()
	l := c.waitLeader()
	f := c.followers(l)[0]
	for i := range 7 {
		c.put(l, fmt.Sprintf("page-%d", i), "x")
	}

	var chromeOut syncBuffer
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.DisableGPU,
		chromedp.CombinedOutput(&chromeOut),
	)
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox) // Chromium refuses to run as root with its sandbox
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	defer cancelBrowser()
	ctx, cancel := context.WithTimeout(bctx, 90*time.Second)
	defer cancel()
	defer func() {
		if t.Failed() {
			t.Logf("chromium output:\n%s", tail1([]byte(chromeOut.String()), 4<<10))
		}
	}()

	start := time.Now()
	if err := chromedp.Do(ctx, chromedp.Navigate(l.url("/", nil))); err != nil {
		t.Fatalf("chromium (%s) could not load %s: %v", exe, l.url("/", nil), err)
	}
	t.Logf("loaded %s in chromium in %v", l.url("/", nil), time.Since(start).Round(time.Millisecond))

	// pageShows waits until the rendered text matches every pattern that
	// want returns (it is called on each poll, with the node's status then).
	pageShows := func(n *node, what string, want func(*status) []*regexp.Regexp) string {
		t.Helper()
		var text string
		waitFor(t, 20*time.Second, "the status page to show "+what, func() (bool, string) {
			// A refresh may replace the document under the evaluation: retry.
			var err error
			if text, err = chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`)); err != nil {
				return false, err.Error()
			}
			s, err := n.status()
			if err != nil {
				return false, err.Error()
			}
			for _, p := range want(s) {
				if !p.MatchString(text) {
					return false, fmt.Sprintf("no match for %s in the page text:\n%s", p, text)
				}
			}
			return true, ""
		})
		return text
	}
	index := func(i uint64) *regexp.Regexp { return regexp.MustCompile(fmt.Sprintf(`\b%d\b`, i)) }
	word := func(w string) *regexp.Regexp { return regexp.MustCompile(`(?i)\b` + regexp.QuoteMeta(w) + `\b`) }

	// The applied index moves on its own for a while after an election
	// (the nodes record their HTTP addresses in the log), so the page must
	// show the index of the status fetched with it.
	text := pageShows(l, "the role leader and the applied index", func(s *status) []*regexp.Regexp {
		return []*regexp.Regexp{word("leader"), word(l.id), index(s.AppliedIndex)}
	})
	t.Logf("status page of %s:\n%s", l.id, text)
	if *flagScreenshot != "" {
		if png, err := chromedp.Run(ctx, chromedp.FullScreenshot(90)); err != nil {
			t.Errorf("screenshot: %v", err)
		} else if err := os.WriteFile(*flagScreenshot, png, 0o644); err != nil {
			t.Errorf("screenshot: %v", err)
		} else {
			t.Logf("saved a screenshot of the status page to %s", *flagScreenshot)
		}
	}

	// Auto-refresh: the page follows the index without a reload.
	st := l.mustStatus()
	var last uint64
	for i := range 5 {
		last = c.put(l, fmt.Sprintf("page-more-%d", i), "y")
	}
	if last <= st.AppliedIndex {
		t.Fatalf("writes answered index %d, not past %d", last, st.AppliedIndex)
	}
	pageShows(l, fmt.Sprintf("an applied index of %d or more, without a reload", last), func(s *status) []*regexp.Regexp {
		return []*regexp.Regexp{index(max(s.AppliedIndex, last))}
	})

	// A follower's page shows its own role.
	if err := chromedp.Do(ctx, chromedp.Navigate(f.url("/", nil))); err != nil {
		t.Fatalf("chromium could not load %s: %v", f.url("/", nil), err)
	}
	text = pageShows(f, "the role follower", func(s *status) []*regexp.Regexp {
		return []*regexp.Regexp{word("follower"), word(f.id), index(s.AppliedIndex)}
	})
	if strings.Contains(text, "undefined") || strings.Contains(text, "NaN") {
		t.Errorf("the status page shows undefined or NaN:\n%s", text)
	}
}
