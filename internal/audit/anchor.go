package audit

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strconv"

	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
)

// BlockSource is what Anchor reads through: blocks with the node
// cosignatures gathered for them, and member records (for the public keys
// tx signatures are checked against). The ledger client,
// *Client of package ledger/client, satisfies it.
type BlockSource interface {
	Block(ctx context.Context, h uint64, minCosignatures int, chainID string) (*client.VerifiedBlock, error)
	Member(ctx context.Context, id string) (*ledger.Member, error)
}

// AnchorOptions configure Anchor.
type AnchorOptions struct {
	// Quorum is how many valid cosignatures, from distinct nodes, every
	// block a record is anchored in must carry (at least 1).
	Quorum int
	// ChainID is the chain the cosignatures and txs must name (required).
	ChainID string
	// Nodes, if not empty, are the IDs of the nodes whose cosignatures
	// count (the genesis file's nodes); empty: any valid cosignature counts.
	Nodes []string
	// Model, if set, is the digest the lineage must be of.
	Model string
}

// AnchorReport says what Anchor checked.
type AnchorReport struct {
	ChainID string `json:"chain_id"`
	Quorum  int    `json:"quorum"`
	// Records is how many txs the lineage's facts were checked against.
	Records int `json:"records"`
	// Blocks are the heights of the blocks those txs (and, for each
	// round, every block between its opening and its commit) were read
	// from, ascending.
	Blocks []uint64 `json:"blocks"`
	// MinCosignatures is the fewest counted cosignatures on any of them.
	MinCosignatures int `json:"min_cosignatures"`
	// Cosigners are the nodes whose cosignatures counted, sorted.
	Cosigners []string `json:"cosigners"`
	// Nodes is how many nodes may cosign when they were pinned
	// (AnchorOptions.Nodes); 0 when any node's cosignature counted.
	Nodes int `json:"nodes,omitempty"`
	// Lineage is the lineage rebuilt from the anchored txs alone (equal,
	// field for field, to the one Anchor was given).
	Lineage *ledger.Lineage `json:"-"`
}

// String describes the report in one line.
func (r *AnchorReport) String() string {
	s := fmt.Sprintf("anchored: %d records in %d blocks of chain %q, each cosigned by >= %d", r.Records, len(r.Blocks), r.ChainID, r.MinCosignatures)
	if r.Nodes > 0 {
		return s + fmt.Sprintf(" of %d nodes (quorum %d)", r.Nodes, r.Quorum)
	}
	return s + fmt.Sprintf(" nodes (quorum %d; %d distinct cosigners, node keys not pinned to a genesis file)", r.Quorum, len(r.Cosigners))
}

// ErrNotAnchored is wrapped by every *AnchorError.
var ErrNotAnchored = errors.New("audit: lineage not anchored")

// AnchorError names the lineage record Anchor could not anchor and why.
type AnchorError struct {
	// Record is what the lineage claims: "model <digest>", "base model
	// <digest>", "round <job>/<n>", "dataset <digest>" or "lineage".
	Record string
	Msg    string
	// Err is the underlying error, if any (one wrapping client.ErrQuorum, say).
	Err error
}

func (e *AnchorError) Error() string { return e.Record + ": " + e.Msg }

// Is makes every *AnchorError match ErrNotAnchored.
func (e *AnchorError) Is(target error) bool { return target == ErrNotAnchored }

// Unwrap returns the underlying error.
func (e *AnchorError) Unwrap() error { return e.Err }

func notAnchored(rec, format string, args ...any) *AnchorError {
	return &AnchorError{Record: rec, Msg: fmt.Sprintf(format, args...)}
}

