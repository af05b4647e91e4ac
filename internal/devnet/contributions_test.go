package devnet_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fedtune/fedtune/aggregator"
	"github.com/fedtune/fedtune/coordinator"
	"github.com/fedtune/fedtune/internal/audit"
	"github.com/fedtune/fedtune/internal/cli"
	"github.com/fedtune/fedtune/internal/devnet"
	"github.com/fedtune/fedtune/internal/fedtest"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
	"github.com/fedtune/fedtune/model"
)

// TestNoRaceNetworkContributions: a two-round job leaves, for each round,
// a RoundEvaluated signed by the job's coordinator with the round's eval
// loss (the coordinator's held-out evaluation) and a score for each
// contributor; round 1's scores are what evaluating the initial adapter
// and each contributor's adapter alone on the eval data gives here; and
// `fedtune audit contributions` prints them from a chain export and plots
// them.
func TestNoRaceNetworkContributions(t *testing.T) {
	fedtest.SkipUnderRace(t)
	if testing.Short() {
		t.Skip("a whole network")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	n, err := devnet.Prepare(ctx, devnet.Options{Dir: t.TempDir(), Repo: "../..", InProcess: true,
		JobName: "contrib", Rounds: 2, LocalSteps: 4, PretrainSteps: 10, EvalData: "datasets/testdata/tasks/eval.jsonl",
		Out: io.Discard, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	nw, err := n.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer nw.Stop()
	if _, err := n.Launch(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := n.Follow(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != coordinator.JobDone || len(st.Rounds) != 2 {
		t.Fatalf("job ended %s (%s) with %d rounds, want done with 2", st.State, st.Detail, len(st.Rounds))
	}
	lc, err := n.Ledger(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close()
	job, err := coordinator.LoadJob(n.JobFile)
	if err != nil {
		t.Fatal(err)
	}
	coordID := mustJobOwner(t, ctx, lc, n.JobName)

	// The job is done only once its evaluations are on the ledger.
	rounds, err := lc.Rounds(ctx, n.JobName)
	if err != nil {
		t.Fatal(err)
	}
	if len(rounds) != 2 || rounds[0].Evaluation == nil || rounds[1].Evaluation == nil {
		t.Fatalf("job done with rounds %+v: not both evaluated on the ledger", rounds)
	}
	for i, r := range rounds {
		ev := r.Evaluation
		if r.Status != ledger.StatusCommitted || ev.Coordinator != coordID || ev.Tokens == 0 || !(ev.MeanNLL > 0) {
			t.Fatalf("round %d: %s, evaluation %+v", r.Round, r.Status, ev)
		}
		// The loss on the ledger is the one the coordinator reports.
		if sr := st.Rounds[i]; !sr.Evaluated || sr.EvalNll != ev.MeanNLL {
			t.Errorf("round %d: ledger eval loss %v, coordinator status %v (evaluated %v)", r.Round, ev.MeanNLL, sr.EvalNll, sr.Evaluated)
		}
		if len(ev.Scores) != len(r.Contributors) {
			t.Fatalf("round %d: %d scores for %d contributors", r.Round, len(ev.Scores), len(r.Contributors))
		}
		for j, c := range r.Contributors {
			if s := ev.Scores[j]; s.Trainer != c.Trainer || math.IsNaN(s.LossRemoved) || s.LossRemoved == 0 {
				t.Errorf("round %d score %d: %+v for contributor %s", r.Round, j, s, c.Trainer)
			}
		}
		t.Logf("round %d: eval loss %.6f over %d tokens, scores %+v", r.Round, ev.MeanNLL, ev.Tokens, ev.Scores)
	}

	// Round 1's scores, recomputed here: each contributor's adapter alone
	// against the initial adapter every trainer started from.
	work := t.TempDir()
	n.EvalData = filepath.Join(n.EvalDataRoot(), job.Eval.Data)
	base, err := model.Load(n.BaseModel)
	if err != nil {
		t.Fatal(err)
	}
	ad, err := coordinator.InitialAdapter(job, base.Config)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ad.Save(filepath.Join(work, "init")); err != nil {
		t.Fatal(err)
	}
	start, err := n.Eval(ctx, filepath.Join(work, "init", model.AdapterWeightsFile))
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for j, c := range rounds[0].Contributors {
		p := filepath.Join(work, c.UpdateDigest)
		if err := n.Fetch(ctx, c.UpdateDigest, p); err != nil {
			t.Fatal(err)
		}
		u, err := aggregator.OpenUpdate(p)
		if err != nil {
			t.Fatal(err)
		}
		full := u.Kind() == aggregator.KindFull && u.Block() == 0
		u.Close()
		if !full {
			t.Logf("update %s is %s (int8 block %d): not recomputed here", c.UpdateDigest, u.Kind(), u.Block())
			continue
		}
		alone, err := n.Eval(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		want := start.MeanNLL - alone.MeanNLL
		if got := rounds[0].Evaluation.Scores[j].LossRemoved; math.Abs(got-want) > 1e-9 {
			t.Errorf("round 1 trainer %s: ledger score %.12f, recomputed %.12f (start %.12f, alone %.12f)", c.Trainer, got, want, start.MeanNLL, alone.MeanNLL)
		}
		checked++
	}
	if checked == 0 {
		t.Fatal("no round 1 score recomputed")
	}

	// audit contributions from an export.
	exportPath := filepath.Join(work, "chain.fedtune")
	plotPath := filepath.Join(work, "contrib.svg")
	fedtune := func(args ...string) string {
		t.Helper()
		var out, errb bytes.Buffer
		if err := cli.RunWith(ctx, args, &out, &errb); err != nil {
			t.Fatalf("fedtune %s: %v\n%s", strings.Join(args, " "), err, errb.String())
		}
		return out.String()
	}
	fedtune("audit", "export", "-o", exportPath, "--genesis", n.GenesisPath(), "--addr", n.LedgerGRPC[0])
	if out := fedtune("audit", "verify", "--export", exportPath); !strings.Contains(out, "2 evaluated") {
		t.Errorf("audit verify does not count the 2 RoundEvaluated: %s", out)
	}
	out := fedtune("audit", "contributions", n.JobName, "--export", exportPath, "--plot", plotPath)
	t.Logf("audit contributions:\n%s", out)
	for _, r := range rounds {
		for _, s := range r.Evaluation.Scores {
			row := audit.Contributions([]ledger.Round{r})[0]
			var share float64
			for _, c := range row.Rows {
				if c.Trainer == s.Trainer {
					share = c.Share
				}
			}
			if !strings.Contains(out, s.Trainer) || !strings.Contains(out, strconvSigned(s.LossRemoved)) || (share > 0 && !strings.Contains(out, strconvPct(share))) {
				t.Errorf("audit contributions lacks round %d trainer %s score %+.6f:\n%s", r.Round, s.Trainer, s.LossRemoved, out)
			}
		}
	}
	svg, err := os.ReadFile(plotPath)
	if err != nil {
		t.Fatal(err)
	}
	bars := 0
	for _, r := range rounds {
		bars += len(r.Evaluation.Scores)
	}
	if got := strings.Count(string(svg), `class="bar"`); got != bars {
		t.Errorf("plot has %d bars, want %d", got, bars)
	}
}

func strconvSigned(v float64) string { return fmt.Sprintf("%+.6f", v) }
func strconvPct(v float64) string    { return fmt.Sprintf("%.1f%%", 100*v) }

func mustJobOwner(t *testing.T, ctx context.Context, c *client.Client, job string) string {
	t.Helper()
	rec, err := c.Job(ctx, job)
	if err != nil {
		t.Fatal(err)
	}
	return rec.Owner
}
