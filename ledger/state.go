package ledger

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"sort"
	"time"
)

// State layout inside the FSM's pebblestore.State range. Keys under "a/" are
// the application state: every write to them is part of a block's write set
// and so of its state hash. Keys under "c/" are the chain itself (blocks, tx
// index, head), derived from the blocks and outside the state hash.
//
//	a/g                          genesis, canonical JSON
//	a/m/<member ID>              Member (JSON)
//	a/n/<member ID>              last applied nonce, u64 big-endian
//	a/md/<digest>                Model (JSON)
//	a/ds/<digest>                Dataset (JSON)
//	a/j/<job ID>                 highest round number opened, u64
//	a/jr/<job ID>                JobRecord (JSON): owner and RoundRecipe
//	a/r/<job ID>\x00<round u64>  Round (JSON, without Updates)
//	a/u/<job ID>\x00<round u64><trainer ID>  Update (JSON)
//	a/ud/<job ID>\x00<round u64><update digest>  trainer ID that submitted it
//	a/l/<model digest>           where a committed model's lineage link is: segment ‖ depth
//	a/ls/<segment>/<depth u64>   lineage link (binary), see lineage.go
//	a/lc/<model digest>          present once a committed model has a first child
//	c/b/<height u64>             EncodeBlock
//	c/t/<tx hash [32]>           height u64 ‖ index u32
//	c/head                       head (see encodeHead)
//	c/ux/<update digest><job ID>\x00<round u64>  trainer ID: the a/ud/ index
//	                             by digest first (UpdatesByDigest)
//	c/uxv                        present once c/ux/ covers every a/ud/ key
//
// The c/ux/ keys are written beside every a/ud/ write (execCtx.apply), in
// the same batch, but are not part of the write set: the state hash does
// not cover them, as it does not cover the tx index. They are a function
// of the a/ud/ state; VerifyChain re-derives and compares them, and an
// FSM opened on (or restored from) a state without c/uxv rebuilds them
// from a/ud/ first (ensureUpdateIndex).
const (
	keyGenesis      = "a/g"
	prefixApp       = "a/"
	prefixMember    = "a/m/"
	prefixNonce     = "a/n/"
	prefixModel     = "a/md/"
	prefixDataset   = "a/ds/"
	prefixJob       = "a/j/"
	prefixJobRecord = "a/jr/"
	prefixRound     = "a/r/"
	prefixUpdate    = "a/u/"
	prefixUpdateDig = "a/ud/"
	prefixLineage   = "a/l/"
	prefixSegment   = "a/ls/"
	prefixChild     = "a/lc/"
	prefixBlock     = "c/b/"
	prefixTxIndex   = "c/t/"
	keyHead         = "c/head"
	prefixUpdateIdx = "c/ux/"
	keyUpdateIdxVer = "c/uxv"
	headEncodingLen = 8 + 32 + 32 + 8 + 8
)

func memberKey(id string) []byte      { return []byte(prefixMember + id) }
func nonceKey(id string) []byte       { return []byte(prefixNonce + id) }
func modelKey(digest string) []byte   { return []byte(prefixModel + digest) }
func datasetKey(digest string) []byte { return []byte(prefixDataset + digest) }
func jobKey(job string) []byte        { return []byte(prefixJob + job) }
func lineageKey(digest string) []byte { return []byte(prefixLineage + digest) }
func childKey(digest string) []byte   { return []byte(prefixChild + digest) }
func segmentPrefix(seg string) []byte { return []byte(prefixSegment + seg + "/") }
func segmentKey(seg string, depth uint64) []byte {
	return binary.BigEndian.AppendUint64(segmentPrefix(seg), depth)
}

func roundSuffix(job string, n uint64) []byte {
	b := make([]byte, 0, len(job)+9)
	b = append(b, job...)
	b = append(b, 0)
	return binary.BigEndian.AppendUint64(b, n)
}

func roundKey(job string, n uint64) []byte {
	return append([]byte(prefixRound), roundSuffix(job, n)...)
}