// Anchor checks every fact of a lineage that a ledger node answered
// against the signed txs that recorded it, in blocks carrying at least
// opts.Quorum valid node cosignatures: the model's and the base model's
// registration or commit, each round's RoundOpened and RoundCommitted and,
// from every block between them, its UpdateSubmitted and UpdateRejected
// txs, and each dataset's registration. Each tx must hash to the hash
// claimed and be in its block (whose hash the cosignatures sign and whose
// tx root covers the txs), name the chain, carry a valid signature of its
// signer (the key the ledger gives for the signer must have the signer's
// ID) and say exactly what the lineage says. The rounds must chain from
// the model back to the base model, and the datasets be exactly those the
// contributors cite. The first record that fails gives an *AnchorError.
func Anchor(ctx context.Context, src BlockSource, l *ledger.Lineage, opts AnchorOptions) (*AnchorReport, error) {
	if opts.Quorum < 1 {
		return nil, fmt.Errorf("audit: anchor: quorum %d, want at least 1", opts.Quorum)
	}
	if opts.ChainID == "" {
		return nil, errors.New("audit: anchor: no chain ID")
	}
	a := &anchorer{ctx: ctx, src: src, opts: opts, blocks: map[uint64]*anchorBlock{}, keys: map[string]ed25519.PublicKey{},
		records: map[[32]byte]bool{}, cosigners: map[string]bool{}, minCos: -1}
	if len(opts.Nodes) > 0 {
		a.allowed = map[string]bool{}
		for _, id := range opts.Nodes {
			a.allowed[id] = true
		}
		if opts.Quorum > len(a.allowed) {
			return nil, fmt.Errorf("audit: anchor: quorum %d exceeds the %d nodes that may cosign", opts.Quorum, len(a.allowed))
		}
	}
	if opts.Model != "" && l.Model.Digest != opts.Model {
		return nil, notAnchored("model "+opts.Model, "the ledger answered with the lineage of %s", l.Model.Digest)
	}
	out, err := a.lineage(l)
	if err != nil {
		return nil, err
	}
	// A backstop: every field must have been compared above, so the
	// rebuilt lineage equals the claimed one.
	if !reflect.DeepEqual(out, l) {
		return nil, notAnchored("lineage", "the ledger's answer differs from the lineage its txs give")
	}
	rep := &AnchorReport{ChainID: opts.ChainID, Quorum: opts.Quorum, Records: len(a.records), MinCosignatures: a.minCos,
		Cosigners: slices.Sorted(maps.Keys(a.cosigners)), Nodes: len(a.allowed), Lineage: out}
	rep.Blocks = slices.Sorted(maps.Keys(a.blocks))
	return rep, nil
}

type anchorer struct {
	ctx       context.Context
	src       BlockSource
	opts      AnchorOptions
	allowed   map[string]bool // nil: any node
	blocks    map[uint64]*anchorBlock
	keys      map[string]ed25519.PublicKey
	records   map[[32]byte]bool // txs checked
	cosigners map[string]bool
	minCos    int
}

type anchorBlock struct {
	hash [32]byte
	txs  []*ledger.Tx
}

