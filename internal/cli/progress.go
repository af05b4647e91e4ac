package cli

import (
	"fmt"
	"io"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// progressLogEvery is how often a progress line is printed when the output
// is not a terminal.
const progressLogEvery = 5 * time.Second

// progress reports the advance of slow work (train, eval) on w. On a
// terminal it draws a bar redrawn in place; anywhere else (a log file, a
// pipe, a test buffer) it prints a plain line at most every
// progressLogEvery and once at the end, so that logs stay one line per
// report instead of one long line of carriage-return updates.
type progress struct {
	w      io.Writer
	label  string
	total  int
	bar    *progressbar.ProgressBar // nil when w is not a terminal
	every  time.Duration
	start  time.Time
	last   time.Time // when a plain line was last printed
	done   int
	detail string
	shown  int // done at the last plain line; -1 before the first
}

// isTerminal reports whether w is a terminal (a file whose descriptor is a TTY).
func isTerminal(w io.Writer) bool {
	f, ok := w.(interface{ Fd() uintptr })
	return ok && term.IsTerminal(int(f.Fd()))
}

// newProgress starts reporting label's progress towards total units.
func newProgress(w io.Writer, label string, total int) *progress {
	p := &progress{w: w, label: label, total: total, every: progressLogEvery, start: time.Now(), shown: -1}
	if isTerminal(w) {
		p.bar = progressbar.NewOptions(total, progressbar.OptionSetWriter(w),
			progressbar.OptionSetDescription(label), progressbar.OptionShowCount(),
			progressbar.OptionThrottle(200*time.Millisecond), progressbar.OptionSetWidth(20))
	}
	return p
}

// Set records that done units are finished; detail (e.g. "loss 2.31  950
// tok/s") is shown next to the count.
func (p *progress) Set(done int, detail string) {
	p.done, p.detail = done, detail
	if p.bar != nil {
		if detail != "" {
			p.bar.Describe(p.label + " " + detail)
		}
		_ = p.bar.Set(done)
		return
	}
	if now := time.Now(); p.shown < 0 || now.Sub(p.last) >= p.every {
		p.line()
		p.last = now
	}
}

// line prints the current state as one plain line.
func (p *progress) line() {
	pct := 100.0
	if p.total > 0 {
		pct = 100 * float64(p.done) / float64(p.total)
	}
	s := fmt.Sprintf("%s %d/%d (%.0f%%)", p.label, p.done, p.total, pct)
	if p.detail != "" {
		s += "  " + p.detail
	}
	fmt.Fprintf(p.w, "%s  elapsed %s\n", s, time.Since(p.start).Round(time.Second))
	p.shown = p.done
}

// Finish ends the report: it completes the bar's line on a terminal, or
// prints the final state if the last plain line did not show it.
func (p *progress) Finish() {
	if p.bar != nil {
		if p.done >= p.total {
			_ = p.bar.Finish()
		} else {
			_ = p.bar.Exit() // stopped early: keep the count where it is
		}
		fmt.Fprintln(p.w)
		return
	}
	if p.shown != p.done {
		p.line()
	}
}
