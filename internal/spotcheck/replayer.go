package spotcheck

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/fedtune/fedtune/artifact"
	"github.com/fedtune/fedtune/coordinator"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
	"github.com/fedtune/fedtune/trainer"
	"github.com/fedtune/fedtune/verifier"
)

// Replayer is the verifier node's verifier.Replayer over the real
// training code.
type Replayer struct {
	// Ledger reads datasets and members (the published manifests).
	Ledger *client.Client
	// Artifacts fetches the job config, the round's weights or adapter
	// and the published shards into Store.
	Artifacts *artifact.Client
	Store     *artifact.Store
	// ModelDir, when set, is the foundation model folder to use; its
	// weights must have the digest the job's recipe records. Unset, the
	// foundation model is fetched from the artifact store by the ledger's
	// digests and cached under CacheDir (FoundationSource).
	ModelDir string
	// CacheDir holds the fetched foundation models ("": WorkDir/models).
	CacheDir string
	// WorkDir holds each replay's files while it runs.
	WorkDir string
	Logger  *slog.Logger
}

var _ verifier.Replayer = (*Replayer)(nil)

// Replay implements verifier.Replayer: it replays the drawn update's
// round on the published samples the round gave its trainer and compares
// the result with the trainer's commitment and update digest.
func (r *Replayer) Replay(ctx context.Context, c verifier.Check) (verifier.Result, error) {
	u := c.Update
	if u.Commitment == nil {
		// Nothing to replay against: the trainer committed to nothing.
		return verifier.Result{Step: 1, Reason: fmt.Sprintf("update %s of trainer %s makes no training commitment", u.UpdateDigest, u.Trainer)}, nil
	}
	log := r.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	for _, d := range []string{c.Round.ConfigDigest, c.Round.BaseModel} {
		if _, err := r.Artifacts.Fetch(ctx, d, r.Store); err != nil {
			return verifier.Result{}, fmt.Errorf("fetch %s: %w", d, err)
		}
	}
	p, err := r.Store.Path(c.Round.ConfigDigest)
	if err != nil {
		return verifier.Result{}, err
	}
	raw, err := os.ReadFile(p)
	if err != nil {
		return verifier.Result{}, err
	}
	jf, err := coordinator.DecodeCanonical(bytes.TrimSpace(raw))
	if err != nil {
		return verifier.Result{}, fmt.Errorf("job config %s: %w", c.Round.ConfigDigest, err)
	}
	if err := os.MkdirAll(r.WorkDir, 0o755); err != nil {
		return verifier.Result{}, err
	}
	tmp, err := os.MkdirTemp(r.WorkDir, fmt.Sprintf("replay-%s-r%d-", filepath.Base(c.Round.JobID), c.Round.Round))
	if err != nil {
		return verifier.Result{}, err
	}
	defer os.RemoveAll(tmp)
	cache := r.CacheDir
	if cache == "" {
		cache = filepath.Join(r.WorkDir, "models")
	}
	fs := FoundationSource{Ledger: r.Ledger, Artifacts: r.Artifacts, Store: r.Store, CacheDir: cache}
	found, err := fs.Folder(ctx, c.Job, r.ModelDir)
	if err != nil {
		return verifier.Result{}, err
	}
	task, err := Task(jf, found, c.Round, u.Trainer, r.Store, tmp)
	if err != nil {
		return verifier.Result{}, err
	}
	// The trainer's data: the published ranges the round gave it (a
	// drawn update is on published data alone).
	want := ledger.RangesOf(c.Round.Ranges, u.Trainer)
	if len(want) == 0 {
		return verifier.Result{Step: 1, Reason: fmt.Sprintf("round %d gave trainer %s no published samples, yet its update %s names published dataset %s", c.Round.Round, u.Trainer, u.UpdateDigest, u.DatasetDigest)}, nil
	}
	data, err := trainer.RoundData(ctx, r.Ledger, r.Artifacts, c.Round.JobID, c.Round.Round, trainer.Data{}, false, want, log)
	if err != nil {
		if errors.Is(err, trainer.ErrTask) {
			return verifier.Result{Step: 1, Reason: err.Error()}, nil
		}
		return verifier.Result{}, err
	}
	// The round's read leaves out the step digests the trainer disclosed:
	// read them from its UpdateSubmitted (Replay checks they hash to the
	// committed step root before it uses them).
	claim := *u.Commitment
	if claim.StepDigests, err = r.Ledger.StepDigests(ctx, c.Round.JobID, c.Round.Round, &u); err != nil {
		return verifier.Result{}, err
	}
	v, err := trainer.Replay(ctx, task, data, trainer.Claim{Job: c.Round.JobID, Round: c.Round.Round, UpdateDigest: u.UpdateDigest, Commitment: claim}, nil)
	if err != nil {
		return verifier.Result{}, err
	}
	return Verdict(&v), nil
}

// Verdict turns a replay's verdict into the verifier's: passed when it
// is honest; otherwise the first step whose state differs (step 1 when
// the inputs already differ; the last step when every step matches but
// the update is not its result; the first step not proved equal when no
// checkpoint pins it) and the reason.
func Verdict(v *trainer.Verdict) verifier.Result {
	if v.Honest() {
		return verifier.Result{Passed: true}
	}
	step := uint64(v.FirstBadStep)
	switch {
	case !v.InputsMatch:
		step = 1
	case v.StepRootMatch:
		// Every step's state is the replay's; the update is not the
		// last step's result.
		step = v.Replayed.Steps
	case step == 0:
		step = uint64(v.After) + 1
	}
	return verifier.Result{Step: step, Reason: v.Reason}
}
