package audit

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/fedtune/fedtune/aggregator"
	"github.com/fedtune/fedtune/coordinator"
	"github.com/fedtune/fedtune/datasets"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/pebblestore"
	"github.com/fedtune/fedtune/model"
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
}

// roundTrack is what Verify remembers of an open round to re-run it.
type roundTrack struct {
	base    string
	config  string                            // the job's config digest
	updates map[string]ledger.UpdateSubmitted // by trainer
}

type verifier struct {
	ctx       context.Context
	opts      VerifyOptions
	log       *slog.Logger
	fsm       *ledger.FSM
	rep       Report
	rounds    map[string]*roundTrack
	state     map[string]string // job → server state digest of its last committed round
	hashed    map[string]bool
	members   map[string]ed25519.PublicKey
	models    map[string]ledger.ModelRegistered // registered base models by digest
	jobs      map[string]*coordinator.Job       // opts.Jobs by config digest
	adapters  map[string]string                 // config digest → initial adapter file
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
	_, err := verify(ctx, e, VerifyOptions{}, func(f *ledger.FSM) error {
		var err error
		l, err = f.Lineage(model)
		return err
	})
	if err != nil {
		return nil, err
	}
	return l, nil
}

func verify(ctx context.Context, e *Export, opts VerifyOptions, then func(*ledger.FSM) error) (*Report, error) {
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
	fsm, err := ledger.NewFSM(db.State(), g, ledger.FSMOptions{})
	if err != nil {
		return nil, fmt.Errorf("audit: verify: %w", err)
	}
	v := &verifier{ctx: ctx, opts: opts, log: log, fsm: fsm, rounds: map[string]*roundTrack{}, state: map[string]string{},
		hashed: map[string]bool{}, members: map[string]ed25519.PublicKey{}, models: map[string]ledger.ModelRegistered{},
		jobs: map[string]*coordinator.Job{}, adapters: map[string]string{}, lastPrint: time.Now()}
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
		return v.manifest(h, i, tx, b)
	case ledger.RoundOpened:
		v.rounds[roundKey(b.JobID, b.Round)] = &roundTrack{base: b.BaseModel, config: b.ConfigDigest, updates: map[string]ledger.UpdateSubmitted{}}
	case ledger.UpdateSubmitted:
		if r := v.rounds[roundKey(b.JobID, b.Round)]; r != nil {
			r.updates[tx.Signer] = b
		}
		return inRound(v.artifact(h, i, tx.Hash, "update_digest", b.UpdateDigest), fmt.Sprintf("job %q round %d, update of trainer %s", b.JobID, b.Round, tx.Signer))
	case ledger.RoundCommitted:
		v.rep.Rounds++
		if err := v.artifact(h, i, tx.Hash, "model_digest", b.ModelDigest); err != nil {
			return inRound(err, fmt.Sprintf("job %q round %d, committed model", b.JobID, b.Round))
		}
		if err := v.reaggregate(h, i, tx.Hash, b); err != nil {
			return err
		}
		if s := b.Params[serverStateParam]; s != "" {
			v.state[b.JobID] = s
		}
		delete(v.rounds, roundKey(b.JobID, b.Round))
	case ledger.RoundFailed:
		delete(v.rounds, roundKey(b.JobID, b.Round))
	}
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

