package cli

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/fedtune/fedtune/artifact"
	"github.com/fedtune/fedtune/coordinator"
	"github.com/fedtune/fedtune/datasets"
	"github.com/fedtune/fedtune/internal/audit"
	"github.com/fedtune/fedtune/internal/spotcheck"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
	"github.com/fedtune/fedtune/model/commitment"
	"github.com/fedtune/fedtune/trainer"
)

func newAuditReplayCmd() *cobra.Command {
	var addr, genesisPath, job, trainerID, dataPath, jobFile, artifacts, checkpoints, format string
	var round uint64
	var published bool
	cmd := &cobra.Command{
		Use:   "replay --addr ADDR --job J --round R --trainer T (--data PATH | --published) --job-file JOB.yaml --artifacts DIR [--checkpoints DIR]",
		Short: "Re-run a trainer's local training of one round bit for bit and name the first step that differs",
		Long: "Rebuild the task a trainer was given from the ledger (the round's base weights or adapter from --artifacts, the\n" +
			"hyperparameters from the job file whose digest the round records, the trainer's seed), check that --data has\n" +
			"the Merkle root of the dataset the trainer's update names (its own data; with published data the samples of\n" +
			"the ranges the round assigned it are read from the published shards in --artifacts instead, each checked\n" +
			"against its signed manifest, and follow its own: --published, implied when the update names ranges), re-run the training on the Host engine (the same bits\n" +
			"on every CPU) and compare the inputs digest, the step root and the update digest with the trainer's commitment.\n" +
			"On a mismatch, the trainer's checkpoints (--checkpoints: its checkpoint folder, JOB/ROUND/step-NNNNNN.safetensors\n" +
			"and steps.json) are proved against the committed step root (a checkpoint that does not prove is named a lie)\n" +
			"and bisected to the first step whose state differs. Within that step the replay re-runs it from the trainer's\n" +
			"proved state before it with the engine's operation trace on and names the first trainable tensor, in update order,\n" +
			"whose value after the step differs from the trainer's proved checkpoint (\"step 7: first difference in layer 3\n" +
			"q_proj lora_B (AdamW update) ...; forward and loss agree\"), or the step's batch when the trainer's disclosed\n" +
			"inputs (JOB/ROUND/inputs.json, proved against the committed inputs digest) name other samples. A pre-training round that started from the trainer's kept\n" +
			"inner optimizer state replays from the copy in JOB/ROUND/start-optstate.safetensors there, checked against the\n" +
			"committed inputs (a copy that is not the committed one is named a lie); without it such a round is not judged\n" +
			"and the replay says the starting optimizer state is needed. Exits non-zero unless the replay matches.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			for _, f := range []struct{ name, v string }{{"--job", job}, {"--trainer", trainerID},
				{"--job-file", jobFile}, {"--artifacts", artifacts}, {"--addr", addr}} {
				if f.v == "" {
					return fmt.Errorf("audit replay: %s is required", f.name)
				}
			}
			// Read the store's files without taking its lock: a running
			// coordinator holds it, and a replay only reads.
			if fi, err := os.Stat(artifacts); err != nil || !fi.IsDir() {
				return fmt.Errorf("audit replay: --artifacts %s is not a folder of blobs (an artifact store's, e.g. the coordinator's)", artifacts)
			}
			st := artifactDir(artifacts)
			tmp, err := os.MkdirTemp("", "fedtune-replay-")
			if err != nil {
				return fmt.Errorf("audit replay: %w", err)
			}
			defer os.RemoveAll(tmp)
			var rd *ledger.Round
			var task trainer.Task
			var data trainer.Data
			err = withClient(ctx, addr, genesisPath, cmd.ErrOrStderr(), func(c *client.Client) error {
				var err error
				if rd, err = c.Round(ctx, job, round); err != nil {
					return err
				}
				u := findUpdate(rd, trainerID)
				if u == nil {
					return fmt.Errorf("trainer %s submitted no update to round %d of job %q", trainerID, round, job)
				}
				ds, err := c.Dataset(ctx, u.DatasetDigest)
				if err != nil {
					return err
				}
				own, ranges, err := replayDataPlan(rd, u, ds, dataPath, published)
				if err != nil {
					return err
				}
				if own == nil {
					dataPath = ""
				}
				if task, data, err = replayTask(jobFile, rd, trainerID, own, dataPath, st, tmp); err != nil {
					return err
				}
				if len(ranges) == 0 {
					return readStepDigests(ctx, c, rd, u)
				}
				if data, err = trainer.RoundData(ctx, c, storeSource{st}, rd.JobID, rd.Round, data, own != nil, ranges, nil); err != nil {
					return err
				}
				return readStepDigests(ctx, c, rd, u)
			})
			if err != nil {
				return fmt.Errorf("audit replay: %w", err)
			}
			u := findUpdate(rd, trainerID)
			if u.Commitment == nil {
				return fmt.Errorf("audit replay: the update %s of trainer %s makes no training commitment: nothing to replay against", u.UpdateDigest, trainerID)
			}
			var store *commitment.Store
			if checkpoints != "" {
				store = &commitment.Store{Dir: checkpoints}
			}
			v, err := trainer.Replay(ctx, task, data, trainer.Claim{Job: job, Round: round, UpdateDigest: u.UpdateDigest, Commitment: *u.Commitment}, store)
			if err != nil {
				return fmt.Errorf("audit replay: %w", err)
			}
			if err := renderVerdict(cmd.OutOrStdout(), &v, format); err != nil {
				return err
			}
			if v.NeedsOptState {
				return fmt.Errorf("audit replay: trainer %s, round %d of job %q cannot be judged: %s", trainerID, round, job, v.Reason)
			}
			if !v.Honest() {
				return fmt.Errorf("audit replay: trainer %s, round %d of job %q: %s", trainerID, round, job, v.Reason)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&addr, "addr", "", "ledger node gRPC address")
	f.StringVar(&genesisPath, "genesis", "", "genesis file pinning the ledger")
	f.StringVar(&job, "job", "", "job ID")
	f.Uint64Var(&round, "round", 1, "round number")
	f.StringVar(&trainerID, "trainer", "", "the trainer's member ID")
	f.StringVar(&dataPath, "data", "", "the trainer's disclosed data (checked against its registered manifest root)")
	f.BoolVar(&published, "published", false, "replay on the published samples the round assigned the trainer, read from --artifacts "+
		"(implied when its update names ranges; --data then gives its own data, if it has any)")
	f.StringVar(&jobFile, "job-file", "", "the job file the round's config digest names")
	f.StringVar(&artifacts, "artifacts", "", "artifact store folder holding the round's base weights or adapter")
	f.StringVar(&checkpoints, "checkpoints", "", "the trainer's step checkpoint folder")
	f.StringVar(&format, "format", "text", "text or json")
	return cmd
}

