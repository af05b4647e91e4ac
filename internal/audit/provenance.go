package audit

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/fedtune/fedtune/internal/digest"
	"github.com/fedtune/fedtune/internal/dsse"
	"github.com/fedtune/fedtune/internal/spdx"
	"github.com/fedtune/fedtune/ledger"
)

// ProvenanceFormats lists the provenance formats WriteProvenance knows.
var ProvenanceFormats = []string{"in-toto", "spdx", "cyclonedx"}

// InTotoPayloadType is the DSSE payload type of an in-toto Statement.
const InTotoPayloadType = "application/vnd.in-toto+json"

// InTotoStatementType is the in-toto Statement v1 _type.
const InTotoStatementType = "https://in-toto.io/Statement/v1"

// ModelSigningPredicateType is the predicate type of the OpenSSF model
// signing format (github.com/sigstore/model-transparency, v1.0).
const ModelSigningPredicateType = "https://model_signing/signature/v1.0"

// ProvenanceBuildType names fedtune's federated round as an SPDX Build type.
const ProvenanceBuildType = "https://github.com/fedtune/fedtune/federated-round/v1"

// ErrProvenance is wrapped by every error about provenance input.
var ErrProvenance = errors.New("audit: provenance")

// Provenance is what the provenance documents are built from: a model's
// lineage as the ledger records it, the chain it was read from and the time
// of the block that recorded the model (the documents' timestamp, so the
// same chain always gives the same bytes).
type Provenance struct {
	Lineage *ledger.Lineage
	// ChainID names the chain the lineage was read from.
	ChainID string
	// Time is the time of the block at Lineage.Model.Height.
	Time time.Time
	// Attestations are statements auditors signed about the lineage's
	// datasets (a DatasetAttested tx); each names a dataset of the lineage.
	Attestations []DatasetAttestation
	// BlockTimes are the times of the blocks the lineage names, by height
	// (Heights lists them): the documents give each model its release
	// time and each round its start and end. Heights missing here are
	// left out of the documents.
	BlockTimes map[uint64]time.Time
}

// Heights lists, ascending and each once, the heights of the blocks whose
// times the documents use: where the models and datasets were recorded and
// where each round opened and committed.
func (p *Provenance) Heights() []uint64 {
	l := p.Lineage
	hs := []uint64{l.Model.Height, l.Base.Height}
	for _, r := range l.Rounds {
		hs = append(hs, r.OpenedHeight, r.CommittedHeight)
	}
	for _, d := range l.Datasets {
		hs = append(hs, d.Height)
		for _, a := range d.Attestations {
			hs = append(hs, a.Height)
		}
	}
	slices.Sort(hs)
	return slices.Compact(hs)
}

// timeAt is the block time at height h in the documents' form, or "".
func (p *Provenance) timeAt(h uint64) string {
	if t, ok := p.BlockTimes[h]; ok && !t.IsZero() {
		return stamp(t)
	}
	return ""
}

// DatasetAttestation is one auditor's signed statement about a dataset, as
// the ledger records it: what was checked (Kind, e.g. "pii-scan"), the
// verdict, and where the tx is. It is the slot for the DatasetAttested tx:
// a caller that reads those txs (from an export or a node) fills
// Provenance.Attestations, and every format carries them (in-toto under
// predicate.fedtune.attestations, SPDX as review Annotations by the
// auditor, CycloneDX as properties of the dataset's component).
type DatasetAttestation struct {
	Dataset string `json:"dataset"`
	Auditor string `json:"auditor"`
	Kind    string `json:"kind"`
	Result  string `json:"result"`
	Detail  string `json:"detail,omitempty"`
	Height  uint64 `json:"height"`
	TxHash  string `json:"tx_hash,omitempty"`
	// Time is the time of the attestation's block (zero: unknown; the
	// documents then use Provenance.Time).
	Time time.Time `json:"time,omitzero"`
}