// block fetches, checks and decodes the block at h for rec.
func (a *anchorer) block(h uint64, rec string) (*anchorBlock, error) {
	if b, ok := a.blocks[h]; ok {
		return b, nil
	}
	if err := a.ctx.Err(); err != nil {
		return nil, err
	}
	vb, err := a.src.Block(a.ctx, h, a.opts.Quorum, a.opts.ChainID)
	if err != nil {
		if errors.Is(err, client.ErrQuorum) || errors.Is(err, client.ErrBadCheckpoint) {
			return nil, &AnchorError{Record: rec, Msg: err.Error(), Err: err}
		}
		return nil, fmt.Errorf("%s: block %d: %w", rec, h, err)
	}
	// Check again what the source should have checked: the header is
	// the block's, its hash the one cosigned, its tx root the txs'.
	b := vb.Block
	if b == nil || b.Header.Height != h {
		return nil, notAnchored(rec, "asked for block %d, got another", h)
	}
	hash := b.Hash()
	if hash != vb.Hash {
		return nil, notAnchored(rec, "block %d hashes to %x, not to the %x sent", h, hash[:8], vb.Hash[:8])
	}
	if root := ledger.TxRoot(b.Txs); root != b.Header.TxRoot || int(b.Header.NumTxs) != len(b.Txs) {
		return nil, notAnchored(rec, "the %d txs of block %d do not give its header's tx root", len(b.Txs), h)
	}
	seen := map[string]bool{}
	for i := range vb.Cosignatures {
		cp := &vb.Cosignatures[i]
		if seen[cp.NodeID] || cp.VerifyFor(a.opts.ChainID, h, hash) != nil || (a.allowed != nil && !a.allowed[cp.NodeID]) {
			continue
		}
		seen[cp.NodeID] = true
	}
	if len(seen) < a.opts.Quorum {
		from := ""
		if a.allowed != nil {
			from = " from the chain's nodes"
		}
		return nil, notAnchored(rec, "block %d has %d valid cosignature%s%s, want %d", h, len(seen), plural(len(seen)), from, a.opts.Quorum)
	}
	for id := range seen {
		a.cosigners[id] = true
	}
	if a.minCos < 0 || len(seen) < a.minCos {
		a.minCos = len(seen)
	}
	ab := &anchorBlock{hash: hash, txs: make([]*ledger.Tx, len(b.Txs))}
	for i, raw := range b.Txs {
		tx, err := ledger.DecodeTx(raw)
		if err != nil {
			return nil, notAnchored(rec, "block %d tx[%d] does not decode: %v", h, i, err)
		}
		ab.txs[i] = tx
	}
	a.blocks[h] = ab
	return ab, nil
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// use checks a tx a record rests on: its chain and its signature.
func (a *anchorer) use(tx *ledger.Tx, h uint64, rec string) error {
	if a.records[tx.Hash] {
		return nil
	}
	if tx.ChainID != a.opts.ChainID {
		return notAnchored(rec, "its %s tx at height %d is for chain %q, not %q", tx.Body.TxType(), h, tx.ChainID, a.opts.ChainID)
	}
	pub, err := a.key(tx.Signer, rec)
	if err != nil {
		return err
	}
	if err := tx.Envelope.Verify(pub); err != nil {
		return notAnchored(rec, "its %s tx at height %d: %v", tx.Body.TxType(), h, err)
	}
	a.records[tx.Hash] = true
	return nil
}

// key returns a member's public key as the ledger gives it, checked
// against the member ID (the hash of the key), so a node can only answer
// with the right key or none.
func (a *anchorer) key(id, rec string) (ed25519.PublicKey, error) {
	if k, ok := a.keys[id]; ok {
		return k, nil
	}
	m, err := a.src.Member(a.ctx, id)
	if err != nil {
		return nil, fmt.Errorf("%s: member %s: %w", rec, id, err)
	}
	pub, err := ledger.ParsePublicKey(m.PublicKey)
	if err != nil {
		return nil, notAnchored(rec, "signer %s: the ledger's key: %v", id, err)
	}
	if got := ledger.KeyID(pub); got != id {
		return nil, notAnchored(rec, "signer %s: the ledger gives a key whose ID is %s", id, got)
	}
	a.keys[id] = pub
	return pub, nil
}

// txAt returns the tx of hash hexHash in block h, of type typ, checked.
func (a *anchorer) txAt(h uint64, hexHash, typ, rec string) (*ledger.Tx, error) {
	raw, err := hex.DecodeString(hexHash)
	if err != nil || len(raw) != 32 {
		return nil, notAnchored(rec, "the ledger gives tx hash %q, not 64 hex characters", hexHash)
	}
	want := [32]byte(raw)
	b, err := a.block(h, rec)
	if err != nil {
		return nil, err
	}
	for _, tx := range b.txs {
		if tx.Hash != want {
			continue
		}
		if tx.Body.TxType() != typ {
			return nil, notAnchored(rec, "its tx %.16s at height %d is a %s, not a %s", hexHash, h, tx.Body.TxType(), typ)
		}
		return tx, a.use(tx, h, rec)
	}
	return nil, notAnchored(rec, "its tx %.16s is not in block %d", hexHash, h)
}

// find returns the tx of type typ in block h for which match holds, checked.
func (a *anchorer) find(h uint64, typ, rec string, match func(ledger.TxBody) bool) (*ledger.Tx, error) {
	b, err := a.block(h, rec)
	if err != nil {
		return nil, err
	}
	for _, tx := range b.txs {
		if tx.Body.TxType() == typ && match(tx.Body) {
			return tx, a.use(tx, h, rec)
		}
	}
	return nil, notAnchored(rec, "block %d holds no %s tx of it", h, typ)
}

// field is one compared value: what the ledger's answer says and what the
// tx says.
type field struct {
	name       string
	claim, got any
}

func sameValue(x, y any) bool {
	if m, ok := x.(map[string]string); ok {
		n, ok := y.(map[string]string)
		return ok && maps.Equal(m, n)
	}
	if m, ok := x.([]string); ok {
		n, ok := y.([]string)
		return ok && slices.Equal(m, n)
	}
	return x == y
}

func fmtValue(v any) string {
	switch v := v.(type) {
	case string:
		return strconv.Quote(v)
	case float64:
		return strconv.FormatFloat(v, 'g', -1, 64)
	case map[string]string:
		if len(v) == 0 {
			return "{}"
		}
		return "{" + fmtParams(v) + "}"
	}
	return fmt.Sprint(v)
}

// compare returns an error naming the first field in which the ledger's
// answer differs from the tx of type typ at height h.
func compare(rec, typ string, h uint64, fields ...field) error {
	for _, f := range fields {
		if !sameValue(f.claim, f.got) {
			return notAnchored(rec, "ledger says %s %s, its %s tx at height %d says %s", f.name, fmtValue(f.claim), typ, h, fmtValue(f.got))
		}
	}
	return nil
}

func (a *anchorer) lineage(l *ledger.Lineage) (*ledger.Lineage, error) {
	out := &ledger.Lineage{}
	cited := map[string]string{} // dataset digest → the round citing it first
	var order []string
	for _, r := range l.Rounds {
		ar, err := a.round(r)
		if err != nil {
			return nil, err
		}
		for _, c := range ar.Contributors {
			for _, d := range c.Datasets() {
				if _, ok := cited[d]; !ok {
					cited[d] = fmt.Sprintf("round %s/%d", ar.JobID, ar.Round)
					order = append(order, d)
				}
			}
		}
		out.Rounds = append(out.Rounds, ar)
	}
	// The rounds chain from the model back to the base model.
	for i, r := range out.Rounds {
		rec := fmt.Sprintf("round %s/%d", r.JobID, r.Round)
		switch {
		case i == 0 && r.ModelDigest != l.Model.Digest:
			return nil, notAnchored(rec, "it committed %s, not the model %s whose lineage this is", r.ModelDigest, l.Model.Digest)
		case i+1 < len(out.Rounds) && r.BaseModel != out.Rounds[i+1].ModelDigest:
			next := out.Rounds[i+1]
			return nil, notAnchored(rec, "it started from %s, but the lineage's next round, %s/%d, committed %s", r.BaseModel, next.JobID, next.Round, next.ModelDigest)
		case i+1 == len(out.Rounds) && r.BaseModel != l.Base.Digest:
			return nil, notAnchored(rec, "it started from %s, not from the base model %s", r.BaseModel, l.Base.Digest)
		}
	}
	var err error
	if out.Base, err = a.registeredModel(l.Base, "base model "+l.Base.Digest); err != nil {
		return nil, err
	}
	if len(out.Rounds) == 0 {
		if l.Model.Digest != l.Base.Digest {
			return nil, notAnchored("model "+l.Model.Digest, "the lineage has no rounds but its base model is %s", l.Base.Digest)
		}
		out.Model, err = a.registeredModel(l.Model, "model "+l.Model.Digest)
	} else {
		out.Model, err = a.committedModel(l.Model, out.Rounds[0])
	}
	if err != nil {
		return nil, err
	}
	// The datasets are exactly those the contributors cite.
	claimed := map[string]ledger.Dataset{}
	for _, d := range l.Datasets {
		rec := "dataset " + d.Digest
		if _, dup := claimed[d.Digest]; dup {
			return nil, notAnchored(rec, "the ledger lists it twice")
		}
		if _, ok := cited[d.Digest]; !ok {
			return nil, notAnchored(rec, "the ledger lists it, but no contributor's UpdateSubmitted tx cites it")
		}
		claimed[d.Digest] = d
	}
	for _, dg := range order {
		if _, ok := claimed[dg]; !ok {
			return nil, notAnchored("dataset "+dg, "cited in %s, but the ledger's lineage does not list it", cited[dg])
		}
	}
	anchoredAtts := map[string][]ledger.DatasetAttestation{}
	for _, dg := range slices.Sorted(maps.Keys(cited)) {
		d, err := a.dataset(claimed[dg])
		if err != nil {
			return nil, err
		}
		out.Datasets = append(out.Datasets, d)
		anchoredAtts[dg] = d.Attestations
	}
	// A missing attestation is kept only where the round is in the
	// lineage, the dataset is behind it and its anchored attestations do
	// not meet the requirement. (The requirement itself is the job's
	// recipe, which the lineage does not carry: a node that leaves a
	// missing attestation out is not caught here.)
	for _, m := range l.Missing {
		rec := fmt.Sprintf("missing attestation %s of dataset %s in round %s/%d", m.Requirement, m.Dataset, m.JobID, m.Round)
		behind := false
		for _, r := range out.Rounds {
			if r.JobID == m.JobID && r.Round == m.Round && slices.ContainsFunc(r.Contributors, func(c ledger.LineageContribution) bool { return slices.Contains(c.Datasets(), m.Dataset) }) {
				behind = true
			}
		}
		if !behind {
			return nil, notAnchored(rec, "no round of the lineage used that dataset")
		}
		if len(ledger.MissingAttestations([]ledger.AttestationRequirement{m.Requirement}, anchoredAtts[m.Dataset])) == 0 {
			return nil, notAnchored(rec, "the dataset's anchored attestations meet the requirement")
		}
		out.Missing = append(out.Missing, m)
	}
	return out, nil
}

// registeredModel anchors a model registered with ModelRegistered.
func (a *anchorer) registeredModel(m ledger.Model, rec string) (ledger.Model, error) {
	tx, err := a.txAt(m.Height, m.TxHash, ledger.TypeModelRegistered, rec)
	if err != nil {
		return ledger.Model{}, err
	}
	b := tx.Body.(ledger.ModelRegistered)
	out := ledger.Model{Digest: b.Digest, Name: b.Name, Licence: b.Licence, Source: b.Source, Config: b.Config,
		Tokenizer: b.Tokenizer, Registrar: tx.Signer, Height: m.Height, TxHash: m.TxHash}
	return out, compareModel(rec, ledger.TypeModelRegistered, m, out)
}

// committedModel anchors a model committed by the lineage's newest round r
// (already anchored).
func (a *anchorer) committedModel(m ledger.Model, r ledger.LineageRound) (ledger.Model, error) {
	rec := "model " + m.Digest
	tx, err := a.txAt(m.Height, m.TxHash, ledger.TypeRoundCommitted, rec)
	if err != nil {
		return ledger.Model{}, err
	}
	b := tx.Body.(ledger.RoundCommitted)
	if b.JobID != r.JobID || b.Round != r.Round || m.Height != r.CommittedHeight {
		return ledger.Model{}, notAnchored(rec, "its tx at height %d commits round %s/%d, not the lineage's newest round %s/%d (committed at height %d)",
			m.Height, b.JobID, b.Round, r.JobID, r.Round, r.CommittedHeight)
	}
	out := ledger.Model{Digest: b.ModelDigest, Registrar: tx.Signer, Height: m.Height, TxHash: m.TxHash,
		Parent: r.BaseModel, JobID: b.JobID, Round: b.Round}
	return out, compareModel(rec, ledger.TypeRoundCommitted, m, out)
}

func compareModel(rec, typ string, m, out ledger.Model) error {
	return compare(rec, typ, out.Height,
		field{"digest", m.Digest, out.Digest}, field{"name", m.Name, out.Name}, field{"licence", m.Licence, out.Licence},
		field{"source", m.Source, out.Source}, field{"config", m.Config, out.Config}, field{"tokenizer", m.Tokenizer, out.Tokenizer}, field{"registrar", m.Registrar, out.Registrar},
		field{"parent", m.Parent, out.Parent}, field{"job", m.JobID, out.JobID}, field{"round", m.Round, out.Round})
}

// dataset anchors a dataset registration.
func (a *anchorer) dataset(d ledger.Dataset) (ledger.Dataset, error) {
	rec := "dataset " + d.Digest
	if d.Published {
		return a.published(d)
	}
	tx, err := a.txAt(d.Height, d.TxHash, ledger.TypeDatasetRegistered, rec)
	if err != nil {
		return ledger.Dataset{}, err
	}
	b := tx.Body.(ledger.DatasetRegistered)
	out := ledger.Dataset{Digest: b.Digest, Name: b.Name, Licence: b.Licence, Source: b.Source, Samples: b.Samples,
		Root: b.Root, Bytes: b.Bytes, Owner: tx.Signer, Height: d.Height, TxHash: d.TxHash}
	if out.Attestations, err = a.attestations(rec, d); err != nil {
		return ledger.Dataset{}, err
	}
	return out, compare(rec, ledger.TypeDatasetRegistered, d.Height,
		field{"digest", d.Digest, out.Digest}, field{"name", d.Name, out.Name}, field{"licence", d.Licence, out.Licence},
		field{"source", d.Source, out.Source}, field{"samples", d.Samples, out.Samples}, field{"root", d.Root, out.Root},
		field{"bytes", d.Bytes, out.Bytes}, field{"owner", d.Owner, out.Owner})
}

// attestations anchors d's attestations: each must be a DatasetAttested
// tx of this dataset, by that auditor, saying exactly that.
func (a *anchorer) attestations(rec string, d ledger.Dataset) ([]ledger.DatasetAttestation, error) {
	var out []ledger.DatasetAttestation
	for _, at := range d.Attestations {
		arec := fmt.Sprintf("%s: attestation %s by %s", rec, at.Kind, at.Auditor)
		tx, err := a.txAt(at.Height, at.TxHash, ledger.TypeDatasetAttested, arec)
		if err != nil {
			return nil, err
		}
		ab := tx.Body.(ledger.DatasetAttested)
		got := ledger.DatasetAttestation{Dataset: ab.Dataset, Kind: ab.Predicate.Kind, Auditor: tx.Signer, Result: ab.Predicate.Result,
			Tool: ab.Predicate.Tool, Report: ab.Predicate.Report, Height: at.Height, TxHash: at.TxHash}
		if got.Dataset != d.Digest || !reflect.DeepEqual(got, at) {
			return nil, notAnchored(arec, "the ledger says %+v, its DatasetAttested tx at height %d says %+v", at, at.Height, got)
		}
		out = append(out, got)
	}
	return out, nil
}

// published anchors a published dataset: the record is what the signed
// DatasetPublished at its height gives, manifest and all.
func (a *anchorer) published(d ledger.Dataset) (ledger.Dataset, error) {
	rec := "dataset " + d.Digest
	tx, err := a.txAt(d.Height, d.TxHash, ledger.TypeDatasetPublished, rec)
	if err != nil {
		return ledger.Dataset{}, err
	}
	sm, err := tx.Body.(ledger.DatasetPublished).Decode()
	if err != nil {
		return ledger.Dataset{}, fmt.Errorf("%s: its DatasetPublished at height %d: %w", rec, d.Height, err)
	}
	out := ledger.PublishedDataset(sm, tx.Signer, d.Height, d.TxHash)
	if out.Attestations, err = a.attestations(rec, d); err != nil {
		return ledger.Dataset{}, err
	}
	return out, compare(rec, ledger.TypeDatasetPublished, d.Height,
		field{"digest", d.Digest, out.Digest}, field{"name", d.Name, out.Name}, field{"licence", d.Licence, out.Licence},
		field{"samples", d.Samples, out.Samples}, field{"root", d.Root, out.Root}, field{"bytes", d.Bytes, out.Bytes},
		field{"owner", d.Owner, out.Owner}, field{"manifest", d.Manifest, out.Manifest})
}

// anchoredTx is a tx found while scanning a round's blocks.
type anchoredTx struct {
	tx *ledger.Tx
	h  uint64
}

// round anchors a committed round: its RoundOpened at OpenedHeight, its
// RoundCommitted at CommittedHeight, and every UpdateSubmitted and
// UpdateRejected of it in the blocks from the one to the other.
func (a *anchorer) round(r ledger.LineageRound) (ledger.LineageRound, error) {
	rec := fmt.Sprintf("round %s/%d", r.JobID, r.Round)
	if r.CommittedHeight < r.OpenedHeight {
		return r, notAnchored(rec, "the ledger says it was committed at height %d, before it was opened at height %d", r.CommittedHeight, r.OpenedHeight)
	}
	ours := func(job string, n uint64) bool { return job == r.JobID && n == r.Round }
	open, err := a.find(r.OpenedHeight, ledger.TypeRoundOpened, rec, func(b ledger.TxBody) bool {
		o := b.(ledger.RoundOpened)
		return ours(o.JobID, o.Round)
	})
	if err != nil {
		return r, err
	}
	commit, err := a.find(r.CommittedHeight, ledger.TypeRoundCommitted, rec, func(b ledger.TxBody) bool {
		c := b.(ledger.RoundCommitted)
		return ours(c.JobID, c.Round)
	})
	if err != nil {
		return r, err
	}
	ob, cb := open.Body.(ledger.RoundOpened), commit.Body.(ledger.RoundCommitted)
	submitted := map[string]anchoredTx{} // by update digest
	rejected := map[string]anchoredTx{}
	for h := r.OpenedHeight; h <= r.CommittedHeight; h++ {
		b, err := a.block(h, rec)
		if err != nil {
			return r, err
		}
		for _, tx := range b.txs {
			switch body := tx.Body.(type) {
			case ledger.UpdateSubmitted:
				if ours(body.JobID, body.Round) {
					submitted[body.UpdateDigest] = anchoredTx{tx, h}
				}
			case ledger.UpdateRejected:
				if ours(body.JobID, body.Round) {
					rejected[body.UpdateDigest] = anchoredTx{tx, h}
				}
			}
		}
	}
	out := ledger.LineageRound{JobID: ob.JobID, Round: ob.Round, ConfigDigest: ob.ConfigDigest, BaseModel: ob.BaseModel,
		ModelDigest: cb.ModelDigest, Strategy: cb.Strategy, Params: cb.Params, OpenedHeight: r.OpenedHeight,
		CommittedHeight: r.CommittedHeight, Aggregator: commit.Signer}
	if len(out.Params) == 0 {
		out.Params = nil // as the ledger's lineage record decodes it
	}
	ch := r.CommittedHeight
	if err := compare(rec, ledger.TypeRoundOpened, r.OpenedHeight,
		field{"config digest", r.ConfigDigest, out.ConfigDigest}, field{"base model", r.BaseModel, out.BaseModel}); err != nil {
		return r, err
	}
	if err := compare(rec, ledger.TypeRoundCommitted, ch,
		field{"model", r.ModelDigest, out.ModelDigest}, field{"strategy", r.Strategy, out.Strategy},
		field{"params", r.Params, out.Params}, field{"aggregator", r.Aggregator, out.Aggregator}); err != nil {
		return r, err
	}

	for _, c := range cb.Contributors {
		s, ok := submitted[c.UpdateDigest]
		if !ok || s.tx.Signer != c.Trainer {
			return r, notAnchored(rec, "its RoundCommitted tx at height %d lists update %s of trainer %s, which no UpdateSubmitted tx in blocks %d-%d carries",
				ch, c.UpdateDigest, c.Trainer, r.OpenedHeight, ch)
		}
		if err := a.use(s.tx, s.h, rec); err != nil {
			return r, err
		}
		sb := s.tx.Body.(ledger.UpdateSubmitted)
		out.Contributors = append(out.Contributors, ledger.LineageContribution{Trainer: c.Trainer, UpdateDigest: c.UpdateDigest,
			DatasetDigest: sb.DatasetDigest, Samples: sb.Samples, Weight: c.Weight, Published: ledger.RangeDatasets(sb.DatasetDigest, sb.Ranges)})
	}
	if len(r.Contributors) != len(out.Contributors) {
		return r, notAnchored(rec, "ledger lists %d contributors, its RoundCommitted tx at height %d lists %d%s",
			len(r.Contributors), ch, len(out.Contributors), contributorDiff(r.Contributors, out.Contributors))
	}
	for i, c := range r.Contributors {
		w := out.Contributors[i]
		crec := fmt.Sprintf("%s contributor %d", rec, i+1)
		if err := compare(crec, ledger.TypeRoundCommitted, ch,
			field{"trainer", c.Trainer, w.Trainer}, field{"update", c.UpdateDigest, w.UpdateDigest}, field{"weight", c.Weight, w.Weight}); err != nil {
			return r, err
		}
		s := submitted[w.UpdateDigest]
		if err := compare(fmt.Sprintf("%s (trainer %s)", crec, short(w.Trainer)), ledger.TypeUpdateSubmitted, s.h,
			field{"dataset", c.DatasetDigest, w.DatasetDigest}, field{"samples", c.Samples, w.Samples},
			field{"published datasets", c.Published, w.Published}); err != nil {
			return r, err
		}
	}

	// Rejections: exactly those recorded between opening and commit.
	claimed := map[string]ledger.RejectedUpdate{}
	for _, x := range r.Rejected {
		if _, ok := rejected[x.UpdateDigest]; !ok {
			return r, notAnchored(rec, "ledger lists update %s as rejected, but no UpdateRejected tx of it is in blocks %d-%d", x.UpdateDigest, r.OpenedHeight, ch)
		}
		claimed[x.UpdateDigest] = x
	}
	for _, dg := range slices.Sorted(maps.Keys(rejected)) {
		x := rejected[dg]
		s, ok := submitted[dg]
		if !ok {
			return r, notAnchored(rec, "its UpdateRejected tx at height %d rejects update %s, which no UpdateSubmitted tx in blocks %d-%d carries", x.h, dg, r.OpenedHeight, ch)
		}
		reason := x.tx.Body.(ledger.UpdateRejected).Reason
		c, ok := claimed[dg]
		if !ok {
			return r, notAnchored(rec, "ledger omits the rejection of update %s, which its UpdateRejected tx at height %d records (%q)", dg, x.h, reason)
		}
		if err := a.use(x.tx, x.h, rec); err != nil {
			return r, err
		}
		if err := a.use(s.tx, s.h, rec); err != nil {
			return r, err
		}
		w := ledger.RejectedUpdate{Trainer: s.tx.Signer, UpdateDigest: dg, Reason: reason}
		if err := compare(fmt.Sprintf("%s rejected update %s", rec, short(dg)), ledger.TypeUpdateRejected, x.h,
			field{"trainer", c.Trainer, w.Trainer}, field{"reason", c.Reason, w.Reason}); err != nil {
			return r, err
		}
		out.Rejected = append(out.Rejected, w)
	}
	slices.SortFunc(out.Rejected, func(x, y ledger.RejectedUpdate) int { return cmpStr(x.Trainer, y.Trainer) })
	if len(out.Rejected) == len(r.Rejected) {
		// Keep the ledger's order when it is a permutation (it is sorted by trainer).
		for i := range r.Rejected {
			if r.Rejected[i] != out.Rejected[i] {
				return r, notAnchored(rec, "ledger lists its rejected updates out of order")
			}
		}
	}
	if ev := r.Eval; ev != nil {
		tx, err := a.txAt(ev.Height, ev.TxHash, ledger.TypeRoundEvaluated, rec+" evaluation")
		if err != nil {
			return r, err
		}
		b := tx.Body.(ledger.RoundEvaluated)
		got := &ledger.Evaluation{EvalDigest: b.EvalDigest, MeanNLL: b.MeanNLL, Tokens: b.Tokens, Scores: b.Scores,
			Coordinator: tx.Signer, Height: ev.Height, TxHash: ev.TxHash}
		if err := compare(rec+" evaluation", ledger.TypeRoundEvaluated, ev.Height,
			field{"job", r.JobID, b.JobID}, field{"round", r.Round, b.Round}, field{"model", r.ModelDigest, b.ModelDigest},
			field{"eval digest", ev.EvalDigest, got.EvalDigest}, field{"mean NLL", ev.MeanNLL, got.MeanNLL},
			field{"tokens", ev.Tokens, got.Tokens}, field{"scores", fmt.Sprint(ev.Scores), fmt.Sprint(got.Scores)},
			field{"coordinator", ev.Coordinator, got.Coordinator}); err != nil {
			return r, err
		}
		out.Eval = got
	}
	return out, nil
}

// contributorDiff names the trainers one contributor list has and the
// other lacks.
func contributorDiff(claim, got []ledger.LineageContribution) string {
	in := func(l []ledger.LineageContribution, t string) bool {
		return slices.ContainsFunc(l, func(c ledger.LineageContribution) bool { return c.Trainer == t })
	}
	for _, c := range got {
		if !in(claim, c.Trainer) {
			return " (the ledger drops trainer " + c.Trainer + ")"
		}
	}
	for _, c := range claim {
		if !in(got, c.Trainer) {
			return " (the ledger adds trainer " + c.Trainer + ")"
		}
	}
	return ""
}