// readStepDigests fills u's commitment's step digests, which a round's
// read leaves out, from its UpdateSubmitted tx (client StepDigests);
// trainer.Replay checks they hash to the committed step root.
func readStepDigests(ctx context.Context, c *client.Client, rd *ledger.Round, u *ledger.Update) error {
	if u.Commitment == nil {
		return nil
	}
	ds, err := c.StepDigests(ctx, rd.JobID, rd.Round, u)
	if err != nil {
		return err
	}
	u.Commitment.StepDigests = ds
	return nil
}

func findUpdate(rd *ledger.Round, trainerID string) *ledger.Update {
	for i := range rd.Updates {
		if rd.Updates[i].Trainer == trainerID {
			return &rd.Updates[i]
		}
	}
	return nil
}

// artifactDir reads blobs from an artifact store's folder (or a flat
// folder of blobs named by digest) without opening the store, so that it
// works while the store's server runs. It is a spotcheck.BlobPaths.
type artifactDir string

// Path returns the file that holds blob digest, or would in the store's
// layout.
func (dir artifactDir) Path(digest string) (string, error) {
	d, err := artifact.ParseDigest(digest)
	if err != nil {
		return "", err
	}
	if p, ok := audit.ArtifactPath(string(dir), d); ok {
		return p, nil
	}
	return filepath.Join(string(dir), "blobs", d[:2], d), nil
}

// storeSource reads blobs from a local artifact store's folder
// (trainer.BlobSource).
type storeSource struct{ st artifactDir }

func (s storeSource) Download(_ context.Context, digest string, w io.Writer) (int64, error) {
	p, err := s.st.Path(digest)
	if err != nil {
		return 0, err
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, fmt.Errorf("open %s: %w", digest, artifact.ErrNotFound)
	}
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return io.Copy(w, f)
}

// replayDataPlan says which data a replay of update u of round rd needs:
// own, the trainer's registered dataset ds when the trainer trained on
// data of its own (then read from dataPath, which must be given; nil when
// it has none), and the published ranges the round assigned it (when the
// update names ranges, or published asks for them), which must be the
// ones the update names. The published samples follow the own ones, in
// the order its node reads them (trainer.RoundData).
func replayDataPlan(rd *ledger.Round, u *ledger.Update, ds *ledger.Dataset, dataPath string, published bool) (own *ledger.Dataset, ranges []ledger.SampleRange, err error) {
	if !published && len(u.Ranges) == 0 {
		if dataPath == "" {
			return nil, nil, fmt.Errorf("--data is required: trainer %s trained round %d of job %q on its own data %s (no published ranges)", u.Trainer, rd.Round, rd.JobID, ds.Digest)
		}
		return ds, nil, nil
	}
	ranges = ledger.RangesOf(rd.Ranges, u.Trainer)
	if len(ranges) == 0 {
		return nil, nil, fmt.Errorf("--published: round %d of job %q assigned trainer %s no published samples", rd.Round, rd.JobID, u.Trainer)
	}
	if !sameRanges(ranges, u.Ranges) {
		return nil, nil, fmt.Errorf("trainer %s's update names the published ranges %v; round %d assigned it %v", u.Trainer, u.Ranges, rd.Round, ranges)
	}
	if ds.Published {
		return nil, ranges, nil
	}
	if dataPath == "" {
		return nil, nil, fmt.Errorf("--data is required too: trainer %s trained on its own dataset %s as well as its published ranges", u.Trainer, ds.Digest)
	}
	return ds, ranges, nil
}