// attestations returns p.Attestations and the attestations the ledger
// records on the lineage's datasets (ledger.Dataset.Attestations, filled
// from DatasetAttested txs), each tx once: an explicit entry with the same
// TxHash wins. The ledger's come with their block time where BlockTimes
// has it.
func (p *Provenance) attestations() []DatasetAttestation {
	out := slices.Clone(p.Attestations)
	seen := map[string]bool{}
	for _, a := range out {
		if a.TxHash != "" {
			seen[a.TxHash] = true
		}
	}
	for _, d := range p.Lineage.Datasets {
		for _, a := range d.Attestations {
			if a.TxHash != "" && seen[a.TxHash] {
				continue
			}
			seen[a.TxHash] = true
			out = append(out, FromLedgerAttestation(a, p.BlockTimes[a.Height]))
		}
	}
	return out
}

// FromLedgerAttestation converts an attestation as the ledger records it
// into the documents' form: Result "pass" or "fail"; Detail the counts,
// the tool (name and executable digest) and the report's digest; t the
// time of its block (zero: unknown).
func FromLedgerAttestation(a ledger.DatasetAttestation, t time.Time) DatasetAttestation {
	res := "fail"
	if a.Result.Pass {
		res = "pass"
	}
	detail := fmt.Sprintf("%d samples, %d findings", a.Result.Samples, a.Result.Findings)
	for _, k := range slices.Sorted(maps.Keys(a.Result.Counts)) {
		detail += fmt.Sprintf(", %s %d", k, a.Result.Counts[k])
	}
	detail += fmt.Sprintf("; tool %s sha256:%s; report sha256:%s", a.Tool.Name, a.Tool.Digest, a.Report)
	return DatasetAttestation{Dataset: a.Dataset, Auditor: a.Auditor, Kind: a.Kind, Result: res, Detail: detail,
		Height: a.Height, TxHash: a.TxHash, Time: t}
}

// check says what is missing or malformed in p.
func (p *Provenance) check() error {
	if p == nil || p.Lineage == nil {
		return fmt.Errorf("%w: no lineage", ErrProvenance)
	}
	l := p.Lineage
	if err := digest.Check("model digest", l.Model.Digest); err != nil {
		return fmt.Errorf("%w: %v", ErrProvenance, err)
	}
	if err := digest.Check("base model digest", l.Base.Digest); err != nil {
		return fmt.Errorf("%w: %v", ErrProvenance, err)
	}
	if p.Time.IsZero() {
		return fmt.Errorf("%w: no block time for model %s", ErrProvenance, l.Model.Digest)
	}
	known := map[string]bool{}
	for _, d := range l.Datasets {
		known[d.Digest] = true
	}
	for i, a := range p.attestations() {
		if !known[a.Dataset] {
			return fmt.Errorf("%w: attestation %d names dataset %q, which is not in the lineage", ErrProvenance, i, a.Dataset)
		}
	}
	for i, r := range l.Rounds {
		for _, c := range r.Contributors {
			if err := digest.Check(fmt.Sprintf("round[%d] update of %s", i, c.Trainer), c.UpdateDigest); err != nil {
				return fmt.Errorf("%w: %v", ErrProvenance, err)
			}
		}
	}
	return nil
}

// modelName is a model's registered name, or "model-<digest prefix>".
func modelName(m ledger.Model) string {
	if m.Name != "" {
		return m.Name
	}
	return "model-" + short(m.Digest)
}

// stamp is t in the documents' form: UTC, whole seconds.
func stamp(t time.Time) string { return t.UTC().Truncate(time.Second).Format("2006-01-02T15:04:05Z") }

// modelFile is one file of a model with its SHA-256.
type modelFile struct {
	Name   string
	SHA256 string
}

// modelFiles lists m's files, sorted by name: for an imported model the
// files it was imported from, else the canonical safetensors (whose SHA-256
// is the weight digest) and its config.json when the ledger knows it.
func modelFiles(m ledger.Model) []modelFile {
	var fs []modelFile
	if len(m.Sources) > 0 {
		for _, s := range m.Sources {
			fs = append(fs, modelFile{s.Path, s.SHA256})
		}
	} else {
		fs = append(fs, modelFile{"model.safetensors", m.Digest})
		if m.Config != "" {
			fs = append(fs, modelFile{"config.json", m.Config})
		}
	}
	slices.SortFunc(fs, func(a, b modelFile) int { return strings.Compare(a.Name, b.Name) })
	return fs
}

