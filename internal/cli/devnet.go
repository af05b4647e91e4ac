package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/fedtune/fedtune/internal/devnet"
	"github.com/fedtune/fedtune/ledger"
)

func init() { register(newDevnetCmd) }

func newDevnetCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "devnet",
		Short: "Run a whole fedtune network on localhost",
	}
	cmd.AddCommand(newDevnetUpCmd())
	return cmd
}

func newDevnetUpCmd() *cobra.Command {
	var o devnet.Options
	cmd := &cobra.Command{
		Use:   "up [--dir DIR] [--trainers 3] [--job FILE] [--keep]",
		Short: "Start ledger, coordinator and trainers, run a job, print its lineage",
		Long: `Start a network on localhost: three ledger nodes (raft + pebble), a
coordinator with its aggregator and artifact store, and trainers each holding
its own shipped dataset shard, all separate processes talking gRPC (TLS tied
to their ledger keys). A tiny LLaMA base model is initialised and pre-trained
briefly, the job (default configs/jobs/demo-lora.yaml) runs to its end with a
progress display, and the eval loss before and after and the final model's
lineage are printed. Ctrl-C stops everything. Run it from the source tree
(or give --repo).

With --keep the network stays up after the job, until Ctrl-C or SIGTERM,
and prints its addresses and files and the exact commands that join a new
trainer, launch another job and audit the model.

With --verify a verifier node (role verifier) joins: trainer-1 publishes its
shard, the job trains on it alone with verify: {fraction: 1, by: [the
verifier]}, and every update is replayed bit for bit before its round commits.
--verifiers N starts N verifiers (verifier-1 … verifier-N, sharing one cache
of fetched base models) named by the job with quorum --verify-quorum (default
a majority): an update passes, or is rejected naming a step, once that many
agree, so a stopped or lying minority cannot decide.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := cmd.OutOrStdout()
			if o.Dir == "" {
				d, err := os.MkdirTemp("", "fedtune-devnet-")
				if err != nil {
					return err
				}
				o.Dir = d
			}
			if o.JobName == "" {
				o.JobName = fmt.Sprintf("devnet-%d", time.Now().Unix())
			}
			o.Out = out
			o.VerifyReceipt = verifyReceipt
			start := time.Now()
			fmt.Fprintf(out, "== fedtune devnet in %s\n", o.Dir)
			n, err := devnet.Prepare(cmd.Context(), o)
			if err != nil {
				return fmt.Errorf("devnet: %w", err)
			}
			var res *devnet.Result
			if o.Keep {
				// Ctrl-C or SIGTERM after the guide is UpKeep's normal end (nil).
				err = n.UpKeep(cmd.Context(), func(r *devnet.Result) { printResult(out, n, r, start) })
			} else if res, err = n.Up(cmd.Context()); err == nil {
				printResult(out, n, res, start)
			}
			if err != nil {
				if cmd.Context().Err() != nil {
					fmt.Fprintln(out, "\ninterrupted: the network is stopped")
				}
				return fmt.Errorf("devnet: %w (logs in %s/logs)", err, n.Dir)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Dir, "dir", "", "folder for keys, chain, models and logs (default: a new temporary folder)")
	f.IntVar(&o.Trainers, "trainers", 3, "number of trainers (1 to 3)")
	f.StringVar(&o.Job, "job", "", "job YAML (default configs/jobs/demo-lora.yaml)")
	f.StringVar(&o.Repo, "repo", ".", "fedtune source tree holding configs/ and datasets/")
	f.IntVar(&o.Rounds, "rounds", 0, "override the job's rounds")
	f.IntVar(&o.LocalSteps, "local-steps", 0, "override the job's train.local_steps")
	f.StringVar(&o.EvalData, "eval", "datasets/testdata/tasks/eval.jsonl", "held-out data scored before and after (\"\": the job's eval.data)")
	f.IntVar(&o.PretrainSteps, "pretrain-steps", 100, "pre-training steps of the base model")
	f.BoolVar(&o.RemoteAggregator, "remote-aggregator", false, "run the aggregator as its own process (fedtune aggregator start) with its own key")
	f.BoolVar(&o.Keep, "keep", false, "keep the network up after the job (until Ctrl-C or SIGTERM) and print its addresses and the commands that join a trainer, launch a job and audit the model")
	f.BoolVar(&o.Verify, "verify", false, "start a verifier node and spot-check every update of the job before its rounds commit (the job runs on trainer-1's shard, published)")
	f.IntVar(&o.Verifiers, "verifiers", 0, "start this many verifier nodes (implies --verify; default 1), named verifier-1, verifier-2, … and sharing one base-model cache")
	f.IntVar(&o.VerifyQuorum, "verify-quorum", 0, "how many verifiers must agree to pass or reject an update (default: a majority of --verifiers)")
	f.StringVar(&o.Device, "device", "", "the trainers' (and the base model's pre-training) "+deviceUsage)
	return cmd
}

// printResult prints the outcome of the devnet's job: eval before and
// after, the final model's lineage and the membership check.
func printResult(out io.Writer, n *devnet.Net, res *devnet.Result, start time.Time) {
	fmt.Fprintln(out)
	if res.EvalBefore != nil && res.EvalAfter != nil {
		fmt.Fprintf(out, "eval before: mean NLL %.4f  perplexity %.2f\n", res.EvalBefore.MeanNLL, res.EvalBefore.Perplexity)
		fmt.Fprintf(out, "eval after:  mean NLL %.4f  perplexity %.2f\n", res.EvalAfter.MeanNLL, res.EvalAfter.Perplexity)
	}
	fmt.Fprintln(out)
	printLineage(out, n, res.Lineage)
	printMembership(out, n, res)
	printServed(out, res.Served)
	fmt.Fprintf(out, "\njob %s %s in %.0fs; everything is in %s\n", res.Job, res.State, time.Since(start).Seconds(), n.Dir)
}

// verifyReceipt is devnet's ReceiptVerifier: audit receipt --ledger
// --genesis --replay, in this process.
func verifyReceipt(ctx context.Context, out io.Writer, bundle, ledgerAddr, genesis, modelDir, adapterDir string) error {
	return auditReceipt(ctx, out, io.Discard, bundle, auditReceiptOpts{ledgerAddr: ledgerAddr, genesisPath: genesis,
		replay: true, modelDir: modelDir, adapterDir: adapterDir})
}

// printServed prints the inference node's answer and its receipt check.
func printServed(w io.Writer, s *devnet.Served) {
	if s == nil {
		return
	}
	r := s.Receipt
	what := "model " + short(r.Model) + "…"
	if r.Adapter != "" {
		what += " + adapter " + short(r.Adapter) + "…"
	}
	fmt.Fprintf(w, "\ninference node (role inference) on http://%s/v1/ serving %s, committed at height %d\n", s.Addr, what, s.Committed)
	fmt.Fprintf(w, "  user:      %s\n", s.Question)
	fmt.Fprintf(w, "  assistant: %q\n", s.Answer)
	block := "none"
	if r.Block != nil {
		block = fmt.Sprintf("%d %s…", r.Block.Height, r.Block.Hash[:12])
	}
	if s.Verified {
		fmt.Fprintf(w, "receipt: verified (signer %s…, model %s…, block %s; ledger + replay, bundle %s)\n", r.Signer[:12], r.Model[:12], block, filepath.Base(s.Bundle))
	} else {
		fmt.Fprintf(w, "receipt: signed by %s… (not checked against the ledger)\n", r.Signer[:12])
	}
}

// printMembership prints the audit contains report of the demo's sample.
func printMembership(w io.Writer, n *devnet.Net, res *devnet.Result) {
	if res.Membership == nil {
		return
	}
	fmt.Fprintf(w, "\nis %s (trainer-1's first record) in the data behind the model? (audit contains; only its hash crosses the network)\n", filepath.Base(res.Sample))
	for _, d := range res.Membership.Datasets {
		detail := d.Detail
		if detail == "" {
			detail = "proof checked against the root on the ledger"
		}
		fmt.Fprintf(w, "  dataset %s… of %-10s %-10s %s\n", d.Dataset[:12], n.TrainerName(d.Trainer), d.Result, detail)
	}
}

// printLineage prints a model's lineage with devnet names.
func printLineage(w io.Writer, n *devnet.Net, l *ledger.Lineage) {
	if l == nil {
		return
	}
	name := func(id string) string {
		if s := n.TrainerName(id); s != "" {
			return s
		}
		return short(id)
	}
	fmt.Fprintf(w, "lineage of %s (ledger query lineage):\n", l.Model.Digest)
	for _, r := range l.Rounds {
		fmt.Fprintf(w, "  %s round %d: %s… → %s… (%s, committed at height %d by %s)\n", r.JobID, r.Round,
			r.BaseModel[:12], r.ModelDigest[:12], r.Strategy, r.CommittedHeight, name(r.Aggregator))
		for _, c := range r.Contributors {
			fmt.Fprintf(w, "    %-10s update %s… weight %.4f, %d samples of dataset %s…\n", name(c.Trainer), c.UpdateDigest[:12], c.Weight, c.Samples, c.DatasetDigest[:12])
		}
		for _, x := range r.Rejected {
			fmt.Fprintf(w, "    %-10s update %s… rejected: %s\n", name(x.Trainer), x.UpdateDigest[:12], x.Reason)
		}
	}
	fmt.Fprintf(w, "  base model %s (%s, %s)\n", l.Base.Digest, l.Base.Name, strings.TrimSpace(l.Base.Licence))
	for _, d := range l.Datasets {
		fmt.Fprintf(w, "  dataset %s… %s: %d samples, %s, owner %s\n", d.Digest[:12], d.Name, d.Samples, d.Licence, name(d.Owner))
	}
}
