package fsm

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/fedtune/fedtune/ledger"
)

const prefixNode = "a/node/"

func nodeKey(id string) []byte { return []byte(prefixNode + id) }

// Refusals of a whole proposal (ApplyResult.Err); all wrap
// ErrProposalRefused. Such an entry makes no block and changes no state on
// any replica.
var (
	ErrProposalRefused   = errors.New("ledger: proposal refused")
	ErrProposalSignature = errors.New("proposal is not signed by its proposer's node key")
	ErrProposerNotVoter  = errors.New("proposer is not a voting ledger node")
	ErrProposalTime      = errors.New("proposal time is too far ahead")
)

// ProposalRefusalReason names why a proposal was refused, for metrics:
// "bad_signature", "not_voter", "clock_skew" or "" when err is no refusal.
func ProposalRefusalReason(err error) string {
	switch {
	case errors.Is(err, ErrProposalSignature):
		return "bad_signature"
	case errors.Is(err, ErrProposerNotVoter):
		return "not_voter"
	case errors.Is(err, ErrProposalTime):
		return "clock_skew"
	}
	return ""
}

// genesisNode returns the record genesis node id has until a tx changes it.
func genesisNode(g *ledger.Genesis, id string) (ledger.NodeRecord, bool) {
	for _, n := range g.Nodes {
		if ledger.KeyID(n.Key) == id {
			return ledger.NodeRecord{ID: id, PublicKey: hex.EncodeToString(n.Key), Name: n.Name, Genesis: true, Voter: true}, true
		}
	}
	return ledger.NodeRecord{}, false
}

// nodeRecord reads node id from st: its stored record, or the implicit one
// of a genesis node.
func nodeRecord(g *ledger.Genesis, get func([]byte) ([]byte, bool, error), id string) (ledger.NodeRecord, bool, error) {
	raw, ok, err := get(nodeKey(id))
	if err != nil {
		return ledger.NodeRecord{}, false, err
	}
	if ok {
		var r ledger.NodeRecord
		if err := json.Unmarshal(raw, &r); err != nil {
			return ledger.NodeRecord{}, false, fmt.Errorf("decode node %s: %w", id, err)
		}
		return r, true, nil
	}
	r, ok := genesisNode(g, id)
	return r, ok, nil
}

// NodeMember returns ledger node id as the committed state knows it (a
// genesis node, or one added by NodeAdded; removed ones too, with Removed
// set), and false for a key that never was a node.
func (f *FSM) NodeMember(id string) (ledger.NodeRecord, bool) {
	r, ok, err := nodeRecord(f.g, f.st.Get, id)
	if err != nil {
		f.log.Error("read node record", "node", id, "err", err)
		return ledger.NodeRecord{}, false
	}
	return r, ok
}

