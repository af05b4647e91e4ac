package fsm

import (
	"crypto/ed25519"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/internal/codec"
	"github.com/fedtune/fedtune/ledger/pebblestore"
)

// kvWrite is one staged application-state write.
type kvWrite struct {
	key []byte
	val []byte
}

// execCtx executes transactions against the state as an indexed batch sees
// it. check validates a transaction completely, reading only, and returns
// the writes it would make; apply stages them. So a rejected transaction
// stages nothing.
type execCtx struct {
	chainID string
	genesis *ledger.Genesis
	policy  ledger.Policy
	b       *pebblestore.Batch
	ws      writeSet
	height  uint64 // height of the block being built
	time    int64  // its time, unix nanos
	seen    map[[32]byte]bool
	// fsm, if set, lends its member cache: Apply sets it; CheckTx, which
	// runs beside Apply, does not.
	fsm *FSM
}

// storageError marks an error of the store, as opposed to a rejection: the
// FSM cannot go on after one.
type storageError struct{ err error }

// Error implements error.
func (e *storageError) Error() string { return "ledger: state store: " + e.err.Error() }

// Unwrap returns the store's error.
func (e *storageError) Unwrap() error { return e.err }

func (c *execCtx) get(key []byte) ([]byte, bool, error) {
	v, ok, err := c.b.Get(key)
	if err != nil {
		return nil, false, &storageError{err}
	}
	return v, ok, nil
}

func (c *execCtx) getJSON(key []byte, v any) (bool, error) {
	raw, ok, err := c.get(key)
	if err != nil || !ok {
		return false, err
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return false, &storageError{fmt.Errorf("decode %q: %w", key, err)}
	}
	return true, nil
}

func (c *execCtx) apply(ws []kvWrite) error {
	for _, w := range ws {
		if err := c.b.Set(w.key, w.val); err != nil {
			return &storageError{err}
		}
		c.ws[string(w.key)] = w.val
		// The digest-first index of submitted updates, outside the write
		// set and so outside the state hash (see state.go).
		if ik := updateIndexKeyOf(w.key); ik != nil {
			if err := c.b.Set(ik, w.val); err != nil {
				return &storageError{err}
			}
		}
	}
	return nil
}

func (c *execCtx) member(id string) (*ledger.Member, error) {
	if _, written := c.ws[string(memberKey(id))]; c.fsm != nil && !written {
		// Not written by this block: the committed record is current.
		m, ok, err := c.fsm.committedMember(id)
		if err != nil {
			return nil, &storageError{err}
		}
		if !ok {
			return nil, nil
		}
		return &m, nil
	}
	var m ledger.Member
	ok, err := c.getJSON(memberKey(id), &m)
	if err != nil || !ok {
		return nil, err
	}
	return &m, nil
}

// nonce returns the last nonce of signer id as the block so far sees it (0:
// none yet). When Apply runs it (c.fsm set) and the block has not written
// it, the committed value comes from, and goes into, the FSM's nonce cache.
func (c *execCtx) nonce(id string) (uint64, error) {
	key := nonceKey(id)
	_, written := c.ws[string(key)]
	cache := c.fsm != nil && !written
	if cache {
		if last, ok := c.fsm.nonces[id]; ok {
			return last, nil
		}
	}
	v, ok, err := c.get(key)
	if err != nil {
		return 0, err
	}
	var last uint64
	if ok {
		if last, err = parseU64(v); err != nil {
			return 0, &storageError{fmt.Errorf("nonce of %s: %w", id, err)}
		}
	}
	if cache {
		if c.fsm.nonces == nil {
			c.fsm.nonces = map[string]uint64{}
		}
		c.fsm.nonces[id] = last
	}
	return last, nil
}

func (c *execCtx) round(job string, n uint64) (*ledger.Round, error) {
	var r ledger.Round
	ok, err := c.getJSON(roundKey(job, n), &r)
	if err != nil || !ok {
		return nil, err
	}
	return &r, nil
}

// preChecked is what precheck found for one envelope, on other cores,
// before the block is executed: its decoding and, if the signature verified
// with the key its signer had in the committed state, that key.
type preChecked struct {
	tx  *ledger.Tx
	err error  // DecodeTx's error
	key string // hex public key the signature verified with; "" if none
}

