package cli

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	coordinatorv1 "github.com/fedtune/fedtune/api/coordinator/v1"
	"github.com/fedtune/fedtune/artifact"
	"github.com/fedtune/fedtune/coordinator"
	"github.com/fedtune/fedtune/inference"
	"github.com/fedtune/fedtune/inference/receipt"
	"github.com/fedtune/fedtune/internal/atomicfile"
	"github.com/fedtune/fedtune/internal/digest"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
	"github.com/fedtune/fedtune/model"
	"github.com/prometheus/client_golang/prometheus"
)

// maxJobConfig bounds the canonical job config fetched from the artifact
// store (the shipped jobs encode to about 1 KiB).
const maxJobConfig = 1 << 20

// follower keeps a server on the latest committed global model of a job.
// It watches the ledger's block stream for the job's RoundCommitted
// (reconnecting when the stream breaks), and for each newly committed
// round reads everything it serves from the ledger: the round's record,
// the model record and the block that committed it (cosigned as the
// ledger client's pin demands), and the job's settings from the canonical
// job config whose digest the round's RoundOpened recorded, fetched from
// the artifact store. It fetches the round's model (a LoRA adapter or full
// weights), checks every digest, and swaps it in: requests in flight
// finish on the model they started on. A round that fails any check is
// logged and refused; the node keeps serving its previous model.
type follower struct {
	c     *client.Client
	ac    *artifact.Client
	coord coordinatorv1.CoordinatorClient // eval losses; nil: none shown
	// coordID is the key ID coord's TLS handshake proved: eval losses
	// are shown only when it is the job's owner on the ledger.
	coordID string
	job     string
	base    string           // the base model folder (config, tokenizer, chat template)
	check   *coordinator.Job // --job-file: must be the ledger's job config; nil: none
	dir     string           // where fetched models are kept
	id      string           // the served model's id
	slots   int
	loadOpt inference.LoadOptions
	device  serveDevice // each model gets a device of its own; zero: the Host
	log     *slog.Logger
	// retry is the first wait before the block stream is opened again
	// or a refused round is tried again; it doubles up to maxRetry.
	retry, maxRetry time.Duration
	// evalEvery is how often the served lineage is read again while a
	// round has no eval loss from the ledger (0: 10s).
	evalEvery time.Duration

	met followMetrics

	round atomic.Uint64 // the round whose model is served
	next  atomic.Uint64 // the height the block stream reads next

	mu         sync.Mutex
	spec       *jobSpec                           // the job's settings, by config digest
	baseDigest string                             // the weight digest of base, once computed
	lineage    *atomic.Pointer[inference.Lineage] // the served model's lineage
}

// jobSpec is what the ledger says about the job, for one config digest.
type jobSpec struct {
	config string            // the config digest of the job's RoundOpened
	job    *coordinator.Job  // the canonical config it names
	lora   *model.LoRAConfig // the adapter's settings; nil for a full fine-tune
	base   string            // the job's base model digest
	// tokenizer is the tokenizer digest the ledger registers the base
	// model with; "" where it records none.
	tokenizer string
}

// followMetrics are a follower's Prometheus metrics, registered on the
// server it follows for.
type followMetrics struct {
	once    sync.Once
	round   prometheus.Gauge
	height  prometheus.Gauge
	refused prometheus.Counter
	reopens prometheus.Counter
}

// init makes the metrics (once).
func (m *followMetrics) init() {
	m.once.Do(func() {
		m.round = prometheus.NewGauge(prometheus.GaugeOpts{Name: "fedtune_serve_follow_round", Help: "The job round whose model is served."})
		m.height = prometheus.NewGauge(prometheus.GaugeOpts{Name: "fedtune_serve_follow_block_height", Help: "The height of the last block read from the ledger's block stream."})
		m.refused = prometheus.NewCounter(prometheus.CounterOpts{Name: "fedtune_serve_follow_refused_total", Help: "Attempts to serve a committed round's model that failed a check."})
		m.reopens = prometheus.NewCounter(prometheus.CounterOpts{Name: "fedtune_serve_follow_stream_reopens_total", Help: "Times the ledger's block stream broke and was opened again."})
	})
}

