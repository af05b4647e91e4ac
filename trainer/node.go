package trainer

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/bits"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	coordinatorv1 "github.com/fedtune/fedtune/api/coordinator/v1"
	"github.com/fedtune/fedtune/artifact"
	"github.com/fedtune/fedtune/datasets"
	"github.com/fedtune/fedtune/internal/atomicfile"
	"github.com/fedtune/fedtune/internal/digest"
	"github.com/fedtune/fedtune/internal/tlsid"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/chat"
	"github.com/fedtune/fedtune/model/safetensors"
	"github.com/fedtune/fedtune/model/tokenizer"
)

// ErrRefused is returned by Run when the coordinator or the ledger refuses the trainer
// for good (not a member, wrong role, a dataset not its own).
var ErrRefused = errors.New("trainer: refused")

// Options hold what is injected into a Node rather than configured.
type Options struct {
	// Logger receives the node's logs (nil: discard).
	Logger *slog.Logger
	// Backend trains (nil: NewBackend(Config.Device), the engine on its Host by default).
	Backend Backend
	// OnUpdate, if set, is called after each update was reported.
	OnUpdate func(task *coordinatorv1.Task, u Update)
}

// Node is a running trainer. Create it with New and run it with Run.
type Node struct {
	joined   atomic.Bool // a session joined the coordinator once
	cfg      Config
	opts     Options
	log      *slog.Logger
	key      ed25519.PrivateKey
	id       string
	data     Data
	manifest *datasets.SignedManifest
	store    *artifact.Store
	tree     proofTree // the dataset's Merkle tree, built on the first proof request
}

// New loads the key and the local data and builds the dataset's signed
// manifest (nothing is sent yet).
func New(cfg Config, opts Options) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if opts.Backend == nil {
		b, err := NewBackend(cfg.Device)
		if err != nil {
			return nil, err
		}
		opts.Backend = b
	}
	if cfg.Source == "" {
		cfg.Source = DefaultConfig().Source
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	key, err := ledger.LoadKey(cfg.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("trainer key: %w", err)
	}
	id := ledger.KeyID(key.Public().(ed25519.PublicKey))
	if cfg.Data == "" {
		return &Node{cfg: cfg, opts: opts, log: log.With("trainer", id[:8]), key: key, id: id}, nil
	}
	ds, isInstruct := ReadInstruct(cfg.Data)
	if !isInstruct {
		if ds, err = datasets.Load(cfg.Data, datasets.Options{}); err != nil {
			return nil, fmt.Errorf("trainer data: %w", err)
		}
	}
	format, err := datasets.DetectFormat(cfg.Data, datasets.Options{})
	if err != nil {
		return nil, fmt.Errorf("trainer data: %w", err)
	}
	name := cfg.Name
	if name == "" {
		name = "trainer-" + id[:8]
	}
	man, _, err := datasets.BuildManifest(ds, datasets.ManifestOptions{Name: name + "-data", Format: format,
		Licence: cfg.Licence, Source: cfg.Source, Owner: id})
	if err != nil {
		return nil, fmt.Errorf("trainer data manifest: %w", err)
	}
	sm, err := datasets.SignManifest(key, man)
	if err != nil {
		return nil, fmt.Errorf("trainer data manifest: %w", err)
	}
	if err := os.MkdirAll(cfg.WorkDir, 0o700); err != nil {
		return nil, err
	}
	if err := atomicfile.Write(filepath.Join(cfg.WorkDir, "dataset.manifest"), sm.Envelope, 0o644); err != nil {
		return nil, err
	}
	return &Node{cfg: cfg, opts: opts, log: log.With("trainer", id[:8]), key: key, id: id, data: Data{Dataset: ds, Instruct: isInstruct}, manifest: sm}, nil
}

// ID returns the trainer's ledger key ID.
func (n *Node) ID() string { return n.id }

