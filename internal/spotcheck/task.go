package spotcheck

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/fedtune/fedtune/artifact"
	"github.com/fedtune/fedtune/coordinator"
	"github.com/fedtune/fedtune/internal/atomicfile"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/safetensors"
	"github.com/fedtune/fedtune/trainer"
)

// Foundation returns the foundation model folder of job jf: override when
// not "", else the job's model.path (relative to the job file's folder
// when not absolute), else, for a pre-training job, its freshly
// initialised model written under tmp.
func Foundation(jf *coordinator.Job, override, tmp string) (string, error) {
	if override != "" {
		return override, nil
	}
	found := jf.Model.Path
	if found != "" && !filepath.IsAbs(found) && jf.Source != "" {
		found = filepath.Join(filepath.Dir(jf.Source), found)
	}
	if jf.Model.Init != "" || found == "" {
		m, err := coordinator.InitialModel(jf)
		if err != nil {
			return "", err
		}
		found = filepath.Join(tmp, "init")
		if _, err := m.Save(found, safetensors.F32); err != nil {
			return "", err
		}
	}
	return found, nil
}

// BlobPaths gives the file that holds a blob by digest; *artifact.Store
// is one, and so is a store's folder read without its lock.
type BlobPaths interface {
	Path(digest string) (string, error)
}

var _ BlobPaths = (*artifact.Store)(nil)

// Task rebuilds the task trainer t was given in round rd of job jf (the
// job whose digest rd.ConfigDigest is): the hyperparameters and seeds
// from jf, the model from the foundation folder found, and the round's
// base weights or adapter, when they are not the foundation's, from st.
// The replayed update goes under tmp.
func Task(jf *coordinator.Job, found string, rd *ledger.Round, t string, st BlobPaths, tmp string) (trainer.Task, error) {
	if d := jf.Digest(); d != rd.ConfigDigest {
		return trainer.Task{}, fmt.Errorf("the job config has digest %s; round %d of job %q was opened with config %s", d, rd.Round, rd.JobID, rd.ConfigDigest)
	}
	fm, err := model.Load(found)
	if err != nil {
		return trainer.Task{}, err
	}
	fd, err := fm.Digest()
	if err != nil {
		return trainer.Task{}, err
	}
	tr := jf.Train
	task := trainer.Task{JobID: rd.JobID, Round: rd.Round, ModelDir: found, Compression: jf.Compression.Kind, Int8Block: jf.Int8Block(),
		OutDir: filepath.Join(tmp, "update"),
		Train: model.TrainConfig{Steps: tr.LocalSteps, Batch: tr.Batch, SeqLen: tr.SeqLen, LR: tr.LR, WeightDecay: tr.WeightDecay,
			ClipNorm: tr.ClipNorm, Warmup: tr.Warmup, Schedule: tr.Schedule, Seed: coordinator.TaskSeed(jf.Seed, rd.Round, t)}}
	if err := os.MkdirAll(task.OutDir, 0o755); err != nil {
		return trainer.Task{}, err
	}
	switch jf.FineTune.Mode {
	case model.ModeLoRA:
		if jf.FineTune.LoRA == nil {
			return trainer.Task{}, fmt.Errorf("job %s: a lora job without a lora section", jf.Name)
		}
		ls := jf.FineTune.LoRA
		l := model.LoRAConfig{Rank: ls.Rank, Alpha: ls.Alpha, Dropout: ls.Dropout, Targets: slices.Clone(ls.Targets)}
		task.Train.LoRA = &l
		if rd.BaseModel == fd {
			task.Adapter, err = coordinator.InitialAdapter(jf, fm.Config)
		} else {
			var p string
			if p, err = st.Path(rd.BaseModel); err == nil {
				task.Adapter, err = trainer.ReadAdapter(p, l)
			}
		}
		if err != nil {
			return trainer.Task{}, fmt.Errorf("the round's adapter %s: %w", rd.BaseModel, err)
		}
	default:
		if jf.FineTune.Mode == model.ModePretrain {
			task.Base = rd.BaseModel
		}
		if rd.BaseModel != fd {
			if task.ModelDir, err = weights(found, rd.BaseModel, st, filepath.Join(tmp, "base")); err != nil {
				return trainer.Task{}, err
			}
		}
	}
	return task, nil
}

// weights lays out a model folder: found's files with the weights of
// blob digest.
func weights(found, digest string, st BlobPaths, dir string) (string, error) {
	p, err := st.Path(digest)
	if err != nil {
		return "", fmt.Errorf("the round's base weights %s: %w", digest, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	ents, err := os.ReadDir(found)
	if err != nil {
		return "", err
	}
	for _, e := range ents {
		if e.IsDir() || e.Name() == model.WeightsFile {
			continue
		}
		if err := copyFile(filepath.Join(found, e.Name()), filepath.Join(dir, e.Name())); err != nil {
			return "", err
		}
	}
	return dir, copyFile(p, filepath.Join(dir, model.WeightsFile))
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return atomicfile.Write(dst, b, 0o644)
}