func sameRanges(a, b []ledger.SampleRange) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// replayTask rebuilds the task trainer t was given in round rd: the job
// file (checked against the round's config digest) gives the
// hyperparameters and seeds, the artifact store the round's weights or
// adapter (spotcheck.Task). The data at dataPath must have the registered
// root of ds.
func replayTask(jobFile string, rd *ledger.Round, t string, ds *ledger.Dataset, dataPath string, st spotcheck.BlobPaths, tmp string) (trainer.Task, trainer.Data, error) {
	jf, err := coordinator.LoadJob(jobFile)
	if err != nil {
		return trainer.Task{}, trainer.Data{}, err
	}
	if d := jf.Digest(); d != rd.ConfigDigest {
		return trainer.Task{}, trainer.Data{}, fmt.Errorf("job file %s has digest %s; round %d of job %q was opened with config %s", jobFile, d, rd.Round, rd.JobID, rd.ConfigDigest)
	}
	data, err := replayData(dataPath, ds)
	if err != nil {
		return trainer.Task{}, trainer.Data{}, err
	}
	found, err := spotcheck.Foundation(jf, "", tmp)
	if err != nil {
		return trainer.Task{}, trainer.Data{}, err
	}
	task, err := spotcheck.Task(jf, found, rd, t, st, tmp)
	return task, data, err
}

// replayData loads the trainer's disclosed data as its node does and
// checks it against the registered manifest root; with no dataset (ds
// nil: the trainer has no data of its own) there is none to load.
func replayData(path string, ds *ledger.Dataset) (trainer.Data, error) {
	if ds == nil {
		return trainer.Data{}, nil
	}
	d, isInstruct := trainer.ReadInstruct(path)
	if !isInstruct {
		var err error
		if d, err = datasets.Load(path, datasets.Options{}); err != nil {
			return trainer.Data{}, fmt.Errorf("--data: %w", err)
		}
	}
	hs, _ := datasets.SampleHashes(d)
	root := datasets.NewTree(hs).Root()
	if got := hex.EncodeToString(root[:]); got != ds.Root {
		return trainer.Data{}, fmt.Errorf("--data %s has Merkle root %s, but the update's dataset %s (registered by %s) has root %s: not the trainer's data",
			path, got, ds.Digest, ds.Owner, ds.Root)
	}
	return trainer.Data{Dataset: d, Instruct: isInstruct}, nil
}

// renderVerdict writes v as text or JSON.
func renderVerdict(w io.Writer, v *trainer.Verdict, format string) error {
	switch format {
	case "json":
		type lie struct {
			Step   int    `json:"step"`
			Digest string `json:"digest"`
			Err    string `json:"error"`
		}
		out := struct {
			Honest       bool                      `json:"honest"`
			Replayed     ledger.TrainingCommitment `json:"replayed"`
			UpdateDigest string                    `json:"update_digest"`
			FirstBadStep int                       `json:"first_bad_step,omitempty"`
			After        int                       `json:"after,omitempty"`
			Before       int                       `json:"before,omitempty"`
			Lies         []lie                     `json:"lies,omitempty"`
			OptStateLie  string                    `json:"opt_state_lie,omitempty"`
			NeedsOpt     bool                      `json:"needs_opt_state,omitempty"`
			Op           *trainer.OpFinding        `json:"first_operation,omitempty"`
			InputsDiff   []string                  `json:"inputs_differ,omitempty"`
			InputsLie    string                    `json:"inputs_lie,omitempty"`
			Reason       string                    `json:"reason,omitempty"`
		}{Honest: v.Honest(), Replayed: v.Replayed, UpdateDigest: v.UpdateDigest, FirstBadStep: v.FirstBadStep, After: v.After, Before: v.Before,
			NeedsOpt: v.NeedsOptState, Op: v.Op, InputsDiff: v.InputsDiff, Reason: v.Reason}
		if v.OptStateLie != nil {
			out.OptStateLie = v.OptStateLie.Error()
		}
		if v.InputsLie != nil {
			out.InputsLie = v.InputsLie.Error()
		}
		for _, l := range v.Lies {
			out.Lies = append(out.Lies, lie{Step: l.Step, Digest: l.Digest, Err: l.Err.Error()})
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	case "text", "":
		if v.Honest() {
			_, err := fmt.Fprintf(w, "replay matches: inputs %s, %d steps, step root %s, update %s\n",
				v.Replayed.InputsDigest, v.Replayed.Steps, v.Replayed.StepRoot, v.UpdateDigest)
			return err
		}
		if v.NeedsOptState {
			_, err := fmt.Fprintf(w, "replay CANNOT JUDGE: %s\n", v.Reason)
			return err
		}
		if _, err := fmt.Fprintf(w, "replay DIFFERS: %s\n", v.Reason); err != nil {
			return err
		}
		if v.Op != nil {
			if _, err := fmt.Fprintf(w, "first operation: %s\n", v.Op.Text); err != nil {
				return err
			}
		}
		return nil
	default:
		return errors.New("audit replay: --format: want text or json")
	}
}
