package cli

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/fedtune/fedtune/artifact"
	"github.com/fedtune/fedtune/coordinator"
	"github.com/fedtune/fedtune/inference"
	"github.com/fedtune/fedtune/inference/receipt"
	"github.com/fedtune/fedtune/internal/digest"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/engine"
)

// follower keeps a server on the latest committed global model of a job:
// it polls the ledger for the job's rounds, fetches each newly committed
// model from the artifact store, checks its digest against the round's
// RoundCommitted and the committing block against the chain, and swaps it
// in (requests in flight finish on the model they started on).
type follower struct {
	c     *client.Client
	ac    *artifact.Client
	job   string
	base  string            // the base model folder (config, tokenizer, chat template)
	lora  *model.LoRAConfig // the job's LoRA config; nil for a full fine-tune
	dir   string            // where fetched models are kept
	id    string            // the served model's id
	slots int
	log   *slog.Logger
	round atomic.Uint64 // the round whose model is served
}

// loadJobLoRA reads the LoRA config of the job file path (nil for a full
// fine-tune).
func loadJobLoRA(path string) (*model.LoRAConfig, error) {
	if path == "" {
		return nil, nil
	}
	job, err := coordinator.LoadJob(path)
	if err != nil {
		return nil, err
	}
	if l := job.FineTune.LoRA; job.FineTune.Mode == model.ModeLoRA && l != nil {
		return &model.LoRAConfig{Rank: l.Rank, Alpha: l.Alpha, Dropout: l.Dropout, Targets: l.Targets}, nil
	}
	return nil, nil
}

// latest returns the job's last committed round with a model (nil when
// none is newer than the one served).
func (f *follower) latest(ctx context.Context) (*ledger.Round, error) {
	rounds, err := f.c.Rounds(ctx, f.job)
	if err != nil {
		return nil, err
	}
	for i := len(rounds) - 1; i >= 0; i-- {
		r := rounds[i]
		if r.Status == ledger.StatusCommitted && r.ModelDigest != "" {
			if r.Round <= f.round.Load() {
				return nil, nil
			}
			return &r, nil
		}
	}
	return nil, nil
}

// load fetches and checks the model of round rd and loads it for serving,
// its Block the block that committed it.
func (f *follower) load(ctx context.Context, rd *ledger.Round) (*inference.Model, error) {
	lm, err := f.c.Model(ctx, rd.ModelDigest)
	if err != nil {
		return nil, fmt.Errorf("model %s of round %d: %w", rd.ModelDigest, rd.Round, err)
	}
	if lm.JobID != f.job || lm.Round != rd.Round {
		return nil, fmt.Errorf("model %s was committed by round %d of job %q, not round %d of %q", rd.ModelDigest, lm.Round, lm.JobID, rd.Round, f.job)
	}
	vb, _, err := receiptBlock(ctx, f.c, lm.Height, 0)
	if err != nil {
		return nil, fmt.Errorf("block %d: %w", lm.Height, err)
	}
	if err := commitsModel(vb, lm); err != nil {
		return nil, err
	}
	path := filepath.Join(f.dir, rd.ModelDigest+".safetensors")
	if err := f.fetch(ctx, rd.ModelDigest, path); err != nil {
		return nil, err
	}
	var m *inference.Model
	if f.lora != nil {
		ad := filepath.Join(f.dir, "adapter-"+rd.ModelDigest)
		if err := inference.AdapterFolder(path, ad, *f.lora); err != nil {
			return nil, err
		}
		if m, err = inference.LoadModel(f.base, ad, f.id, engine.NewHost(), f.slots); err != nil {
			return nil, err
		}
		if m.Adapter != rd.ModelDigest {
			m.Gen.Close()
			return nil, fmt.Errorf("the fetched adapter has digest %s, round %d committed %s", m.Adapter, rd.Round, rd.ModelDigest)
		}
	} else {
		return nil, errors.New("following a full fine-tune is not supported yet: give the job's LoRA job file (--job-file)")
	}
	m.Block = &receipt.Block{Height: lm.Height, Hash: hex.EncodeToString(vb.Hash[:])}
	return m, nil
}

// fetch downloads blob d to path (unless there) and checks its digest.
func (f *follower) fetch(ctx context.Context, d, path string) error {
	if got, err := digest.File(path); err == nil && got == d {
		return nil
	}
	tmp := path + ".part"
	w, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if _, err := f.ac.Download(ctx, d, w); err != nil {
		w.Close()
		os.Remove(tmp)
		return fmt.Errorf("fetch %s: %w", d, err)
	}
	if err := w.Close(); err != nil {
		return err
	}
	if got, err := digest.File(tmp); err != nil || got != d {
		os.Remove(tmp)
		return fmt.Errorf("fetched %s has digest %s, the ledger committed %s", tmp, got, d)
	}
	return os.Rename(tmp, path)
}

// first waits for the job's first committed model and loads it.
func (f *follower) first(ctx context.Context, poll time.Duration) (*inference.Model, error) {
	for {
		rd, err := f.latest(ctx)
		if err != nil {
			return nil, err
		}
		if rd != nil {
			m, err := f.load(ctx, rd)
			if err == nil {
				f.round.Store(rd.Round)
				f.log.Info("following", "job", f.job, "round", rd.Round, "model", rd.ModelDigest, "block", m.Block.Height)
			}
			return m, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(poll):
		}
	}
}

// follow swaps s to each newly committed model until ctx ends. A model
// that fails its checks is logged and skipped until the next poll.
func (f *follower) follow(ctx context.Context, s *inference.Server, poll time.Duration) {
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rd, err := f.latest(ctx)
		if err != nil || rd == nil {
			if err != nil && ctx.Err() == nil {
				f.log.Warn("ledger", "err", err)
			}
			continue
		}
		m, err := f.load(ctx, rd)
		if err != nil {
			f.log.Warn("round model refused", "round", rd.Round, "model", rd.ModelDigest, "err", err)
			continue
		}
		f.round.Store(rd.Round)
		s.Swap(m)
		f.log.Info("switched", "job", f.job, "round", rd.Round, "model", rd.ModelDigest, "block", m.Block.Height)
	}
}

// roundNow returns the round whose model is served.
func (f *follower) roundNow() uint64 { return f.round.Load() }
