package coordinator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/fedtune/fedtune/aggregator/round"
	coordinatorv1 "github.com/fedtune/fedtune/api/coordinator/v1"
	"github.com/fedtune/fedtune/internal/digest"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/chat"
	"github.com/fedtune/fedtune/model/safetensors"
	"github.com/fedtune/fedtune/model/tokenizer"
)

// runningJob is the job the service drives (guarded by Service.mu).
type runningJob struct {
	job    *Job
	m      *Machine
	base   string // round 1's base model (full weights)
	files  modelFiles
	init   string // LoRA: the job's initial global adapter digest
	detail string
	result *JobResult
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
func (s *Service) initModelDir(job *Job) (string, error) {
	m, err := InitialModel(job)
	if err != nil {
		return "", err
	}
	dir := filepath.Join(s.cfg.Dir, "work", "init-"+job.Name)
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
func (s *Service) prepare(ctx context.Context, job *Job, history []ledger.Round) (*runningJob, error) {
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
			if dir, err = s.initModelDir(job); err != nil {
				return nil, err
			}
			field = "model.init " + job.Model.Init
			source = fmt.Sprintf("fedtune init: %s, seed %d (job %s, seed %d)", filepath.Base(job.Model.Init), InitSeed(job.Seed), job.Name, job.Seed)
		}
		digest, files, c, err := s.importModel(ctx, dir)
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
		if _, err := s.cfg.Ledger.Model(ctx, digest); errors.Is(err, ledger.ErrRecordNotFound) {
			body := ledger.ModelRegistered{Digest: digest, Name: filepath.Base(dir), Licence: "CC0-1.0",
				Source: source, Config: files.config}
			if err := importedFrom(dir, digest, &body); err != nil {
				return nil, err
			}
			if _, err := s.cfg.Ledger.Submit(ctx, s.cfg.CoordinatorKey, body); err != nil {
				return nil, fmt.Errorf("register base model %s: %w", digest, err)
			}
			s.log.InfoContext(ctx, "base model registered", "digest", digest)
		} else if err != nil {
			return nil, err
		}
	} else {
		j.base = job.Model.Digest
		rec, err := s.cfg.Ledger.Model(ctx, j.base)
		if err != nil {
			return nil, fmt.Errorf("model %s: %w", j.base, err)
		}
		if ok, _ := s.cfg.Store.Has(j.base); !ok || rec.Config == "" {
			return nil, fmt.Errorf("model %s (model.digest) is not in the artifact store with its config; give model.path", j.base)
		}
		j.files = modelFiles{config: rec.Config}
		c, err := s.loadConfig(rec.Config)
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
		dir, err := os.MkdirTemp(filepath.Join(s.cfg.Dir, "work"), "init-adapter-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		d, err := ad.Save(dir)
		if err != nil {
			return nil, fmt.Errorf("initial adapter: %w", err)
		}
		if j.init, err = s.putFile(ctx, filepath.Join(dir, model.AdapterWeightsFile), d); err != nil {
			return nil, err
		}
	}
	// The job's canonical encoding, under its config digest (the one every
	// RoundOpened records): whoever follows the job reads its settings
	// (a LoRA adapter's rank, alpha and targets) from here, checked
	// against the ledger, not from a file someone hands them.
	if s.cfg.Store != nil {
		if _, err := s.cfg.Store.PutExpect(ctx, job.Digest(), bytes.NewReader(job.Canonical())); err != nil {
			return nil, fmt.Errorf("store job %s's canonical config: %w", job.Name, err)
		}
	}
	recipe, err := s.registerJob(ctx, job, j.base, j.init)
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
func (s *Service) registerJob(ctx context.Context, job *Job, base, initAdapter string) (ledger.RoundRecipe, error) {
	recipe, err := job.Recipe([]string{s.agg.ID()}, initAdapter)
	if err != nil {
		return recipe, err
	}
	recipe.BaseModel = base // round 1 starts from it; the ledger refuses any other
	for i, p := range recipe.Published {
		d, err := s.cfg.Ledger.Dataset(ctx, p.Digest)
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

	rec, err := s.cfg.Ledger.Job(ctx, job.Name)
	switch {
	case errors.Is(err, ledger.ErrRecordNotFound):
		if _, err := s.cfg.Ledger.Submit(ctx, s.cfg.CoordinatorKey, ledger.JobRegistered{JobID: job.Name, Recipe: recipe}); err != nil {
			return recipe, fmt.Errorf("register job %s: %w", job.Name, err)
		}
		s.log.InfoContext(ctx, "job registered", "job", job.Name, "strategy", recipe.Strategy, "aggregators", recipe.Aggregators)
		return recipe, nil
	case err != nil:
		return recipe, fmt.Errorf("job %s: %w", job.Name, err)
	case rec.Owner != s.id:
		return recipe, fmt.Errorf("job %s is owned by coordinator %s on the ledger, not by this coordinator %s; pick another job name", job.Name, rec.Owner, s.id)
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
func (s *Service) importModel(ctx context.Context, dir string) (string, modelFiles, model.Config, error) {
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
	if _, err := s.putFile(ctx, wpath, digest); err != nil {
		return "", files, cfg, fmt.Errorf("base model %s: %s is not in canonical form (its SHA-256 is not its weight digest); save it with fedtune: %w", dir, model.WeightsFile, err)
	}
	if files.config, err = s.putFile(ctx, filepath.Join(dir, model.ConfigFile), ""); err != nil {
		return "", files, cfg, err
	}
	if _, err := os.Stat(filepath.Join(dir, tokenizer.FileName)); err == nil {
		if files.tokenizer, err = s.putFile(ctx, filepath.Join(dir, tokenizer.FileName), ""); err != nil {
			return "", files, cfg, err
		}
	}
	if _, err := os.Stat(filepath.Join(dir, chat.ConfigFileName)); err == nil {
		if files.tokenizerConfig, err = s.putFile(ctx, filepath.Join(dir, chat.ConfigFileName), ""); err != nil {
			return "", files, cfg, err
		}
	}
	return digest, files, cfg, nil
}

// putFile stores a file; with want set, its digest must be want.
func (s *Service) putFile(ctx context.Context, path, want string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if want != "" {
		if _, err := s.cfg.Store.PutExpect(ctx, want, f); err != nil {
			return "", fmt.Errorf("store %s: %w", path, err)
		}
		return want, nil
	}
	d, _, err := s.cfg.Store.Put(ctx, f)
	if err != nil {
		return "", fmt.Errorf("store %s: %w", path, err)
	}
	return d, nil
}

func (s *Service) loadConfig(digest string) (model.Config, error) {
	f, err := s.cfg.Store.Open(digest)
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

// global returns the digest of the weights trainers start from and the
// aggregation takes as reference when the machine's base is base: the
// initial adapter of a LoRA job while base is still the foundation model.
func (j *runningJob) global(base string) string {
	if j.job.FineTune.Mode == model.ModeLoRA && base == j.base {
		return j.init
	}
	return base
}

// taskProto turns a TrainTask into its wire form.
func (j *runningJob) taskProto(t TrainTask) (*coordinatorv1.Task, error) {
	tp := &coordinatorv1.Task{
		JobId: t.JobID, Round: t.Round, ConfigDigest: t.ConfigDigest,
		BaseModel: j.base, BaseConfig: j.files.config, Tokenizer: j.files.tokenizer, TokenizerConfig: j.files.tokenizerConfig,
		Global: j.global(t.BaseModel), DeadlineUnixNano: t.Deadline.UnixNano(), Seed: t.Seed,
		AdapterSeed: AdapterSeed(j.job.Seed), Datasets: t.Datasets,
		LocalSteps: int32(t.Train.LocalSteps), Batch: int32(t.Train.Batch), SeqLen: int32(t.Train.SeqLen),
		Lr: t.Train.LR, WeightDecay: t.Train.WeightDecay, ClipNorm: t.Train.ClipNorm, Warmup: int32(t.Train.Warmup),
		Schedule: t.Train.Schedule, Mode: t.FineTune.Mode, Compression: t.Compression.Kind,
		Int8Block: int32(j.job.Int8Block()),
	}
	if l := t.FineTune.LoRA; l != nil {
		tp.Lora = &coordinatorv1.LoRA{Rank: int32(l.Rank), Alpha: l.Alpha, Dropout: l.Dropout, Targets: l.Targets}
	}
	if tp.Global == "" {
		return nil, errors.New("no global weights for the task")
	}
	return tp, nil
}

// aggregate runs a round's aggregation through the Aggregator (in-process
// or remote), which leaves the new global (and server state) in the store,
// and reports to the machine.
func (s *Service) aggregate(ctx context.Context, gen uint64, j *runningJob, a round.Task) {
	report := func(ev Event) {
		s.mu.Lock()
		defer s.mu.Unlock()
		if gen == s.gen {
			s.step(ev)
		}
	}
	var res round.Result
	var err error
	var since time.Time
	for delay := txRetryMin; ; delay = min(2*delay, txRetryMax) {
		res, err = s.agg.Aggregate(ctx, a, j.global(a.Base))
		if err == nil || !errors.Is(err, ErrAggregatorUnavailable) || ctx.Err() != nil {
			break
		}
		// The aggregator is unreachable: nothing was aggregated, so there
		// is no failure it could sign. Try again.
		if since.IsZero() {
			since = s.clock.Now()
		}
		detail := fmt.Sprintf("round %d: aggregation not run since %s (retrying every %s): %v", a.Round, since.UTC().Format(time.RFC3339), delay, err)
		s.log.WarnContext(ctx, "aggregator unreachable; retrying", "job", a.JobID, "round", a.Round, "retry_in", delay, "err", err)
		s.mu.Lock()
		if j := s.job; j != nil && gen == s.gen && j.result == nil {
			j.detail = detail
			s.publishStatus()
		}
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-s.clock.After(delay):
		}
	}
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		s.log.ErrorContext(ctx, "aggregation failed", "job", a.JobID, "round", a.Round, "err", err)
		report(AggregationFailed{Round: a.Round, Reason: ledger.TruncateReason(err.Error())})
		return
	}
	done := AggregationDone(res)
	if err := s.rejectUndelivered(ctx, gen, a, &done); err != nil {
		if ctx.Err() != nil {
			return
		}
		s.log.ErrorContext(ctx, "aggregation failed", "job", a.JobID, "round", a.Round, "err", err)
		report(AggregationFailed{Round: a.Round, Reason: ledger.TruncateReason(err.Error())})
		return
	}
	s.log.InfoContext(ctx, "aggregated", "job", a.JobID, "round", a.Round, "model", done.Model, "aggregator", abbrev(s.agg.ID()),
		"accepted", len(done.Weights), "rejected", len(done.Rejected))
	report(done)
}

// rejectUndelivered queues the aggregator's own rejections of updates
// that are not inputs of the aggregation (done.Rejected keyed by a trainer
// that is no input: an update the ledger records for the round that the
// aggregator could not fetch from the artifact store), ahead of the
// round's closing tx: the ledger accepts a commit only if it accounts for
// every submitted update, as a contributor or by an UpdateRejected. It
// removes them from done.Rejected (the machine knows only its inputs).
func (s *Service) rejectUndelivered(ctx context.Context, gen uint64, a round.Task, done *AggregationDone) error {
	var others []string
	for t := range done.Rejected {
		if !slices.ContainsFunc(a.Inputs, func(in round.Input) bool { return in.Trainer == t }) {
			others = append(others, t)
		}
	}
	if len(others) == 0 {
		return nil
	}
	if s.cfg.Ledger == nil {
		return fmt.Errorf("the aggregator rejected updates of trainers %v that are not inputs, and there is no ledger to name them", others)
	}
	r, err := s.cfg.Ledger.Round(ctx, a.JobID, a.Round, 0)
	if err != nil {
		return fmt.Errorf("round %d on the ledger: %w", a.Round, err)
	}
	slices.Sort(others)
	for _, t := range others {
		i := slices.IndexFunc(r.Updates, func(u ledger.Update) bool { return u.Trainer == t })
		if i < 0 {
			return fmt.Errorf("the aggregator rejected an update of trainer %s, which has none in round %d on the ledger", abbrev(t), a.Round)
		}
		u := r.Updates[i]
		s.txq.push(gen, ledger.UpdateRejected{JobID: a.JobID, Round: a.Round, UpdateDigest: u.UpdateDigest, Reason: done.Rejected[t]})
		s.log.WarnContext(ctx, "undelivered update rejected by the aggregator", "job", a.JobID, "round", a.Round, "trainer", abbrev(t), "update", u.UpdateDigest, "why", done.Rejected[t])
		delete(done.Rejected, t)
	}
	return nil
}
