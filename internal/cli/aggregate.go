package cli

import (
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/fedtune/fedtune/aggregator"
	"github.com/fedtune/fedtune/kernels"
)

func init() { register(newAggregateCmd) }

// aggregateFlag maps a command-line flag to a strategy parameter.
type aggregateFlag struct {
	flag, param string
	usage       string
	strategies  []string
}

var aggregateParamFlags = []aggregateFlag{
	{"trim", "beta", "fraction cut from each end per coordinate (default 0.2)", []string{"trimmed-mean"}},
	{"byzantine", "num_malicious", "number of byzantine inputs f to tolerate (default 0)", []string{"krum", "multi-krum", "bulyan"}},
	{"keep", "to_keep", "inputs Multi-Krum averages (default n − f)", []string{"multi-krum"}},
	{"server-lr", "server_learning_rate", "FedAvgM server learning rate (default 1)", []string{"fedavgm"}},
	{"momentum", "server_momentum", "FedAvgM server momentum (default 0)", []string{"fedavgm"}},
	{"eta", "eta", "FedOpt server learning rate (default 0.1; fedyogi 0.01)", []string{"fedadam", "fedyogi", "fedadagrad"}},
	{"beta1", "beta_1", "FedOpt first-moment decay (default 0.9; fedadagrad 0)", []string{"fedadam", "fedyogi", "fedadagrad"}},
	{"beta2", "beta_2", "FedOpt second-moment decay (default 0.99)", []string{"fedadam", "fedyogi"}},
	{"tau", "tau", "FedOpt adaptivity (default 1e-9; fedyogi 1e-3)", []string{"fedadam", "fedyogi", "fedadagrad"}},
	{"outer-lr", "learning_rate", "DiLoCo outer learning rate (default 0.7)", []string{"diloco"}},
	{"outer-momentum", "momentum", "DiLoCo outer Nesterov momentum (default 0.9)", []string{"diloco"}},
}

// progressThreshold is the total input size above which a progress line is shown.
const progressThreshold = 64 << 20

