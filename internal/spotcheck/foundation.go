package spotcheck

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/fedtune/fedtune/artifact"
	"github.com/fedtune/fedtune/coordinator"
	"github.com/fedtune/fedtune/internal/atomicfile"
	"github.com/fedtune/fedtune/internal/digest"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/chat"
	"github.com/fedtune/fedtune/model/safetensors"
	"github.com/fedtune/fedtune/model/tokenizer"
)

// FoundationSource fetches a job's foundation model by the digests the
// ledger records, so that a verifier needs no model folder of its own.
type FoundationSource struct {
	Ledger    *client.Client
	Artifacts *artifact.Client
	Store     *artifact.Store
	// CacheDir holds one folder per foundation model digest, laid out
	// once and reused by later replays. Several processes may share it:
	// each lays a model out in a folder of its own and renames it into
	// place (install).
	CacheDir string
}

// ModelDigest returns the weight digest of the foundation model a job's
// recipe records (the registered base model; in a pre-training job, the
// initial model its init_config and init_seed stand for).
func ModelDigest(job *ledger.JobRecord) (string, error) {
	if job.Recipe.BaseModel == "" {
		return "", fmt.Errorf("job %q: its recipe records no base_model digest; give the verifier --model", job.JobID)
	}
	return job.Recipe.BaseModel, nil
}

// Folder returns a model folder holding the foundation model of job
// override when not "" (its weights must
// have the recipe's base_model digest), else a cached folder laid out
// from the artifact store: config.json by the digest ModelRegistered
// recorded, the weights by the model's digest, and the tokenizer files
// the model's recorded sources list (by their SHA-256); for a pre-training
// job, the initial model drawn from the recipe's init_config blob.
// Every file is checked against the ledger's digest before use.
func (s *FoundationSource) Folder(ctx context.Context, job *ledger.JobRecord, override string) (string, error) {
	want, err := ModelDigest(job)
	if err != nil {
		if override != "" {
			return override, nil
		}
		return "", err
	}
	if override != "" {
		got, err := model.DigestPath(override)
		if err != nil {
			return "", fmt.Errorf("--model %s: %w", override, err)
		}
		if got != want {
			return "", fmt.Errorf("--model %s holds weights %s, but job %q's recipe records base model %s: give the job's base model or leave --model out", override, got, job.JobID, want)
		}
		return override, nil
	}
	dir := filepath.Join(s.CacheDir, "model-"+want)
	if d, err := model.DigestPath(filepath.Join(dir, model.WeightsFile)); err == nil && d == want {
		return dir, nil // cached and still whole
	}
	tmp, err := os.MkdirTemp(s.CacheDir, "fetch-")
	if err != nil {
		if err := os.MkdirAll(s.CacheDir, 0o755); err != nil {
			return "", err
		}
		if tmp, err = os.MkdirTemp(s.CacheDir, "fetch-"); err != nil {
			return "", err
		}
	}
	defer os.RemoveAll(tmp)
	if job.Recipe.Mode == ledger.RecipePretrain {
		cfg, err := s.blob(ctx, job.Recipe.InitConfig, "the recipe's init_config")
		if err != nil {
			return "", err
		}
		m, err := coordinator.InitialModelFrom(cfg, job.Recipe.InitConfig, job.Recipe.InitSeed)
		if err != nil {
			return "", err
		}
		if _, err := m.Save(tmp, safetensors.F32); err != nil {
			return "", err
		}
	} else {
		rec, err := s.Ledger.Model(ctx, want)
		if err != nil {
			return "", fmt.Errorf("base model %s of job %q: %w", want, job.JobID, err)
		}
		if rec.Config == "" {
			return "", fmt.Errorf("base model %s of job %q: the ledger records no config digest; give the verifier --model", want, job.JobID)
		}
		files := map[string]string{model.ConfigFile: rec.Config}
		for _, f := range rec.Sources {
			if f.Path == tokenizer.FileName || f.Path == chat.ConfigFileName {
				files[f.Path] = f.SHA256
			}
		}
		files[model.WeightsFile] = want
		for _, name := range []string{model.ConfigFile, tokenizer.FileName, chat.ConfigFileName, model.WeightsFile} {
			d, ok := files[name]
			if !ok {
				continue
			}
			p, err := s.fetch(ctx, d, fmt.Sprintf("%s of base model %s", name, want))
			if err != nil {
				return "", err
			}
			if err := copyStream(p, filepath.Join(tmp, name)); err != nil {
				return "", err
			}
		}
	}
	got, err := model.DigestPath(tmp)
	if err != nil {
		return "", fmt.Errorf("base model %s of job %q: %w", want, job.JobID, err)
	}
	if got != want {
		return "", fmt.Errorf("job %q: the model laid out from the ledger's digests has weights %s, its recipe records %s", job.JobID, got, want)
	}
	if err := install(tmp, dir); err != nil {
		return "", fmt.Errorf("base model %s of job %q: cache %s: %w", want, job.JobID, dir, err)
	}
	return dir, nil
}