// DatasetDigest returns the digest of the local dataset's signed manifest,
// what DatasetRegistered and UpdateSubmitted record.
// It is "" for a trainer with no data of its own.
func (n *Node) DatasetDigest() string {
	if n.manifest == nil {
		return ""
	}
	return n.manifest.Digest
}

// Samples returns the local dataset's sample count.
func (n *Node) Samples() uint64 {
	if n.manifest == nil {
		return 0
	}
	return n.manifest.Samples
}

// ClaimedSamples is the sample count a trainer claims for an update
// (UpdateSubmitted.samples, its weight under FedAvg): the examples the
// round trained on, steps × batch windows, at most the dataset's
// registered sample count (the ledger refuses more) and at most the job
// recipe's MaxSamples (recipeMax; 0: no recipe bound). It is at least 1
// when steps and batch are positive.
func ClaimedSamples(dataset uint64, steps, batch int, recipeMax uint64) uint64 {
	if steps < 1 || batch < 1 {
		return 0
	}
	hi, n := bits.Mul64(uint64(steps), uint64(batch))
	if hi != 0 {
		n = math.MaxUint64
	}
	n = min(n, dataset)
	if recipeMax > 0 {
		n = min(n, recipeMax)
	}
	return n
}

// Run registers the dataset on the ledger (once), joins the coordinator
// and trains the tasks it sends until ctx ends, reconnecting when the
// connection drops. It returns nil when ctx ends, or an error wrapping
// ErrRefused when the coordinator refuses the trainer.
func (n *Node) Run(ctx context.Context) error {
	st, err := artifact.OpenStore(filepath.Join(n.cfg.WorkDir, "store"))
	if err != nil {
		return err
	}
	defer st.Close()
	n.store = st
	pin, err := client.LoadPin(n.cfg.LedgerGenesis, n.cfg.LedgerNodeIDs...)
	if err != nil {
		return fmt.Errorf("%w: ledger_genesis: %w", ErrConfig, err)
	}
	if pin == nil {
		n.log.WarnContext(ctx, client.UnpinnedWarning, "ledger", n.cfg.Ledger)
	}
	lc, err := client.DialPinned(ctx, n.cfg.Ledger, n.key, pin)
	if err != nil {
		return err
	}
	defer lc.Close()
	signer := client.NewSigner(lc, n.key)
	if err := n.register(ctx, lc, signer); err != nil {
		return err
	}
	backoff := 200 * time.Millisecond
	for {
		err := n.session(ctx, lc, signer)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, ErrRefused) {
			return err
		}
		if n.joined.Load() {
			n.log.WarnContext(ctx, "coordinator connection lost; reconnecting", "err", err, "in", backoff)
		} else {
			n.log.WarnContext(ctx, "coordinator unreachable; retrying", "coordinator", n.cfg.Coordinator, "err", err, "in", backoff)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// register records the dataset's manifest on the ledger unless it is.
func (n *Node) register(ctx context.Context, lc *client.Client, signer *client.Signer) error {
	if n.manifest == nil {
		n.log.InfoContext(ctx, "no data of its own: this trainer takes part in jobs on published data only")
		return nil
	}
	for {
		ds, err := lc.Dataset(ctx, n.manifest.Digest)
		switch {
		case err == nil && ds.Owner == n.id:
			n.log.InfoContext(ctx, "dataset already registered", "dataset", n.manifest.Digest, "samples", ds.Samples)
			return nil
		case err == nil:
			return fmt.Errorf("%w: dataset %s is registered by %s", ErrRefused, n.manifest.Digest, ds.Owner)
		case errors.Is(err, ledger.ErrRecordNotFound):
			if _, err := signer.Submit(ctx, RegisterTx(n.manifest)); err != nil {
				if te := (*ledger.TxError)(nil); errors.As(err, &te) && te.Code == ledger.CodeUnknownSigner {
					return fmt.Errorf("%w: register dataset: this trainer's key %s is not an active member of the ledger: an admin adds it first (fedtune admin add-member --role trainer --pubkey TRAINER.pub), then join again: %w", ErrRefused, n.id, err)
				}
				if errors.Is(err, client.ErrRejected) {
					return fmt.Errorf("%w: register dataset: %w", ErrRefused, err)
				}
				return fmt.Errorf("register dataset: %w", err)
			}
			n.log.InfoContext(ctx, "dataset registered", "dataset", n.manifest.Digest, "samples", n.manifest.Samples)
			return nil
		}
		if errors.Is(err, tlsid.ErrNotAllowed) {
			// The server is not a pinned ledger node: retrying cannot help.
			return fmt.Errorf("ledger %s refused: %w", n.cfg.Ledger, err)
		}
		n.log.WarnContext(ctx, "ledger unreachable; retrying", "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// dialOptions returns the transport credentials for the coordinator; a
// handshake that refuses the server's key stores why in refused.
func (n *Node) dialOptions(refused *atomic.Pointer[error]) ([]grpc.DialOption, error) {
	if n.cfg.Insecure {
		return []grpc.DialOption{tlsid.InsecureDialOption()}, nil
	}
	expect := tlsid.ExpectID(n.cfg.CoordinatorID)
	o, err := tlsid.DialOption(n.key, func(id string) error {
		err := expect(id)
		if err != nil {
			why := fmt.Errorf("%w: the coordinator at %s proves key %s, not coordinator_id %s of this trainer's config", tlsid.ErrNotAllowed, n.cfg.Coordinator, id, n.cfg.CoordinatorID)
			refused.Store(&why)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return []grpc.DialOption{o}, nil
}

// session joins once and serves tasks until the stream ends.
func (n *Node) session(ctx context.Context, lc *client.Client, signer *client.Signer) error {
	var refused atomic.Pointer[error]
	opts, err := n.dialOptions(&refused)
	if err != nil {
		return err
	}
	ac, err := artifact.Dial(n.cfg.Coordinator, opts...)
	if err != nil {
		return err
	}
	defer ac.Close()
	conn, err := grpc.NewClient(n.cfg.Coordinator, opts...)
	if err != nil {
		return err
	}
	defer conn.Close()
	cc := coordinatorv1.NewCoordinatorClient(conn)
	ch, err := cc.Challenge(ctx, &coordinatorv1.ChallengeRequest{})
	if err != nil {
		if why := refused.Load(); why != nil && status.Code(err) == codes.Unavailable {
			// Another key answers at that address: retrying cannot help.
			return fmt.Errorf("%w: %w", ErrRefused, *why)
		}
		return fmt.Errorf("challenge: %w", err)
	}
	pub := n.key.Public().(ed25519.PublicKey)
	jr, err := cc.Join(ctx, &coordinatorv1.JoinRequest{PublicKey: pub, Challenge: ch.Challenge,
		Signature: client.SignChallenge(n.key, ch.Challenge), Datasets: n.ownDatasets()})
	if err != nil {
		if c := status.Code(err); c == codes.PermissionDenied || c == codes.Unauthenticated {
			return fmt.Errorf("%w by the coordinator: %s", ErrRefused, status.Convert(err).Message())
		}
		return fmt.Errorf("join: %w", err)
	}
	n.joined.Store(true)
	n.log.InfoContext(ctx, "joined", "coordinator", ch.CoordinatorId[:8])
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := cc.Tasks(sctx, &coordinatorv1.TasksRequest{Session: jr.Session})
	if err != nil {
		return fmt.Errorf("tasks: %w", err)
	}
	// Training tasks run one at a time on a worker, so that proof
	// questions are answered while a task trains.
	// Proofs are answered on their own goroutines, at most
	// maxProofWorkers at once; the session's end cancels them before
	// waiting for them.
	work := make(chan *coordinatorv1.Task, 16)
	stop := make(chan struct{})
	proofSem := make(chan struct{}, maxProofWorkers)
	var wg sync.WaitGroup
	var ends endedRounds
	defer func() { cancel(); close(stop); wg.Wait() }()
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case t := <-work:
				select {
				case <-stop: // the session ended: a rejoin gets the task again
					return
				default:
				}
				tctx, skip, done := ends.start(ctx, t)
				if skip != "" {
					n.log.InfoContext(ctx, "task of an ended round skipped", "job", t.JobId, "round", t.Round, "why", skip)
					continue
				}
				n.handle(tctx, lc, signer, ac, cc, jr.Session, t)
				done()
			}
		}
	}()
	for {
		t, err := stream.Recv()
		if err != nil {
			return fmt.Errorf("tasks: %w", err)
		}
		if e := t.Ended; e != nil {
			stopped := ends.end(e)
			n.log.InfoContext(ctx, "round ended", "job", e.JobId, "round", e.Round, "why", e.Reason, "training_stopped", stopped)
			continue
		}
		if t.Prove != nil {
			select {
			case proofSem <- struct{}{}:
				wg.Add(1)
				go func() {
					defer func() { <-proofSem; wg.Done() }()
					n.answerProof(sctx, cc, jr.Session, t.Prove)
				}()
			default:
				// Too many proofs in progress: refuse this one at once.
				n.refuseProof(sctx, cc, jr.Session, t.Prove, fmt.Sprintf("trainer busy: %d proofs in progress", maxProofWorkers))
			}
			continue
		}
		select {
		case work <- t:
		case <-sctx.Done():
			return fmt.Errorf("tasks: %w", sctx.Err())
		}
	}
}

// handle trains one task and reports its outcome.
func (n *Node) handle(ctx context.Context, lc *client.Client, signer *client.Signer, ac *artifact.Client,
	cc coordinatorv1.CoordinatorClient, sess string, t *coordinatorv1.Task) {
	log := n.log.With("job", t.JobId, "round", t.Round)
	// report tells the coordinator; height is where the UpdateSubmitted
	// committed, so the coordinator reads the round at least there.
	report := func(digest, failure string, height uint64) {
		_, err := cc.SubmitUpdate(ctx, &coordinatorv1.SubmitUpdateRequest{Session: sess, JobId: t.JobId, Round: t.Round,
			UpdateDigest: digest, Error: failure, CommittedHeight: height})
		if err != nil {
			log.WarnContext(ctx, "coordinator refused the report", "err", err)
		}
	}
	// Already submitted (a restart, or a resent task): report it again.
	if r, err := lc.Round(ctx, t.JobId, t.Round); err == nil {
		for _, u := range r.Updates {
			if u.Trainer == n.id {
				log.InfoContext(ctx, "update already on the ledger; reporting it again", "update", u.UpdateDigest)
				report(u.UpdateDigest, "", u.Height)
				return
			}
		}
	}
	deadline := time.Unix(0, t.DeadlineUnixNano)
	tctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	start := time.Now()
	log.InfoContext(ctx, "task received", "steps", t.LocalSteps, "mode", t.Mode)
	u, err := n.train(tctx, lc, ac, t)
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		log.ErrorContext(ctx, "training failed", "err", err)
		report("", err.Error(), 0)
		return
	}
	if _, _, err := ac.UploadFile(tctx, u.Path); err != nil {
		log.ErrorContext(ctx, "upload failed", "err", err)
		report("", "upload: "+err.Error(), 0)
		return
	}
	var recipeMax uint64
	commit := u.Commitment
	if job, err := lc.Job(tctx, t.JobId); err == nil {
		recipeMax = job.Recipe.MaxSamples
		if commit, err = Disclose(job, u.Commitment, u.stepDigests); err != nil {
			log.ErrorContext(ctx, "cannot disclose the update's steps", "err", err)
			report("", err.Error(), 0)
			return
		}
	} else {
		log.WarnContext(ctx, "cannot read the job's recipe; claiming what was trained", "err", err)
	}
	samples := ClaimedSamples(u.DataSamples, u.Steps, int(t.Batch), recipeMax)
	body := ledger.UpdateSubmitted{JobID: t.JobId, Round: t.Round, UpdateDigest: u.Digest, DatasetDigest: u.Dataset,
		Samples: samples, Metrics: map[string]float64{"loss": u.Loss, "steps": float64(u.Steps)}, Ranges: u.Ranges, Commitment: commit}
	height, err := signer.Submit(tctx, body)
	if err != nil {
		log.ErrorContext(ctx, "UpdateSubmitted failed", "err", err)
		report("", "ledger: "+err.Error(), 0)
		return
	}
	log.InfoContext(ctx, "update submitted", "update", u.Digest, "loss", u.Loss, "height", height, "seconds", time.Since(start).Seconds())
	report(u.Digest, "", height)
	if n.opts.OnUpdate != nil {
		n.opts.OnUpdate(t, u)
	}
}

// train fetches the task's weights and runs the backend.
func (n *Node) train(ctx context.Context, lc *client.Client, ac *artifact.Client, t *coordinatorv1.Task) (Update, error) {
	for _, d := range []string{t.BaseModel, t.BaseConfig, t.Tokenizer, t.TokenizerConfig, t.Global} {
		if d == "" {
			continue
		}
		if _, err := ac.Fetch(ctx, d, n.store); err != nil {
			return Update{}, fmt.Errorf("fetch %s: %w", d, err)
		}
	}
	weights := t.BaseModel
	if t.Mode == model.ModeFull || t.Mode == model.ModePretrain {
		weights = t.Global
	}
	dir := filepath.Join(n.cfg.WorkDir, "models", weights)
	if err := n.materialize(dir, weights, t.BaseConfig, t.Tokenizer, t.TokenizerConfig); err != nil {
		return Update{}, err
	}
	task := Task{JobID: t.JobId, Round: t.Round, ModelDir: dir, Compression: t.Compression, Int8Block: int(t.Int8Block), Checkpoints: n.cfg.Checkpoints(),
		OutDir: filepath.Join(n.cfg.WorkDir, "updates", fmt.Sprintf("%s-r%d", t.JobId, t.Round)),
		Train: model.TrainConfig{Steps: int(t.LocalSteps), Batch: int(t.Batch), SeqLen: int(t.SeqLen), LR: t.Lr,
			WeightDecay: t.WeightDecay, ClipNorm: t.ClipNorm, Warmup: int(t.Warmup), Schedule: t.Schedule, Seed: t.Seed}}
	if err := os.MkdirAll(task.OutDir, 0o755); err != nil {
		return Update{}, err
	}
	switch t.Mode {
	case model.ModeLoRA:
		if t.Lora == nil {
			return Update{}, fmt.Errorf("%w: lora task without a lora section", ErrTask)
		}
		task.Train.LoRA = &model.LoRAConfig{Rank: int(t.Lora.Rank), Alpha: t.Lora.Alpha, Dropout: t.Lora.Dropout, Targets: t.Lora.Targets}
		path, err := n.store.Path(t.Global)
		if err != nil {
			return Update{}, err
		}
		if task.Adapter, err = ReadAdapter(path, *task.Train.LoRA); err != nil {
			return Update{}, err
		}
	case model.ModeFull:
	case model.ModePretrain:
		task.Base = t.Global
		// DiLoCo keeps each worker's inner AdamW state across rounds: in
		// the work folder, per job, so a restarted trainer resumes from
		// the moments of the last round it trained (or starts fresh when
		// there are none).
		p, err := OptStatePath(n.cfg.WorkDir, t.JobId)
		if err != nil {
			return Update{}, fmt.Errorf("%w: %w", ErrTask, err)
		}
		task.OptState = p
	default:
		return Update{}, fmt.Errorf("%w: unknown mode %q", ErrTask, t.Mode)
	}
	data, rd, err := n.roundData(ctx, lc, ac, t)
	if err != nil {
		return Update{}, err
	}
	u, err := n.opts.Backend.Fit(ctx, task, data)
	if err != nil {
		return Update{}, err
	}
	u.Dataset, u.Ranges, u.DataSamples = rd.dataset, rd.ranges, uint64(len(data.Dataset.Samples))
	if task.OptState != "" {
		n.log.InfoContext(ctx, "inner optimizer state", "job", t.JobId, "round", t.Round, "resumed_steps", u.OptSteps, "file", task.OptState)
		if u.OptNote != "" {
			n.log.WarnContext(ctx, "inner optimizer state", "job", t.JobId, "round", t.Round, "note", u.OptNote)
		}
	}
	if got, err := digest.File(u.Path); err != nil || got != u.Digest {
		return Update{}, fmt.Errorf("update %s: file digest %s does not match %s (%v)", u.Path, got, u.Digest, err)
	}
	return u, nil
}

// materialize lays out a model folder from stored blobs: weights, config,
// tokenizer and tokenizer config (the last two "" when the model has none).
func (n *Node) materialize(dir, weights, config, tok, tokConfig string) error {
	if _, err := os.Stat(filepath.Join(dir, model.WeightsFile)); err == nil {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	files := map[string]string{model.ConfigFile: config, tokenizer.FileName: tok, chat.ConfigFileName: tokConfig, model.WeightsFile: weights}
	// The weights go last: their presence marks a complete folder.
	for _, name := range []string{model.ConfigFile, tokenizer.FileName, chat.ConfigFileName, model.WeightsFile} {
		d := files[name]
		if d == "" {
			continue
		}
		if err := n.copyBlob(d, filepath.Join(dir, name)); err != nil {
			return err
		}
	}
	return nil
}

func (n *Node) copyBlob(digest, to string) error {
	src, err := n.store.Open(digest)
	if err != nil {
		return err
	}
	defer src.Close()
	_, err = safetensors.WriteFileFunc(to, func(w io.Writer) error {
		_, err := io.Copy(w, src)
		return err
	})
	return err
}

// ReadAdapter reads a global adapter's weights (a safetensors file in
// PEFT's tensor names) as an Adapter of shape lc.
func ReadAdapter(path string, lc model.LoRAConfig) (*model.Adapter, error) {
	return model.ReadAdapterFile(path, lc)
}

// ownDatasets lists the digest of the trainer's own dataset, if it has one.
func (n *Node) ownDatasets() []string {
	if n.manifest == nil {
		return nil
	}
	return []string{n.manifest.Digest}
}

// Disclose returns the training commitment an update of job submits: in
// a spot-checked job (a recipe with Verify), commit with the digest of
// every step disclosed (stepDigests, step 1's first), so that a verifier
// names the first step its replay differs at; the ledger refuses an
// update of such a job without them. Otherwise commit unchanged. It is
// an error, naming the job, when a spot-checked job's update has no
// commitment or its digests do not cover exactly the job's steps.
func Disclose(job *ledger.JobRecord, commit *ledger.TrainingCommitment, stepDigests []string) (*ledger.TrainingCommitment, error) {
	v := job.Recipe.Verify
	if v == nil {
		return commit, nil
	}
	switch {
	case commit == nil:
		return nil, fmt.Errorf("job %q spot-checks its updates (verify), so an update must disclose its step digests, but this update has no training commitment", job.JobID)
	case len(stepDigests) != int(commit.Steps):
		return nil, fmt.Errorf("job %q spot-checks its updates (verify): %d step digests recorded for the %d committed steps; the update cannot disclose them", job.JobID, len(stepDigests), commit.Steps)
	case len(stepDigests) > ledger.MaxDisclosedSteps:
		return nil, fmt.Errorf("job %q spot-checks its updates (verify): %d steps are more than the %d an update may disclose", job.JobID, len(stepDigests), ledger.MaxDisclosedSteps)
	case v.Steps != 0 && uint64(v.Steps) != commit.Steps:
		return nil, fmt.Errorf("job %q spot-checks its updates (verify) of %d steps (verify.steps); this update trained %d", job.JobID, v.Steps, commit.Steps)
	}
	c := *commit
	c.StepDigests = slices.Clone(stepDigests)
	return &c, nil
}