// check validates one envelope against the state and returns the decoded tx
// and its writes. A rejection is a *TxError; any other error is the store's.
// pre, if not nil, carries precheck's work: the decoding is reused, and the
// signature is not verified again if it verified with the very key the
// signer holds now. Either way the outcome is the same.
func (c *execCtx) check(raw []byte, pre *preChecked) (*ledger.Tx, []kvWrite, error) {
	if len(raw) > c.policy.MaxTxBytes {
		return nil, nil, txErr(ledger.CodeTooLarge, "envelope is %d bytes, policy max_tx_bytes is %d", len(raw), c.policy.MaxTxBytes)
	}
	hash := ledger.TxHash(raw)
	if c.seen[hash] {
		return nil, nil, txErr(ledger.CodeDuplicate, "tx %x appears earlier in the same block", hash[:8])
	}
	if v, ok, err := c.get(txIndexKey(hash)); err != nil {
		return nil, nil, err
	} else if ok {
		r := codec.NewReader(v)
		h, i := r.U64(), r.U32()
		return nil, nil, txErr(ledger.CodeDuplicate, "tx %x is already on the chain at height %d index %d", hash[:8], h, i)
	}
	var tx *ledger.Tx
	if pre != nil && pre.err != nil {
		return nil, nil, pre.err
	} else if pre != nil && pre.tx != nil {
		tx = pre.tx
	} else {
		var err error
		if c.fsm != nil {
			tx, err = c.fsm.decodeTx(raw)
		} else {
			tx, err = ledger.DecodeTx(raw)
		}
		if err != nil {
			return nil, nil, err
		}
	}
	if tx.ChainID != c.chainID {
		return nil, nil, txErr(ledger.CodeWrongChain, "tx is for chain %q, this chain is %q", abbrev(tx.ChainID), c.chainID)
	}
	m, err := c.member(tx.Signer)
	if err != nil {
		return nil, nil, err
	}
	if m == nil {
		return nil, nil, txErrCause(ledger.CodeUnknownSigner, ledger.CauseNotMember, "signer %s is not a member", tx.Signer)
	}
	if !m.Active {
		return nil, nil, txErrCause(ledger.CodeUnknownSigner, ledger.CauseSignerRemoved, "signer %s was removed at height %d", tx.Signer, m.RemovedHeight)
	}
	pub, err := hex.DecodeString(m.PublicKey)
	if err != nil || len(pub) != ed25519.PublicKeySize {
		return nil, nil, &storageError{fmt.Errorf("member %s has a bad stored key", m.ID)}
	}
	if (pre == nil || pre.key == "" || pre.key != m.PublicKey) && tx.VerifiedKey() != m.PublicKey {
		if err := tx.VerifyWith(ed25519.PublicKey(pub)); err != nil {
			return nil, nil, err
		}
	}
	typ := tx.Body.TxType()
	if !ledger.MaySign(typ, m.Role) {
		return nil, nil, txErr(ledger.CodeForbidden, "%s needs role %s; signer %s is %s", typ, ledger.SignerRoles(typ), tx.Signer, m.Role)
	}
	last, err := c.nonce(tx.Signer)
	if err != nil {
		return nil, nil, err
	}
	if tx.Nonce <= last {
		return nil, nil, txErrCause(ledger.CodeBadNonce, ledger.CauseNonceStale, "nonce %d is not above the last nonce %d of signer %s; use %d", tx.Nonce, last, tx.Signer, last+1)
	}
	ws, err := c.checkBody(tx)
	if err != nil {
		return nil, nil, err
	}
	ws = append(ws, kvWrite{nonceKey(tx.Signer), u64Bytes(tx.Nonce)})
	return tx, ws, nil
}

