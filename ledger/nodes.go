package ledger

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"
	"time"
)

// The ledger-node membership tx types (admin-signed). See NodeAdded.
const (
	TypeNodeAdded    = "NodeAdded"
	TypeNodePromoted = "NodePromoted"
	TypeNodeRemoved  = "NodeRemoved"
)

// NodeAdded (admin) adds a ledger node as a raft non-voter: it replicates
// the chain but neither votes nor proposes. The leader then adds it to
// raft's configuration (AddNonvoter) at RaftAddress.
type NodeAdded struct {
	// PublicKey is the node's ed25519 public key as 64 lowercase hex.
	PublicKey   string `json:"public_key"`
	RaftAddress string `json:"raft_address"`
	GRPCAddress string `json:"grpc_address"`
	Name        string `json:"name,omitempty"`
}

// NodePromoted (admin) makes an added node a voter: it may vote and, as
// raft leader, propose blocks. The leader carries it out with AddVoter.
type NodePromoted struct {
	ID string `json:"id"`
}

// NodeRemoved (admin) removes a ledger node (a genesis node or an added
// one): its proposals are refused from then on and the leader takes it out
// of raft's configuration. A removed node key cannot be added again.
type NodeRemoved struct {
	ID     string `json:"id"`
	Reason string `json:"reason,omitempty"`
}

// TxType implements TxBody.
func (NodeAdded) TxType() string { return TypeNodeAdded }

// TxType implements TxBody.
func (NodePromoted) TxType() string { return TypeNodePromoted }

// TxType implements TxBody.
func (NodeRemoved) TxType() string { return TypeNodeRemoved }

func init() {
	TxRoles[TypeNodeAdded] = RoleAdmin
	TxRoles[TypeNodePromoted] = RoleAdmin
	TxRoles[TypeNodeRemoved] = RoleAdmin
	bodyDecoders[TypeNodeAdded] = decodeBody[NodeAdded]
	bodyDecoders[TypeNodePromoted] = decodeBody[NodePromoted]
	bodyDecoders[TypeNodeRemoved] = decodeBody[NodeRemoved]
}

// NodeRecord is a ledger node as the FSM's state knows it. Genesis nodes are
// voters from height 0 without a stored record (so the genesis state hash is
// unchanged); a record is written only when a node is added, promoted or
// removed.
type NodeRecord struct {
	ID          string `json:"id"`
	PublicKey   string `json:"public_key"` // 64 hex
	Name        string `json:"name,omitempty"`
	RaftAddress string `json:"raft_address,omitempty"` // "" for genesis nodes
	GRPCAddress string `json:"grpc_address,omitempty"`
	// Genesis is set for the nodes the genesis file lists.
	Genesis bool `json:"genesis,omitempty"`
	// Voter: may vote and propose (genesis nodes, promoted nodes).
	Voter   bool `json:"voter"`
	Removed bool `json:"removed,omitempty"`
	// Heights of the blocks that added, promoted and removed the node.
	AddedHeight    uint64 `json:"added_height,omitempty"`
	PromotedHeight uint64 `json:"promoted_height,omitempty"`
	RemovedHeight  uint64 `json:"removed_height,omitempty"`
	RemovedReason  string `json:"removed_reason,omitempty"`
}

// Current reports whether the node is a member of the ledger's node set
// now (added or genesis, not removed).
func (r NodeRecord) Current() bool { return !r.Removed }

// IsVoter reports whether the node may vote and propose now.
func (r NodeRecord) IsVoter() bool { return r.Voter && !r.Removed }

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
func (g *Genesis) genesisNode(id string) (NodeRecord, bool) {
	for _, n := range g.Nodes {
		if KeyID(n.Key) == id {
			return NodeRecord{ID: id, PublicKey: hex.EncodeToString(n.Key), Name: n.Name, Genesis: true, Voter: true}, true
		}
	}
	return NodeRecord{}, false
}

// nodeRecord reads node id from st: its stored record, or the implicit one
// of a genesis node.
func nodeRecord(g *Genesis, get func([]byte) ([]byte, bool, error), id string) (NodeRecord, bool, error) {
	raw, ok, err := get(nodeKey(id))
	if err != nil {
		return NodeRecord{}, false, err
	}
	if ok {
		var r NodeRecord
		if err := json.Unmarshal(raw, &r); err != nil {
			return NodeRecord{}, false, fmt.Errorf("decode node %s: %w", id, err)
		}
		return r, true, nil
	}
	r, ok := g.genesisNode(id)
	return r, ok, nil
}

// NodeMember returns ledger node id as the committed state knows it (a
// genesis node, or one added by NodeAdded; removed ones too, with Removed
// set), and false for a key that never was a node.
func (f *FSM) NodeMember(id string) (NodeRecord, bool) {
	r, ok, err := nodeRecord(f.g, f.st.Get, id)
	if err != nil {
		f.log.Error("read node record", "node", id, "err", err)
		return NodeRecord{}, false
	}
	return r, ok
}

