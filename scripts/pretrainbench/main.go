// Command pretrainbench is make bench-pretrain: federated pre-training,
// DiLoCo style, beside centralised training on the same tokens with the
// same model and the same inner optimizer.
//
// The federated run is the pretrain job of -job (configs/jobs/
// pretrain-diloco.yaml) run in-process through the code the network runs:
// round 1's model is coordinator.InitialModel (initialised from model.init
// with the job's seed), each round every trainer trains its task with
// trainer.NewBackend(cpu)'s Fit (the engine's Host device, H = inner_steps
// AdamW steps from the global weights, task seeds from coordinator.TaskSeed)
// on its own contiguous range of the training text and writes its delta
// (marked with the base it started from), and aggregator.Aggregate combines
// the deltas with the job's strategy (diloco: the outer Nesterov step) and
// its server state file, as the aggregator does for a round. Only the
// ledger, the RPCs and the artifact transfers are left out.
//
// The centralised run trains the same initial model with the engine's
// Trainer (the step trainer.Fit runs) and the same AdamW settings, for
// H·rounds steps of batch trainers×batch: every round the same number of
// tokens as the federated trainers together (synchronous data-parallel
// training on one machine).
//
// After every round both models are scored on -eval (mean NLL per token,
// eval.File, the coordinator's evaluation). It prints both curves, writes
// them to OUT/curves.tsv and OUT/curves.png, and prints the ratio of final
// eval losses, federated / centralised (goal: at most 1.05).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"image/color"
	"log"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"

	"github.com/fedtune/fedtune/aggregator"
	"github.com/fedtune/fedtune/coordinator"
	"github.com/fedtune/fedtune/datasets"
	"github.com/fedtune/fedtune/eval"
	"github.com/fedtune/fedtune/internal/atomicfile"
	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/engine"
	"github.com/fedtune/fedtune/model/safetensors"
	"github.com/fedtune/fedtune/model/tokenizer"
	"github.com/fedtune/fedtune/trainer"
)

func main() {
	jobFile := flag.String("job", "configs/jobs/pretrain-diloco.yaml", "the pretrain job")
	trainers := flag.Int("trainers", 4, "federated trainers")
	rounds := flag.Int("rounds", 0, "rounds (0: the job's)")
	inner := flag.Int("inner-steps", 0, "H, inner steps a round (0: the job's)")
	data := flag.String("data", "datasets/testdata/english/train.txt", "training text")
	evalData := flag.String("eval", "datasets/testdata/english/eval.txt", "held-out text")
	out := flag.String("out", "bench-pretrain", "output folder")
	also := flag.String("also", "learning_rate=0.7,momentum=0.9", "a second outer optimizer setting (diloco parameters) run beside the job's and plotted; empty: none")
	innerState := flag.String("inner-state", "keep", "the trainers' inner AdamW state between rounds: keep (DiLoCo, as trainer nodes do) or reset (fresh moments every round)")
	flag.Parse()
	switch *innerState {
	case "keep":
		keepInner = true
	case "reset":
	default:
		log.Fatalf("bench-pretrain: -inner-state %q: want keep or reset", *innerState)
	}
	if err := run(context.Background(), *jobFile, *trainers, *rounds, *inner, *data, *evalData, *out, *also); err != nil {
		log.Fatalf("bench-pretrain: %v", err)
	}
}

// keepInner keeps each trainer's inner AdamW state from one round to the
// next (-inner-state keep), in the file a trainer node keeps it in
// (trainer.OptStatePath under the trainer's folder of the run).
var keepInner bool

