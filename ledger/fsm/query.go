package fsm

import (
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"

	fdigest "github.com/fedtune/fedtune/internal/digest"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/internal/codec"
)

// Block returns the block at height h (0 = genesis). It wraps
// ErrRecordNotFound above the head.
func (f *FSM) Block(h uint64) (*ledger.Block, error) {
	return readBlock(f.st, h)
}

func readBlock(st getter, h uint64) (*ledger.Block, error) {
	raw, ok, err := st.Get(blockKey(h))
	if err != nil {
		return nil, fmt.Errorf("ledger: read block %d: %w", h, err)
	}
	if !ok {
		return nil, fmt.Errorf("block %d: %w", h, ledger.ErrRecordNotFound)
	}
	b, err := ledger.DecodeBlock(raw)
	if err != nil {
		return nil, fmt.Errorf("ledger: stored block %d: %w", h, err)
	}
	return b, nil
}

// Tx returns the transaction with the given hash, where it is and its
// Merkle inclusion proof. It wraps ErrRecordNotFound for a tx not on the
// chain (rejected or never seen).
func (f *FSM) Tx(hash [32]byte) (*ledger.TxRecord, error) {
	raw, ok, err := f.st.Get(txIndexKey(hash))
	if err != nil {
		return nil, fmt.Errorf("ledger: read tx index: %w", err)
	}
	if !ok {
		return nil, fmt.Errorf("tx %x: %w", hash, ledger.ErrRecordNotFound)
	}
	r := codec.NewReader(raw)
	h, idx := r.U64(), uint64(r.U32())
	if err := r.Done(); err != nil {
		return nil, fmt.Errorf("ledger: tx index of %x: %w", hash, err)
	}
	b, err := f.Block(h)
	if err != nil {
		return nil, err
	}
	if idx >= uint64(len(b.Txs)) || ledger.TxHash(b.Txs[idx]) != hash {
		return nil, fmt.Errorf("ledger: tx index of %x points at height %d index %d, which holds another tx", hash, h, idx)
	}
	proof, err := ledger.InclusionProof(b.Txs, idx)
	if err != nil {
		return nil, err
	}
	return &ledger.TxRecord{Hash: hash, Height: h, Index: idx, Envelope: b.Txs[idx], Proof: proof,
		TreeSize: uint64(len(b.Txs)), TxRoot: b.Header.TxRoot, BlockHash: b.Hash()}, nil
}

// Member returns a member (current or removed) by ID.
func (f *FSM) Member(id string) (*ledger.Member, error) {
	var m ledger.Member
	if err := f.getRecord(memberKey(id), &m, "member "+id); err != nil {
		return nil, err
	}
	return &m, nil
}