// Nodes returns every ledger node the state knows (genesis nodes and added
// ones, removed ones included), ordered by ID.
func (f *FSM) Nodes() ([]ledger.NodeRecord, error) {
	seen := map[string]bool{}
	var out []ledger.NodeRecord
	err := f.st.Iter([]byte(prefixNode), func(_, v []byte) error {
		var r ledger.NodeRecord
		if err := json.Unmarshal(v, &r); err != nil {
			return err
		}
		seen[r.ID] = true
		out = append(out, r)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("ledger: list nodes: %w", err)
	}
	for _, n := range f.g.Nodes {
		id := ledger.KeyID(n.Key)
		if !seen[id] {
			r, _ := genesisNode(f.g, id)
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// NodesPinned reports whether the genesis lists nodes. Only then does the
// FSM pin who may propose; a genesis without nodes (development only)
// accepts proposals from any node not removed by a NodeRemoved.
func (f *FSM) NodesPinned() bool { return len(f.g.Nodes) > 0 }

// checkProposal refuses a proposal that is not signed by its proposer's
// node key (required when needSig: every raft entry), whose proposer may
// not propose, or whose time is too far ahead (see the package doc,
// "Proposers and time"). appended is the raft entry's AppendedAt (zero
// outside raft), prevTime the previous block's time. Only a time that
// moves the chain's time forward (above prevTime+1) is checked: one at or
// below it does not set the block time (a chain whose genesis_time lies
// ahead, and the replay of such blocks by VerifyChain, stay valid).
func (f *FSM) checkProposal(get func([]byte) ([]byte, bool, error), p ledger.Proposal, appended time.Time, prevTime int64, needSig bool) error {
	r, ok, err := nodeRecord(f.g, get, p.Proposer)
	if err != nil {
		return &storageError{err}
	}
	if needSig || p.Sig != nil {
		key, err := ledger.VerifyProposal(f.g.ChainID, p)
		if err == nil && ok && r.PublicKey != hex.EncodeToString(key) {
			err = fmt.Errorf("the proposal is signed by a key other than node %s's", abbrev(p.Proposer))
		}
		if err != nil {
			return fmt.Errorf("%w: %w: %v", ErrProposalRefused, ErrProposalSignature, err)
		}
	}
	switch {
	case ok && r.Removed:
		return fmt.Errorf("%w: %w: %s was removed at height %d", ErrProposalRefused, ErrProposerNotVoter, abbrev(p.Proposer), r.RemovedHeight)
	case f.NodesPinned() && !ok:
		return fmt.Errorf("%w: %w: %s is not a ledger node of this chain", ErrProposalRefused, ErrProposerNotVoter, abbrev(p.Proposer))
	case ok && !r.Voter:
		return fmt.Errorf("%w: %w: %s is a non-voting node (not promoted)", ErrProposalRefused, ErrProposerNotVoter, abbrev(p.Proposer))
	}
	skew := f.g.Policy.ClockSkew()
	ref := f.now()
	if !appended.IsZero() && appended.Before(ref) {
		ref = appended
	}
	if limit := ref.Add(skew).UnixNano(); p.Time > limit && p.Time > prevTime+1 {
		return fmt.Errorf("%w: %w: proposal time %s is more than policy max_clock_skew %s ahead of %s",
			ErrProposalRefused, ErrProposalTime, fmtNanos(p.Time), skew, ref.UTC().Format(time.RFC3339Nano))
	}
	return nil
}

func fmtNanos(t int64) string { return time.Unix(0, t).UTC().Format(time.RFC3339Nano) }

func (c *execCtx) checkNodeBody(tx *ledger.Tx) ([]kvWrite, error) {
	g := c.genesis
	get := func(k []byte) ([]byte, bool, error) { return c.get(k) }
	switch b := tx.Body.(type) {
	case ledger.NodeAdded:
		pub, _ := ledger.ParsePublicKey(b.PublicKey)
		id := ledger.KeyID(pub)
		old, ok, err := nodeRecord(g, get, id)
		if err != nil {
			return nil, err
		}
		if ok && old.Removed {
			return nil, txErr(ledger.CodeInvalid, "node %s was removed at height %d; a removed node key cannot be added again (give the node a new key)", id, old.RemovedHeight)
		}
		if ok {
			return nil, txErr(ledger.CodeAlreadyExists, "node %s is already a ledger node (voter=%v)", id, old.Voter)
		}
		var clash string
		err = c.b.Iter([]byte(prefixNode), func(_, v []byte) error {
			var o ledger.NodeRecord
			if err := json.Unmarshal(v, &o); err != nil {
				return err
			}
			if !o.Removed && clash == "" && (o.RaftAddress == b.RaftAddress || o.GRPCAddress == b.GRPCAddress) {
				clash = o.ID
			}
			return nil
		})
		if err != nil {
			return nil, &storageError{err}
		}
		if clash != "" {
			return nil, txErr(ledger.CodeAlreadyExists, "node %s already uses raft address %s or gRPC address %s", clash, b.RaftAddress, b.GRPCAddress)
		}
		r := ledger.NodeRecord{ID: id, PublicKey: hex.EncodeToString(pub), Name: b.Name, RaftAddress: b.RaftAddress,
			GRPCAddress: b.GRPCAddress, AddedHeight: c.height}
		return []kvWrite{{nodeKey(id), mustJSON(r)}}, nil

	case ledger.NodePromoted:
		r, ok, err := nodeRecord(g, get, b.ID)
		if err != nil {
			return nil, err
		}
		switch {
		case !ok:
			return nil, txErr(ledger.CodeNotFound, "node %s was never added (NodeAdded first)", b.ID)
		case r.Removed:
			return nil, txErr(ledger.CodeInvalid, "node %s was removed at height %d", b.ID, r.RemovedHeight)
		case r.Voter:
			return nil, txErr(ledger.CodeAlreadyExists, "node %s is already a voter", b.ID)
		}
		r.Voter, r.PromotedHeight = true, c.height
		return []kvWrite{{nodeKey(b.ID), mustJSON(r)}}, nil

	case ledger.NodeRemoved:
		r, ok, err := nodeRecord(g, get, b.ID)
		if err != nil {
			return nil, err
		}
		if !ok || r.Removed {
			return nil, txErr(ledger.CodeNotFound, "node %s is not a current ledger node", b.ID)
		}
		if r.Voter && len(g.Nodes) > 0 {
			voters, err := c.voters()
			if err != nil {
				return nil, err
			}
			if voters <= 1 {
				return nil, txErr(ledger.CodeInvalid, "node %s is the last voting node; promote another node first", b.ID)
			}
		}
		r.Removed, r.RemovedHeight, r.RemovedReason = true, c.height, b.Reason
		return []kvWrite{{nodeKey(b.ID), mustJSON(r)}}, nil
	}
	return nil, fmt.Errorf("ledger: not a node tx: %T", tx.Body)
}

// voters counts the current voting nodes as the block sees them.
func (c *execCtx) voters() (int, error) {
	n := 0
	recorded := map[string]bool{}
	err := c.b.Iter([]byte(prefixNode), func(_, v []byte) error {
		var o ledger.NodeRecord
		if err := json.Unmarshal(v, &o); err != nil {
			return err
		}
		recorded[o.ID] = true
		if o.IsVoter() {
			n++
		}
		return nil
	})
	if err != nil {
		return 0, &storageError{err}
	}
	for _, gn := range c.genesis.Nodes {
		if !recorded[ledger.KeyID(gn.Key)] {
			n++
		}
	}
	return n, nil
}
