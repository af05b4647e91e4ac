package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"math"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/fedtune/fedtune/internal/atomicfile"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/fsm"
)

// ContributionRow is one scored contributor of one round: what `fedtune
// audit contributions` prints.
type ContributionRow struct {
	Round   uint64 `json:"round"`
	Trainer string `json:"trainer"`
	// Samples is the sample count of the trainer's UpdateSubmitted.
	Samples uint64 `json:"samples"`
	// LossRemoved is the score the round's RoundEvaluated recorded: the
	// mean eval NLL of the round's starting model minus that of the
	// starting model with this trainer's update alone applied.
	LossRemoved float64 `json:"loss_removed"`
	// Share is the trainer's part of the loss the round's contributors
	// removed: max(LossRemoved, 0) / Σ max(LossRemoved, 0) over the round
	// (0 for all when none removed any loss).
	Share float64 `json:"share"`
}

// RoundScores is one committed round of a job with its evaluation, if the
// ledger holds one.
type RoundScores struct {
	Round uint64             `json:"round"`
	Model string             `json:"model"`
	Eval  *ledger.Evaluation `json:"eval,omitempty"`
	Rows  []ContributionRow  `json:"rows"`
}

// Contributions turns a job's rounds, as the ledger records them (with
// their updates), into per-round scores: one RoundScores per committed
// round, oldest first, with a row per scored contributor in the order the
// RoundEvaluated lists them. A round without a RoundEvaluated has no rows.
func Contributions(rounds []ledger.Round) []RoundScores {
	var out []RoundScores
	for _, r := range rounds {
		if r.Status != ledger.StatusCommitted {
			continue
		}
		rs := RoundScores{Round: r.Round, Model: r.ModelDigest, Eval: r.Evaluation}
		if r.Evaluation != nil {
			samples := map[string]uint64{}
			for _, u := range r.Updates {
				samples[u.Trainer] = u.Samples
			}
			var pos float64
			for _, s := range r.Evaluation.Scores {
				pos += math.Max(s.LossRemoved, 0)
			}
			for _, s := range r.Evaluation.Scores {
				row := ContributionRow{Round: r.Round, Trainer: s.Trainer, Samples: samples[s.Trainer], LossRemoved: s.LossRemoved}
				if pos > 0 {
					row.Share = math.Max(s.LossRemoved, 0) / pos
				}
				rs.Rows = append(rs.Rows, row)
			}
		}
		out = append(out, rs)
	}
	return out
}

// Rounds verifies the export e (without artifacts, as Lineage does) and
// returns job's rounds 1, 2, … as the re-derived state holds them, each
// with its submitted updates and its evaluation. A job with no round is an
// error.
func Rounds(ctx context.Context, e *Export, job string) ([]ledger.Round, error) {
	var out []ledger.Round
	_, err := verify(ctx, e, VerifyOptions{}, func(f *fsm.FSM) error {
		for n := uint64(1); ; n++ {
			r, err := f.Round(job, n)
			if errors.Is(err, ledger.ErrRecordNotFound) {
				return nil
			}
			if err != nil {
				return err
			}
			out = append(out, *r)
		}
	})
	if err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("audit: job %q has no rounds in the export", job)
	}
	return out, nil
}

// RenderContributions prints the table of `fedtune audit contributions`:
// per round its eval loss, then one line per scored contributor (round,
// trainer, samples, loss removed, share).
func RenderContributions(w io.Writer, job string, rs []RoundScores) error {
	fmt.Fprintf(w, "job %s: %d committed round(s)\n", job, len(rs))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ROUND\tTRAINER\tSAMPLES\tLOSS REMOVED\tSHARE")
	for _, r := range rs {
		if r.Eval == nil {
			fmt.Fprintf(tw, "%d\t(no RoundEvaluated on the ledger)\t\t\t\n", r.Round)
			continue
		}
		fmt.Fprintf(tw, "%d\t(eval loss %.6f over %d tokens, eval set %s)\t\t\t\n", r.Round, r.Eval.MeanNLL, r.Eval.Tokens, short(r.Eval.EvalDigest))
		for _, c := range r.Rows {
			fmt.Fprintf(tw, "%d\t%s\t%d\t%+.6f\t%.1f%%\n", c.Round, c.Trainer, c.Samples, c.LossRemoved, 100*c.Share)
		}
	}
	return tw.Flush()
}