func run(ctx context.Context, jobFile string, trainers, rounds, inner int, data, evalData, out, also string) error {
	src, err := os.ReadFile(jobFile)
	if err != nil {
		return err
	}
	job, err := coordinator.ParseJob(jobFile, src)
	if err != nil {
		return err
	}
	if rounds > 0 {
		job.Rounds = rounds
	}
	if inner > 0 {
		job.Train.InnerSteps, job.Train.LocalSteps = inner, inner
	}
	if err := job.Validate(); err != nil {
		return err
	}
	if job.FineTune.Mode != model.ModePretrain {
		return fmt.Errorf("%s: finetune.mode is %q, want pretrain", jobFile, job.FineTune.Mode)
	}
	if trainers < 1 {
		return errors.New("-trainers must be at least 1")
	}
	strategy, err := job.NewStrategy()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	init, err := coordinator.InitialModel(job)
	if err != nil {
		return err
	}
	ds, err := datasets.Load(data, datasets.Options{})
	if err != nil {
		return err
	}
	shards := split(ds, trainers)
	tok, err := tokenizer.Load("", init.Config.VocabSize)
	if err != nil {
		return err
	}
	tr := job.Train
	H, B := tr.InnerSteps, tr.Batch
	fmt.Printf("model: %s (%d parameters: d %d, %d layers, vocab %d), init seed %d\n", job.Model.Init, init.NumParams(),
		init.Config.HiddenSize, init.Config.NumHiddenLayers, init.Config.VocabSize, coordinator.InitSeed(job.Seed))
	fmt.Printf("data: %s, %d lines into %d contiguous ranges; eval %s\n", data, len(ds.Samples), trainers, evalData)
	fmt.Printf("inner: AdamW lr %g, weight decay %g, clip %g, %s, batch %d × %d tokens; H = %d; %d rounds\n",
		tr.LR, tr.WeightDecay, tr.ClipNorm, tr.Schedule, B, tr.SeqLen, H, job.Rounds)
	fmt.Printf("outer: %s %v\n", strategy.Name(), strategy.Params())
	if keepInner {
		fmt.Println("inner AdamW state: kept across rounds per trainer (DiLoCo; trainer.Task.OptState)")
	} else {
		fmt.Println("inner AdamW state: reset every round (fresh moments)")
	}
	fmt.Printf("tokens a round: %d (each run); GOMAXPROCS %d\n", trainers*H*B*tr.SeqLen, runtime.GOMAXPROCS(0))

	initDir := filepath.Join(out, "init")
	initDigest, err := init.Save(initDir, safetensors.F32)
	if err != nil {
		return err
	}
	base0, err := evalLoss(ctx, init, evalData)
	if err != nil {
		return err
	}
	fmt.Printf("init %s eval loss %.4f\n", initDigest[:12], base0)

	var alt aggregator.Strategy
	if also != "" {
		params := map[string]float64{}
		for _, kv := range strings.Split(also, ",") {
			k, v, ok := strings.Cut(kv, "=")
			f, err := strconv.ParseFloat(v, 64)
			if !ok || err != nil {
				return fmt.Errorf("-also %q: want name=value,…", also)
			}
			params[k] = f
		}
		if alt, err = aggregator.New(strategy.Name(), params); err != nil {
			return fmt.Errorf("-also: %w", err)
		}
	}

	t0 := time.Now()
	fed, err := federated(ctx, job, strategy, shards, initDir, initDigest, evalData, filepath.Join(out, "fed"))
	if err != nil {
		return fmt.Errorf("federated: %w", err)
	}
	fedTime := time.Since(t0)
	var fedAlt []float64
	if alt != nil {
		fmt.Printf("federated again with %s %v:\n", alt.Name(), alt.Params())
		if fedAlt, err = federated(ctx, job, alt, shards, initDir, initDigest, evalData, filepath.Join(out, "fed-also")); err != nil {
			return fmt.Errorf("federated (-also): %w", err)
		}
	}
	t0 = time.Now()
	cen, err := centralised(ctx, job, init, ds, tok, trainers, evalData)
	if err != nil {
		return fmt.Errorf("centralised: %w", err)
	}
	cenTime := time.Since(t0)

	var tsv strings.Builder
	tsv.WriteString("round\ttokens\tfederated\tcentralised\tfederated_also\n")
	fmt.Printf("\n%5s %10s %10s %12s", "round", "tokens", "federated", "centralised")
	if fedAlt != nil {
		fmt.Printf(" %10s", "fed-also")
	}
	fmt.Println()
	row := func(r, tokens int, f, c, a float64) {
		fmt.Printf("%5d %10d %10.4f %12.4f", r, tokens, f, c)
		fmt.Fprintf(&tsv, "%d\t%d\t%.6f\t%.6f\t", r, tokens, f, c)
		if fedAlt != nil {
			fmt.Printf(" %10.4f", a)
			fmt.Fprintf(&tsv, "%.6f", a)
		}
		fmt.Println()
		tsv.WriteString("\n")
	}
	row(0, 0, base0, base0, base0)
	for r := range fed {
		a := 0.0
		if fedAlt != nil {
			a = fedAlt[r]
		}
		row(r+1, (r+1)*trainers*H*B*tr.SeqLen, fed[r], cen[r], a)
	}
	if err := atomicfile.Write(filepath.Join(out, "curves.tsv"), []byte(tsv.String()), 0o644); err != nil {
		return err
	}
	png := filepath.Join(out, "curves.png")
	altName := ""
	if alt != nil {
		altName = "federated, " + describe(alt)
		fmt.Printf("fed-also: %s\n", altName)
	}
	if err := plotCurves(png, base0, "federated, "+describe(strategy), fed, cen, altName, fedAlt, trainers*H*B*tr.SeqLen); err != nil {
		return err
	}
	ratio := fed[len(fed)-1] / cen[len(cen)-1]
	verdict := "within"
	if ratio > 1.05 {
		verdict = "NOT within"
	}
	fmt.Printf("\nfederated %s (%d trainers, H %d, %d rounds) %.1fs; centralised (batch %d, %d steps) %.1fs\n",
		describe(strategy), trainers, H, job.Rounds, fedTime.Seconds(), trainers*B, H*job.Rounds, cenTime.Seconds())
	fmt.Printf("final eval loss: federated %.4f, centralised %.4f; ratio federated/centralised %.4f (%s 5%%)\n",
		fed[len(fed)-1], cen[len(cen)-1], ratio, verdict)
	if fedAlt != nil {
		fmt.Printf("with %s instead: federated %.4f, ratio %.4f\n", describe(alt), fedAlt[len(fedAlt)-1], fedAlt[len(fedAlt)-1]/cen[len(cen)-1])
	}
	fmt.Printf("curves: %s, %s\n", filepath.Join(out, "curves.tsv"), png)
	return nil
}

