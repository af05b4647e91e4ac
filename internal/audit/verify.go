package audit

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/fedtune/fedtune/aggregator"
	"github.com/fedtune/fedtune/coordinator"
	"github.com/fedtune/fedtune/datasets"
	"github.com/fedtune/fedtune/internal/digest"
	"github.com/fedtune/fedtune/internal/dspub"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/fsm"
	"github.com/fedtune/fedtune/ledger/pebblestore"
	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/safetensors"
)

// ErrMismatch is wrapped by every *Mismatch.
var ErrMismatch = errors.New("audit: verification failed")

// Mismatch is the first thing Verify found that does not match: at a
// height (-1: not tied to one), in a transaction (-1: the block itself), a
// field, and what differs.
type Mismatch struct {
	Height int64
	Tx     int
	TxHash string // hex prefix of the transaction's hash, if Tx >= 0
	Field  string
	Msg    string
}

func (m *Mismatch) Error() string {
	var b bytes.Buffer
	b.WriteString("audit: ")
	if m.Height >= 0 {
		fmt.Fprintf(&b, "height %d: ", m.Height)
	}
	if m.Tx >= 0 {
		fmt.Fprintf(&b, "tx[%d]", m.Tx)
		if m.TxHash != "" {
			fmt.Fprintf(&b, " %s", m.TxHash)
		}
		b.WriteString(": ")
	}
	fmt.Fprintf(&b, "%s: %s", m.Field, m.Msg)
	return b.String()
}

// Is makes errors.Is(err, ErrMismatch) hold.
func (m *Mismatch) Is(target error) bool { return target == ErrMismatch }

func blockErr(h uint64, field, format string, args ...any) *Mismatch {
	return &Mismatch{Height: int64(h), Tx: -1, Field: field, Msg: fmt.Sprintf(format, args...)}
}

func txErr(h uint64, i int, hash [32]byte, field, format string, args ...any) *Mismatch {
	return &Mismatch{Height: int64(h), Tx: i, TxHash: hex.EncodeToString(hash[:6]), Field: field, Msg: fmt.Sprintf(format, args...)}
}

// VerifyOptions configure Verify.
type VerifyOptions struct {
	// Artifacts, if set, is a directory of blobs named by digest, flat
	// ("<digest>") or sharded ("<first two hex>/<digest>"), or an artifact
	// store's folder ("blobs/<first two hex>/<digest>"). Every model and
	// update digest on the chain must be there and hash right, and every
	// committed round is re-aggregated from them.
	Artifacts string
	// Jobs are job files (YAML) of the chain's jobs, for LoRA jobs: the
	// first round of a LoRA job aggregates against the job's initial
	// adapter, which is not on the chain but derived from the job (its
	// LoRA shape and seed, coordinator.InitialAdapter) and the base
	// model's config (ModelRegistered.config, read from Artifacts). A job
	// file is used for the rounds whose RoundOpened.config_digest is its
	// digest, so a wrong file cannot be used by mistake.
	Jobs []string
	// StrictRejections makes an UpdateRejected that cannot be checked (the
	// update is not in Artifacts, or the reason needs a job file that was
	// not given) a failure; otherwise it is listed in
	// Report.Unverifiable.
	StrictRejections bool
	// Logger receives progress lines; nil discards.
	Logger *slog.Logger
}

// Report sums up a successful verification.
type Report struct {
	Height       uint64 // the last block verified
	HeadHash     [32]byte
	Txs          int
	Rounds       int // committed rounds seen
	Reaggregated int // committed rounds re-run from artifacts
	Artifacts    int // artifact files hashed
	Manifests    int // dataset manifests found and checked
	// Attestations counts the DatasetAttested whose signed statement was
	// checked against the auditor's key and the tx; Published the
	// DatasetPublished whose signed manifest was checked, and PublishedRoots
	// those whose leaves file was in Artifacts and gives the manifest's
	// root (and whose shards there match their leaves).
	Attestations   int
	Published      int
	PublishedRoots int
	// Evaluated counts the RoundEvaluated txs: the ledger rules are
	// checked (owner, committed round, its model, contributors), the
	// losses themselves are the coordinator's and not re-computed.
	Evaluated int
	// RejectionsChecked counts the UpdateRejected whose update was in the
	// artifacts and fails an input check of the aggregator (or, for a
	// dataset the job does not admit, the job file given says so).
	RejectionsChecked int
	// InitModels counts the pretrain jobs whose round-1 model was
	// recomputed from the config and seed their recipe records
	// (init_config read from Artifacts, init_seed) and found equal.
	InitModels int
	// Unverifiable lists, one line each, the UpdateRejected that could
	// not be checked: the update is not in the artifacts (say, "never
	// delivered"). Only with Artifacts and without StrictRejections.
	Unverifiable []string
}

// roundTrack is what Verify remembers of an open round to re-run it.
type roundTrack struct {
	base     string
	config   string                            // the job's config digest
	updates  map[string]ledger.UpdateSubmitted // by trainer
	rejected map[string]bool                   // update digests an UpdateRejected named
	missing  map[string]txLoc                  // submitted updates not in the artifacts, by digest
}

// txLoc is where a transaction is on the chain.
type txLoc struct {
	h    uint64
	i    int
	hash [32]byte
}

// jobHead is the model a job's next round must start from: the last
// committed one (round > 0), or round 1's base (round 0).
type jobHead struct {
	model string
	round uint64
}

type verifier struct {
	ctx       context.Context
	opts      VerifyOptions
	log       *slog.Logger
	fsm       *fsm.FSM
	rep       Report
	rounds    map[string]*roundTrack
	state     map[string]string // job → server state digest of its last committed round
	heads     map[string]jobHead
	hashed    map[string]bool
	members   map[string]ed25519.PublicKey
	models    map[string]ledger.ModelRegistered // registered base models by digest
	jobs      map[string]*coordinator.Job       // opts.Jobs by config digest
	recipes   map[string]ledger.RoundRecipe     // registered jobs' recipes by job ID
	datasets  map[string]ledger.Dataset         // registered and published datasets by digest (name, licence)
	adapters  map[string]string                 // config digest → initial adapter file; "init\x00" + config digest → a pretrain job's initial model digest
	tmp       string
	lastPrint time.Time
}

// Verify re-derives the chain in e from its genesis and, with
// opts.Artifacts, re-checks every artifact and aggregation (see the package
// doc). It returns a *Mismatch (wrapping ErrMismatch) for the first thing
// that differs.
func Verify(ctx context.Context, e *Export, opts VerifyOptions) (*Report, error) {
	return verify(ctx, e, opts, nil)
}

// Lineage verifies e (without artifacts) and returns the lineage of model
// as the re-derived state answers it, so that a lineage can be read from
// an export offline without trusting a node.
func Lineage(ctx context.Context, e *Export, model string) (*ledger.Lineage, error) {
	var l *ledger.Lineage
	_, err := verify(ctx, e, VerifyOptions{}, func(f *fsm.FSM) error {
		var err error
		l, err = f.Lineage(model)
		return err
	})
	if err != nil {
		return nil, err
	}
	return l, nil
}