// WriteProvenance writes p in format (one of ProvenanceFormats). The
// in-toto Statement is signed with key in a DSSE envelope; key is required
// for it and unused by the others.
func WriteProvenance(w io.Writer, p *Provenance, format string, key ed25519.PrivateKey) error {
	var out []byte
	var err error
	switch format {
	case "in-toto":
		if len(key) != ed25519.PrivateKeySize {
			return fmt.Errorf("%w: the in-toto statement is DSSE-signed: give the auditor's key", ErrProvenance)
		}
		var st []byte
		if st, err = InTotoStatement(p); err == nil {
			out = append(SignStatement(key, st), '\n')
		}
	case "spdx":
		out, err = SPDXDocument(p)
	case "cyclonedx":
		out, err = CycloneDXBOM(p)
	default:
		return fmt.Errorf("%w: unknown format %q (want one of %s)", ErrProvenance, format, strings.Join(ProvenanceFormats, ", "))
	}
	if err != nil {
		return err
	}
	_, err = w.Write(out)
	return err
}

// SignStatement wraps an in-toto Statement in a DSSE envelope signed by key
// (payload type application/vnd.in-toto+json).
func SignStatement(key ed25519.PrivateKey, statement []byte) []byte {
	return dsse.Sign(key, InTotoPayloadType, statement).Encode()
}

// marshalDoc is indented JSON with a trailing newline; struct field order
// and sorted map keys make it deterministic.
func marshalDoc(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("%w: encode: %v", ErrProvenance, err)
	}
	return b.Bytes(), nil
}

// --- in-toto --------------------------------------------------------------

type inTotoStatement struct {
	Type          string             `json:"_type"`
	Subject       []inTotoDescriptor `json:"subject"`
	PredicateType string             `json:"predicateType"`
	Predicate     modelSigningPred   `json:"predicate"`
}

type inTotoDescriptor struct {
	Name   string            `json:"name"`
	Digest map[string]string `json:"digest"`
}

type modelSigningPred struct {
	Serialization msSerialization `json:"serialization"`
	Resources     []msResource    `json:"resources"`
	// Fedtune is fedtune's lineage of the model; model-signing v1.0
	// verifiers ignore fields they do not know.
	Fedtune fedtuneLineage `json:"fedtune"`
}

type msSerialization struct {
	Method        string `json:"method"`
	HashType      string `json:"hash_type"`
	AllowSymlinks bool   `json:"allow_symlinks"`
}

type msResource struct {
	Algorithm string `json:"algorithm"`
	Digest    string `json:"digest"`
	Name      string `json:"name"`
}

type fedtuneLineage struct {
	ChainID string `json:"chain_id"`
	// Time is the time of the block that recorded the model.
	Time         string               `json:"time"`
	Model        fedtuneModel         `json:"model"`
	Base         fedtuneModel         `json:"base_model"`
	Rounds       []fedtuneRound       `json:"rounds"`
	Datasets     []fedtuneDataset     `json:"datasets"`
	Attestations []DatasetAttestation `json:"attestations"`
}

type fedtuneModel struct {
	Digest  string `json:"digest"`
	Name    string `json:"name,omitempty"`
	Licence string `json:"licence,omitempty"`
	Source  string `json:"source,omitempty"`
	Height  uint64 `json:"height"`
	TxHash  string `json:"tx_hash,omitempty"`
}

