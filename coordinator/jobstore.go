package coordinator

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/fedtune/fedtune/artifact"
	"github.com/fedtune/fedtune/internal/atomicfile"
	"github.com/fedtune/fedtune/internal/digest"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/chat"
	"github.com/fedtune/fedtune/model/safetensors"
	"github.com/fedtune/fedtune/model/tokenizer"
)

// activeJobFile, activeSrcFile and doneMarker live in the job store's
// folder (ServiceConfig.Dir): the job being run (its YAML and source
// path), and a marker written when it finished, so a restarted
// coordinator resumes exactly the unfinished job.
const (
	activeJobFile = "job.yaml"
	activeSrcFile = "job.source"
	doneMarker    = "job.done"
	// launcherFile holds the key ID that launched the active job over TLS
	// (CancelJob admits it), written by saveLauncher.
	launcherFile = "job.launcher"
)

// jobLedger is what the job store needs of the ledger: the records a job
// is prepared against, and submitting the coordinator's ModelRegistered
// and JobRegistered.
type jobLedger interface {
	Submit(ctx context.Context, key ed25519.PrivateKey, body ledger.TxBody) (uint64, error)
	Dataset(ctx context.Context, digest string) (*ledger.Dataset, error)
	Model(ctx context.Context, digest string) (*ledger.Model, error)
	Job(ctx context.Context, id string) (*ledger.JobRecord, error)
}

// jobStore keeps the coordinator's job on disk and prepares it to run: the
// active job's files in dir (saveActive, loadActive, markDone), and, for
// prepare, the base model, a LoRA job's initial adapter and the job's
// canonical config put into the artifact store, the base model and the
// job registered on the ledger, and the round machine built (recovered
// from the ledger's rounds on a restart). It holds no lock and no state of
// its own beyond its folder: the driver calls it without holding its lock.
type jobStore struct {
	dir    string // the active job's files; work/ holds scratch folders
	store  *artifact.Store
	ledger jobLedger
	key    ed25519.PrivateKey // the coordinator's: signs what the store registers
	id     string             // the coordinator's key ID
	aggID  string             // the aggregator the job's recipe names
	log    *slog.Logger
}

// saveActive records job (its YAML and source path) as the active job,
// not done.
func (js *jobStore) saveActive(yaml []byte, source string) error {
	_ = os.Remove(filepath.Join(js.dir, doneMarker))
	if err := atomicfile.Write(filepath.Join(js.dir, activeSrcFile), []byte(source), 0o644); err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(js.dir, activeJobFile), yaml, 0o644)
}

// saveLauncher records id ("": none, a plain-text launch) as the key
// that launched the active job.
func (js *jobStore) saveLauncher(id string) error {
	return atomicfile.Write(filepath.Join(js.dir, launcherFile), []byte(id), 0o644)
}

// loadLauncher returns the key that launched the active job, as
// saveLauncher recorded it ("" when none, or not a key ID).
func (js *jobStore) loadLauncher() string {
	b, err := os.ReadFile(filepath.Join(js.dir, launcherFile))
	if err != nil || !digest.Valid(string(b)) {
		return ""
	}
	return string(b)
}

// hasActive reports whether a job was ever saved (finished or not).
func (js *jobStore) hasActive() bool {
	_, err := os.Stat(filepath.Join(js.dir, activeJobFile))
	return err == nil
}