// split cuts ds into n contiguous ranges of lines, trainer k taking the
// k-th.
func split(ds *datasets.Dataset, n int) []*datasets.Dataset {
	out := make([]*datasets.Dataset, n)
	for k := range n {
		lo, hi := k*len(ds.Samples)/n, (k+1)*len(ds.Samples)/n
		out[k] = &datasets.Dataset{Name: fmt.Sprintf("%s[%d:%d]", ds.Name, lo, hi), Samples: ds.Samples[lo:hi]}
	}
	return out
}

// federated runs the job's rounds in-process and returns the eval loss of
// every round's global model.
func federated(ctx context.Context, job *coordinator.Job, strategy aggregator.Strategy, shards []*datasets.Dataset, initDir, initDigest, evalData, out string) ([]float64, error) {
	backend, err := trainer.NewBackend(trainer.DeviceCPU)
	if err != nil {
		return nil, err
	}
	tr := job.Train
	globalDir, globalDigest, state := initDir, initDigest, ""
	var losses []float64
	for r := 1; r <= job.Rounds; r++ {
		start := time.Now()
		var inputs []aggregator.Input
		var trainLoss float64
		for k, shard := range shards {
			id := fmt.Sprintf("trainer-%d", k+1)
			task := trainer.Task{JobID: job.Name, Round: uint64(r), ModelDir: globalDir, Compression: job.Compression.Kind,
				Int8Block: job.Int8Block(), OutDir: filepath.Join(out, fmt.Sprintf("r%d-%s", r, id)), Base: globalDigest,
				Train: model.TrainConfig{Steps: tr.LocalSteps, Batch: tr.Batch, SeqLen: tr.SeqLen, LR: tr.LR,
					WeightDecay: tr.WeightDecay, ClipNorm: tr.ClipNorm, Warmup: tr.Warmup, Schedule: tr.Schedule,
					Seed: coordinator.TaskSeed(job.Seed, uint64(r), id)}}
			if err := os.MkdirAll(task.OutDir, 0o755); err != nil {
				return nil, err
			}
			if keepInner {
				if task.OptState, err = trainer.OptStatePath(filepath.Join(out, id), job.Name); err != nil {
					return nil, err
				}
			}
			u, err := backend.Fit(ctx, task, trainer.Data{Dataset: shard})
			if err != nil {
				return nil, fmt.Errorf("round %d %s: %w", r, id, err)
			}
			if u.OptNote != "" {
				return nil, fmt.Errorf("round %d %s: inner optimizer state: %s", r, id, u.OptNote)
			}
			trainLoss += u.Loss / float64(len(shards))
			samples := trainer.ClaimedSamples(uint64(len(shard.Samples)), u.Steps, tr.Batch, job.MaxSamples())
			inputs = append(inputs, aggregator.Input{Path: u.Path, Weight: float64(samples), ContributorID: id})
		}
		dir := filepath.Join(out, fmt.Sprintf("r%d", r))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		req := aggregator.Request{Strategy: strategy, Inputs: inputs, Base: filepath.Join(globalDir, model.WeightsFile),
			BaseDigest: globalDigest, State: state, Out: filepath.Join(dir, model.WeightsFile), Options: job.AggregatorOptions()}
		if so, ok := strategy.(aggregator.ServerOptimizer); ok && so.Optimizes() && len(so.StateSlots()) > 0 {
			req.StateOut = filepath.Join(dir, "server-state.safetensors")
		}
		res, err := aggregator.Aggregate(ctx, req)
		if err != nil {
			return nil, fmt.Errorf("round %d aggregate: %w", r, err)
		}
		if len(res.Rejected) > 0 {
			return nil, fmt.Errorf("round %d: %d updates rejected: %s", r, len(res.Rejected), res.Rejected[0].Reason())
		}
		// The new global folder: the aggregate beside the model's config.
		if err := copyFile(filepath.Join(initDir, model.ConfigFile), filepath.Join(dir, model.ConfigFile)); err != nil {
			return nil, err
		}
		m, err := model.Load(dir)
		if err != nil {
			return nil, err
		}
		loss, err := evalLoss(ctx, m, evalData)
		if err != nil {
			return nil, err
		}
		losses = append(losses, loss)
		fmt.Printf("federated round %d/%d: mean last-step train loss %.5f, eval loss %.5f, model %s, server state %s (%.1fs)\n",
			r, job.Rounds, trainLoss, loss, res.Digest[:12], short(res.StateDigest), time.Since(start).Seconds())
		globalDir, globalDigest, state = dir, res.Digest, res.StatePath
	}
	return losses, nil
}