func updatePrefix(job string, n uint64) []byte {
	return append([]byte(prefixUpdate), roundSuffix(job, n)...)
}

func updateKey(job string, n uint64, trainer string) []byte {
	return append(updatePrefix(job, n), trainer...)
}

func updateDigestKey(job string, n uint64, digest string) []byte {
	return append(append([]byte(prefixUpdateDig), roundSuffix(job, n)...), digest...)
}

// updateIndexKey is the c/ux/ key of an update digest submitted to a round.
func updateIndexKey(digest, job string, n uint64) []byte {
	return append([]byte(prefixUpdateIdx+digest), roundSuffix(job, n)...)
}

// updateIndexKeyOf returns the c/ux/ key that mirrors an a/ud/ key, or nil
// when k is no such key.
func updateIndexKeyOf(k []byte) []byte {
	if len(k) < len(prefixUpdateDig)+9+64 || string(k[:len(prefixUpdateDig)]) != prefixUpdateDig {
		return nil
	}
	rest := k[len(prefixUpdateDig):]
	suffix, digest := rest[:len(rest)-64], rest[len(rest)-64:] // job ‖ 0 ‖ round, digest
	return append(append([]byte(prefixUpdateIdx), digest...), suffix...)
}

func blockKey(h uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte(prefixBlock), h)
}

func txIndexKey(h [32]byte) []byte { return append([]byte(prefixTxIndex), h[:]...) }