// Nodes returns every ledger node the state knows (genesis nodes and added
// ones, removed ones included), ordered by ID.
func (f *FSM) Nodes() ([]NodeRecord, error) {
	seen := map[string]bool{}
	var out []NodeRecord
	err := f.st.Iter([]byte(prefixNode), func(_, v []byte) error {
		var r NodeRecord
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
		id := KeyID(n.Key)
		if !seen[id] {
			r, _ := f.g.genesisNode(id)
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
func (f *FSM) checkProposal(get func([]byte) ([]byte, bool, error), p Proposal, appended time.Time, prevTime int64, needSig bool) error {
	r, ok, err := nodeRecord(f.g, get, p.Proposer)
	if err != nil {
		return &storageError{err}
	}
	if needSig || p.Sig != nil {
		key, err := verifyProposalSig(f.g.ChainID, p)
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

// validateNodeBody checks a node tx body without state.
func validateNodeBody(b TxBody) (bool, error) {
	switch b := b.(type) {
	case NodeAdded:
		if _, err := ParsePublicKey(b.PublicKey); err != nil || len(b.PublicKey) != 64 {
			return true, fmt.Errorf("public_key must be the node's ed25519 public key as 64 hex characters")
		}
		if !isLowerHex(b.PublicKey) {
			return true, fmt.Errorf("public_key must be lowercase hex")
		}
		if err := checkHostPort("raft_address", b.RaftAddress); err != nil {
			return true, err
		}
		if err := checkHostPort("grpc_address", b.GRPCAddress); err != nil {
			return true, err
		}
		return true, checkText("name", b.Name, MaxTextLen, false)
	case NodePromoted:
		if !validID(b.ID) {
			return true, fmt.Errorf("id %q is not a node ID (64 lowercase hex)", abbrev(b.ID))
		}
		return true, nil
	case NodeRemoved:
		if !validID(b.ID) {
			return true, fmt.Errorf("id %q is not a node ID (64 lowercase hex)", abbrev(b.ID))
		}
		return true, checkText("reason", b.Reason, MaxReasonLen, false)
	}
	return false, nil
}

func isLowerHex(s string) bool {
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// checkHostPort requires host:port with a non-empty host of at most 253
// bytes and a port 1-65535.
func checkHostPort(field, s string) error {
	if err := checkText(field, s, 260, true); err != nil {
		return err
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%s %q is not host:port: %v", field, abbrev(s), err)
	}
	if host == "" || len(host) > 253 {
		return fmt.Errorf("%s %q has no host", field, abbrev(s))
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("%s %q: port must be 1-65535", field, abbrev(s))
	}
	return nil
}

// checkNodeBody executes a node tx against the block's state.
func (c *execCtx) checkNodeBody(tx *Tx) ([]kvWrite, error) {
	g := c.genesis
	get := func(k []byte) ([]byte, bool, error) { return c.get(k) }
	switch b := tx.Body.(type) {
	case NodeAdded:
		pub, _ := ParsePublicKey(b.PublicKey)
		id := KeyID(pub)
		old, ok, err := nodeRecord(g, get, id)
		if err != nil {
			return nil, err
		}
		if ok && old.Removed {
			return nil, txErr(CodeInvalid, "node %s was removed at height %d; a removed node key cannot be added again (give the node a new key)", id, old.RemovedHeight)
		}
		if ok {
			return nil, txErr(CodeAlreadyExists, "node %s is already a ledger node (voter=%v)", id, old.Voter)
		}
		var clash string
		err = c.b.Iter([]byte(prefixNode), func(_, v []byte) error {
			var o NodeRecord
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
			return nil, txErr(CodeAlreadyExists, "node %s already uses raft address %s or gRPC address %s", clash, b.RaftAddress, b.GRPCAddress)
		}
		r := NodeRecord{ID: id, PublicKey: hex.EncodeToString(pub), Name: b.Name, RaftAddress: b.RaftAddress,
			GRPCAddress: b.GRPCAddress, AddedHeight: c.height}
		return []kvWrite{{nodeKey(id), mustJSON(r)}}, nil

	case NodePromoted:
		r, ok, err := nodeRecord(g, get, b.ID)
		if err != nil {
			return nil, err
		}
		switch {
		case !ok:
			return nil, txErr(CodeNotFound, "node %s was never added (NodeAdded first)", b.ID)
		case r.Removed:
			return nil, txErr(CodeInvalid, "node %s was removed at height %d", b.ID, r.RemovedHeight)
		case r.Voter:
			return nil, txErr(CodeAlreadyExists, "node %s is already a voter", b.ID)
		}
		r.Voter, r.PromotedHeight = true, c.height
		return []kvWrite{{nodeKey(b.ID), mustJSON(r)}}, nil

	case NodeRemoved:
		r, ok, err := nodeRecord(g, get, b.ID)
		if err != nil {
			return nil, err
		}
		if !ok || r.Removed {
			return nil, txErr(CodeNotFound, "node %s is not a current ledger node", b.ID)
		}
		if r.Voter && len(g.Nodes) > 0 {
			voters, err := c.voters()
			if err != nil {
				return nil, err
			}
			if voters <= 1 {
				return nil, txErr(CodeInvalid, "node %s is the last voting node; promote another node first", b.ID)
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
		var o NodeRecord
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
		if !recorded[KeyID(gn.Key)] {
			n++
		}
	}
	return n, nil
}