type fedtuneRound struct {
	JobID           string               `json:"job_id"`
	Round           uint64               `json:"round"`
	ConfigDigest    string               `json:"config_digest"`
	BaseModel       string               `json:"base_model"`
	ModelDigest     string               `json:"model_digest"`
	Strategy        string               `json:"strategy"`
	Params          map[string]string    `json:"params,omitempty"`
	OpenedHeight    uint64               `json:"opened_height"`
	CommittedHeight uint64               `json:"committed_height"`
	OpenedTime      string               `json:"opened_time,omitempty"`
	CommittedTime   string               `json:"committed_time,omitempty"`
	Aggregator      string               `json:"aggregator"`
	Contributors    []fedtuneContributor `json:"contributors"`
	Rejected        []fedtuneRejected    `json:"rejected,omitempty"`
}

type fedtuneContributor struct {
	Trainer       string  `json:"trainer"`
	UpdateDigest  string  `json:"update_digest"`
	DatasetDigest string  `json:"dataset_digest"`
	Samples       uint64  `json:"samples"`
	Weight        float64 `json:"weight"`
	// Published are the published datasets the update also trained on
	// by its ranges, besides DatasetDigest.
	Published []string `json:"published_datasets,omitempty"`
}

type fedtuneRejected struct {
	Trainer      string `json:"trainer"`
	UpdateDigest string `json:"update_digest"`
	Reason       string `json:"reason"`
}

type fedtuneDataset struct {
	Digest  string `json:"digest"`
	Name    string `json:"name"`
	Licence string `json:"licence"`
	Source  string `json:"source,omitempty"`
	Samples uint64 `json:"samples"`
	Root    string `json:"root,omitempty"`
	Bytes   uint64 `json:"bytes"`
	Owner   string `json:"owner"`
	Height  uint64 `json:"height"`
	// Obligations is what the licence asks of its user (internal/spdx),
	// one entry per licence ID of the expression that asks anything.
	Obligations []string `json:"obligations,omitempty"`
	// Published datasets (DatasetPublished): the manifest's digest is
	// Digest (the SHA-256 of the signed manifest envelope); Shards the
	// shards' digests in sample order; Card the dataset card's digest.
	Published bool     `json:"published,omitempty"`
	Format    string   `json:"format,omitempty"`
	Card      string   `json:"card,omitempty"`
	Shards    []string `json:"shards,omitempty"`
}

func toFedtuneModel(m ledger.Model) fedtuneModel {
	return fedtuneModel{Digest: m.Digest, Name: m.Name, Licence: m.Licence, Source: m.Source, Height: m.Height, TxHash: m.TxHash}
}

// rounds returns the lineage's rounds oldest first, contributors by
// trainer ID.
func oldestFirst(l *ledger.Lineage) []ledger.LineageRound {
	rs := slices.Clone(l.Rounds)
	slices.Reverse(rs)
	for i := range rs {
		rs[i].Contributors = slices.Clone(rs[i].Contributors)
		slices.SortFunc(rs[i].Contributors, func(a, b ledger.LineageContribution) int { return strings.Compare(a.Trainer, b.Trainer) })
		rs[i].Rejected = slices.Clone(rs[i].Rejected)
		slices.SortFunc(rs[i].Rejected, func(a, b ledger.RejectedUpdate) int {
			return strings.Compare(a.Trainer+"/"+a.UpdateDigest, b.Trainer+"/"+b.UpdateDigest)
		})
	}
	return rs
}

// sortedDatasets is the lineage's datasets by digest, each once.
func sortedDatasets(l *ledger.Lineage) []ledger.Dataset {
	ds := slices.Clone(l.Datasets)
	slices.SortFunc(ds, func(a, b ledger.Dataset) int { return strings.Compare(a.Digest, b.Digest) })
	return slices.CompactFunc(ds, func(a, b ledger.Dataset) bool { return a.Digest == b.Digest })
}