func u64Bytes(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func parseU64(b []byte) (uint64, error) {
	if len(b) != 8 {
		return 0, fmt.Errorf("want 8 bytes, got %d", len(b))
	}
	return binary.BigEndian.Uint64(b), nil
}

// head is the chain's tip as the FSM keeps it.
type head struct {
	Height    uint64
	Hash      [32]byte
	StateHash [32]byte
	Time      int64
	Applied   uint64 // last raft log index applied
}

func encodeHead(h head) []byte {
	w := writer{b: make([]byte, 0, headEncodingLen)}
	w.u64(h.Height)
	w.hash(h.Hash)
	w.hash(h.StateHash)
	w.i64(h.Time)
	w.u64(h.Applied)
	return w.b
}

func decodeHead(b []byte) (head, error) {
	r := reader{b: b}
	h := head{Height: r.u64(), Hash: r.hash(), StateHash: r.hash(), Time: r.i64(), Applied: r.u64()}
	return h, r.done()
}

// Member is a member of the ledger as its state records it.
type Member struct {
	ID        string `json:"id"`
	PublicKey string `json:"public_key"` // 64 hex
	Role      Role   `json:"role"`
	Name      string `json:"name,omitempty"`
	Active    bool   `json:"active"`
	// AddedHeight is the height of the block that last added the member (0 =
	// genesis); RemovedHeight that of its removal while not Active.
	AddedHeight   uint64 `json:"added_height"`
	RemovedHeight uint64 `json:"removed_height,omitempty"`
	RemovedReason string `json:"removed_reason,omitempty"`
}

// Model is a model known to the ledger: registered as a base model, or the
// product of a committed round (then Parent, JobID and Round are set).
type Model struct {
	Digest  string `json:"digest"`
	Name    string `json:"name,omitempty"`
	Licence string `json:"licence,omitempty"`
	Source  string `json:"source,omitempty"`
	Config  string `json:"config,omitempty"`
	// Registrar is the coordinator that registered it, or the aggregator
	// that committed it.
	Registrar string `json:"registrar"`
	Height    uint64 `json:"height"`
	TxHash    string `json:"tx_hash"`
	Parent    string `json:"parent,omitempty"` // base model of the round that produced it
	JobID     string `json:"job_id,omitempty"`
	Round     uint64 `json:"round,omitempty"`
}

// describe says where model m comes from, for a rejection's reason: the
// round that committed it, or the coordinator that registered it.
func (m *Model) describe() string {
	if m.JobID != "" {
		return fmt.Sprintf("committed by round %d of job %q at height %d", m.Round, m.JobID, m.Height)
	}
	return fmt.Sprintf("registered by %s at height %d", m.Registrar, m.Height)
}

// Dataset is a registered dataset manifest.
type Dataset struct {
	Digest  string `json:"digest"`
	Name    string `json:"name"`
	Licence string `json:"licence"`
	Source  string `json:"source"`
	Samples uint64 `json:"samples"`
	Root    string `json:"root"`  // the manifest's Merkle root over the sorted sample hashes (hex)
	Bytes   uint64 `json:"bytes"` // total bytes of the hashed sample texts
	Owner   string `json:"owner"` // the trainer that registered it
	Height  uint64 `json:"height"`
	TxHash  string `json:"tx_hash"`
}

// RoundStatus is where a round is in its life.
type RoundStatus string

// The round statuses: open until committed or failed, then final.
const (
	StatusOpen      RoundStatus = "open"
	StatusCommitted RoundStatus = "committed"
	StatusFailed    RoundStatus = "failed"
)

// Round is a round as the ledger records it.
type Round struct {
	JobID        string      `json:"job_id"`
	Round        uint64      `json:"round"`
	ConfigDigest string      `json:"config_digest"`
	BaseModel    string      `json:"base_model"`
	Strategy     string      `json:"strategy"`
	Trainers     []string    `json:"trainers"`
	Deadline     time.Time   `json:"deadline"`
	Status       RoundStatus `json:"status"`
	Coordinator  string      `json:"coordinator"`
	OpenedHeight uint64      `json:"opened_height"`
	// Set when the round closes.
	ClosedHeight uint64 `json:"closed_height,omitempty"`
	Aggregator   string `json:"aggregator,omitempty"`
	// Set when committed.
	ModelDigest       string            `json:"model_digest,omitempty"`
	CommittedStrategy string            `json:"committed_strategy,omitempty"`
	Params            map[string]string `json:"params,omitempty"`
	Contributors      []Contribution    `json:"contributors,omitempty"`
	// Set when failed.
	FailReason string `json:"fail_reason,omitempty"`

	// Updates lists the round's submitted updates, ordered by trainer ID.
	// Filled by FSM.Round; not stored in the round's record.
	Updates []Update `json:"updates,omitempty"`
}

// Update is one submitted update of a round.
type Update struct {
	Trainer       string             `json:"trainer"`
	UpdateDigest  string             `json:"update_digest"`
	DatasetDigest string             `json:"dataset_digest"`
	Samples       uint64             `json:"samples"`
	Metrics       map[string]float64 `json:"metrics,omitempty"`
	Height        uint64             `json:"height"`
	TxHash        string             `json:"tx_hash"`
	Rejected      bool               `json:"rejected,omitempty"`
	RejectReason  string             `json:"reject_reason,omitempty"`
	RejectedBy    string             `json:"rejected_by,omitempty"`
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("ledger: encode %T: %v", v, err))
	}
	return b
}

// writeSet collects a block's application-state writes.
type writeSet map[string][]byte // nil value = deleted

// encodeWriteSet returns the write set in key order:
//
//	uvarint n ‖ n × (uvarint len(key) ‖ key ‖ op u8 (1 set, 0 delete) ‖ [uvarint len(val) ‖ val])
func encodeWriteSet(ws writeSet) []byte {
	keys := make([]string, 0, len(ws))
	for k := range ws {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var w writer
	w.uvarint(uint64(len(keys)))
	for _, k := range keys {
		w.str(k)
		v := ws[k]
		if v == nil {
			w.u8(0)
			continue
		}
		w.u8(1)
		w.bytes(v)
	}
	return w.b
}

func getJSON(st getter, key []byte, v any) (bool, error) {
	raw, ok, err := st.Get(key)
	if err != nil || !ok {
		return false, err
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return false, fmt.Errorf("ledger: decode %q: %w", key, err)
	}
	return true, nil
}