// ErrRoundRefused wraps every reason a follower refuses a committed
// round's model.
var ErrRoundRefused = errors.New("serve: round refused")

// refuse wraps err as the refusal of round r.
func refuse(r uint64, err error) error {
	return fmt.Errorf("%w: round %d: %w", ErrRoundRefused, r, err)
}

// waits returns the first and the longest wait between tries (of the
// block stream, or of a refused round).
func (f *follower) waits() (time.Duration, time.Duration) {
	r, m := f.retry, f.maxRetry
	if r <= 0 {
		r = 500 * time.Millisecond
	}
	if m < r {
		m = max(r, 30*time.Second)
	}
	return r, m
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

// jobSpec reads the job's settings as the ledger commits them for round
// rd: the recipe of its JobRegistered, and the canonical job config that
// rd's RoundOpened names by digest (fetched from the artifact store;
// --job-file, when given, must have that digest, and stands in for the
// store's copy when the store does not answer). It checks that they agree
// with each other and that the base model folder holds the job's
// registered base model.
func (f *follower) jobSpec(ctx context.Context, rd *ledger.Round) (*jobSpec, error) {
	f.mu.Lock()
	sp := f.spec
	f.mu.Unlock()
	if sp != nil && sp.config == rd.ConfigDigest {
		return sp, nil
	}
	rec, err := f.c.Job(ctx, f.job)
	if err != nil {
		return nil, fmt.Errorf("job %s's record (JobRegistered): %w", f.job, err)
	}
	if err := digest.Check("the round's config digest", rd.ConfigDigest); err != nil {
		return nil, err
	}
	if f.check != nil && f.check.Digest() != rd.ConfigDigest {
		return nil, fmt.Errorf("--job-file %s has config digest %s, but the ledger's round %d of job %s records %s: the file is not the job the ledger runs",
			f.check.Source, f.check.Digest(), rd.Round, f.job, rd.ConfigDigest)
	}
	job, err := f.jobConfig(ctx, rd)
	if err != nil {
		if f.check == nil {
			return nil, err
		}
		// --job-file has the ledger's config digest: it is the job's
		// config as much as the store's copy would be.
		f.log.Warn("job config not from the artifact store: using --job-file, whose digest is the ledger's", "config", rd.ConfigDigest, "err", err)
		job = f.check
	}
	if job.Name != f.job {
		return nil, fmt.Errorf("job config %s names job %q, not %q", rd.ConfigDigest, job.Name, f.job)
	}
	sp = &jobSpec{config: rd.ConfigDigest, job: job, base: rec.Recipe.BaseModel}
	lora := job.FineTune.Mode == model.ModeLoRA
	if lora != (rec.Recipe.InitialAdapter != "") {
		return nil, fmt.Errorf("job config %s says finetune.mode %s, but the job's recipe on the ledger has initial adapter %q", rd.ConfigDigest, job.FineTune.Mode, rec.Recipe.InitialAdapter)
	}
	if lora {
		l := job.FineTune.LoRA
		sp.lora = &model.LoRAConfig{Rank: l.Rank, Alpha: l.Alpha, Dropout: l.Dropout, Targets: l.Targets}
	}
	if sp.base == "" {
		r1, err := f.c.Round(ctx, f.job, 1)
		if err != nil {
			return nil, fmt.Errorf("round 1 of job %s: %w", f.job, err)
		}
		sp.base = r1.BaseModel
	}
	if job.Model.Digest != "" && job.Model.Digest != sp.base {
		return nil, fmt.Errorf("job config %s names base model %s, the job's recipe on the ledger %s", rd.ConfigDigest, job.Model.Digest, sp.base)
	}
	if sp.tokenizer, err = f.checkBase(ctx, sp.base); err != nil {
		return nil, err
	}
	f.mu.Lock()
	f.spec = sp
	f.mu.Unlock()
	return sp, nil
}

// jobConfig fetches the canonical job config of round rd's config digest
// from the artifact store and decodes it.
func (f *follower) jobConfig(ctx context.Context, rd *ledger.Round) (*coordinator.Job, error) {
	var buf bytes.Buffer
	if _, err := f.ac.Download(ctx, rd.ConfigDigest, &limitWriter{w: &buf, n: maxJobConfig}); err != nil {
		return nil, fmt.Errorf("job config %s (round %d's config digest) from the artifact store: %w", rd.ConfigDigest, rd.Round, err)
	}
	if got := digest.Bytes(buf.Bytes()); got != rd.ConfigDigest {
		return nil, fmt.Errorf("the artifact store sent job config bytes with digest %s for %s", got, rd.ConfigDigest)
	}
	job, err := coordinator.DecodeCanonical(buf.Bytes())
	if err != nil {
		return nil, fmt.Errorf("job config %s: %w", rd.ConfigDigest, err)
	}
	return job, nil
}

// checkBase checks that the base model folder holds the registered model
// base: its weights' digest, and its config.json's and tokenizer's
// (model.TokenizerDigest: the tokenizer and chat-template files) digests
// where the ledger records them. It returns the registered tokenizer
// digest ("" for none).
func (f *follower) checkBase(ctx context.Context, base string) (string, error) {
	bm, err := f.c.Model(ctx, base)
	if err != nil {
		return "", fmt.Errorf("the job's base model %s: %w", base, err)
	}
	if err := f.checkBaseFiles(base, bm); err != nil {
		return "", err
	}
	return bm.Tokenizer, nil
}

// checkBaseFiles is checkBase's check of the folder against bm, the
// ledger's record of base.
func (f *follower) checkBaseFiles(base string, bm *ledger.Model) error {
	var err error
	f.mu.Lock()
	have := f.baseDigest
	f.mu.Unlock()
	if have == "" {
		if have, err = model.DigestPath(f.base); err != nil {
			return fmt.Errorf("--model %s: %w", f.base, err)
		}
		f.mu.Lock()
		f.baseDigest = have
		f.mu.Unlock()
	}
	if have != base {
		return fmt.Errorf("--model %s holds weights %s, but the job's base model on the ledger is %s", f.base, have, base)
	}
	if bm.Config != "" {
		got, err := digest.File(filepath.Join(f.base, model.ConfigFile))
		if err != nil {
			return fmt.Errorf("--model %s: %w", f.base, err)
		}
		if got != bm.Config {
			return fmt.Errorf("--model %s: %s has digest %s, but the ledger registers base model %s with config %s", f.base, model.ConfigFile, got, base, bm.Config)
		}
	}
	if bm.Tokenizer != "" {
		got, err := model.TokenizerDigest(f.base)
		if err != nil {
			return fmt.Errorf("--model %s: %w", f.base, err)
		}
		if got != bm.Tokenizer {
			return fmt.Errorf("--model %s: %w", f.base, tokenizerMismatch(got, base, bm.Tokenizer))
		}
	}
	return nil
}

// ErrTokenizer is wrapped when a folder's tokenizer digest is not the one
// the ledger registers its base model with.
var ErrTokenizer = errors.New("tokenizer or chat template not the registered one")

// tokenizerMismatch is the error of a folder whose tokenizer digest got
// is not want, the one the ledger registers base model base with.
func tokenizerMismatch(got, base, want string) error {
	return fmt.Errorf("%w: its tokenizer and chat-template files have tokenizer digest %s, but the ledger registers base model %s with tokenizer digest %s",
		ErrTokenizer, got, base, want)
}

// load fetches and checks the model of round rd and loads it for serving,
// its Block the block that committed it. Every error wraps
// ErrRoundRefused.
func (f *follower) load(ctx context.Context, rd *ledger.Round) (*inference.Model, error) {
	m, err := f.loadRound(ctx, rd)
	if err != nil {
		return nil, refuse(rd.Round, err)
	}
	return m, nil
}

func (f *follower) loadRound(ctx context.Context, rd *ledger.Round) (*inference.Model, error) {
	if rd.JobID != f.job || rd.Status != ledger.StatusCommitted {
		return nil, fmt.Errorf("the ledger's record is round %d of job %q, %s, not a committed round of %q", rd.Round, rd.JobID, rd.Status, f.job)
	}
	if err := digest.Check("the round's model digest", rd.ModelDigest); err != nil {
		return nil, err
	}
	lm, err := f.c.Model(ctx, rd.ModelDigest)
	if err != nil {
		return nil, fmt.Errorf("model %s of round %d is not a model of the chain: %w", rd.ModelDigest, rd.Round, err)
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
	sp, err := f.jobSpec(ctx, rd)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(f.dir, rd.ModelDigest+".safetensors")
	if err := f.fetch(ctx, rd.ModelDigest, path); err != nil {
		return nil, err
	}
	var m *inference.Model
	if sp.lora != nil {
		ad := filepath.Join(f.dir, "adapter-"+rd.ModelDigest)
		if err := inference.AdapterFolder(path, ad, *sp.lora); err != nil {
			return nil, fmt.Errorf("adapter %s (rank %d, alpha %g, targets %v from job config %s): %w", rd.ModelDigest, sp.lora.Rank, sp.lora.Alpha, sp.lora.Targets, sp.config, err)
		}
		if m, err = f.device.loadModel(f.base, ad, f.id, f.slots, f.loadOpt); err != nil {
			return nil, fmt.Errorf("adapter %s (rank %d, alpha %g, targets %v from job config %s): %w", rd.ModelDigest, sp.lora.Rank, sp.lora.Alpha, sp.lora.Targets, sp.config, err)
		}
		if m.Adapter != rd.ModelDigest {
			m.Gen.Close()
			return nil, fmt.Errorf("the fetched adapter has digest %s, round %d committed %s", m.Adapter, rd.Round, rd.ModelDigest)
		}
	} else {
		md := filepath.Join(f.dir, "model-"+rd.ModelDigest)
		if err := inference.ModelFolder(f.base, path, md); err != nil {
			return nil, fmt.Errorf("model folder of %s on --model %s: %w", rd.ModelDigest, f.base, err)
		}
		if m, err = f.device.loadModel(md, "", f.id, f.slots, f.loadOpt); err != nil {
			return nil, fmt.Errorf("model %s of round %d on --model %s's config: %w", rd.ModelDigest, rd.Round, f.base, err)
		}
		if m.Digest != rd.ModelDigest {
			m.Gen.Close()
			return nil, fmt.Errorf("the fetched model has weight digest %s, round %d committed %s", m.Digest, rd.Round, rd.ModelDigest)
		}
	}
	// The served folder (the base's, or the full model's folder linked
	// from it) must still hold the registered tokenizer and template.
	if sp.tokenizer != "" && m.Tokenizer != sp.tokenizer {
		m.Gen.Close()
		return nil, fmt.Errorf("serving on --model %s: %w", f.base, tokenizerMismatch(m.Tokenizer, sp.base, sp.tokenizer))
	}
	m.Block = &receipt.Block{Height: lm.Height, Hash: hex.EncodeToString(vb.Hash[:])}
	lp := new(atomic.Pointer[inference.Lineage])
	if l, err := f.lineageOf(ctx, rd.ModelDigest); err != nil {
		f.log.Warn("lineage", "model", rd.ModelDigest, "err", err)
	} else {
		lp.Store(l)
	}
	m.LineageFunc = lp.Load
	f.mu.Lock()
	f.lineage = lp
	f.mu.Unlock()
	return m, nil
}

// lineageOf reads model d's lineage from the ledger, with the eval loss
// of each round as its RoundEvaluated recorded it, or, for a round with
// none, as the coordinator reports it for that round's model.
func (f *follower) lineageOf(ctx context.Context, d string) (*inference.Lineage, error) {
	l, err := f.c.Lineage(ctx, d)
	if err != nil {
		return nil, fmt.Errorf("the ledger's lineage of %s: %w", d, err)
	}
	// The ledger's RoundEvaluated gives each round's loss; the
	// coordinator is asked only for rounds of the job that have none.
	var evals map[uint64]float64
	for _, r := range l.Rounds {
		if r.JobID == f.job && r.Eval == nil {
			evals = f.evalLosses(ctx, l)
			break
		}
	}
	return inference.LedgerLineage(l, evals), nil
}

// evalLosses asks the job's coordinator (its owner on the ledger, proved
// in the TLS handshake) for the eval losses of l's rounds of the job,
// keeping only those it reports for the model the ledger says the round
// committed. The coordinator signs none of them: they stand in only for
// rounds the ledger holds no RoundEvaluated of.
func (f *follower) evalLosses(ctx context.Context, l *ledger.Lineage) map[uint64]float64 {
	if f.coord == nil {
		return nil
	}
	rec, err := f.c.Job(ctx, f.job)
	if err != nil {
		f.log.Warn("job record (eval losses)", "err", err)
		return nil
	}
	if rec.Owner != f.coordID {
		f.log.Warn("no eval losses: the coordinator asked is not the job's", "asked", f.coordID, "job_owner", rec.Owner)
		return nil
	}
	st, err := f.coord.Status(ctx, &coordinatorv1.StatusRequest{JobId: f.job})
	if err != nil {
		f.log.Warn("coordinator status (eval losses)", "err", err)
		return nil
	}
	committed := map[uint64]string{}
	for _, r := range l.Rounds {
		if r.JobID == f.job {
			committed[r.Round] = r.ModelDigest
		}
	}
	out := map[uint64]float64{}
	for _, r := range st.Rounds {
		if r.Evaluated && r.ModelDigest != "" && committed[r.Round] == r.ModelDigest {
			out[r.Round] = r.EvalNll
		}
	}
	return out
}

// refreshEval reads the served lineage again every evalEvery while a
// round has no eval loss from the ledger (its RoundEvaluated), until ctx
// ends.
func (f *follower) refreshEval(ctx context.Context) {
	every := f.evalEvery
	if every <= 0 {
		every = 10 * time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		f.mu.Lock()
		lp := f.lineage
		f.mu.Unlock()
		if lp == nil {
			continue
		}
		l := lp.Load()
		if l == nil || !missingEval(l) {
			continue
		}
		nl, err := f.lineageOf(ctx, l.Model)
		if err != nil {
			f.log.Warn("lineage", "model", l.Model, "err", err)
			continue
		}
		lp.CompareAndSwap(l, nl)
	}
}

// missingEval reports whether a round of l has no eval loss from the
// ledger (none, or only the coordinator's while its RoundEvaluated is
// not yet committed).
func missingEval(l *inference.Lineage) bool {
	for _, r := range l.Rounds {
		if r.EvalSource != inference.EvalFromLedger {
			return true
		}
	}
	return false
}

// fetch downloads blob d to path (unless there) and checks its digest.
func (f *follower) fetch(ctx context.Context, d, path string) error {
	if got, err := digest.File(path); err == nil && got == d {
		return nil
	}
	return atomicfile.WriteFunc(path, 0o644, func(w *os.File) error {
		if _, err := f.ac.Download(ctx, d, w); err != nil {
			return fmt.Errorf("fetch %s: %w", d, err)
		}
		if _, err := w.Seek(0, io.SeekStart); err != nil {
			return err
		}
		got, err := digest.Reader(w)
		if err != nil {
			return fmt.Errorf("fetch %s: %w", d, err)
		}
		if got != d {
			return fmt.Errorf("fetched blob has digest %s, the ledger committed %s", got, d)
		}
		return nil
	})
}

// start sets where the block stream begins (after the ledger's present
// head) and loads the job's latest committed model, waiting on the block
// stream for the first commit when there is none yet.
func (f *follower) start(ctx context.Context) (*inference.Model, error) {
	st, err := f.c.Status(ctx)
	if err != nil {
		return nil, err
	}
	f.next.Store(st.Height + 1)
	rd, err := f.latest(ctx)
	if err != nil {
		return nil, err
	}
	if rd == nil {
		f.log.Info("waiting for the job's first committed round", "job", f.job, "from_height", st.Height+1)
		wctx, cancel := context.WithCancel(ctx)
		commits := make(chan uint64, 1)
		done := make(chan struct{})
		go func() { f.watch(wctx, commits); close(done) }()
		var r uint64
		select {
		case r = <-commits:
		case <-ctx.Done():
		}
		cancel()
		<-done
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if rd, err = f.c.Round(ctx, f.job, r); err != nil {
			return nil, err
		}
	}
	m, err := f.load(ctx, rd)
	if err != nil {
		return nil, err
	}
	f.round.Store(rd.Round)
	f.log.Info("following", "job", f.job, "round", rd.Round, "model", rd.ModelDigest, "block", m.Block.Height)
	return m, nil
}

// watch reads the ledger's block stream from height next, sending the
// round number of each RoundCommitted of the job on commits (a newer one
// replaces one not yet taken). When the stream breaks it opens it again
// from where it stopped, waiting longer after each failure in a row.
func (f *follower) watch(ctx context.Context, commits chan uint64) {
	f.met.init()
	first, most := f.waits()
	wait := first
	for ctx.Err() == nil {
		err := f.c.Blocks(ctx, f.next.Load(), true, func(vb *client.VerifiedBlock) error {
			for i, raw := range vb.Block.Txs {
				tx, err := ledger.DecodeTx(raw)
				if err != nil {
					f.log.Warn("block stream: undecodable tx", "height", vb.Block.Header.Height, "index", i, "err", err)
					continue
				}
				if rc, ok := tx.Body.(ledger.RoundCommitted); ok && rc.JobID == f.job {
					offer(commits, rc.Round)
				}
			}
			f.next.Store(vb.Block.Header.Height + 1)
			f.met.height.Set(float64(vb.Block.Header.Height))
			wait = first
			return nil
		})
		if ctx.Err() != nil {
			return
		}
		f.met.reopens.Inc()
		f.log.Warn("block stream ended; reopening", "from_height", f.next.Load(), "in", wait, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, most)
	}
}

// offer puts r on c, a channel of capacity 1, replacing a smaller value
// waiting there.
func offer(c chan uint64, r uint64) {
	for {
		select {
		case c <- r:
			return
		default:
		}
		select {
		case old := <-c:
			r = max(r, old)
		default:
		}
	}
}

// follow swaps s to each newly committed model of the job until ctx ends.
// A round whose model fails its checks is logged and tried again later
// (waiting longer each time) until a newer round commits; s keeps serving
// its model meanwhile.
func (f *follower) follow(ctx context.Context, s *inference.Server) {
	f.met.init()
	f.met.round.Set(float64(f.round.Load()))
	if err := s.Register(f.met.round, f.met.height, f.met.refused, f.met.reopens); err != nil {
		f.log.Warn("follower metrics", "err", err)
	}
	commits := make(chan uint64, 1)
	go f.watch(ctx, commits)
	go f.refreshEval(ctx)
	first, most := f.waits()
	wait := first
	var want uint64
	var retry <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case r := <-commits:
			want = max(want, r)
		case <-retry:
		}
		retry = nil
		if want <= f.round.Load() {
			continue
		}
		if err := f.switchTo(ctx, s, want); err != nil {
			if ctx.Err() != nil {
				return
			}
			f.met.refused.Inc()
			f.log.Warn("round model refused; serving the previous model", "round", want, "served_round", f.round.Load(), "retry_in", wait, "err", err)
			retry = time.After(wait)
			wait = min(2*wait, most)
			continue
		}
		wait = first
	}
}

// switchTo loads round r's model and swaps s to it.
func (f *follower) switchTo(ctx context.Context, s *inference.Server, r uint64) error {
	rd, err := f.c.Round(ctx, f.job, r)
	if err != nil {
		return refuse(r, fmt.Errorf("the ledger's record of it: %w", err))
	}
	m, err := f.load(ctx, rd)
	if err != nil {
		return err
	}
	f.round.Store(rd.Round)
	f.met.round.Set(float64(rd.Round))
	s.Swap(m)
	f.log.Info("switched", "job", f.job, "round", rd.Round, "model", rd.ModelDigest, "block", m.Block.Height)
	return nil
}

// roundNow returns the round whose model is served.
func (f *follower) roundNow() uint64 { return f.round.Load() }

// limitWriter writes to w until n bytes were written, then fails.
type limitWriter struct {
	w io.Writer
	n int64
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > l.n {
		return 0, fmt.Errorf("more than %d bytes", maxJobConfig)
	}
	l.n -= int64(len(p))
	return l.w.Write(p)
}