func verify(ctx context.Context, e *Export, opts VerifyOptions, then func(*fsm.FSM) error) (*Report, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	g, err := ledger.ParseGenesis("export genesis", e.Genesis)
	if err != nil {
		return nil, &Mismatch{Height: 0, Tx: -1, Field: "genesis", Msg: err.Error()}
	}
	db, err := pebblestore.Open("audit-verify", pebblestore.Options{FS: vfs.NewMem(), NoSync: true})
	if err != nil {
		return nil, fmt.Errorf("audit: verify: %w", err)
	}
	defer db.Close()
	fsm, err := fsm.New(db.State(), g, fsm.Options{})
	if err != nil {
		return nil, fmt.Errorf("audit: verify: %w", err)
	}
	v := &verifier{ctx: ctx, opts: opts, log: log, fsm: fsm, rounds: map[string]*roundTrack{}, state: map[string]string{}, heads: map[string]jobHead{},
		hashed: map[string]bool{}, members: map[string]ed25519.PublicKey{}, models: map[string]ledger.ModelRegistered{},
		jobs: map[string]*coordinator.Job{}, recipes: map[string]ledger.RoundRecipe{}, adapters: map[string]string{}, lastPrint: time.Now()}
	for _, p := range opts.Jobs {
		j, err := coordinator.LoadJob(p)
		if err != nil {
			return nil, fmt.Errorf("audit: verify: job file: %w", err)
		}
		v.jobs[j.Digest()] = j
	}
	for _, m := range g.Members {
		v.members[ledger.KeyID(m.Key)] = m.Key
	}
	if opts.Artifacts != "" {
		if st, err := os.Stat(opts.Artifacts); err != nil || !st.IsDir() {
			return nil, fmt.Errorf("audit: verify: artifacts %s is not a directory", opts.Artifacts)
		}
		if v.tmp, err = os.MkdirTemp("", "fedtune-audit-"); err != nil {
			return nil, fmt.Errorf("audit: verify: %w", err)
		}
		defer os.RemoveAll(v.tmp)
	}
	if err := v.run(e); err != nil {
		return nil, err
	}
	if then != nil {
		if err := then(fsm); err != nil {
			return nil, err
		}
	}
	log.Info("chain verified", "height", v.rep.Height, "txs", v.rep.Txs, "rounds", v.rep.Rounds,
		"reaggregated", v.rep.Reaggregated, "artifacts", v.rep.Artifacts)
	return &v.rep, nil
}

func (v *verifier) run(e *Export) error {
	want0, err := v.fsm.Block(0)
	if err != nil {
		return fmt.Errorf("audit: verify: %w", err)
	}
	if !bytes.Equal(ledger.EncodeBlock(want0), e.Blocks[0]) {
		got, err := ledger.DecodeBlock(e.Blocks[0])
		if err != nil {
			return blockErr(0, "encoding", "%v", err)
		}
		return blockErr(0, headerDiff(&got.Header, &want0.Header), "the exported genesis block differs from the one the exported genesis file gives")
	}
	prev := want0
	for h := uint64(1); h < uint64(len(e.Blocks)); h++ {
		if err := v.ctx.Err(); err != nil {
			return err
		}
		b, err := v.block(h, e.Blocks[h], prev)
		if err != nil {
			return err
		}
		prev = b
		if time.Since(v.lastPrint) > 2*time.Second {
			v.log.Info("verifying", "height", h, "of", len(e.Blocks)-1)
			v.lastPrint = time.Now()
		}
	}
	if hh := prev.Hash(); hh != e.HeadHash {
		return blockErr(prev.Header.Height, "head", "the end frame says the last block hashes to %x, it hashes to %x", e.HeadHash, hh)
	}
	for _, k := range slices.Sorted(maps.Keys(v.rounds)) { // rounds still open
		if err := v.checkMissing(v.rounds[k]); err != nil {
			return err
		}
	}
	v.rep.Height, v.rep.HeadHash = prev.Header.Height, prev.Hash()
	return nil
}