func (c *execCtx) checkBody(tx *ledger.Tx) ([]kvWrite, error) {
	txHash := hex.EncodeToString(tx.Hash[:])
	switch b := tx.Body.(type) {
	case ledger.NodeAdded, ledger.NodePromoted, ledger.NodeRemoved:
		return c.checkNodeBody(tx)
	case ledger.MemberAdded:
		pub, _ := ledger.ParsePublicKey(b.PublicKey) // checked by DecodeTx
		id := ledger.KeyID(pub)
		old, err := c.member(id)
		if err != nil {
			return nil, err
		}
		if old != nil && old.Active {
			return nil, txErr(ledger.CodeAlreadyExists, "member %s is already a member with role %s", id, old.Role)
		}
		m := ledger.Member{ID: id, PublicKey: hex.EncodeToString(pub), Role: b.Role, Name: b.Name, Active: true, AddedHeight: c.height}
		return []kvWrite{{memberKey(id), mustJSON(m)}}, nil

	case ledger.MemberRemoved:
		m, err := c.member(b.ID)
		if err != nil {
			return nil, err
		}
		if m == nil || !m.Active {
			return nil, txErr(ledger.CodeNotFound, "member %s is not a current member", b.ID)
		}
		if m.Role == ledger.RoleAdmin {
			admins := 0
			err := c.b.Iter([]byte(prefixMember), func(_, v []byte) error {
				var o ledger.Member
				if err := json.Unmarshal(v, &o); err != nil {
					return err
				}
				if o.Active && o.Role == ledger.RoleAdmin {
					admins++
				}
				return nil
			})
			if err != nil {
				return nil, &storageError{err}
			}
			if admins <= 1 {
				return nil, txErr(ledger.CodeInvalid, "member %s is the last admin; add another admin first", b.ID)
			}
		}
		m.Active = false
		m.RemovedHeight = c.height
		m.RemovedReason = b.Reason
		return []kvWrite{{memberKey(b.ID), mustJSON(m)}}, nil

	case ledger.ModelRegistered:
		if _, ok, err := c.get(modelKey(b.Digest)); err != nil {
			return nil, err
		} else if ok {
			return nil, txErr(ledger.CodeAlreadyExists, "model %s is already recorded", b.Digest)
		}
		if sub, err := c.submittedUpdate(b.Digest); err != nil {
			return nil, err
		} else if sub != nil {
			// Registering it would make a trainer's update a model that
			// every member may download.
			return nil, txErr(ledger.CodeInvalid, "model %s is the update trainer %s submitted to round %d of job %q; a submitted update cannot be registered as a model",
				b.Digest, sub.Trainer, sub.Round, sub.JobID)
		}
		m := ledger.Model{Digest: b.Digest, Name: b.Name, Licence: b.Licence, Source: b.Source, Config: b.Config,
			Tokenizer: b.Tokenizer, Sources: b.Sources, Registrar: tx.Signer, Height: c.height, TxHash: txHash}
		return []kvWrite{{modelKey(b.Digest), mustJSON(m)}}, nil

	case ledger.DatasetRegistered:
		if _, ok, err := c.get(datasetKey(b.Digest)); err != nil {
			return nil, err
		} else if ok {
			return nil, txErr(ledger.CodeAlreadyExists, "dataset %s is already registered", b.Digest)
		}
		d := ledger.Dataset{Digest: b.Digest, Name: b.Name, Licence: b.Licence, Source: b.Source, Samples: b.Samples,
			Root: b.Root, Bytes: b.Bytes, Owner: tx.Signer, Height: c.height, TxHash: txHash}
		return []kvWrite{{datasetKey(b.Digest), mustJSON(d)}}, nil

	case ledger.DatasetAttested:
		return c.checkAttested(tx, b, txHash)
	case ledger.SubmissionsClosed:
		return c.checkSubmissionsClosed(tx, b)
	case ledger.UpdateVerified:
		return c.checkUpdateVerified(tx, b)
	case ledger.DatasetPublished:
		return c.checkPublished(tx, b)
	case ledger.JobCancelled:
		return c.checkJobCancelled(txHash, tx.Signer, b)

	case ledger.JobRegistered:
		if old, err := c.job(b.JobID); err != nil {
			return nil, err
		} else if old != nil {
			return nil, txErr(ledger.CodeAlreadyExists, "job %q is already registered by %s at height %d", b.JobID, old.Owner, old.Height)
		}
		if _, ok, err := c.get(jobKey(b.JobID)); err != nil {
			return nil, err
		} else if ok {
			return nil, txErr(ledger.CodeAlreadyExists, "job %q already has rounds on the chain; register a new job ID", b.JobID)
		}
		for i, a := range b.Recipe.Aggregators {
			m, err := c.member(a)
			if err != nil {
				return nil, err
			}
			if m == nil || !m.Active || m.Role != ledger.RoleAggregator {
				return nil, txErr(ledger.CodeInvalid, "recipe.aggregators[%d] %s is not a current aggregator member", i, a)
			}
		}
		if v := b.Recipe.Verify; v != nil {
			for i, id := range v.By {
				m, err := c.member(id)
				if err != nil {
					return nil, err
				}
				if m == nil || !m.Active || m.Role != ledger.RoleVerifier {
					return nil, txErr(ledger.CodeInvalid, "recipe.verify.by[%d] %s is not a current verifier member", i, id)
				}
			}
		}
		if err := ledger.CheckDisclosureFits(c.chainID, b.JobID, &b.Recipe, c.policy.MaxTxBytes); err != nil {
			return nil, txErr(ledger.CodeInvalid, "%v", err)
		}
		if bm := b.Recipe.BaseModel; bm != "" {
			if _, ok, err := c.get(modelKey(bm)); err != nil {
				return nil, err
			} else if !ok {
				return nil, txErr(ledger.CodeNotFound, "recipe.base_model %s is not a registered model", bm)
			}
		}
		if err := c.checkJobPublished(&b.Recipe); err != nil {
			return nil, err
		}
		j := ledger.JobRecord{JobID: b.JobID, Owner: tx.Signer, Recipe: b.Recipe, Height: c.height, TxHash: txHash}
		return []kvWrite{{jobRecordKey(b.JobID), mustJSON(j)}}, nil

	case ledger.RoundOpened:
		job, err := c.job(b.JobID)
		if err != nil {
			return nil, err
		}
		if job == nil {
			return nil, txErr(ledger.CodeNotFound, "job %q is not registered; a JobRegistered must come first", b.JobID)
		}
		if job.Owner != tx.Signer {
			return nil, txErr(ledger.CodeForbidden, "job %q is owned by coordinator %s; %s may not open its rounds", b.JobID, job.Owner, tx.Signer)
		}
		if cn := job.Cancelled; cn != nil {
			return nil, txErr(ledger.CodeInvalid, "job %q was cancelled at height %d (%s); none of its rounds opens again", b.JobID, cn.Height, cn.Reason)
		}
		rc := &job.Recipe
		if n := len(b.Trainers); n < rc.MinTrainers || (rc.MaxTrainers > 0 && n > rc.MaxTrainers) {
			return nil, txErr(ledger.CodeInvalid, "round %d of job %q selects %d trainers; the recipe allows %d to %d", b.Round, b.JobID, n, rc.MinTrainers, maxOr(rc.MaxTrainers, ledger.MaxTrainers))
		}
		if b.Strategy != rc.Strategy {
			return nil, txErr(ledger.CodeInvalid, "round %d of job %q names strategy %q; the recipe says %q", b.Round, b.JobID, b.Strategy, rc.Strategy)
		}
		if _, ok, err := c.get(modelKey(b.BaseModel)); err != nil {
			return nil, err
		} else if !ok {
			return nil, txErr(ledger.CodeNotFound, "base model %s is not registered", b.BaseModel)
		}
		if r, err := c.round(b.JobID, b.Round); err != nil {
			return nil, err
		} else if r != nil {
			return nil, txErr(ledger.CodeAlreadyExists, "round %d of job %q already exists (%s)", b.Round, b.JobID, r.Status)
		}
		if v, ok, err := c.get(jobKey(b.JobID)); err != nil {
			return nil, err
		} else if ok {
			last, err := parseU64(v)
			if err != nil {
				return nil, &storageError{err}
			}
			if b.Round != last+1 {
				return nil, txErr(ledger.CodeInvalid, "round %d of job %q: round %d was the last opened; the next must be %d", b.Round, b.JobID, last, last+1)
			}
		} else if b.Round != 1 {
			return nil, txErr(ledger.CodeInvalid, "round %d of job %q: a job's first round is 1", b.Round, b.JobID)
		}
		if want, why, err := c.roundBase(job, b.Round); err != nil {
			return nil, err
		} else if want != "" && b.BaseModel != want {
			return nil, txErr(ledger.CodeInvalid, "round %d of job %q must start from %s, %s; it names base model %s", b.Round, b.JobID, want, why, b.BaseModel)
		}
		for i, t := range b.Trainers {
			m, err := c.member(t)
			if err != nil {
				return nil, err
			}
			if m == nil || !m.Active {
				return nil, txErr(ledger.CodeNotFound, "trainers[%d] %s is not a current member", i, t)
			}
			if m.Role != ledger.RoleTrainer {
				return nil, txErr(ledger.CodeInvalid, "trainers[%d] %s has role %s, not trainer", i, t, m.Role)
			}
			if err := c.checkNotSuspended(fmt.Sprintf("trainers[%d]", i), b.JobID, b.Round, t); err != nil {
				return nil, err
			}
		}
		if b.Deadline.UnixNano() <= c.time {
			return nil, txErr(ledger.CodeInvalid, "deadline %s is not after the block time %s",
				b.Deadline.UTC().Format(time.RFC3339Nano), time.Unix(0, c.time).UTC().Format(time.RFC3339Nano))
		}
		if err := checkRoundRanges(rc, &b); err != nil {
			return nil, err
		}
		r := ledger.Round{JobID: b.JobID, Round: b.Round, ConfigDigest: b.ConfigDigest, BaseModel: b.BaseModel, Ranges: b.Ranges,
			Strategy: b.Strategy, Trainers: b.Trainers, Deadline: b.Deadline, Status: ledger.StatusOpen,
			Coordinator: tx.Signer, OpenedHeight: c.height}
		return []kvWrite{{roundKey(b.JobID, b.Round), mustJSON(r)}, {jobKey(b.JobID), u64Bytes(b.Round)}}, nil

	case ledger.UpdateSubmitted:
		r, err := c.openRound(b.JobID, b.Round)
		if err != nil {
			return nil, err
		}
		if !contains(r.Trainers, tx.Signer) {
			return nil, txErr(ledger.CodeNotSelected, "trainer %s is not selected for round %d of job %q", tx.Signer, b.Round, b.JobID)
		}
		if err := c.checkNotSuspended("trainer", b.JobID, b.Round, tx.Signer); err != nil {
			return nil, err
		}
		if r.SubmissionsClosedHeight != 0 {
			return nil, txErr(ledger.CodeDeadlinePassed, "round %d of job %q was closed for updates by its coordinator at height %d (SubmissionsClosed); the spot-check draw is fixed", b.Round, b.JobID, r.SubmissionsClosedHeight)
		}
		if c.time > r.Deadline.UnixNano() {
			return nil, txErr(ledger.CodeDeadlinePassed, "round %d of job %q closed for updates at %s; block time is %s", b.Round, b.JobID,
				r.Deadline.UTC().Format(time.RFC3339Nano), time.Unix(0, c.time).UTC().Format(time.RFC3339Nano))
		}
		var d ledger.Dataset
		if ok, err := c.getJSON(datasetKey(b.DatasetDigest), &d); err != nil {
			return nil, err
		} else if !ok {
			return nil, txErr(ledger.CodeNotFound, "dataset %s is not registered", b.DatasetDigest)
		}
		job, err := c.job(b.JobID)
		if err != nil {
			return nil, err
		}
		if err := checkUpdateData(job, r, tx.Signer, &b, &d); err != nil {
			return nil, err
		}
		if err := checkDisclosed(job, &b); err != nil {
			return nil, err
		}
		if c := b.Commitment; c != nil && job != nil && job.Recipe.Mode == ledger.RecipePretrain && c.Steps != uint64(job.Recipe.InnerSteps) {
			return nil, txErr(ledger.CodeInvalid, "commitment.steps %d: the pretrain recipe of job %q asks %d inner steps per round", c.Steps, b.JobID, job.Recipe.InnerSteps)
		}
		if job != nil && job.Recipe.MaxSamples > 0 && b.Samples > job.Recipe.MaxSamples {
			return nil, txErr(ledger.CodeInvalid, "samples %d is more than the %d the recipe of job %q allows per update", b.Samples, job.Recipe.MaxSamples, b.JobID)
		}
		var mod ledger.Model
		if ok, err := c.getJSON(modelKey(b.UpdateDigest), &mod); err != nil {
			return nil, err
		} else if ok {
			return nil, txErr(ledger.CodeInvalid, "update %s is already recorded as a model (%s); an update must be the trainer's own new weights, not a model's", b.UpdateDigest, describeModel(&mod))
		}
		var prev ledger.Update
		if ok, err := c.getJSON(updateKey(b.JobID, b.Round, tx.Signer), &prev); err != nil {
			return nil, err
		} else if ok {
			return nil, txErr(ledger.CodeAlreadyExists, "trainer %s already submitted update %s to round %d of job %q", tx.Signer, prev.UpdateDigest, b.Round, b.JobID)
		}
		if other, ok, err := c.get(updateDigestKey(b.JobID, b.Round, b.UpdateDigest)); err != nil {
			return nil, err
		} else if ok {
			return nil, txErr(ledger.CodeAlreadyExists, "update %s was already submitted to round %d of job %q by %s", b.UpdateDigest, b.Round, b.JobID, other)
		}
		u := ledger.Update{Trainer: tx.Signer, UpdateDigest: b.UpdateDigest, DatasetDigest: b.DatasetDigest, Samples: b.Samples,
			Metrics: b.Metrics, Commitment: b.Commitment, Ranges: b.Ranges, Height: c.height, TxHash: txHash}
		return []kvWrite{
			{updateKey(b.JobID, b.Round, tx.Signer), mustJSON(u)},
			{updateDigestKey(b.JobID, b.Round, b.UpdateDigest), []byte(tx.Signer)},
		}, nil

	case ledger.UpdateRejected:
		signer, err := c.member(tx.Signer)
		if err != nil {
			return nil, err
		}
		if signer != nil && signer.Role == ledger.RoleVerifier {
			r, err := c.verdictRound(ledger.TypeUpdateRejected, b.JobID, b.Round)
			if err != nil {
				return nil, err
			}
			return c.checkVerifierRejected(tx, b, r)
		}
		if _, err := c.openRound(b.JobID, b.Round); err != nil {
			return nil, err
		}
		if b.Step != 0 {
			return nil, txErr(ledger.CodeInvalid, "step %d: only a verifier's rejection of a drawn update names a step", b.Step)
		}
		if _, err := c.designatedJob(ledger.TypeUpdateRejected, b.JobID, tx.Signer); err != nil {
			return nil, err
		}
		trainer, ok, err := c.get(updateDigestKey(b.JobID, b.Round, b.UpdateDigest))
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, txErr(ledger.CodeNotFound, "no update %s was submitted to round %d of job %q", b.UpdateDigest, b.Round, b.JobID)
		}
		found := &ledger.Update{}
		if ok, err := c.getJSON(updateKey(b.JobID, b.Round, string(trainer)), found); err != nil {
			return nil, err
		} else if !ok || found.UpdateDigest != b.UpdateDigest {
			return nil, &storageError{fmt.Errorf("update index of %s in round %d of job %q is inconsistent", b.UpdateDigest, b.Round, b.JobID)}
		}
		if found.Rejected {
			return nil, txErr(ledger.CodeAlreadyExists, "update %s of round %d of job %q is already rejected", b.UpdateDigest, b.Round, b.JobID)
		}
		found.Rejected, found.RejectReason, found.RejectedBy = true, b.Reason, tx.Signer
		return []kvWrite{{updateKey(b.JobID, b.Round, found.Trainer), mustJSON(found)}}, nil

	case ledger.RoundCommitted:
		r, err := c.openRound(b.JobID, b.Round)
		if err != nil {
			return nil, err
		}
		job, err := c.designatedJob(ledger.TypeRoundCommitted, b.JobID, tx.Signer)
		if err != nil {
			return nil, err
		}
		rc := &job.Recipe
		if b.Strategy != rc.Strategy {
			return nil, txErr(ledger.CodeInvalid, "round %d of job %q committed with strategy %q; the recipe says %q", b.Round, b.JobID, b.Strategy, rc.Strategy)
		}
		if err := rc.CheckCommitParams(b.Params); err != nil {
			return nil, txErr(ledger.CodeInvalid, "round %d of job %q: %v", b.Round, b.JobID, err)
		}

		if _, ok, err := c.get(modelKey(b.ModelDigest)); err != nil {
			return nil, err
		} else if ok {
			return nil, txErr(ledger.CodeAlreadyExists, "model %s is already recorded; a commit must name a new model", b.ModelDigest)
		}
		if sub, err := c.submittedUpdate(b.ModelDigest); err != nil {
			return nil, err
		} else if sub != nil && (sub.JobID != b.JobID || sub.Round != b.Round) {
			// A round's model may have an update's bytes only when it is
			// that round's own (one contributor): any other would publish
			// the update of a round this aggregator has no say over.
			return nil, txErr(ledger.CodeInvalid, "round %d of job %q commits model %s, the update trainer %s submitted to round %d of job %q; a round's model may equal only an update of that round",
				b.Round, b.JobID, b.ModelDigest, sub.Trainer, sub.Round, sub.JobID)
		}
		link := lineageLink{JobID: r.JobID, Round: r.Round, ConfigDigest: r.ConfigDigest, BaseModel: r.BaseModel,
			ModelDigest: b.ModelDigest, Strategy: b.Strategy, Params: b.Params, OpenedHeight: r.OpenedHeight,
			CommittedHeight: c.height, Aggregator: tx.Signer}
		seen := make(map[string]bool, len(b.Contributors))
		for i, ct := range b.Contributors {
			if seen[ct.Trainer] {
				return nil, txErr(ledger.CodeInvalid, "contributors[%d]: trainer %s is listed twice", i, ct.Trainer)
			}
			seen[ct.Trainer] = true
			var u ledger.Update
			ok, err := c.getJSON(updateKey(b.JobID, b.Round, ct.Trainer), &u)
			if err != nil {
				return nil, err
			}
			if !ok || u.UpdateDigest != ct.UpdateDigest {
				return nil, txErr(ledger.CodeNotFound, "contributors[%d]: trainer %s submitted no update %s to round %d of job %q", i, ct.Trainer, ct.UpdateDigest, b.Round, b.JobID)
			}
			if u.Rejected {
				return nil, txErr(ledger.CodeInvalid, "contributors[%d]: update %s was rejected: %s", i, ct.UpdateDigest, u.RejectReason)
			}
			if err := c.checkNotSuspended(fmt.Sprintf("contributors[%d]", i), b.JobID, b.Round, ct.Trainer); err != nil {
				return nil, err
			}
			lc := ledger.LineageContribution{Trainer: ct.Trainer, UpdateDigest: ct.UpdateDigest,
				DatasetDigest: u.DatasetDigest, Samples: u.Samples, Weight: ct.Weight, Published: ledger.RangeDatasets(u.DatasetDigest, u.Ranges)}
			// Every dataset behind the update, its trainer's own and the
			// published ones its ranges mixed in, must meet the job's
			// attestation and licence requirements.
			for _, ds := range lc.Datasets() {
				if missing, err := c.missingAttestations(rc.RequireAttestations, ds); err != nil {
					return nil, err
				} else if len(missing) > 0 {
					return nil, txErr(ledger.CodeInvalid, "contributors[%d]: update %s of trainer %s was computed on dataset %s, which lacks the attestation(s) job %q requires: %s",
						i, ct.UpdateDigest, ct.Trainer, ds, b.JobID, describeRequirements(missing))
				}
				if err := c.checkContributionLicence(rc, i, ds); err != nil {
					return nil, err
				}
			}
			link.Contributors = append(link.Contributors, lc)
		}
		if err := c.checkCommitVerified(job, r, b); err != nil {
			return nil, err
		}
		var left []string // submitted, not rejected, not listed
		err = c.b.Iter(updatePrefix(b.JobID, b.Round), func(_, v []byte) error {
			var u ledger.Update
			if err := json.Unmarshal(v, &u); err != nil {
				return &storageError{err}
			}
			if u.Rejected {
				link.Rejected = append(link.Rejected, ledger.RejectedUpdate{Trainer: u.Trainer, UpdateDigest: u.UpdateDigest, Reason: u.RejectReason})
			} else if !seen[u.Trainer] {
				left = append(left, u.UpdateDigest+" of trainer "+u.Trainer)
			}
			return nil
		})
		if err != nil {
			return nil, asStorage(err)
		}
		if len(left) > 0 {
			return nil, txErr(ledger.CodeInvalid, "round %d of job %q: the commit leaves out %d submitted update(s) that no UpdateRejected rejected: %s",
				b.Round, b.JobID, len(left), strings.Join(left, ", "))
		}
		if len(b.Contributors) < rc.MinTrainers {
			return nil, txErr(ledger.CodeInvalid, "round %d of job %q commits %d contributors; the recipe needs at least %d", b.Round, b.JobID, len(b.Contributors), rc.MinTrainers)
		}
		if ledger.SampleWeighted[rc.Strategy] {
			var total float64
			for _, ct := range link.Contributors {
				total += float64(ct.Samples)
			}
			for i, ct := range link.Contributors {
				if want := float64(ct.Samples) / total; ct.Weight != want {
					return nil, txErr(ledger.CodeInvalid, "contributors[%d].weight %v of trainer %s: %s weighs by samples, %d of %v gives %v",
						i, ct.Weight, ct.Trainer, rc.Strategy, ct.Samples, total, want)
				}
			}
		}
		r.Status, r.ClosedHeight, r.Aggregator = ledger.StatusCommitted, c.height, tx.Signer
		r.ModelDigest, r.CommittedStrategy, r.Params, r.Contributors = b.ModelDigest, b.Strategy, b.Params, b.Contributors
		m := ledger.Model{Digest: b.ModelDigest, Registrar: tx.Signer, Height: c.height, TxHash: txHash,
			Parent: r.BaseModel, JobID: r.JobID, Round: r.Round}
		lw, err := c.lineageWrites(r.BaseModel, b.ModelDigest, link.encode())
		if err != nil {
			return nil, err
		}
		return append([]kvWrite{
			{roundKey(b.JobID, b.Round), mustJSON(r)},
			{modelKey(b.ModelDigest), mustJSON(m)},
		}, lw...), nil

	case ledger.RoundFailed:
		r, err := c.openRound(b.JobID, b.Round)
		if err != nil {
			return nil, err
		}
		if _, err := c.designatedJob(ledger.TypeRoundFailed, b.JobID, tx.Signer); err != nil {
			return nil, err
		}
		r.Status, r.ClosedHeight, r.Aggregator, r.FailReason = ledger.StatusFailed, c.height, tx.Signer, b.Reason
		return []kvWrite{{roundKey(b.JobID, b.Round), mustJSON(r)}}, nil

	case ledger.RoundEvaluated:
		job, err := c.job(b.JobID)
		if err != nil {
			return nil, err
		}
		if job == nil {
			return nil, txErr(ledger.CodeNotFound, "job %q is not registered", b.JobID)
		}
		if job.Owner != tx.Signer {
			return nil, txErr(ledger.CodeForbidden, "job %q is owned by coordinator %s; %s may not evaluate its rounds", b.JobID, job.Owner, tx.Signer)
		}
		r, err := c.round(b.JobID, b.Round)
		if err != nil {
			return nil, err
		}
		if r == nil {
			return nil, txErr(ledger.CodeNotFound, "round %d of job %q was never opened", b.Round, b.JobID)
		}
		if r.Status != ledger.StatusCommitted {
			return nil, txErr(ledger.CodeRoundNotOpen, "round %d of job %q is %s, not committed; only a committed round is evaluated", b.Round, b.JobID, r.Status)
		}
		if r.ModelDigest != b.ModelDigest {
			return nil, txErr(ledger.CodeInvalid, "round %d of job %q committed model %s; the evaluation names model %s", b.Round, b.JobID, r.ModelDigest, b.ModelDigest)
		}
		if r.Evaluation != nil {
			return nil, txErr(ledger.CodeAlreadyExists, "round %d of job %q was already evaluated at height %d (tx %s)", b.Round, b.JobID, r.Evaluation.Height, r.Evaluation.TxHash)
		}
		contrib := make(map[string]bool, len(r.Contributors))
		for _, ct := range r.Contributors {
			contrib[ct.Trainer] = true
		}
		for i, s := range b.Scores {
			if !contrib[s.Trainer] {
				return nil, txErr(ledger.CodeInvalid, "scores[%d]: trainer %s is not a contributor of round %d of job %q", i, s.Trainer, b.Round, b.JobID)
			}
		}
		r.Evaluation = &ledger.Evaluation{EvalDigest: b.EvalDigest, MeanNLL: b.MeanNLL, Tokens: b.Tokens, Scores: b.Scores,
			Coordinator: tx.Signer, Height: c.height, TxHash: txHash}
		return []kvWrite{{roundKey(b.JobID, b.Round), mustJSON(r)}}, nil
	}
	return nil, txErr(ledger.CodeMalformed, "unknown tx body %T", tx.Body)
}