// Members returns every member ever added, current and removed, by ID.
func (f *FSM) Members() ([]ledger.Member, error) {
	var out []ledger.Member
	err := f.st.Iter([]byte(prefixMember), func(_, v []byte) error {
		var m ledger.Member
		if err := json.Unmarshal(v, &m); err != nil {
			return err
		}
		out = append(out, m)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("ledger: list members: %w", err)
	}
	return out, nil
}

// Model returns a model (registered or committed) by digest.
func (f *FSM) Model(digest string) (*ledger.Model, error) {
	var m ledger.Model
	if err := f.getRecord(modelKey(digest), &m, "model "+digest); err != nil {
		return nil, err
	}
	return &m, nil
}

// Dataset returns a registered dataset by manifest digest.
//
// A digest that is no dataset's but a blob of a published dataset (one of
// its shards, its leaves or its card) gives that dataset's record, so that
// an artifact store can tell published data (every member may read it)
// from a pending upload; the caller tells the two cases apart by the
// record's Digest.
func (f *FSM) Dataset(digest string) (*ledger.Dataset, error) {
	sn := f.st.Snapshot()
	if sn == nil {
		return nil, fmt.Errorf("ledger: dataset: state closed")
	}
	defer sn.Close()
	var d ledger.Dataset
	ok, err := getJSON(sn, datasetKey(digest), &d)
	if err != nil {
		return nil, err
	}
	if !ok {
		// A published dataset's shard, leaves or card digest answers with
		// the dataset that holds it.
		owner, found, gerr := sn.Get(publishedBlobKey(digest))
		if gerr != nil {
			return nil, gerr
		}
		if found {
			digest = string(owner)
			if ok, err = getJSON(sn, datasetKey(digest), &d); err != nil {
				return nil, err
			}
		}
	}
	if !ok {
		return nil, fmt.Errorf("dataset %s: %w", digest, ledger.ErrRecordNotFound)
	}
	if d.Attestations, err = attestationsOf(sn, digest); err != nil {
		return nil, err
	}
	return &d, nil
}

// Round returns round n of a job with its submitted updates, each
// without its commitment's StepDigests (up to MaxDisclosedSteps digests an
// update, which would make a large round's reply outgrow a client's
// message limit): they are on the update's UpdateSubmitted tx
// (Update.TxHash; ledger.UpdateStepDigests reads them from it).
func (f *FSM) Round(jobID string, n uint64) (*ledger.Round, error) {
	sn := f.st.Snapshot()
	if sn == nil {
		return nil, fmt.Errorf("ledger: round: state closed")
	}
	defer sn.Close()
	var r ledger.Round
	ok, err := getJSON(sn, roundKey(jobID, n), &r)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("round %d of job %q: %w", n, jobID, ledger.ErrRecordNotFound)
	}
	err = sn.Iter(updatePrefix(jobID, n), func(_, v []byte) error {
		var u ledger.Update
		if err := json.Unmarshal(v, &u); err != nil {
			return err
		}
		if u.Commitment != nil {
			u.Commitment.StepDigests = nil
		}
		r.Updates = append(r.Updates, u)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("ledger: round updates: %w", err)
	}
	sort.Slice(r.Updates, func(i, j int) bool { return r.Updates[i].Trainer < r.Updates[j].Trainer })
	if err := fillDraw(sn, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// fillDraw sets r.DrawSeed, r.VerdictsUntil and each update's Drawn once
// the block that closed the round's submissions is on the chain.
func fillDraw(sn getter, r *ledger.Round) error {
	if r.SubmissionsClosedHeight == 0 {
		return nil
	}
	raw, ok, err := sn.Get(blockKey(r.SubmissionsClosedHeight))
	if err != nil || !ok {
		return err
	}
	blk, err := ledger.DecodeBlock(raw)
	if err != nil {
		return fmt.Errorf("ledger: block %d: %w", r.SubmissionsClosedHeight, err)
	}
	var job ledger.JobRecord
	if ok, err := getJSON(sn, jobRecordKey(r.JobID), &job); err != nil || !ok {
		return err
	}
	seed := blk.Hash()
	r.DrawSeed = hex.EncodeToString(seed[:])
	if v := job.Recipe.Verify; v != nil {
		until, err := verdictsUntil(sn, v, r)
		if err != nil {
			return fmt.Errorf("ledger: round %d of job %q: %w", r.Round, r.JobID, err)
		}
		r.VerdictsUntil = until.UnixNano()
	}
	for i := range r.Updates {
		r.Updates[i].Drawn = job.Recipe.DrawnUpdate(seed, r.JobID, r.Round, &r.Updates[i])
	}
	return nil
}

// Lineage returns the history of a model back to its registered base model.
// It wraps ErrRecordNotFound for an unknown digest.
func (f *FSM) Lineage(modelDigest string) (*ledger.Lineage, error) {
	sn := f.st.Snapshot()
	if sn == nil {
		return nil, fmt.Errorf("ledger: lineage: state closed")
	}
	defer sn.Close()
	return lineage(sn, modelDigest)
}

// Nonce returns the last nonce applied for signer (0 if none), so the
// signer's next transaction uses Nonce+1.
func (f *FSM) Nonce(signer string) (uint64, error) {
	v, ok, err := f.st.Get(nonceKey(signer))
	if err != nil {
		return 0, fmt.Errorf("ledger: read nonce: %w", err)
	}
	if !ok {
		return 0, nil
	}
	return parseU64(v)
}

func (f *FSM) getRecord(key []byte, v any, what string) error {
	ok, err := getJSON(f.st, key, v)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%s: %w", what, ledger.ErrRecordNotFound)
	}
	return nil
}

// # Updates by digest

// UpdatesByDigest returns every UpdateSubmitted of update digest, earliest
// (lowest height) first, so that the first is its author: a later
// submission of the same digest can only be a copy of bytes already named
// on the chain. It wraps ErrRecordNotFound when no update has that digest
// (or digest is not one). It reads the digest-first index (c/ux/, see
// state.go): a prefix scan over the digest's own submissions, whatever the
// number of updates on the chain.
func (f *FSM) UpdatesByDigest(digest string) ([]ledger.UpdateSubmission, error) {
	if !fdigest.Valid(digest) {
		return nil, fmt.Errorf("update %q is not a SHA-256 digest: %w", abbrev(digest), ledger.ErrRecordNotFound)
	}
	sn := f.st.Snapshot()
	if sn == nil {
		return nil, fmt.Errorf("ledger: updates by digest: state closed")
	}
	defer sn.Close()
	var out []ledger.UpdateSubmission
	prefix := []byte(prefixUpdateIdx + digest)
	err := sn.Iter(prefix, func(k, v []byte) error {
		suffix := k[len(prefix):] // job ‖ 0 ‖ round (8 bytes)
		if len(suffix) < 9 || suffix[len(suffix)-9] != 0 {
			return fmt.Errorf("malformed index key %q", k)
		}
		job, round := string(suffix[:len(suffix)-9]), binary.BigEndian.Uint64(suffix[len(suffix)-8:])
		s := ledger.UpdateSubmission{JobID: job, Round: round, Trainer: string(v)}
		var u ledger.Update
		if ok, err := getJSON(sn, updateKey(job, round, s.Trainer), &u); err != nil {
			return err
		} else if ok {
			s.Height = u.Height
		}
		out = append(out, s)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("ledger: updates by digest: %w", err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("update %s: %w", digest, ledger.ErrRecordNotFound)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Height < out[j].Height })
	return out, nil
}