func (v *verifier) block(h uint64, raw []byte, prev *ledger.Block) (*ledger.Block, error) {
	b, err := ledger.DecodeBlock(raw)
	if err != nil {
		return nil, blockErr(h, "encoding", "%v", err)
	}
	if b.Header.Height != h {
		return nil, blockErr(h, "height", "the block's header says height %d", b.Header.Height)
	}
	if ph := prev.Hash(); b.Header.PrevHash != ph {
		return nil, blockErr(h, "prev_hash", "header has %x, block %d hashes to %x", b.Header.PrevHash, h-1, ph)
	}
	if b.Header.Time <= prev.Header.Time {
		return nil, blockErr(h, "time", "%d is not after the previous block's %d", b.Header.Time, prev.Header.Time)
	}
	if len(b.Txs) == 0 {
		return nil, blockErr(h, "txs", "the block has no transactions; the FSM never makes an empty block")
	}
	// Decode every tx first, so a malformed or forged one is named before
	// the block-level hashes.
	decoded := make([]*ledger.Tx, len(b.Txs))
	for i, raw := range b.Txs {
		tx, err := ledger.DecodeTx(raw)
		if err != nil {
			return nil, txErr(h, i, ledger.TxHash(raw), "envelope", "%v", err)
		}
		decoded[i] = tx
	}
	res := v.fsm.ApplyProposal(ledger.Proposal{Proposer: b.Header.Proposer, Time: b.Header.Time, Txs: b.Txs})
	if res.Err != nil {
		return nil, blockErr(h, "block", "re-applying it failed: %v", res.Err)
	}
	for i, r := range res.Results {
		if r.Err != nil {
			return nil, txErr(h, i, r.Hash, txField(r.Err), "the ledger rules reject it: %v", r.Err)
		}
	}
	got := res.Block
	if got == nil {
		return nil, blockErr(h, "block", "re-applying its txs made no block")
	}
	if b.Header.TxRoot != got.Header.TxRoot {
		return nil, blockErr(h, "tx_root", "header has %x, the block's %d txs give %x (a tx dropped, added or changed?)", b.Header.TxRoot, len(b.Txs), got.Header.TxRoot)
	}
	if !bytes.Equal(ledger.EncodeBlock(got), raw) {
		field := headerDiff(&b.Header, &got.Header)
		switch field {
		case "state_hash":
			return nil, blockErr(h, field, "header has %x, re-applying the block's txs gives %x", b.Header.StateHash, got.Header.StateHash)
		case "time":
			return nil, blockErr(h, field, "header has %d, re-applying gives %d", b.Header.Time, got.Header.Time)
		}
		return nil, blockErr(h, field, "the exported block differs from the re-derived one")
	}
	for i, tx := range decoded {
		v.rep.Txs++
		if err := v.afterTx(h, i, tx); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// txField names the part of a transaction a rejection is about.
func txField(err error) string {
	var te *ledger.TxError
	if !errors.As(err, &te) {
		return "tx"
	}
	switch te.Code {
	case ledger.CodeBadSignature:
		return "signature"
	case ledger.CodeUnknownSigner:
		return "signer"
	case ledger.CodeForbidden:
		return "role"
	case ledger.CodeBadNonce:
		return "nonce"
	case ledger.CodeWrongChain:
		return "chain_id"
	case ledger.CodeMalformed:
		return "envelope"
	}
	return "body (" + string(te.Code) + ")"
}

func headerDiff(got, want *ledger.Header) string {
	if f := ledger.HeaderDiff(got, want); f != "" {
		return f
	}
	return "block"
}

func roundKey(job string, n uint64) string { return job + "\x00" + strconv.FormatUint(n, 10) }

// afterTx tracks rounds and, with artifacts, checks what the tx names.
func (v *verifier) afterTx(h uint64, i int, tx *ledger.Tx) error {
	switch b := tx.Body.(type) {
	case ledger.MemberAdded:
		pub, err := ledger.ParsePublicKey(b.PublicKey)
		if err == nil {
			v.members[ledger.KeyID(pub)] = pub
		}
	case ledger.ModelRegistered:
		v.models[b.Digest] = b
		return v.artifact(h, i, tx.Hash, "digest", b.Digest)
	case ledger.DatasetRegistered:
		v.dataset(ledger.Dataset{Digest: b.Digest, Name: b.Name, Licence: b.Licence})
		return v.manifest(h, i, tx, b)
	case ledger.DatasetPublished:
		if sm, err := b.Decode(); err == nil {
			v.dataset(ledger.Dataset{Digest: sm.Digest, Name: sm.Name, Licence: sm.Licence, Published: true})
		}
		return v.published(h, i, tx, b)
	case ledger.DatasetAttested:
		return v.attested(h, i, tx, b)
	case ledger.JobRegistered:
		v.recipes[b.JobID] = b.Recipe
		if b.Recipe.Mode == ledger.RecipePretrain {
			return v.checkInitConfig(h, i, tx, b)
		}
		if b.Recipe.InitialAdapter != "" {
			return inRound(v.artifact(h, i, tx.Hash, "recipe.initial_adapter", b.Recipe.InitialAdapter), fmt.Sprintf("job %q, initial adapter", b.JobID))
		}
	case ledger.RoundOpened:
		if err := v.checkBase(h, i, tx, b); err != nil {
			return err
		}
		v.rounds[roundKey(b.JobID, b.Round)] = &roundTrack{base: b.BaseModel, config: b.ConfigDigest,
			updates: map[string]ledger.UpdateSubmitted{}, rejected: map[string]bool{}, missing: map[string]txLoc{}}
	case ledger.UpdateRejected:
		return v.rejection(h, i, tx, b)
	case ledger.UpdateSubmitted:
		r := v.rounds[roundKey(b.JobID, b.Round)]
		if r != nil {
			r.updates[tx.Signer] = b
		}
		where := fmt.Sprintf("job %q round %d, update of trainer %s", b.JobID, b.Round, tx.Signer)
		ok, err := v.optionalArtifact(h, i, tx.Hash, "update_digest", b.UpdateDigest)
		if err != nil {
			return inRound(err, where)
		}
		if !ok {
			if r == nil {
				return inRound(v.missingErr(h, i, tx.Hash, "update_digest", b.UpdateDigest), where)
			}
			// A missing update fails its round when the round closes,
			// unless an UpdateRejected takes it out (unverifiable).
			r.missing[b.UpdateDigest] = txLoc{h, i, tx.Hash}
		}
	case ledger.RoundCommitted:
		v.rep.Rounds++
		if err := v.artifact(h, i, tx.Hash, "model_digest", b.ModelDigest); err != nil {
			return inRound(err, fmt.Sprintf("job %q round %d, committed model", b.JobID, b.Round))
		}
		if err := v.checkMissing(v.rounds[roundKey(b.JobID, b.Round)]); err != nil {
			return err
		}
		if err := v.reaggregate(h, i, tx, b); err != nil {
			return err
		}
		if s := b.Params[ledger.ParamServerState]; s != "" {
			v.state[b.JobID] = s
		}
		v.heads[b.JobID] = jobHead{model: b.ModelDigest, round: b.Round}
		delete(v.rounds, roundKey(b.JobID, b.Round))
	case ledger.RoundEvaluated:
		v.rep.Evaluated++
	case ledger.RoundFailed:
		if err := v.checkMissing(v.rounds[roundKey(b.JobID, b.Round)]); err != nil {
			return err
		}
		delete(v.rounds, roundKey(b.JobID, b.Round))
	case ledger.JobCancelled:
		// The cancellation failed the job's open round, as a RoundFailed.
		for _, k := range slices.Sorted(maps.Keys(v.rounds)) {
			if strings.HasPrefix(k, b.JobID+"\x00") {
				if err := v.checkMissing(v.rounds[k]); err != nil {
					return err
				}
				delete(v.rounds, k)
			}
		}
	}
	return nil
}

// checkBase checks, independently of the FSM, that a round starts from
// the model its job's last round left: round 1 from the recipe's base
// model (any, if the recipe records none), every later round from the
// job's last committed model, or round 1's base while none committed.
func (v *verifier) checkBase(h uint64, i int, tx *ledger.Tx, b ledger.RoundOpened) error {
	rc, ok := v.recipes[b.JobID]
	if !ok {
		return txErr(h, i, tx.Hash, "job_id", "round %d of job %q: the job has no JobRegistered on this chain", b.Round, b.JobID)
	}
	hd, seen := v.heads[b.JobID]
	want, why := hd.model, "round 1's base (no round of the job committed since)"
	switch {
	case hd.round > 0:
		why = fmt.Sprintf("the model round %d committed, the job's last", hd.round)
	case !seen:
		want, why = rc.BaseModel, "the base model of the job's recipe"
	}
	if want != "" && b.BaseModel != want {
		return txErr(h, i, tx.Hash, "base_model", "job %q round %d starts from %s; it must start from %s, %s", b.JobID, b.Round, b.BaseModel, want, why)
	}
	if !seen {
		v.heads[b.JobID] = jobHead{model: b.BaseModel}
	}
	if rc.Mode == ledger.RecipePretrain && rc.InitConfig != "" && v.opts.Artifacts != "" && !seen {
		init, err := v.recipeInitialModel(rc)
		if err != nil {
			return txErr(h, i, tx.Hash, "base_model", "pretrain job %q: recomputing its initial model from the recipe: %v", b.JobID, err)
		}
		if b.BaseModel != init {
			return txErr(h, i, tx.Hash, "base_model", "pretrain job %q round %d starts from %s, but its recipe's init_config %s with init_seed %d initialises %s",
				b.JobID, b.Round, b.BaseModel, rc.InitConfig, rc.InitSeed, init)
		}
		v.rep.InitModels++
	}
	if job := v.jobs[b.ConfigDigest]; job != nil && job.FineTune.Mode == model.ModePretrain && !seen {
		init, err := v.initialModel(job)
		if err != nil {
			return txErr(h, i, tx.Hash, "base_model", "job %q: the job file's initial model: %v", b.JobID, err)
		}
		if b.BaseModel != init {
			return txErr(h, i, tx.Hash, "base_model", "pretrain job %q round %d starts from %s, but the job file's seed %d initialises %s (model.init %s) to %s",
				b.JobID, b.Round, b.BaseModel, job.Seed, job.Name, job.Model.Init, init)
		}
	}
	return nil
}

// checkInitConfig checks a pretrain job's registration: the config its
// recipe pins (init_config) is in the artifacts, and a job file given for
// the job (by name) pins the same config and seed; a file that does not
// is named, with both digests, rather than left unused.
func (v *verifier) checkInitConfig(h uint64, i int, tx *ledger.Tx, b ledger.JobRegistered) error {
	rc := b.Recipe
	if rc.InitConfig != "" {
		if err := v.artifact(h, i, tx.Hash, "recipe.init_config", rc.InitConfig); err != nil {
			return inRound(err, fmt.Sprintf("job %q, initial model's config", b.JobID))
		}
	}
	for _, d := range slices.Sorted(maps.Keys(v.jobs)) {
		j := v.jobs[d]
		if j.Name != b.JobID || j.FineTune.Mode != model.ModePretrain {
			continue
		}
		if j.Model.InitDigest != rc.InitConfig {
			return txErr(h, i, tx.Hash, "recipe.init_config", "pretrain job %q: the job file %s has model.init %s, a model config of digest %s, but the job's recipe on the ledger records init_config %q: that file is not the config the job was initialised from",
				b.JobID, j.Source, j.InitPath(), j.Model.InitDigest, rc.InitConfig)
		}
		if s := coordinator.InitSeed(j.Seed); s != rc.InitSeed {
			return txErr(h, i, tx.Hash, "recipe.init_seed", "pretrain job %q: the job file %s (seed %d) initialises with seed %d, but the job's recipe on the ledger records init_seed %d",
				b.JobID, j.Source, j.Seed, s, rc.InitSeed)
		}
	}
	return nil
}

// recipeInitialModel returns the digest of the model a pretrain recipe's
// init_config (read from the artifacts) and init_seed initialise,
// computed once per config and seed.
func (v *verifier) recipeInitialModel(rc ledger.RoundRecipe) (string, error) {
	key := fmt.Sprintf("init-recipe\x00%s\x00%d", rc.InitConfig, rc.InitSeed)
	if d, ok := v.adapters[key]; ok {
		return d, nil
	}
	p, ok := artifactPath(v.opts.Artifacts, rc.InitConfig)
	if !ok {
		return "", fmt.Errorf("init_config %s is not in %s", rc.InitConfig, v.opts.Artifacts)
	}
	data, err := os.ReadFile(p)
	if err != nil {
		return "", err
	}
	m, err := coordinator.InitialModelFrom(data, rc.InitConfig, rc.InitSeed)
	if err != nil {
		return "", err
	}
	d, err := m.Digest()
	if err != nil {
		return "", err
	}
	v.adapters[key] = d
	return d, nil
}

// initialModel returns the digest of a pretrain job's initial model
// (coordinator.InitialModel), computed once per job file.
func (v *verifier) initialModel(job *coordinator.Job) (string, error) {
	key := "init\x00" + job.Digest()
	if d, ok := v.adapters[key]; ok {
		return d, nil
	}
	m, err := coordinator.InitialModel(job)
	if err != nil {
		return "", err
	}
	d, err := m.Digest()
	if err != nil {
		return "", err
	}
	v.adapters[key] = d
	return d, nil
}

// checkMissing fails a closing (or, at the chain's end, open) round that
// has a submitted update that is not in the artifacts and that no
// UpdateRejected took out, at the update's UpdateSubmitted.
func (v *verifier) checkMissing(r *roundTrack) error {
	if r == nil {
		return nil
	}
	for _, t := range slices.Sorted(maps.Keys(r.updates)) {
		u := r.updates[t]
		if loc, ok := r.missing[u.UpdateDigest]; ok {
			return inRound(v.missingErr(loc.h, loc.i, loc.hash, "update_digest", u.UpdateDigest), fmt.Sprintf("job %q round %d, update of trainer %s", u.JobID, u.Round, t))
		}
	}
	return nil
}

// rejection checks an UpdateRejected independently of the FSM: its signer
// is one of the job's designated aggregators and, with artifacts, the
// rejected update fails one of the aggregator's own input checks
// (aggregator.Validate: it parses as an update, has the layout of the
// round's reference model, holds only finite values, and its norm is
// within the recipe's max_norm) against the round's reference and the
// recipe. An update that passes them all was rejected without cause: the
// round fails, naming the update. An update not in the artifacts cannot
// be checked: it is listed in Report.Unverifiable (a failure with
// StrictRejections).
func (v *verifier) rejection(h uint64, i int, tx *ledger.Tx, b ledger.UpdateRejected) error {
	where := fmt.Sprintf("job %q round %d", b.JobID, b.Round)
	rc, ok := v.recipes[b.JobID]
	if !ok {
		return txErr(h, i, tx.Hash, "job_id", "%s: the job has no JobRegistered on this chain, so no aggregator may reject its updates", where)
	}
	byVerifier := b.Step > 0 && rc.Verify != nil && rc.Verify.Names(tx.Signer)
	if !rc.Designates(tx.Signer) && !byVerifier {
		return txErr(h, i, tx.Hash, "signer", "%s: update %s rejected by %s, which the job's recipe does not designate (aggregators %v)", where, b.UpdateDigest, tx.Signer, rc.Aggregators)
	}
	r := v.rounds[roundKey(b.JobID, b.Round)]
	if r == nil {
		return txErr(h, i, tx.Hash, "round", "%s: the round is not open on this chain", where)
	}
	var trainer string
	var u ledger.UpdateSubmitted
	for _, t := range slices.Sorted(maps.Keys(r.updates)) {
		if r.updates[t].UpdateDigest == b.UpdateDigest {
			trainer, u = t, r.updates[t]
		}
	}
	if trainer == "" {
		return txErr(h, i, tx.Hash, "update_digest", "%s: no update %s was submitted to the round", where, b.UpdateDigest)
	}
	r.rejected[b.UpdateDigest] = true
	if byVerifier {
		// A verifier's spot check (the FSM admitted it only for a drawn
		// update): fedtune audit replay re-judges it from the artifacts.
		return nil
	}
	if v.opts.Artifacts == "" {
		return nil
	}
	what := fmt.Sprintf("%s: update %s of trainer %s was rejected as %q", where, b.UpdateDigest, trainer, b.Reason)
	// A rejection for the licence of the update's data: the ledger's
	// records alone decide it (coordinator.Machine's reason).
	if d, ok := v.datasets[u.DatasetDigest]; ok && b.Reason == rc.LicenceRefusal(d.Digest, d.Name, d.Licence) {
		if rc.AcceptsLicence(d.Licence) {
			return txErr(h, i, tx.Hash, "reason", "%s but the job's recipe accepts licence %q", what, d.Licence)
		}
		v.rep.RejectionsChecked++
		return nil
	}
	if ok, err := v.attestationRejection(&rc, b, trainer, u); err != nil {
		return txErr(h, i, tx.Hash, "reason", "%s: %v", what, err)
	} else if ok {
		v.rep.RejectionsChecked++
		return nil
	}
	if _, miss := r.missing[b.UpdateDigest]; miss {
		delete(r.missing, b.UpdateDigest)
		return v.unverifiable(h, i, tx.Hash, what+"; the update is not in the artifacts, so the rejection cannot be checked")
	}
	p, _ := artifactPath(v.opts.Artifacts, b.UpdateDigest)
	ref, err := v.reference(h, i, tx.Hash, r, &rc)
	if err != nil {
		return err
	}
	rej, err := aggregator.Validate(v.ctx, aggregator.Request{Inputs: []aggregator.Input{{Path: p, ContributorID: trainer}}, Base: ref,
		BaseDigest: pretrainBase(&rc, r), Options: aggregator.Options{Clip: rc.Clip, MaxNorm: rc.MaxNorm, Threads: 1}})
	if err != nil {
		return txErr(h, i, tx.Hash, "update_digest", "%s: checking rejected update %s against the round's reference: %v", where, b.UpdateDigest, err)
	}
	if len(rej) > 0 {
		v.rep.RejectionsChecked++
		v.log.Info("rejection confirmed: the update fails an input check", "job", b.JobID, "round", b.Round, "trainer", trainer,
			"update", b.UpdateDigest, "check", strings.ReplaceAll(rej[0].Reason(), p, "update "+b.UpdateDigest))
		return nil
	}
	// The one rejection that is not about the update's content: a
	// dataset the job file does not admit (coordinator.Machine's reason).
	if b.Reason == fmt.Sprintf("dataset %s is not admitted by job %s", u.DatasetDigest, b.JobID) {
		job := v.jobs[r.config]
		if job == nil {
			return v.unverifiable(h, i, tx.Hash, what+"; the update passes every input check, and only the job file (--job) tells which datasets the job admits")
		}
		if ms := job.Datasets.Manifests; len(ms) > 0 && !slices.Contains(ms, u.DatasetDigest) {
			v.rep.RejectionsChecked++
			return nil
		}
		return txErr(h, i, tx.Hash, "reason", "%s but the job file %s admits dataset %s, and the update passes every input check", what, job.Source, u.DatasetDigest)
	}
	norm := ""
	if rc.MaxNorm > 0 {
		norm = fmt.Sprintf(", a norm within max_norm %s", ledger.FormatParam(rc.MaxNorm))
	}
	return txErr(h, i, tx.Hash, "reason", "%s but it passes every input check (it parses as an update, has the layout of the round's reference, only finite values%s)", what, norm)
}

// attestationRejection reports whether b is a rejection for a missing
// attestation (aggregator/round's reason, ledger.AttestationRefusal) that
// the ledger's records bear out: a dataset behind the update (its own or a
// published one its ranges name) lacked an attestation the recipe
// requires when the update was submitted. Attestations recorded after the
// submission may have come after the aggregator looked, so they do not
// count against it; one recorded before does.
func (v *verifier) attestationRejection(rc *ledger.RoundRecipe, b ledger.UpdateRejected, trainer string, u ledger.UpdateSubmitted) (bool, error) {
	if len(rc.RequireAttestations) == 0 {
		return false, nil
	}
	round, err := v.fsm.Round(b.JobID, b.Round)
	if err != nil {
		return false, err
	}
	var submitted uint64
	for _, up := range round.Updates {
		if up.Trainer == trainer {
			submitted = up.Height
		}
	}
	for _, d := range append([]string{u.DatasetDigest}, ledger.RangeDatasets(u.DatasetDigest, u.Ranges)...) {
		ds, err := v.fsm.Dataset(d)
		if err != nil {
			return false, err
		}
		var before []ledger.DatasetAttestation
		for _, a := range ds.Attestations {
			if a.Height <= submitted {
				before = append(before, a)
			}
		}
		missing := ledger.MissingAttestations(rc.RequireAttestations, before)
		if len(missing) > 0 && b.Reason == ledger.TruncateReason(ledger.AttestationRefusal(b.UpdateDigest, trainer, d, b.JobID, missing)) {
			return true, nil
		}
	}
	return false, nil
}

// dataset remembers a dataset's name and licence.
func (v *verifier) dataset(d ledger.Dataset) {
	if v.datasets == nil {
		v.datasets = map[string]ledger.Dataset{}
	}
	v.datasets[d.Digest] = d
}

// unverifiable records a rejection that cannot be checked, or fails with
// StrictRejections.
func (v *verifier) unverifiable(h uint64, i int, txh [32]byte, msg string) error {
	if v.opts.StrictRejections {
		return txErr(h, i, txh, "update_digest", "%s (--strict-rejections)", msg)
	}
	v.log.Warn("unverifiable rejection", "height", h, "tx", i, "detail", msg)
	v.rep.Unverifiable = append(v.rep.Unverifiable, fmt.Sprintf("height %d tx[%d]: %s", h, i, msg))
	return nil
}

// inRound prefixes a *Mismatch's message with the round it is about.
func inRound(err error, where string) error {
	var m *Mismatch
	if errors.As(err, &m) {
		m.Msg = where + ": " + m.Msg
	}
	return err
}

// artifactPath finds a blob by digest: "<dir>/<ab>/<digest>",
// "<dir>/<digest>", or "<dir>/blobs/<ab>/<digest>" (dir is an
// artifact.Store's folder, such as a coordinator's data_dir/artifacts).
func artifactPath(dir, digest string) (string, bool) {
	for _, p := range []string{filepath.Join(dir, digest[:2], digest), filepath.Join(dir, digest), filepath.Join(dir, "blobs", digest[:2], digest)} {
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p, true
		}
	}
	return "", false
}

// ArtifactPath returns the path of the blob with digest in an artifact
// directory (sharded or flat layout), or false.
func ArtifactPath(dir, digest string) (string, bool) {
	if len(digest) < 2 {
		return "", false
	}
	return artifactPath(dir, digest)
}

// artifact checks that the blob a digest names exists and hashes right.
func (v *verifier) artifact(h uint64, i int, txh [32]byte, field, digest string) error {
	ok, err := v.optionalArtifact(h, i, txh, field, digest)
	if err == nil && !ok {
		err = v.missingErr(h, i, txh, field, digest)
	}
	return err
}

// optionalArtifact is artifact where a missing blob is not an error: it
// reports whether the blob is there (true without Artifacts).
func (v *verifier) optionalArtifact(h uint64, i int, txh [32]byte, field, want string) (bool, error) {
	if v.opts.Artifacts == "" || v.hashed[want] {
		return true, nil
	}
	p, ok := artifactPath(v.opts.Artifacts, want)
	if !ok {
		return false, nil
	}
	got, err := digest.File(p)
	if err != nil {
		return false, fmt.Errorf("audit: verify: %w", err)
	}
	if got != want {
		return false, txErr(h, i, txh, field, "artifact %s hashes to %s", p, got)
	}
	v.hashed[want] = true
	v.rep.Artifacts++
	return true, nil
}

func (v *verifier) missingErr(h uint64, i int, txh [32]byte, field, digest string) error {
	return txErr(h, i, txh, field, "artifact %s is not in %s (neither %s/%s nor %s nor blobs/%s/%s)", digest, v.opts.Artifacts, digest[:2], digest, digest, digest[:2], digest)
}

// manifest checks a registered dataset's manifest if the artifact
// directory holds it: its digest, its signature by the registering trainer,
// its sample count, Merkle root and byte count. Raw data never leaves a trainer, so a missing
// manifest is not an error.
func (v *verifier) manifest(h uint64, i int, tx *ledger.Tx, b ledger.DatasetRegistered) error {
	if v.opts.Artifacts == "" {
		return nil
	}
	p, ok := artifactPath(v.opts.Artifacts, b.Digest)
	if !ok {
		return nil
	}
	data, err := os.ReadFile(p)
	if err != nil {
		return fmt.Errorf("audit: verify: %w", err)
	}
	if sum := digest.Bytes(data); sum != b.Digest {
		return txErr(h, i, tx.Hash, "digest", "dataset manifest %s hashes to %s", p, sum)
	}
	sm, err := datasets.DecodeManifest(data, v.members[tx.Signer])
	if err != nil {
		return txErr(h, i, tx.Hash, "manifest", "%s: %v", p, err)
	}
	if sm.Owner != tx.Signer {
		return txErr(h, i, tx.Hash, "manifest", "owner %s is not the registering trainer %s", sm.Owner, tx.Signer)
	}
	if sm.Samples != b.Samples || sm.Licence != b.Licence {
		return txErr(h, i, tx.Hash, "samples", "the manifest says %d samples (%s), the ledger %d (%s)", sm.Samples, sm.Licence, b.Samples, b.Licence)
	}
	if sm.Root != b.Root || sm.Bytes != b.Bytes {
		return txErr(h, i, tx.Hash, "root", "the manifest says root %s over %d bytes, the ledger root %s over %d bytes", sm.Root, sm.Bytes, b.Root, b.Bytes)
	}
	v.rep.Manifests++
	return nil
}

// attested re-checks a DatasetAttested independently of the FSM: its
// statement is a DSSE envelope signed by the tx's signer (an auditor) and
// says exactly what the tx says about exactly the tx's dataset.
func (v *verifier) attested(h uint64, i int, tx *ledger.Tx, b ledger.DatasetAttested) error {
	pub, ok := v.members[tx.Signer]
	if !ok {
		return txErr(h, i, tx.Hash, "signer", "DatasetAttested signed by %s, who is no member", tx.Signer)
	}
	st, err := ledger.VerifyStatement(b.Statement, pub)
	if err != nil {
		return txErr(h, i, tx.Hash, "statement", "the attestation of dataset %s: the statement does not verify with the key of auditor %s: %v", b.Dataset, tx.Signer, err)
	}
	if why := b.Matches(st); why != "" {
		return txErr(h, i, tx.Hash, "statement", "the attestation of dataset %s: the signed statement does not say what the tx says: %s", b.Dataset, why)
	}
	v.rep.Attestations++
	return nil
}

// published re-checks a DatasetPublished independently of the FSM: its
// manifest is signed by the tx's signer, who is its owner; with Artifacts
// holding its leaves file, the leaves give the manifest's Merkle root, and
// each shard there holds exactly its leaves' samples.
func (v *verifier) published(h uint64, i int, tx *ledger.Tx, b ledger.DatasetPublished) error {
	pub, ok := v.members[tx.Signer]
	if !ok {
		return txErr(h, i, tx.Hash, "signer", "DatasetPublished signed by %s, who is no member", tx.Signer)
	}
	sm, err := dspub.Decode([]byte(b.Manifest), pub)
	if err != nil {
		return txErr(h, i, tx.Hash, "manifest", "the published manifest does not verify with the key of %s: %v", tx.Signer, err)
	}
	if sm.Owner != tx.Signer {
		return txErr(h, i, tx.Hash, "manifest", "published dataset %q: the manifest's owner is %s, the tx's signer %s", sm.Name, sm.Owner, tx.Signer)
	}
	v.rep.Published++
	if v.opts.Artifacts == "" {
		return nil
	}
	p, ok := artifactPath(v.opts.Artifacts, sm.Leaves)
	if !ok {
		return nil
	}
	data, err := os.ReadFile(p)
	if err != nil {
		return fmt.Errorf("audit: verify: %w", err)
	}
	if _, err := datasets.VerifyLeaves(&sm.Manifest, data); err != nil {
		return txErr(h, i, tx.Hash, "root", "published dataset %q (%s): its leaves file %s: %v", sm.Name, sm.Digest, p, err)
	}
	leaves, err := dspub.DecodeLeaves(&sm.Manifest, data)
	if err != nil {
		return txErr(h, i, tx.Hash, "root", "published dataset %q (%s): its leaves file %s: %v", sm.Name, sm.Digest, p, err)
	}
	for k, sh := range sm.Shards {
		sp, ok := artifactPath(v.opts.Artifacts, sh.Digest)
		if !ok {
			continue
		}
		if bad, err := checkShardFile(&sm.Manifest, k, sp, leaves); err != nil {
			return fmt.Errorf("audit: verify: %w", err)
		} else if bad != nil {
			return txErr(h, i, tx.Hash, "shards", "published dataset %q (%s): %v", sm.Name, sm.Digest, bad)
		}
	}
	v.rep.PublishedRoots++
	return nil
}

// checkShardFile checks the file at path as shard k of m (its digest,
// sample count and every sample against leaves, as dspub.CheckShard does),
// streaming it: one sample line is in memory at a time, however large the
// shard. bad is what does not check; err an error reading the file.
func checkShardFile(m *dspub.Manifest, k int, path string, leaves [][32]byte) (bad, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	c, err := dspub.NewShardChecker(m, k, leaves, func(string) error { return nil })
	if err != nil {
		return err, nil
	}
	buf := make([]byte, 64<<10)
	for {
		n, rerr := f.Read(buf)
		if n > 0 {
			if _, err := c.Write(buf[:n]); err != nil {
				return err, nil
			}
		}
		if rerr == io.EOF {
			return c.Close(), nil
		}
		if rerr != nil {
			return nil, rerr
		}
	}
}

// checkCommit checks a RoundCommitted against its job's recipe and the
// round's submitted and rejected updates, independently of the FSM (an
// export written under other rules is caught here too): the strategy and
// parameters are the recipe's, the signer is a designated aggregator, and
// the contributors are exactly the submitted updates no UpdateRejected
// named.
func (v *verifier) checkCommit(h uint64, i int, tx *ledger.Tx, b ledger.RoundCommitted, r *roundTrack, rc *ledger.RoundRecipe) error {
	where := fmt.Sprintf("job %q round %d", b.JobID, b.Round)
	if !rc.Designates(tx.Signer) {
		return txErr(h, i, tx.Hash, "signer", "%s: committed by %s, which the job's recipe does not designate (aggregators %v)", where, tx.Signer, rc.Aggregators)
	}
	if b.Strategy != rc.Strategy {
		return txErr(h, i, tx.Hash, "strategy", "%s: committed with strategy %q, the job's recipe says %q", where, b.Strategy, rc.Strategy)
	}
	if err := rc.CheckCommitParams(b.Params); err != nil {
		return txErr(h, i, tx.Hash, "params", "%s: %v", where, err)
	}
	listed := map[string]bool{}
	for _, c := range b.Contributors {
		listed[c.Trainer] = true
		if r.rejected[c.UpdateDigest] {
			return txErr(h, i, tx.Hash, "contributors", "%s: update %s of trainer %s was rejected, yet it is a contributor", where, c.UpdateDigest, c.Trainer)
		}
	}
	for _, t := range slices.Sorted(maps.Keys(r.updates)) {
		u := r.updates[t]
		if !r.rejected[u.UpdateDigest] && !listed[t] {
			return txErr(h, i, tx.Hash, "contributors", "%s: the commit leaves out update %s of trainer %s, which was submitted and never rejected", where, u.UpdateDigest, t)
		}
	}
	return nil
}

// reaggregate re-runs a committed round from its job's recipe over every
// submitted, not rejected, update of the round. A round with DP noise
// cannot give the committed digest (the noise is secret); it is checked
// as dpCheck says.
func (v *verifier) reaggregate(h uint64, i int, tx *ledger.Tx, b ledger.RoundCommitted) error {
	txh := tx.Hash
	r := v.rounds[roundKey(b.JobID, b.Round)]
	if r == nil {
		return txErr(h, i, txh, "round", "round %d of job %q was never opened on this chain", b.Round, b.JobID)
	}
	rc, ok := v.recipes[b.JobID]
	if !ok {
		return txErr(h, i, txh, "job_id", "job %q has no JobRegistered on this chain, so no recipe to re-run round %d from", b.JobID, b.Round)
	}
	if err := v.checkCommit(h, i, tx, b, r, &rc); err != nil {
		return err
	}
	if v.opts.Artifacts == "" {
		return nil
	}
	params, err := rc.StrategyParams()
	if err != nil {
		return txErr(h, i, txh, "recipe.params", "%v", err)
	}
	strategy, err := aggregator.New(rc.Strategy, params)
	if err != nil {
		return txErr(h, i, txh, "strategy", "%v", err)
	}
	// The noise is left out: the re-run is the clipped, un-noised aggregate.
	opts := aggregator.Options{Clip: rc.Clip, MaxNorm: rc.MaxNorm, Strict: true, Threads: 1}
	req := aggregator.Request{Strategy: strategy, Options: opts, Logger: v.log,
		Out: filepath.Join(v.tmp, fmt.Sprintf("h%d-model.safetensors", h))}
	for _, t := range slices.Sorted(maps.Keys(r.updates)) {
		u := r.updates[t]
		if r.rejected[u.UpdateDigest] {
			continue
		}
		p, ok := artifactPath(v.opts.Artifacts, u.UpdateDigest)
		if !ok {
			return txErr(h, i, txh, "update_digest", "job %q round %d: the update %s of trainer %s is not in the artifacts", b.JobID, b.Round, u.UpdateDigest, t)
		}
		req.Inputs = append(req.Inputs, aggregator.Input{Path: p, Weight: float64(u.Samples), ContributorID: t})
	}
	if req.Base, err = v.reference(h, i, txh, r, &rc); err != nil {
		return err
	}
	req.BaseDigest = pretrainBase(&rc, r)
	if s := v.state[b.JobID]; s != "" {
		p, ok := artifactPath(v.opts.Artifacts, s)
		if !ok {
			return txErr(h, i, txh, "params[server_state]", "the previous round's server state %s is not in the artifacts", s)
		}
		req.State = p
	}
	res, err := aggregator.Aggregate(v.ctx, req)
	if err != nil {
		return txErr(h, i, txh, "model_digest", "job %q round %d: re-running %s on the %d submitted updates fails: %v", b.JobID, b.Round, rc.Strategy, len(req.Inputs), err)
	}
	if rc.NoiseMultiplier > 0 {
		if err := v.dpCheck(h, i, txh, b, &rc, res); err != nil {
			return err
		}
	} else if res.Digest != b.ModelDigest {
		return txErr(h, i, txh, "model_digest", "job %q round %d: re-running %s from the recipe on the %d submitted updates gives %s, the ledger records %s",
			b.JobID, b.Round, rc.Strategy, len(req.Inputs), res.Digest, b.ModelDigest)
	}
	for ci, c := range b.Contributors {
		if w := res.Weights[c.Trainer]; w != c.Weight {
			return txErr(h, i, txh, fmt.Sprintf("contributors[%d].weight", ci), "job %q round %d: trainer %s: re-running gives share %v, the ledger records %v", b.JobID, b.Round, c.Trainer, w, c.Weight)
		}
	}
	if s := b.Params[ledger.ParamServerState]; s != "" && rc.NoiseMultiplier == 0 && res.StateDigest != s {
		return txErr(h, i, txh, "params[server_state]", "job %q round %d: re-running gives server state %s, the ledger records %s", b.JobID, b.Round, res.StateDigest, s)
	}
	v.rep.Reaggregated++
	return nil
}

// DPTolerance is how far dpCheck lets ‖committed − un-noised‖² / (σ²·n)
// stray from 1 beyond the statistical slack 6·√(2/n): float32 rounding of
// both models.
const DPTolerance = 0.02

// dpCheck checks a round with Gaussian noise, whose committed model cannot
// be re-derived because the noise is secret. res is the clipped, un-noised
// re-run (the same inputs, clipping, norm bound and strategy). For fedavg,
// where the noise is added to the aggregate as it is, committed −
// un-noised must be the noise itself: n independent N(0, σ²) values with
// σ = noise_multiplier·clip/m (res.NoiseStdDev for m contributors), so
// ‖committed − un-noised‖² / σ² is χ²(n): the check is that this ratio
// over n is within 6·√(2/n) + DPTolerance of 1 (a 6-sigma band). It shows
// the noise has the recipe's size and the rest of the model is the
// clipped aggregate of every submitted update; it cannot show the noise
// was fresh and secret, nor that it was not chosen to steer the model
// (a noise draw with the right norm but a chosen direction passes).
// Other strategies pass the noise through a server optimizer, so only the
// shares are checked there (by the caller).
func (v *verifier) dpCheck(h uint64, i int, txh [32]byte, b ledger.RoundCommitted, rc *ledger.RoundRecipe, res *aggregator.Result) error {
	if rc.Strategy != "fedavg" {
		v.log.Warn("DP round not re-derivable: the noise goes through the server optimizer; only shares checked", "job", b.JobID, "round", b.Round, "strategy", rc.Strategy)
		return nil
	}
	sigma := rc.NoiseMultiplier * rc.Clip / float64(len(b.Contributors))
	p, ok := artifactPath(v.opts.Artifacts, b.ModelDigest)
	if !ok {
		return txErr(h, i, txh, "model_digest", "the committed model %s is not in the artifacts", b.ModelDigest)
	}
	ss, n, err := sqDiff(p, res.Path)
	if err != nil {
		return txErr(h, i, txh, "model_digest", "job %q round %d: comparing the committed model with the un-noised re-run: %v", b.JobID, b.Round, err)
	}
	if n == 0 || sigma <= 0 {
		return txErr(h, i, txh, "model_digest", "job %q round %d: no noised values to check", b.JobID, b.Round)
	}
	if _, slack, _ := noisePlausible(ss, n, sigma); slack >= 0.5 {
		v.log.Warn("DP round: too few values for the noise-size test to tell noise from none", "job", b.JobID, "round", b.Round, "values", n)
	}
	if ratio, slack, ok := noisePlausible(ss, n, sigma); !ok {
		return txErr(h, i, txh, "model_digest", "job %q round %d: the committed model differs from the clipped, un-noised re-run by ‖Δ‖ = %.6g over %d values; noise of σ = %v (noise_multiplier %v · clip %v / %d contributors) gives about %.6g (ratio of squares %.4f, allowed 1 ± %.4f)",
			b.JobID, b.Round, math.Sqrt(ss), n, sigma, rc.NoiseMultiplier, rc.Clip, len(b.Contributors), sigma*math.Sqrt(float64(n)), ratio, slack)
	}
	v.log.Info("DP round checked against the un-noised re-run", "job", b.JobID, "round", b.Round, "noise_norm", math.Sqrt(ss), "expected", sigma*math.Sqrt(float64(n)))
	return nil
}

// noisePlausible is dpCheck's test: ss = ‖Δ‖² over n values against
// noise of standard deviation sigma.
func noisePlausible(ss float64, n int64, sigma float64) (ratio, slack float64, ok bool) {
	ratio = ss / (sigma * sigma * float64(n))
	slack = 6*math.Sqrt(2/float64(n)) + DPTolerance
	return ratio, slack, math.Abs(ratio-1) <= slack
}

// sqDiff returns Σ(a−b)² over every tensor of two safetensors files with
// the same tensors, and the number of values.
func sqDiff(pa, pb string) (float64, int64, error) {
	fa, err := safetensors.Open(pa)
	if err != nil {
		return 0, 0, err
	}
	defer fa.Close()
	fb, err := safetensors.Open(pb)
	if err != nil {
		return 0, 0, err
	}
	defer fb.Close()
	if len(fa.Tensors()) != len(fb.Tensors()) {
		return 0, 0, fmt.Errorf("%d tensors against %d", len(fa.Tensors()), len(fb.Tensors()))
	}
	var ss float64
	var n int64
	for _, t := range fa.Tensors() {
		a, err := fa.Float32s(t.Name)
		if err != nil {
			return 0, 0, err
		}
		b, err := fb.Float32s(t.Name)
		if err != nil {
			return 0, 0, fmt.Errorf("tensor %s: %w", t.Name, err)
		}
		if len(a) != len(b) {
			return 0, 0, fmt.Errorf("tensor %s has %d values against %d", t.Name, len(a), len(b))
		}
		for k := range a {
			d := float64(a[k]) - float64(b[k])
			ss += d * d
		}
		n += int64(len(a))
	}
	return ss, n, nil
}

// reference returns the file a round's aggregation takes as its base: the
// round's base model, except in the first round of a LoRA job (the base
// is a registered foundation model), where it is the job's initial
// adapter, whose digest the job's recipe records (RoundRecipe.InitialAdapter).
// For a chain whose recipe has none, a job file in opts.Jobs with the
// round's config digest still derives it as the coordinator does.
// pretrainBase is the digest of the round's reference when it is the
// round's base model, as in a pretrain job (trainers' deltas name it,
// aggregator.MetaBase); "" otherwise.
func pretrainBase(rc *ledger.RoundRecipe, r *roundTrack) string {
	if rc.Mode == ledger.RecipePretrain {
		return r.base
	}
	return ""
}

func (v *verifier) reference(h uint64, i int, txh [32]byte, r *roundTrack, rc *ledger.RoundRecipe) (string, error) {
	reg, registered := v.models[r.base]
	if registered && rc.InitialAdapter != "" {
		p, ok := artifactPath(v.opts.Artifacts, rc.InitialAdapter)
		if !ok {
			return "", txErr(h, i, txh, "recipe.initial_adapter", "the job's initial LoRA adapter %s (its first round's reference) is not in the artifacts", rc.InitialAdapter)
		}
		return p, nil
	}
	job := v.jobs[r.config]
	if !registered || job == nil || job.FineTune.Mode != model.ModeLoRA {
		p, ok := artifactPath(v.opts.Artifacts, r.base)
		if !ok {
			return "", txErr(h, i, txh, "base_model", "the round's base model %s is not in the artifacts", r.base)
		}
		return p, nil
	}
	key := r.config + "\x00" + r.base
	if p, ok := v.adapters[key]; ok {
		return p, nil
	}
	if reg.Config == "" {
		return "", txErr(h, i, txh, "base_model", "job %s fine-tunes a LoRA adapter of base model %s, whose registration names no config; the initial adapter cannot be derived", job.Name, r.base)
	}
	cp, ok := artifactPath(v.opts.Artifacts, reg.Config)
	if !ok {
		return "", txErr(h, i, txh, "base_model", "the config %s of base model %s (needed for job %s's initial LoRA adapter) is not in the artifacts", reg.Config, r.base, job.Name)
	}
	data, err := os.ReadFile(cp)
	if err != nil {
		return "", fmt.Errorf("audit: verify: %w", err)
	}
	if sum := digest.Bytes(data); sum != reg.Config {
		return "", txErr(h, i, txh, "base_model", "the config of base model %s, %s, hashes to %s", r.base, cp, sum)
	}
	cfg, err := model.ParseConfigJSON(cp, data)
	if err != nil {
		return "", txErr(h, i, txh, "base_model", "config of base model %s: %v", r.base, err)
	}
	ad, err := coordinator.InitialAdapter(job, cfg)
	if err != nil {
		return "", txErr(h, i, txh, "base_model", "initial adapter of job %s: %v", job.Name, err)
	}
	dir := filepath.Join(v.tmp, fmt.Sprintf("init-adapter-%d", len(v.adapters)))
	if _, err := ad.Save(dir); err != nil {
		return "", fmt.Errorf("audit: verify: initial adapter of job %s: %w", job.Name, err)
	}
	p := filepath.Join(dir, model.AdapterWeightsFile)
	v.adapters[key] = p
	v.log.Info("derived a LoRA job's initial adapter from its job file", "job", job.Name, "config_digest", r.config)
	return p, nil
}