// WriteContributionsPlot writes a bar chart of the loss each contributor
// removed, grouped by round, to path: SVG (with labels and a legend) when
// path ends in .svg, PNG (bars and axes only) when it ends in .png. The
// file is written atomically.
func WriteContributionsPlot(path, job string, rs []RoundScores) error {
	var buf bytes.Buffer
	switch strings.ToLower(filepath.Ext(path)) {
	case ".svg":
		plotSVG(&buf, job, rs)
	case ".png":
		if err := png.Encode(&buf, plotPNG(rs)); err != nil {
			return err
		}
	default:
		return fmt.Errorf("plot %s: the file name must end in .svg or .png", path)
	}
	return atomicfile.Write(path, buf.Bytes(), 0o644)
}

// plotGeom lays out grouped bars: trainers in first-seen order, and the
// value range (always including 0).
type plotGeom struct {
	trainers []string
	index    map[string]int
	lo, hi   float64
	bars     int // the most rows of any round
}

func geom(rs []RoundScores) plotGeom {
	g := plotGeom{index: map[string]int{}}
	for _, r := range rs {
		g.bars = max(g.bars, len(r.Rows))
		for _, c := range r.Rows {
			if _, ok := g.index[c.Trainer]; !ok {
				g.index[c.Trainer] = len(g.trainers)
				g.trainers = append(g.trainers, c.Trainer)
			}
			g.lo, g.hi = math.Min(g.lo, c.LossRemoved), math.Max(g.hi, c.LossRemoved)
		}
	}
	if g.hi == g.lo {
		g.hi = g.lo + 1
	}
	g.bars = max(g.bars, 1)
	return g
}

var palette = []color.RGBA{{0x1f, 0x77, 0xb4, 0xff}, {0xff, 0x7f, 0x0e, 0xff}, {0x2c, 0xa0, 0x2c, 0xff}, {0xd6, 0x27, 0x28, 0xff},
	{0x94, 0x67, 0xbd, 0xff}, {0x8c, 0x56, 0x4b, 0xff}, {0xe3, 0x77, 0xc2, 0xff}, {0x7f, 0x7f, 0x7f, 0xff}}

const (
	plotW, plotH               = 720, 360
	plotL, plotR, plotT, plotB = 70, 170, 40, 40
)

// bar returns the pixel box of round slot k, bar b: x0, x1, and the y of
// the value and of zero.
func (g plotGeom) bar(rounds, k, b int, v float64) (x0, x1, yv, y0 int) {
	gw := float64(plotW-plotL-plotR) / float64(max(rounds, 1))
	bw := gw * 0.8 / float64(g.bars)
	x0 = plotL + int(float64(k)*gw+gw*0.1+float64(b)*bw)
	x1 = x0 + max(int(bw)-1, 1)
	y := func(v float64) int {
		return plotT + int(float64(plotH-plotT-plotB)*(g.hi-v)/(g.hi-g.lo))
	}
	return x0, x1, y(v), y(0)
}