func sortedAttestations(as []DatasetAttestation) []DatasetAttestation {
	out := slices.Clone(as)
	slices.SortFunc(out, func(a, b DatasetAttestation) int {
		if a.Height != b.Height {
			if a.Height < b.Height {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Dataset+a.Auditor+a.Kind+a.TxHash, b.Dataset+b.Auditor+b.Kind+b.TxHash)
	})
	if out == nil {
		out = []DatasetAttestation{}
	}
	return out
}

func lineageRecord(p *Provenance) fedtuneLineage {
	l := p.Lineage
	out := fedtuneLineage{ChainID: p.ChainID, Time: stamp(p.Time), Model: toFedtuneModel(l.Model), Base: toFedtuneModel(l.Base),
		Rounds: []fedtuneRound{}, Datasets: []fedtuneDataset{}, Attestations: sortedAttestations(p.attestations())}
	for _, r := range oldestFirst(l) {
		fr := fedtuneRound{JobID: r.JobID, Round: r.Round, ConfigDigest: r.ConfigDigest, BaseModel: r.BaseModel,
			ModelDigest: r.ModelDigest, Strategy: r.Strategy, Params: r.Params, OpenedHeight: r.OpenedHeight,
			CommittedHeight: r.CommittedHeight, OpenedTime: p.timeAt(r.OpenedHeight), CommittedTime: p.timeAt(r.CommittedHeight),
			Aggregator: r.Aggregator, Contributors: []fedtuneContributor{}}
		for _, c := range r.Contributors {
			fr.Contributors = append(fr.Contributors, fedtuneContributor{Trainer: c.Trainer, UpdateDigest: c.UpdateDigest,
				DatasetDigest: c.DatasetDigest, Samples: c.Samples, Weight: c.Weight, Published: c.Published})
		}
		for _, x := range r.Rejected {
			fr.Rejected = append(fr.Rejected, fedtuneRejected(x))
		}
		out.Rounds = append(out.Rounds, fr)
	}
	for _, d := range sortedDatasets(l) {
		out.Datasets = append(out.Datasets, fedtuneDataset{Digest: d.Digest, Name: d.Name, Licence: d.Licence, Source: d.Source,
			Samples: d.Samples, Root: d.Root, Bytes: d.Bytes, Owner: d.Owner, Height: d.Height, Obligations: licenceObligations(d.Licence),
			Published: d.Published, Format: d.Format, Card: d.Card, Shards: shardDigests(d)})
	}
	return out
}

// InTotoStatement returns the in-toto Statement v1 about p's model in the
// OpenSSF model signing v1.0 shape: one subject, the model, whose sha256 is
// the SHA-256 over the raw digests of its files in name order; the files
// in predicate.resources; the serialization method "files". The predicate
// also carries the model's ledger lineage under "fedtune" (rounds,
// contributors, datasets, licences, attestations), which model-signing
// verifiers ignore.
func InTotoStatement(p *Provenance) ([]byte, error) {
	if err := p.check(); err != nil {
		return nil, err
	}
	m := p.Lineage.Model
	files := modelFiles(m)
	var cat []byte
	res := make([]msResource, 0, len(files))
	for _, f := range files {
		raw, err := hex.DecodeString(f.SHA256)
		if err != nil || len(raw) != 32 {
			return nil, fmt.Errorf("%w: file %s of model %s has SHA-256 %q, not 64 hex characters", ErrProvenance, f.Name, m.Digest, f.SHA256)
		}
		cat = append(cat, raw...)
		res = append(res, msResource{Algorithm: "sha256", Digest: f.SHA256, Name: f.Name})
	}
	st := inTotoStatement{
		Type:          InTotoStatementType,
		Subject:       []inTotoDescriptor{{Name: modelName(m), Digest: map[string]string{"sha256": digest.Bytes(cat)}}},
		PredicateType: ModelSigningPredicateType,
		Predicate: modelSigningPred{
			Serialization: msSerialization{Method: "files", HashType: "sha256", AllowSymlinks: false},
			Resources:     res,
			Fedtune:       lineageRecord(p),
		},
	}
	return marshalDoc(st)
}

// --- licences ---------------------------------------------------------------

// spdxExpr matches what passes as an SPDX licence expression here: IDs and
// LicenseRef-s joined by AND, OR and WITH, with parentheses.
var spdxExpr = regexp.MustCompile(`^\(*[A-Za-z0-9][A-Za-z0-9.+-]*\)*( (AND|OR|WITH) \(*[A-Za-z0-9][A-Za-z0-9.+-]*\)*)*$`)

var notRefChar = regexp.MustCompile(`[^A-Za-z0-9.-]+`)

// balanced reports whether s's parentheses pair up.
func balanced(s string) bool {
	depth := 0
	for _, r := range s {
		switch r {
		case '(':
			depth++
		case ')':
			if depth--; depth < 0 {
				return false
			}
		}
	}
	return depth == 0
}

// licenceExpr turns a recorded licence into an SPDX licence expression:
// as recorded when it reads as one, NOASSERTION when empty, else a
// LicenseRef- made from it.
func licenceExpr(l string) string {
	switch {
	case l == "":
		return "NOASSERTION"
	case spdxExpr.MatchString(l) && balanced(l):
		return l
	}
	return "LicenseRef-" + strings.Trim(notRefChar.ReplaceAllString(l, "-"), "-")
}

// licenceObligations lists, "ID: obligation", what each licence of the
// SPDX expression l asks of its user, per fedtune's licence table; an ID
// the table does not know says so.
func licenceObligations(l string) []string {
	if l == "" || spdx.Validate(l) != nil {
		return nil
	}
	var out []string
	for _, id := range spdx.IDs(l) {
		t, ok := spdx.Lookup(id)
		if !ok {
			out = append(out, id+": not in fedtune's licence table: read the licence itself")
			continue
		}
		for _, o := range t.Obligations() {
			out = append(out, id+": "+o)
		}
	}
	return out
}

// shardDigests is a published dataset's shard digests in manifest order.
func shardDigests(d ledger.Dataset) []string {
	var out []string
	for _, s := range d.Shards {
		out = append(out, s.Digest)
	}
	return out
}

// ProvenanceFromExport verifies the chain in e (as Lineage does) and
// returns what the provenance documents of model are built from: its
// lineage, the chain ID of the genesis, and the time of the block that
// recorded the model.
func ProvenanceFromExport(ctx context.Context, e *Export, model string) (*Provenance, error) {
	l, err := Lineage(ctx, e, model)
	if err != nil {
		return nil, err
	}
	g, err := ledger.ParseGenesis("export genesis", e.Genesis)
	if err != nil {
		return nil, err
	}
	h := l.Model.Height
	if h >= uint64(len(e.Blocks)) {
		return nil, fmt.Errorf("%w: model %s was recorded at height %d, past the export's last block %d", ErrProvenance, model, h, len(e.Blocks)-1)
	}
	p := &Provenance{Lineage: l, ChainID: g.ChainID, BlockTimes: map[uint64]time.Time{}}
	for _, h := range p.Heights() {
		if h >= uint64(len(e.Blocks)) {
			return nil, fmt.Errorf("%w: the lineage names height %d, past the export's last block %d", ErrProvenance, h, len(e.Blocks)-1)
		}
		b, err := ledger.DecodeBlock(e.Blocks[h])
		if err != nil {
			return nil, fmt.Errorf("%w: block %d: %v", ErrProvenance, h, err)
		}
		p.BlockTimes[h] = time.Unix(0, b.Header.Time).UTC()
	}
	p.Time = p.BlockTimes[l.Model.Height]
	return p, nil
}

// ProvenanceFromNode returns what the provenance documents of l's model
// are built from when l was read from a node: l, chainID, and the times of
// the blocks l names (models, rounds, datasets and their attestations),
// each block read through src with at least quorum node cosignatures
// (0: none demanded).
func ProvenanceFromNode(ctx context.Context, src BlockSource, l *ledger.Lineage, chainID string, quorum int) (*Provenance, error) {
	p := &Provenance{Lineage: l, ChainID: chainID, BlockTimes: map[uint64]time.Time{}}
	for _, h := range p.Heights() {
		vb, err := src.Block(ctx, h, quorum, chainID)
		if err != nil {
			return nil, fmt.Errorf("block %d: %w", h, err)
		}
		p.BlockTimes[h] = time.Unix(0, vb.Block.Header.Time).UTC()
	}
	p.Time = p.BlockTimes[l.Model.Height]
	return p, nil
}