// describe names a strategy with its parameters: "diloco learning_rate 1, momentum 0.5".
func describe(s aggregator.Strategy) string {
	p := s.Params()
	keys := make([]string, 0, len(p))
	for k := range p {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %g", k, p[k])
	}
	return s.Name() + " " + strings.Join(parts, ", ")
}

func short(d string) string {
	if len(d) < 12 {
		return "none"
	}
	return d[:12]
}

// centralised trains init on all the data with the engine's Trainer for
// H·rounds steps of trainers×batch windows and returns the eval loss after
// every H steps.
func centralised(ctx context.Context, job *coordinator.Job, init *model.Model, ds *datasets.Dataset, tok tokenizer.Tokenizer, trainers int, evalData string) ([]float64, error) {
	tr := job.Train
	H := tr.InnerSteps
	tc := model.TrainConfig{Steps: H * job.Rounds, Batch: trainers * tr.Batch, SeqLen: tr.SeqLen, LR: tr.LR,
		WeightDecay: tr.WeightDecay, ClipNorm: tr.ClipNorm, Warmup: tr.Warmup, Schedule: tr.Schedule,
		Seed: coordinator.TaskSeed(job.Seed, 0, "centralised")}
	tc.FillDefaults()
	windows := datasets.Windows(datasets.Tokenize(ds, tok), tc.SeqLen)
	batches := datasets.NewBatcher(windows, tc.Batch, tc.Seed)
	t, err := engine.NewTrainer(engine.NewHost(), init.Clone(), nil, tc)
	if err != nil {
		return nil, err
	}
	defer t.Close()
	var losses []float64
	for r := 1; r <= job.Rounds; r++ {
		start := time.Now()
		var last float64
		for range H {
			if last, err = t.Step(batches.Next()); err != nil {
				return nil, err
			}
		}
		loss, err := evalLoss(ctx, t.Model(), evalData)
		if err != nil {
			return nil, err
		}
		losses = append(losses, loss)
		fmt.Printf("centralised after %d steps: train loss %.4f, eval loss %.4f (%.1fs)\n", r*H, last, loss, time.Since(start).Seconds())
	}
	return losses, nil
}

// evalLoss is the mean NLL per token of m on path (eval.File, the byte
// tokenizer).
func evalLoss(ctx context.Context, m *model.Model, path string) (float64, error) {
	res, err := eval.File(ctx, m, "", path, nil)
	if err != nil {
		return 0, err
	}
	return res.MeanNLL, nil
}

func copyFile(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return atomicfile.Write(to, b, 0o644)
}

// plotCurves writes both eval-loss curves against tokens seen.
func plotCurves(path string, base0 float64, fedName string, fed, cen []float64, altName string, alt []float64, tokensPerRound int) error {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("DiLoCo federated pre-training vs centralised (initial eval loss %.2f)", base0)
	p.X.Label.Text = "training tokens"
	p.Y.Label.Text = "eval loss (mean NLL per token)"
	line := func(ys []float64) plotter.XYs {
		var pts plotter.XYs
		for r, y := range ys {
			pts = append(pts, plotter.XY{X: float64((r + 1) * tokensPerRound), Y: y})
		}
		return pts
	}
	curves := []struct {
		name string
		ys   []float64
		col  color.RGBA
	}{{fedName, fed, color.RGBA{R: 200, A: 255}}, {"centralised", cen, color.RGBA{B: 200, A: 255}}}
	if alt != nil {
		curves = append(curves, struct {
			name string
			ys   []float64
			col  color.RGBA
		}{altName, alt, color.RGBA{R: 230, G: 150, A: 255}})
	}
	for _, c := range curves {
		l, pts, err := plotter.NewLinePoints(line(c.ys))
		if err != nil {
			return err
		}
		l.Color, pts.Color = c.col, c.col
		p.Add(l, pts)
		p.Legend.Add(c.name, l, pts)
	}
	p.Legend.Top = true
	p.Add(plotter.NewGrid())
	w, err := p.WriterTo(8*vg.Inch, 5*vg.Inch, "png")
	if err != nil {
		return err
	}
	return atomicfile.WriteFunc(path, 0o644, func(f *os.File) error {
		_, err := w.WriteTo(f)
		return err
	})
}