// submittedUpdate returns the earliest UpdateSubmitted of update digest
// that the block so far sees, or nil when none named it. It scans the
// per-round digest index (one key per submitted update): ModelRegistered
// and RoundCommitted, its callers, are rare.
func (c *execCtx) submittedUpdate(digest string) (*ledger.UpdateSubmission, error) {
	var found *ledger.UpdateSubmission
	err := c.b.Iter([]byte(prefixUpdateDig), func(k, v []byte) error {
		rest := k[len(prefixUpdateDig):]
		if len(rest) < len(digest)+9 || string(rest[len(rest)-len(digest):]) != digest {
			return nil
		}
		suffix := rest[:len(rest)-len(digest)] // job ‖ 0 ‖ round (8 bytes)
		s := ledger.UpdateSubmission{JobID: string(suffix[:len(suffix)-9]), Round: binary.BigEndian.Uint64(suffix[len(suffix)-8:]), Trainer: string(v)}
		var u ledger.Update
		if _, err := c.getJSON(updateKey(s.JobID, s.Round, s.Trainer), &u); err != nil {
			return err
		}
		if s.Height = u.Height; found == nil || s.Height < found.Height {
			found = &s
		}
		return nil
	})
	if err != nil {
		return nil, asStorage(err)
	}
	return found, nil
}

