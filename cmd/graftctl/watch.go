package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
)

func watchCmd(a *app) *cobra.Command {
	var interval time.Duration
	cmd := &cobra.Command{
		Use:   "watch",
		Short: "Follow the node's status and the progress of a snapshot install",
		Long: "Poll GET /v1/status and show the node's role, term and indexes; while the node installs a\n" +
			"snapshot from its leader, show a progress bar of its files and bytes with rate and ETA.\n" +
			"Exits 0 when an install it saw completes; otherwise runs until Ctrl-C. An unreachable node\n" +
			"(say, one being restarted) is reported and polled again.\n" +
			"With --json: one status object per line, each time the status changes.",
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if interval <= 0 {
				return usageError{fmt.Errorf("--interval=%v: want a positive duration", interval)}
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			w := &watcher{c: c, out: a.stdout, json: a.json, interval: interval, timeout: a.timeout, tty: isTerminal(a.stdout)}
			return w.run(cmd.Context())
		},
	}
	cmd.Flags().DurationVar(&interval, "interval", 500*time.Millisecond, "time between polls")
	return cmd
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// watcher polls one node's status. On a terminal it redraws one line (and
// a progress bar during an install); elsewhere it prints a line per change.
type watcher struct {
	c        *client
	out      io.Writer
	json     bool
	tty      bool
	interval time.Duration
	timeout  time.Duration

	last     string // last line printed
	first    *status
	seen     bool     // an install is or was under way since the watch began
	before   uint64   // the snapshot index when the install was first seen
	lastProg progress // progress at the first poll, to tell a new install from an old one
	bar      *progressbar.ProgressBar
}

// run polls until an install completes or ctx ends (Ctrl-C), which is not an
// error.
func (w *watcher) run(ctx context.Context) error {
	defer w.endLine()
	for {
		done := w.poll(ctx)
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(w.interval):
		}
	}
}

// poll fetches the status once, shows it, and reports whether the watch is
// over.
func (w *watcher) poll(ctx context.Context) bool {
	pctx, cancel := ctx, context.CancelFunc(func() {})
	if w.timeout > 0 {
		pctx, cancel = context.WithTimeout(ctx, w.timeout)
	}
	s, r, err := getStatus(pctx, w.c)
	cancel()
	if ctx.Err() != nil {
		return true
	}
	if err != nil {
		w.line(fmt.Sprintf("%s: %v (retrying every %v)", w.c.base.Host, err, w.interval))
		return false
	}
	if w.first == nil {
		w.first = s
		w.lastProg = s.Snapshot.Progress
	}
	if w.json {
		var buf bytes.Buffer
		if json.Compact(&buf, r.Body) == nil {
			w.line(buf.String())
		}
	}

	switch {
	case s.installing():
		if !w.seen {
			w.seen = true
			w.before = s.Snapshot.LastIncludedIndex
			if !w.json {
				w.line(oneLine(s))
				w.endLine()
			}
		}
		if !w.json {
			w.showProgress(s)
		}
		return false
	case w.seen && s.Snapshot.LastIncludedIndex > w.before,
		// An install that began and ended between two polls: new,
		// complete progress and a newer snapshot.
		!w.seen && w.first != nil && s.Snapshot.LastIncludedIndex > w.first.Snapshot.LastIncludedIndex &&
			s.Snapshot.Progress != w.lastProg && complete(s.Snapshot.Progress):
		w.finishBar(s)
		if !w.json {
			w.endLine()
			p := s.Snapshot.Progress
			fmt.Fprintf(w.out, "snapshot installed: index %d, term %d (%d files, %s)\n",
				s.Snapshot.LastIncludedIndex, s.Snapshot.LastIncludedTerm, p.FilesTotal, humanBytes(float64(p.BytesTotal)))
			fmt.Fprintln(w.out, oneLine(s))
		}
		return true
	case w.seen:
		// The install ended without a newer snapshot: it was interrupted
		// (the leader will send it again) or failed.
		w.finishBar(s)
		w.seen = false
		if !w.json {
			w.endLine()
			fmt.Fprintf(w.out, "install ended without a new snapshot (still at index %d); watching on\n", s.Snapshot.LastIncludedIndex)
		}
		w.lastProg = s.Snapshot.Progress
	}
	if !w.json {
		w.line(oneLine(s))
	}
	return false
}

func complete(p progress) bool {
	return p.FilesTotal > 0 && p.FilesDone == p.FilesTotal && p.BytesDone == p.BytesTotal
}

// showProgress draws the install's progress: a bar on a terminal, a line
// per change elsewhere.
func (w *watcher) showProgress(s *status) {
	p := s.Snapshot.Progress
	desc := fmt.Sprintf("%s %s term %d applied %d · %s · %s", s.ID, s.Role, s.Term, s.AppliedIndex, strings.ToUpper(s.Snapshot.State), progressLine(p))
	if !w.tty {
		w.line(desc)
		return
	}
	total := max(p.BytesTotal, 1)
	if w.bar == nil {
		w.bar = progressbar.NewOptions64(total,
			progressbar.OptionSetWriter(w.out),
			progressbar.OptionSetWidth(25),
			progressbar.OptionSetPredictTime(false),
			progressbar.OptionSetElapsedTime(false),
			progressbar.OptionShowDescriptionAtLineEnd(),
			progressbar.OptionSetDescription(desc),
			progressbar.OptionUseANSICodes(true),
		)
	}
	if w.bar.GetMax64() != total {
		w.bar.ChangeMax64(total)
	}
	w.bar.Describe(desc)
	_ = w.bar.Set64(min(p.BytesDone, total))
}

func (w *watcher) finishBar(s *status) {
	if w.bar == nil {
		return
	}
	w.bar.Describe(fmt.Sprintf("%s · %s", strings.ToUpper(s.Snapshot.State), progressLine(s.Snapshot.Progress)))
	_ = w.bar.Finish()
	fmt.Fprintln(w.out)
	w.bar = nil
	w.last = ""
}

// line shows text: on a terminal it replaces the current line; elsewhere
// it is printed when it differs from the last one.
func (w *watcher) line(text string) {
	if text == w.last {
		return
	}
	w.last = text
	if w.tty && !w.json {
		fmt.Fprintf(w.out, "\r\033[K%s", text)
		return
	}
	fmt.Fprintln(w.out, text)
}

// endLine ends a line being redrawn on a terminal.
func (w *watcher) endLine() {
	if w.tty && !w.json && w.last != "" {
		fmt.Fprintln(w.out)
	}
	w.last = ""
}
