package audit

import (
	"bytes"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/ledger"
)

func TestContributions(t *testing.T) {
	a, b := strings.Repeat("a", 64), strings.Repeat("b", 64)
	ev := func(scores ...ledger.ContributionScore) *ledger.Evaluation {
		return &ledger.Evaluation{EvalDigest: strings.Repeat("e", 64), MeanNLL: 2.5, Tokens: 100, Scores: scores, Height: 9}
	}
	rounds := []ledger.Round{
		{Round: 1, Status: ledger.StatusCommitted, ModelDigest: "m1", Updates: []ledger.Update{{Trainer: a, Samples: 30}, {Trainer: b, Samples: 10}},
			Evaluation: ev(ledger.ContributionScore{Trainer: a, LossRemoved: 0.3}, ledger.ContributionScore{Trainer: b, LossRemoved: 0.1})},
		{Round: 2, Status: ledger.StatusFailed},
		{Round: 3, Status: ledger.StatusCommitted, ModelDigest: "m3", Updates: []ledger.Update{{Trainer: a, Samples: 5}, {Trainer: b, Samples: 6}},
			Evaluation: ev(ledger.ContributionScore{Trainer: a, LossRemoved: -0.2}, ledger.ContributionScore{Trainer: b, LossRemoved: 0.05})},
		{Round: 4, Status: ledger.StatusCommitted, ModelDigest: "m4", Evaluation: ev(ledger.ContributionScore{Trainer: a, LossRemoved: -0.5})},
		{Round: 5, Status: ledger.StatusCommitted, ModelDigest: "m5"},
	}
	rs := Contributions(rounds)
	if len(rs) != 4 {
		t.Fatalf("%d rounds, want the 4 committed", len(rs))
	}
	want := [][]ContributionRow{
		{{1, a, 30, 0.3, 0.75}, {1, b, 10, 0.1, 0.25}},
		{{3, a, 5, -0.2, 0}, {3, b, 6, 0.05, 1}},
		{{4, a, 0, -0.5, 0}},
		nil,
	}
	for i, r := range rs {
		if len(r.Rows) != len(want[i]) {
			t.Fatalf("round %d: rows %+v, want %+v", r.Round, r.Rows, want[i])
		}
		for j, row := range r.Rows {
			w := want[i][j]
			if row.Round != w.Round || row.Trainer != w.Trainer || row.Samples != w.Samples || row.LossRemoved != w.LossRemoved || math.Abs(row.Share-w.Share) > 1e-12 {
				t.Errorf("round %d row %d: %+v, want %+v", r.Round, j, row, w)
			}
		}
	}
	var out bytes.Buffer
	if err := RenderContributions(&out, "job-1", rs); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"ROUND", "LOSS REMOVED", a + "  30       +0.300000     75.0%", "(no RoundEvaluated on the ledger)", "eval loss 2.500000 over 100 tokens"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("table lacks %q:\n%s", s, out.String())
		}
	}

	dir := t.TempDir()
	svg := filepath.Join(dir, "c.svg")
	if err := WriteContributionsPlot(svg, "job<1>", rs); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(svg)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(data), `class="bar"`); n != 5 || !strings.Contains(string(data), "job&lt;1&gt;") || !strings.HasPrefix(string(data), "<svg") {
		t.Errorf("svg has %d bars, want 5:\n%s", n, data)
	}
	pngPath := filepath.Join(dir, "c.png")
	if err := WriteContributionsPlot(pngPath, "job-1", rs); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(pngPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil || img.Bounds().Dx() != plotW {
		t.Fatalf("png: %v", err)
	}
	// A bar in the first trainer's colour is drawn.
	found := false
	for y := 0; y < plotH && !found; y++ {
		for x := 0; x < plotW; x++ {
			if r, g, b, _ := img.At(x, y).RGBA(); r>>8 == uint32(palette[0].R) && g>>8 == uint32(palette[0].G) && b>>8 == uint32(palette[0].B) {
				found = true
				break
			}
		}
	}
	if !found {
		t.Error("png has no bar of the first trainer")
	}
	if err := WriteContributionsPlot(filepath.Join(dir, "c.gif"), "j", rs); err == nil || !strings.Contains(err.Error(), ".svg or .png") {
		t.Errorf("gif plot: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "c.gif")); !os.IsNotExist(err) {
		t.Error("a refused plot left a file")
	}
}