func newAggregateCmd() *cobra.Command {
	var (
		strategy, base, state, stateOut, out string
		backendName                          string
		clip, noise, maxNorm                 float64
		seed                                 uint64
		threads, chunk                       int
		skipInvalid                          bool
	)
	cmd := &cobra.Command{
		Use:   "aggregate --strategy NAME -o OUT IN...",
		Short: "Combine trainer updates into a new global model",
		Long: `Combine trainer updates into a new global model, bit-for-bit reproducibly.

Each IN is FILE.safetensors or FILE.safetensors@N, N being the input's sample
count (its weight in FedAvg-style strategies); without @N the file's
__metadata__ "num_samples" is used, else 1. Inputs are F32, F16, BF16 or int8
(with per-block scales) safetensors holding full weights, or deltas to --base
(__metadata__ "fedtune.kind": "delta").

Strategies: ` + strings.Join(aggregator.Names(), ", ") + `.
fedavgm, fedadam, fedyogi, fedadagrad and diloco step from --base and keep server
state: pass the previous round's --state and write the new one with --state-out.

Every input is validated first (layout against --base or the first input,
every value finite, update norm within --max-norm). A bad input fails the
command, naming file and tensor, and nothing is written; with --skip-invalid
bad inputs are reported on stderr and the rest aggregated.

OUT is written atomically as canonical F32 safetensors; the command prints
"DIGEST  OUT" (and "DIGEST  STATE-OUT"), as sha256sum does.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return fmt.Errorf("aggregate: -o OUT is required")
			}
			params := map[string]float64{}
			for _, pf := range aggregateParamFlags {
				if !cmd.Flags().Changed(pf.flag) {
					continue
				}
				if !aggregateHas(pf.strategies, strategy) {
					return fmt.Errorf("aggregate: --%s applies to %s, not %s", pf.flag, strings.Join(pf.strategies, ", "), strategy)
				}
				v, _ := cmd.Flags().GetFloat64(pf.flag)
				params[pf.param] = v
			}
			st, err := aggregator.New(strategy, params)
			if err != nil {
				return fmt.Errorf("aggregate: %w", err)
			}
			if so, ok := st.(aggregator.ServerOptimizer); ok && so.Optimizes() && len(so.StateSlots()) > 0 && stateOut == "" {
				return fmt.Errorf("aggregate: %s keeps server state; give --state-out FILE (and --state from the previous round)", strategy)
			}
			if cmd.Flags().Changed("seed") && noise == 0 {
				return fmt.Errorf("aggregate: --seed seeds the noise; it needs --noise-multiplier")
			}
			if threads < 0 {
				return fmt.Errorf("aggregate: --threads %d must not be negative", threads)
			}
			be, err := aggregateBackend(backendName, threads)
			if err != nil {
				return fmt.Errorf("aggregate: --backend: %w", err)
			}
			inputs := make([]aggregator.Input, len(args))
			var total int64
			for i, a := range args {
				if inputs[i], err = parseAggregateInput(a); err != nil {
					return fmt.Errorf("aggregate: %w", err)
				}
				if fi, err := os.Stat(inputs[i].Path); err == nil {
					total += fi.Size()
				}
			}
			req := aggregator.Request{
				Strategy: st,
				Inputs:   inputs,
				Base:     base,
				State:    state,
				Out:      out,
				StateOut: stateOut,
				Options: aggregator.Options{
					Clip: clip, NoiseMultiplier: noise, Seed: seed, MaxNorm: maxNorm,
					ChunkElems: chunk, Threads: threads, Strict: !skipInvalid,
				},
				Backend: be,
				Logger:  logger(cmd),
			}
			if total >= progressThreshold {
				p := &progressLine{w: cmd.ErrOrStderr()}
				req.Progress = p.update
				defer p.done()
			}
			res, err := aggregator.Aggregate(cmd.Context(), req)
			if err != nil {
				return fmt.Errorf("aggregate: %w", err)
			}
			for _, r := range res.Rejected {
				fmt.Fprintf(cmd.ErrOrStderr(), "rejected: %v\n", r.Err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s  %s\n", res.Digest, res.Path)
			if res.StatePath != "" {
				fmt.Fprintf(cmd.OutOrStdout(), "%s  %s\n", res.StateDigest, res.StatePath)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&strategy, "strategy", "fedavg", "aggregation strategy: "+strings.Join(aggregator.Names(), ", "))
	f.StringVarP(&out, "out", "o", "", "output file for the new global model (written atomically)")
	f.StringVar(&base, "base", "", "current global model: layout reference, origin of updates, required by fedavgm/FedOpt and delta inputs")
	f.StringVar(&state, "state", "", "server state from the previous round (FedAvgM, FedOpt)")
	f.StringVar(&stateOut, "state-out", "", "output file for the new server state")
	f.Float64Var(&clip, "clip", 0, "clip each update to this L2 norm (0: off)")
	f.Float64Var(&noise, "noise-multiplier", 0, "add Gaussian noise σ = z·clip/inputs to the result (needs --clip)")
	f.Uint64Var(&seed, "seed", 0, "seed of the noise, for reproducing a test (0: a secret key from crypto/rand; anyone who knows a seed can subtract the noise)")
	f.Float64Var(&maxNorm, "max-norm", 0, "reject updates whose L2 norm exceeds this (0: off)")
	f.IntVar(&threads, "threads", 0, "threads for the kernels and input decoding (0: all CPUs); never changes the result")
	f.IntVar(&chunk, "chunk-elems", 0, "elements read per input at a time (0: 262144); never changes the result")
	f.StringVar(&backendName, "backend", "cpu", "numeric backend: "+strings.Join(aggregateBackendNames(), ", ")+"; never changes the result")
	f.BoolVar(&skipInvalid, "skip-invalid", false, "report bad inputs and aggregate the rest instead of failing")
	for _, pf := range aggregateParamFlags {
		f.Float64(pf.flag, 0, pf.usage+" ["+strings.Join(pf.strategies, ", ")+"]")
	}
	return cmd
}

// aggregateBackend opens the kernels backend by name; "cpu" (and "") is a
// CPU backend on threads goroutines.
func aggregateBackend(name string, threads int) (kernels.Backend, error) {
	if name == "" || name == "cpu" {
		return kernels.NewCPU(threads), nil
	}
	return kernels.Open(name)
}

// aggregateBackendNames lists the backends --backend accepts in this
// binary, "cuda" included with the note of how to get it when absent.
func aggregateBackendNames() []string {
	names := kernels.Backends()
	if !aggregateHas(names, "cuda") {
		names = append(names, "cuda (build tag fedcuda)")
	}
	return names
}

// parseAggregateInput splits "FILE@N" into path and weight; an "@" suffix
// that is not a number is part of the file name.
func parseAggregateInput(arg string) (aggregator.Input, error) {
	i := strings.LastIndexByte(arg, '@')
	if i < 0 {
		return aggregator.Input{Path: arg}, nil
	}
	n, err := strconv.ParseFloat(arg[i+1:], 64)
	if err != nil {
		return aggregator.Input{Path: arg}, nil
	}
	if !(n > 0) || math.IsInf(n, 0) {
		return aggregator.Input{}, fmt.Errorf("input %q: sample count %s must be a positive number", arg, arg[i+1:])
	}
	if i == 0 {
		return aggregator.Input{}, fmt.Errorf("input %q: no file name before @", arg)
	}
	return aggregator.Input{Path: arg[:i], Weight: n}, nil
}

func aggregateHas(xs []string, x string) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

// progressLine rewrites one stderr line, at most once a second.
type progressLine struct {
	mu    sync.Mutex
	w     io.Writer
	last  time.Time
	shown bool
}

func (p *progressLine) update(pr aggregator.Progress) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if time.Since(p.last) < time.Second && pr.Done != pr.Total {
		return
	}
	p.last = time.Now()
	pct := 100.0
	if pr.Total > 0 {
		pct = 100 * float64(pr.Done) / float64(pr.Total)
	}
	if isTerminal(p.w) {
		fmt.Fprintf(p.w, "\raggregate: %-9s %5.1f%%", pr.Phase, pct)
		p.shown = true
	} else {
		fmt.Fprintf(p.w, "aggregate: %-9s %5.1f%%\n", pr.Phase, pct)
	}
}

func (p *progressLine) done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.shown {
		fmt.Fprintln(p.w)
	}
}
