package fsm

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"sort"

	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/internal/codec"
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
//	a/ds/<digest>                Dataset (JSON), registered or published
//	a/dn/<name>                  digest of the published dataset of that name
//	a/db/<blob digest>           digest of the published dataset holding that shard, leaves or card
//	a/da/<dataset>/<kind>/<auditor>  DatasetAttestation (JSON), the latest
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
	prefixAttest    = "a/da/"
	prefixJob       = "a/j/"
	prefixJobRecord = "a/jr/"
	prefixRound     = "a/r/"
	prefixUpdate    = "a/u/"
	prefixUpdateDig = "a/ud/"
	prefixLineage   = "a/l/"
	prefixSegment   = "a/ls/"
	prefixChild     = "a/lc/"
	prefixSuspended = "a/vs/"
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

// attestPrefix is the prefix of a dataset's attestations; attestKey one
// auditor's latest of one kind.
func attestPrefix(dataset string) []byte { return []byte(prefixAttest + dataset + "/") }
func attestKey(dataset, kind, auditor string) []byte {
	return []byte(prefixAttest + dataset + "/" + kind + "/" + auditor)
}
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

// suspendedKey holds the last round of job that may not select trainer
// (a verifier rejected it), as 8 bytes big-endian.
func suspendedKey(job, trainer string) []byte {
	return []byte(prefixSuspended + job + "\x00" + trainer)
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
	w := codec.Writer{B: make([]byte, 0, headEncodingLen)}
	w.U64(h.Height)
	w.Hash(h.Hash)
	w.Hash(h.StateHash)
	w.I64(h.Time)
	w.U64(h.Applied)
	return w.B
}

func decodeHead(b []byte) (head, error) {
	r := codec.NewReader(b)
	h := head{Height: r.U64(), Hash: r.Hash(), StateHash: r.Hash(), Time: r.I64(), Applied: r.U64()}
	return h, r.Done()
}

// describe says where model m comes from, for a rejection's reason: the
// round that committed it, or the coordinator that registered it.
func describeModel(m *ledger.Model) string {
	if m.JobID != "" {
		return fmt.Sprintf("committed by round %d of job %q at height %d", m.Round, m.JobID, m.Height)
	}
	return fmt.Sprintf("registered by %s at height %d", m.Registrar, m.Height)
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
	var w codec.Writer
	w.Uvarint(uint64(len(keys)))
	for _, k := range keys {
		w.Str(k)
		v := ws[k]
		if v == nil {
			w.U8(0)
			continue
		}
		w.U8(1)
		w.Bytes(v)
	}
	return w.B
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