// lineageWrites places the lineage link of model, committed on base, in a
// segment: the first child of a committed model continues its parent's
// segment at the next depth; any other model starts a segment of its own.
func (c *execCtx) lineageWrites(base, model string, link []byte) ([]kvWrite, error) {
	seg, depth := model, uint64(0)
	var ws []kvWrite
	if raw, ok, err := c.get(lineageKey(base)); err != nil {
		return nil, err
	} else if ok {
		bseg, bdepth, err := decodeSegmentPtr(raw)
		if err != nil {
			return nil, &storageError{fmt.Errorf("lineage pointer of %s: %w", base, err)}
		}
		if _, taken, err := c.get(childKey(base)); err != nil {
			return nil, err
		} else if !taken {
			seg, depth = bseg, bdepth+1
			ws = append(ws, kvWrite{childKey(base), []byte{1}})
		}
	}
	return append(ws,
		kvWrite{lineageKey(model), encodeSegmentPtr(seg, depth)},
		kvWrite{segmentKey(seg, depth), link}), nil
}

// openRound returns the round if it exists and is open, else a rejection.
func (c *execCtx) openRound(job string, n uint64) (*ledger.Round, error) {
	r, err := c.round(job, n)
	if err != nil {
		return nil, err
	}
	if r == nil {
		return nil, txErr(ledger.CodeNotFound, "round %d of job %q was never opened", n, job)
	}
	switch r.Status {
	case ledger.StatusCommitted:
		return nil, txErr(ledger.CodeRoundNotOpen, "round %d of job %q was already committed at height %d (model %s)", n, job, r.ClosedHeight, r.ModelDigest)
	case ledger.StatusFailed:
		return nil, txErr(ledger.CodeRoundNotOpen, "round %d of job %q failed at height %d: %s", n, job, r.ClosedHeight, r.FailReason)
	}
	return r, nil
}

func asStorage(err error) error {
	var se *storageError
	if errors.As(err, &se) {
		return se
	}
	return &storageError{err}
}

func maxOr(v, dflt int) int {
	if v > 0 {
		return v
	}
	return dflt
}

func contains(xs []string, s string) bool {
	for _, x := range xs {
		if x == s {
			return true
		}
	}
	return false
}