func plotSVG(w io.Writer, job string, rs []RoundScores) {
	g := geom(rs)
	fmt.Fprintf(w, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="11">`+"\n", plotW, plotH, plotW, plotH)
	fmt.Fprintf(w, `<rect width="%d" height="%d" fill="#ffffff"/>`+"\n", plotW, plotH)
	fmt.Fprintf(w, `<text x="%d" y="20" font-size="13">loss removed on the eval set by each contributor alone, job %s</text>`+"\n", plotL, xmlEscape(job))
	_, _, yHi, y0 := g.bar(len(rs), 0, 0, g.hi)
	_, _, yLo, _ := g.bar(len(rs), 0, 0, g.lo)
	fmt.Fprintf(w, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#888"/>`+"\n", plotL, y0, plotW-plotR, y0)
	fmt.Fprintf(w, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#888"/>`+"\n", plotL, yHi, plotL, yLo)
	for _, v := range []float64{g.lo, 0, g.hi} {
		_, _, y, _ := g.bar(len(rs), 0, 0, v)
		fmt.Fprintf(w, `<text x="%d" y="%d" text-anchor="end">%s</text>`+"\n", plotL-4, y+4, strconv.FormatFloat(v, 'g', 4, 64))
	}
	for k, r := range rs {
		for b, c := range r.Rows {
			x0, x1, yv, y0 := g.bar(len(rs), k, b, c.LossRemoved)
			top, h := min(yv, y0), max(abs(yv-y0), 1)
			col := palette[g.index[c.Trainer]%len(palette)]
			fmt.Fprintf(w, `<rect class="bar" x="%d" y="%d" width="%d" height="%d" fill="#%02x%02x%02x"><title>round %d, %s: %+.6f</title></rect>`+"\n",
				x0, top, x1-x0, h, col.R, col.G, col.B, r.Round, c.Trainer, c.LossRemoved)
		}
		x0, _, _, _ := g.bar(len(rs), k, 0, 0)
		fmt.Fprintf(w, `<text x="%d" y="%d">round %d</text>`+"\n", x0, plotH-plotB+16, r.Round)
	}
	for i, t := range g.trainers {
		col := palette[i%len(palette)]
		fmt.Fprintf(w, `<rect x="%d" y="%d" width="10" height="10" fill="#%02x%02x%02x"/><text x="%d" y="%d">%s</text>`+"\n",
			plotW-plotR+10, plotT+16*i, col.R, col.G, col.B, plotW-plotR+24, plotT+16*i+9, short(t))
	}
	fmt.Fprintln(w, "</svg>")
}

func plotPNG(rs []RoundScores) image.Image {
	g := geom(rs)
	img := image.NewRGBA(image.Rect(0, 0, plotW, plotH))
	fill := func(x0, y0, x1, y1 int, c color.RGBA) {
		for y := max(y0, 0); y < min(y1, plotH); y++ {
			for x := max(x0, 0); x < min(x1, plotW); x++ {
				img.SetRGBA(x, y, c)
			}
		}
	}
	fill(0, 0, plotW, plotH, color.RGBA{0xff, 0xff, 0xff, 0xff})
	grey := color.RGBA{0x88, 0x88, 0x88, 0xff}
	_, _, yHi, y0 := g.bar(len(rs), 0, 0, g.hi)
	_, _, yLo, _ := g.bar(len(rs), 0, 0, g.lo)
	fill(plotL, y0, plotW-plotR, y0+1, grey)
	fill(plotL, yHi, plotL+1, yLo+1, grey)
	for k, r := range rs {
		for b, c := range r.Rows {
			x0, x1, yv, y0 := g.bar(len(rs), k, b, c.LossRemoved)
			fill(x0, min(yv, y0), x1, min(yv, y0)+max(abs(yv-y0), 1), palette[g.index[c.Trainer]%len(palette)])
		}
	}
	for i := range g.trainers {
		fill(plotW-plotR+10, plotT+16*i, plotW-plotR+20, plotT+16*i+10, palette[i%len(palette)])
	}
	return img
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

func xmlEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch r {
		case '<':
			b.WriteString("&lt;")
		case '>':
			b.WriteString("&gt;")
		case '&':
			b.WriteString("&amp;")
		case '"':
			b.WriteString("&quot;")
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}