// serverStateParam is the RoundCommitted parameter naming the server state
// digest a stateful strategy produced (coordinator.ParamServerState).
const serverStateParam = "server_state"

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

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// artifact checks that the blob a digest names exists and hashes right.
func (v *verifier) artifact(h uint64, i int, txh [32]byte, field, digest string) error {
	if v.opts.Artifacts == "" || v.hashed[digest] {
		return nil
	}
	p, ok := artifactPath(v.opts.Artifacts, digest)
	if !ok {
		return txErr(h, i, txh, field, "artifact %s is not in %s (neither %s/%s nor %s nor blobs/%s/%s)", digest, v.opts.Artifacts, digest[:2], digest, digest, digest[:2], digest)
	}
	got, err := fileSHA256(p)
	if err != nil {
		return fmt.Errorf("audit: verify: %w", err)
	}
	if got != digest {
		return txErr(h, i, txh, field, "artifact %s hashes to %s", p, got)
	}
	v.hashed[digest] = true
	v.rep.Artifacts++
	return nil
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
	if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != b.Digest {
		return txErr(h, i, tx.Hash, "digest", "dataset manifest %s hashes to %x", p, sum)
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

// optionParams are the committed parameters that are aggregator Options,
// not strategy parameters.
var optionParams = map[string]bool{"clip": true, "noise_multiplier": true, "noise_seed": true, "max_norm": true, serverStateParam: true}

// reaggregate re-runs a committed round from its stored updates.
func (v *verifier) reaggregate(h uint64, i int, txh [32]byte, b ledger.RoundCommitted) error {
	if v.opts.Artifacts == "" {
		return nil
	}
	r := v.rounds[roundKey(b.JobID, b.Round)]
	if r == nil {
		return txErr(h, i, txh, "round", "round %d of job %q was never opened on this chain", b.Round, b.JobID)
	}
	params := map[string]float64{}
	var opts aggregator.Options
	for _, k := range slices.Sorted(maps.Keys(b.Params)) {
		val := b.Params[k]
		if k == serverStateParam {
			continue
		}
		if k == "noise_seed" {
			s, err := strconv.ParseUint(val, 10, 64)
			if err != nil {
				return txErr(h, i, txh, "params[noise_seed]", "%q is not an unsigned integer", val)
			}
			opts.Seed = s
			continue
		}
		f, err := strconv.ParseFloat(val, 64)
		if err != nil {
			return txErr(h, i, txh, "params["+k+"]", "%q is not a number", val)
		}
		switch k {
		case "clip":
			opts.Clip = f
		case "noise_multiplier":
			opts.NoiseMultiplier = f
		case "max_norm":
			opts.MaxNorm = f
		default:
			if !optionParams[k] {
				params[k] = f
			}
		}
	}
	strategy, err := aggregator.New(b.Strategy, params)
	if err != nil {
		return txErr(h, i, txh, "strategy", "%v", err)
	}
	opts.Strict = true
	opts.Threads = 1
	req := aggregator.Request{Strategy: strategy, Options: opts, Logger: v.log,
		Out: filepath.Join(v.tmp, fmt.Sprintf("h%d-model.safetensors", h))}
	for ci, c := range b.Contributors {
		u, ok := r.updates[c.Trainer]
		if !ok || u.UpdateDigest != c.UpdateDigest {
			return txErr(h, i, txh, fmt.Sprintf("contributors[%d]", ci), "trainer %s submitted no update %s in this round", c.Trainer, c.UpdateDigest)
		}
		p, ok := artifactPath(v.opts.Artifacts, c.UpdateDigest)
		if !ok {
			return txErr(h, i, txh, fmt.Sprintf("contributors[%d].update_digest", ci), "artifact %s is missing", c.UpdateDigest)
		}
		req.Inputs = append(req.Inputs, aggregator.Input{Path: p, Weight: float64(u.Samples), ContributorID: c.Trainer})
	}
	if req.Base, err = v.reference(h, i, txh, r); err != nil {
		return err
	}
	if s := v.state[b.JobID]; s != "" {
		p, ok := artifactPath(v.opts.Artifacts, s)
		if !ok {
			return txErr(h, i, txh, "params[server_state]", "the previous round's server state %s is not in the artifacts", s)
		}
		req.State = p
	}
	res, err := aggregator.Aggregate(v.ctx, req)
	if err != nil {
		return txErr(h, i, txh, "model_digest", "re-running %s on the %d contributors fails: %v%s", b.Strategy, len(req.Inputs), err, v.loraHint(b, r))
	}
	if res.Digest != b.ModelDigest {
		return txErr(h, i, txh, "model_digest", "re-running %s on the stored updates gives %s, the ledger records %s%s", b.Strategy, res.Digest, b.ModelDigest, v.loraHint(b, r))
	}
	for ci, c := range b.Contributors {
		if w := res.Weights[c.Trainer]; w != c.Weight {
			return txErr(h, i, txh, fmt.Sprintf("contributors[%d].weight", ci), "trainer %s: re-running gives share %v, the ledger records %v", c.Trainer, w, c.Weight)
		}
	}
	if s := b.Params[serverStateParam]; s != "" && res.StateDigest != s {
		return txErr(h, i, txh, "params[server_state]", "re-running gives server state %s, the ledger records %s", res.StateDigest, s)
	}
	v.rep.Reaggregated++
	return nil
}

// reference returns the file a round's aggregation takes as its base: the
// round's base model, except in the first round of a LoRA job (the base
// is a registered foundation model and a job file in opts.Jobs with the
// round's config digest fine-tunes an adapter), where it is the job's
// initial adapter, derived here as the coordinator derives it.
func (v *verifier) reference(h uint64, i int, txh [32]byte, r *roundTrack) (string, error) {
	reg, registered := v.models[r.base]
	job := v.jobs[r.config]
	if !registered || job == nil || job.FineTune.Mode != coordinator.ModeLoRA {
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
	if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != reg.Config {
		return "", txErr(h, i, txh, "base_model", "the config of base model %s, %s, hashes to %x", r.base, cp, sum)
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

// loraHint adds to the error of a failed re-run of a round that started
// from a registered foundation model without a job file for its config
// digest: if the job is a LoRA job, its reference was the initial adapter
// (a full fine-tuning job's was the base model itself, so the error may
// be real).
func (v *verifier) loraHint(b ledger.RoundCommitted, r *roundTrack) string {
	if _, registered := v.models[r.base]; !registered || v.jobs[r.config] != nil {
		return ""
	}
	return fmt.Sprintf("; if job %q fine-tunes a LoRA adapter, round %d aggregated against the job's initial adapter, which is not on the chain: "+
		"give the job file whose digest is the round's config digest %s (VerifyOptions.Jobs) to derive it", b.JobID, b.Round, r.config)
}