// install moves tmp, a model folder laid out by this process and checked
// against the ledger's digests, to dir, where other fetchers sharing the
// cache folder (a second verifier, or this one restarted) may do the same
// at the same time. The rename is atomic, so a reader sees either no dir
// or a whole one. When dir already exists (another fetcher won the
// race), it is kept if it holds the same files as tmp, byte for byte
// (SHA-256), and tmp is dropped; a dir that differs (left by a crash or
// tampered with) is first renamed aside under a unique name, never
// removed in place, so that no process is left reading a half-removed
// folder, and the rename is tried again.
func install(tmp, dir string) error {
	for range 4 {
		err := os.Rename(tmp, dir)
		if err == nil {
			return nil
		}
		if _, serr := os.Lstat(dir); serr != nil {
			return err // not the race: dir does not exist
		}
		same, why, serr := sameFiles(tmp, dir)
		if serr != nil {
			return serr
		}
		if same {
			return os.RemoveAll(tmp)
		}
		aside, aerr := os.MkdirTemp(filepath.Dir(dir), "stale-")
		if aerr != nil {
			return aerr
		}
		if rerr := os.Rename(dir, filepath.Join(aside, "old")); rerr != nil && !os.IsNotExist(rerr) {
			_ = os.Remove(aside)
			return fmt.Errorf("move aside the cached folder that differs (%s): %w", why, rerr)
		}
		_ = os.RemoveAll(aside)
	}
	return fmt.Errorf("the cached folder kept changing under other fetchers")
}

// sameFiles reports whether folder b holds exactly the regular files of
// folder a with the same contents; why says what differs.
func sameFiles(a, b string) (bool, string, error) {
	ea, err := os.ReadDir(a)
	if err != nil {
		return false, "", err
	}
	eb, err := os.ReadDir(b)
	if err != nil {
		return false, err.Error(), nil
	}
	if len(ea) != len(eb) {
		return false, fmt.Sprintf("%d files, want %d", len(eb), len(ea)), nil
	}
	for _, e := range ea {
		da, err := digest.File(filepath.Join(a, e.Name()))
		if err != nil {
			return false, "", err
		}
		db, err := digest.File(filepath.Join(b, e.Name()))
		if err != nil {
			return false, fmt.Sprintf("%s: %v", e.Name(), err), nil
		}
		if da != db {
			return false, fmt.Sprintf("%s has SHA-256 %s, want %s", e.Name(), db, da), nil
		}
	}
	return true, "", nil
}

// fetch fetches the artifact of digest d into the store (the store checks
// it against d) and returns its path there.
func (s *FoundationSource) fetch(ctx context.Context, d, what string) (string, error) {
	if d == "" {
		return "", fmt.Errorf("%s: no digest on the ledger", what)
	}
	if _, err := s.Artifacts.Fetch(ctx, d, s.Store); err != nil {
		return "", fmt.Errorf("fetch %s (%s): %w", what, d, err)
	}
	return s.Store.Path(d)
}

// blob is fetch, returning the artifact's bytes.
func (s *FoundationSource) blob(ctx context.Context, d, what string) ([]byte, error) {
	p, err := s.fetch(ctx, d, what)
	if err != nil {
		return nil, err
	}
	return os.ReadFile(p)
}

// copyStream copies file src to dst without holding it in memory.
func copyStream(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	return atomicfile.WriteFunc(dst, 0o644, func(f *os.File) error {
		_, err := io.Copy(f, in)
		return err
	})
}