// loadActive returns the active job if it has not finished, or nil when
// there is none or it is done.
func (js *jobStore) loadActive() (*Job, error) {
	data, err := os.ReadFile(filepath.Join(js.dir, activeJobFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(js.dir, doneMarker)); err == nil {
		return nil, nil
	}
	src, _ := os.ReadFile(filepath.Join(js.dir, activeSrcFile))
	job, err := ParseJob(string(src), data)
	if err != nil {
		return nil, err
	}
	job.Source = string(src)
	return job, nil
}

// markDone records that the active job finished with model digest m.
func (js *jobStore) markDone(m string) error {
	return atomicfile.Write(filepath.Join(js.dir, doneMarker), []byte(m+"\n"), 0o644)
}

// AdapterSeed is the seed of a LoRA job's initial adapter (B zero, A drawn
// from it), the same for every trainer: the first 8 bytes of
// SHA-256("fedtune/adapter-seed/v1" ‖ job seed), as TaskSeed derives.
func AdapterSeed(jobSeed uint64) uint64 { return TaskSeed(jobSeed, 0, "fedtune/adapter-seed/v1") }

// InitSeed is the seed of a pre-training job's initial model
// (model.New), the same wherever it is computed: the first 8 bytes of
// SHA-256("fedtune/init-seed/v1" ‖ job seed), as TaskSeed derives.
func InitSeed(jobSeed uint64) uint64 { return TaskSeed(jobSeed, 0, "fedtune/init-seed/v1") }

// InitialModel returns a pre-training job's round-1 model: freshly
// initialised from the model config at model.init (relative to the job
// file's directory) with InitSeed. The config must still be the one the
// job pinned (model.init_digest, set by ParseJob): a file changed since
// is refused, naming it and both digests. Anyone with the job file and
// the config gets the same weights, so the digest on the ledger can be
// checked.
func InitialModel(j *Job) (*model.Model, error) {
	if j.FineTune.Mode != model.ModePretrain || j.Model.Init == "" {
		return nil, fmt.Errorf("%w: job %s is not a pretrain job with model.init", ErrJob, j.Name)
	}
	p := j.InitPath()
	cfg, d, err := loadInitConfig(p)
	if err != nil {
		return nil, err
	}
	if j.Model.InitDigest != "" && d != j.Model.InitDigest {
		return nil, fmt.Errorf("%w: model.init %s is now a model config of digest %s, but job %s pins %s", ErrJob, p, d, j.Name, j.Model.InitDigest)
	}
	m, err := model.New(cfg, InitSeed(j.Seed))
	if err != nil {
		return nil, fmt.Errorf("%w: model.init %s: %w", ErrJob, p, err)
	}
	return m, nil
}

// InitialModelFrom returns the model a pretrain recipe's init_config and
// init_seed stand for: config is the canonical config bytes (config.json,
// model.Config.EncodeJSON) as the artifact store holds them under
// want, the recipe's init_config. Bytes that do not hash to want, or
// that are not the canonical encoding of a valid config, are refused.
func InitialModelFrom(config []byte, want string, seed uint64) (*model.Model, error) {
	if got := digest.Bytes(config); got != want {
		return nil, fmt.Errorf("%w: init config: the bytes given hash to %s, the recipe's init_config is %s", ErrJob, got, want)
	}
	cfg, err := model.ParseConfigJSON("init config "+want, config)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrJob, err)
	}
	if b, err := cfg.EncodeJSON(); err != nil || !bytes.Equal(b, config) {
		return nil, fmt.Errorf("%w: init config %s is not a model config in canonical form (config.json as fedtune writes it)", ErrJob, want)
	}
	m, err := model.New(cfg, seed)
	if err != nil {
		return nil, fmt.Errorf("%w: init config %s: %w", ErrJob, want, err)
	}
	return m, nil
}

// initModelDir writes a pre-training job's initial model into the
// service's work folder and returns the folder.
func (js *jobStore) initModelDir(job *Job) (string, error) {
	m, err := InitialModel(job)
	if err != nil {
		return "", err
	}
	dir := filepath.Join(js.dir, "work", "init-"+job.Name)
	if _, err := m.Save(dir, safetensors.F32); err != nil {
		return "", fmt.Errorf("initial model of job %s: %w", job.Name, err)
	}
	return dir, nil
}

// InitialAdapter returns a LoRA job's initial global adapter for a base
// model of config c: what round 1's trainers start from and what its
// aggregation takes as reference.
func InitialAdapter(j *Job, c model.Config) (*model.Adapter, error) {
	if j.FineTune.Mode != model.ModeLoRA || j.FineTune.LoRA == nil {
		return nil, fmt.Errorf("%w: job %s does not fine-tune a LoRA adapter", ErrJob, j.Name)
	}
	l := j.FineTune.LoRA
	return model.NewAdapter(c, model.LoRAConfig{Rank: l.Rank, Alpha: l.Alpha, Dropout: l.Dropout, Targets: l.Targets}, AdapterSeed(j.Seed))
}

// prepare imports the job's base model into the store, registers it on the
// ledger when it is not yet, makes the initial adapter of a LoRA job, and
// builds the machine (Recover from history when resuming).
func (js *jobStore) prepare(ctx context.Context, job *Job, history []ledger.Round) (*runningJob, error) {
	j := &runningJob{job: job}
	var cfg model.Config
	if job.Model.Path != "" || job.Model.Init != "" {
		dir := job.Model.Path
		if !filepath.IsAbs(dir) && job.Source != "" {
			dir = filepath.Join(filepath.Dir(job.Source), dir)
		}
		field, source := "model.path "+dir, "fedtune coordinator: "+dir
		if job.Model.Init != "" {
			var err error
			if dir, err = js.initModelDir(job); err != nil {
				return nil, err
			}
			field = "model.init " + job.Model.Init
			source = fmt.Sprintf("fedtune init: %s, seed %d (job %s, seed %d)", filepath.Base(job.Model.Init), InitSeed(job.Seed), job.Name, job.Seed)
		}
		digest, files, c, err := js.importModel(ctx, dir)
		if errors.Is(err, fs.ErrNotExist) && job.Model.Init == "" {
			return nil, fmt.Errorf("model.path %q is %s on the coordinator's machine, which holds no model there (config.json and model.safetensors; relative paths are taken from the job file's folder): %w", job.Model.Path, dir, err)
		}
		if err != nil {
			return nil, err
		}
		// The initialised model's config.json is the pinned config's
		// canonical encoding, now in the store under its digest (the
		// recipe's init_config) for auditors to recompute the model from.
		if job.Model.Init != "" && files.config != job.Model.InitDigest {
			return nil, fmt.Errorf("job %s: the initial model's config.json has digest %s, but model.init_digest is %s", job.Name, files.config, job.Model.InitDigest)
		}
		if job.Model.Digest != "" && job.Model.Digest != digest {
			return nil, fmt.Errorf("%s has weights %s, but model.digest says %s", field, digest, job.Model.Digest)
		}
		j.base, j.files, cfg = digest, files, c
		if _, err := js.ledger.Model(ctx, digest); errors.Is(err, ledger.ErrRecordNotFound) {
			// The tokenizer digest pins the folder's tokenizer and chat
			// template: an inference node serving the model refuses others.
			tok, err := model.TokenizerDigest(dir)
			if err != nil {
				return nil, fmt.Errorf("base model: %w", err)
			}
			body := ledger.ModelRegistered{Digest: digest, Name: filepath.Base(dir), Licence: "CC0-1.0",
				Source: source, Config: files.config, Tokenizer: tok}
			if err := importedFrom(dir, digest, &body); err != nil {
				return nil, err
			}
			if _, err := js.ledger.Submit(ctx, js.key, body); err != nil {
				return nil, fmt.Errorf("register base model %s: %w", digest, err)
			}
			js.log.InfoContext(ctx, "base model registered", "digest", digest)
		} else if err != nil {
			return nil, err
		}
	} else {
		j.base = job.Model.Digest
		rec, err := js.ledger.Model(ctx, j.base)
		if err != nil {
			return nil, fmt.Errorf("model %s: %w", j.base, err)
		}
		if ok, _ := js.store.Has(j.base); !ok || rec.Config == "" {
			return nil, fmt.Errorf("model %s (model.digest) is not in the artifact store with its config; give model.path", j.base)
		}
		j.files = modelFiles{config: rec.Config}
		c, err := js.loadConfig(rec.Config)
		if err != nil {
			return nil, err
		}
		cfg = c
	}
	if job.FineTune.Mode == model.ModeLoRA {
		ad, err := InitialAdapter(job, cfg)
		if err != nil {
			return nil, err
		}
		dir, err := os.MkdirTemp(filepath.Join(js.dir, "work"), "init-adapter-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		d, err := ad.Save(dir)
		if err != nil {
			return nil, fmt.Errorf("initial adapter: %w", err)
		}
		if j.init, err = js.putFile(ctx, filepath.Join(dir, model.AdapterWeightsFile), d); err != nil {
			return nil, err
		}
	}
	// The job's canonical encoding, under its config digest (the one every
	// RoundOpened records): whoever follows the job reads its settings
	// (a LoRA adapter's rank, alpha and targets) from here, checked
	// against the ledger, not from a file someone hands them.
	if js.store != nil {
		if _, err := js.store.PutExpect(ctx, job.Digest(), bytes.NewReader(job.Canonical())); err != nil {
			return nil, fmt.Errorf("store job %s's canonical config: %w", job.Name, err)
		}
	}
	recipe, err := js.registerJob(ctx, job, j.base, j.init)
	if err != nil {
		return nil, err
	}
	mc := Config{Job: job, BaseModel: j.base, Recipe: recipe}
	if history != nil {
		j.m, err = Recover(mc, history)
	} else {
		j.m, err = New(mc)
	}
	if err != nil {
		return nil, err
	}
	return j, nil
}

// importedFrom fills body's name, licence, source and source files from
// the record `fedtune model import` left in dir (model.ImportFile), if any;
// the record must name the weights the folder holds.
func importedFrom(dir, digest string, body *ledger.ModelRegistered) error {
	rec, err := model.ReadImportRecord(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("base model: %w", err)
	}
	if rec.Digest != digest {
		return fmt.Errorf("base model %s: %s records weights %s, but %s holds %s; import the folder again", dir, model.ImportFile, rec.Digest, model.WeightsFile, digest)
	}
	if rec.Name != "" {
		body.Name = rec.Name
	}
	if rec.Licence != "" {
		body.Licence = rec.Licence
	}
	if rec.Source != "" {
		body.Source = rec.Source
	}
	body.Sources = make([]ledger.SourceFile, len(rec.Sources))
	for i, f := range rec.Sources {
		body.Sources[i] = ledger.SourceFile{Path: f.Path, Size: uint64(f.Size), SHA256: f.SHA256}
	}
	return nil
}

// registerJob registers job and its round recipe on the ledger
// (JobRegistered, signed by this coordinator, which so owns the job), or
// checks that the ledger already has the same recipe from this
// coordinator (a resumed job).
func (js *jobStore) registerJob(ctx context.Context, job *Job, base, initAdapter string) (ledger.RoundRecipe, error) {
	recipe, err := job.Recipe([]string{js.aggID}, initAdapter)
	if err != nil {
		return recipe, err
	}
	recipe.BaseModel = base // round 1 starts from it; the ledger refuses any other
	for i, p := range recipe.Published {
		d, err := js.ledger.Dataset(ctx, p.Digest)
		if errors.Is(err, ledger.ErrRecordNotFound) {
			return recipe, fmt.Errorf("job %s: datasets.published[%d] %s: no dataset with this digest is on the ledger; publish it first (fedtune dataset publish) or take the digest from fedtune dataset ls: %w", job.Name, i, p.Digest, err)
		}
		if err != nil {
			return recipe, fmt.Errorf("job %s: datasets.published[%d] %s: %w", job.Name, i, p.Digest, err)
		}
		if !d.Published {
			return recipe, fmt.Errorf("job %s: datasets.published[%d] %s (%q) is a trainer's private dataset, not published data", job.Name, i, p.Digest, d.Name)
		}
		if !recipe.AcceptsLicence(d.Licence) {
			return recipe, fmt.Errorf("job %s: datasets.published[%d]: %s", job.Name, i, recipe.LicenceRefusal(d.Digest, d.Name, d.Licence))
		}
		// Every trainer trains on the published ranges, so an update on a
		// dataset lacking a required attestation would be refused at
		// commit (the ledger checks again there: an attestation may
		// arrive, or fail, later). Refuse the launch now instead.
		if missing := ledger.MissingAttestations(recipe.RequireAttestations, d.Attestations); len(missing) > 0 {
			names := make([]string, len(missing))
			for k, r := range missing {
				names[k] = r.String()
			}
			return recipe, fmt.Errorf("job %s: datasets.published[%d] %s (%q) lacks the passing attestation(s) require_attestations asks for: %s; every update on its ranges would be refused at commit, so have an auditor attest the dataset before launching the job",
				job.Name, i, d.Digest, d.Name, strings.Join(names, ", "))
		}
		recipe.Published[i].Samples = d.Samples
	}

	rec, err := js.ledger.Job(ctx, job.Name)
	switch {
	case errors.Is(err, ledger.ErrRecordNotFound):
		if _, err := js.ledger.Submit(ctx, js.key, ledger.JobRegistered{JobID: job.Name, Recipe: recipe}); err != nil {
			return recipe, fmt.Errorf("register job %s: %w", job.Name, err)
		}
		js.log.InfoContext(ctx, "job registered", "job", job.Name, "strategy", recipe.Strategy, "aggregators", recipe.Aggregators)
		return recipe, nil
	case err != nil:
		return recipe, fmt.Errorf("job %s: %w", job.Name, err)
	case rec.Owner != js.id:
		return recipe, fmt.Errorf("job %s is owned by coordinator %s on the ledger, not by this coordinator %s; pick another job name", job.Name, rec.Owner, js.id)
	case rec.Recipe.InitConfig != recipe.InitConfig:
		return recipe, fmt.Errorf("job %s is registered on the ledger with init_config %q, but model.init %s is a model config of digest %q: the config file changed since the job was registered", job.Name, rec.Recipe.InitConfig, job.InitPath(), recipe.InitConfig)
	case !rec.Recipe.Equal(&recipe):
		return recipe, fmt.Errorf("job %s is registered on the ledger with another recipe (strategy %s, aggregators %v) than this job file and aggregator give (strategy %s, aggregators %v); pick another job name",
			job.Name, rec.Recipe.Strategy, rec.Recipe.Aggregators, recipe.Strategy, recipe.Aggregators)
	}
	return rec.Recipe, nil
}

// importModel puts a model folder's weights, config and tokenizer into the
// store and returns the weight digest.
func (js *jobStore) importModel(ctx context.Context, dir string) (string, modelFiles, model.Config, error) {
	var files modelFiles
	cfg, err := model.LoadConfigJSON(filepath.Join(dir, model.ConfigFile))
	if err != nil {
		return "", files, cfg, fmt.Errorf("base model: %w", err)
	}
	wpath := filepath.Join(dir, model.WeightsFile)
	digest, err := model.DigestPath(wpath)
	if err != nil {
		return "", files, cfg, fmt.Errorf("base model: %w", err)
	}
	if _, err := js.putFile(ctx, wpath, digest); err != nil {
		return "", files, cfg, fmt.Errorf("base model %s: %s is not in canonical form (its SHA-256 is not its weight digest); save it with fedtune: %w", dir, model.WeightsFile, err)
	}
	if files.config, err = js.putFile(ctx, filepath.Join(dir, model.ConfigFile), ""); err != nil {
		return "", files, cfg, err
	}
	if _, err := os.Stat(filepath.Join(dir, tokenizer.FileName)); err == nil {
		if files.tokenizer, err = js.putFile(ctx, filepath.Join(dir, tokenizer.FileName), ""); err != nil {
			return "", files, cfg, err
		}
	}
	if _, err := os.Stat(filepath.Join(dir, chat.ConfigFileName)); err == nil {
		if files.tokenizerConfig, err = js.putFile(ctx, filepath.Join(dir, chat.ConfigFileName), ""); err != nil {
			return "", files, cfg, err
		}
	}
	return digest, files, cfg, nil
}

// putFile stores a file; with want set, its digest must be want.
func (js *jobStore) putFile(ctx context.Context, path, want string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if want != "" {
		if _, err := js.store.PutExpect(ctx, want, f); err != nil {
			return "", fmt.Errorf("store %s: %w", path, err)
		}
		return want, nil
	}
	d, _, err := js.store.Put(ctx, f)
	if err != nil {
		return "", fmt.Errorf("store %s: %w", path, err)
	}
	return d, nil
}

// loadConfig reads the model config stored under digest.
func (js *jobStore) loadConfig(digest string) (model.Config, error) {
	f, err := js.store.Open(digest)
	if err != nil {
		return model.Config{}, fmt.Errorf("model config %s: %w", digest, err)
	}
	defer f.Close()
	data, err := io.ReadAll(f)
	if err != nil {
		return model.Config{}, err
	}
	return model.ParseConfigJSON("config "+digest, data)
}
