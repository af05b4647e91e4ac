package ledger

import (
	"fmt"
	"net"
	"strconv"

	"github.com/fedtune/fedtune/internal/digest"
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

// validateNodeBody checks a node tx body without state.
func validateNodeBody(b TxBody) (bool, error) {
	switch b := b.(type) {
	case NodeAdded:
		if _, err := ParsePublicKey(b.PublicKey); err != nil || len(b.PublicKey) != 64 {
			return true, fmt.Errorf("public_key must be the node's ed25519 public key as 64 hex characters")
		}
		if !digest.Valid(b.PublicKey) {
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
		if !digest.Valid(b.ID) {
			return true, fmt.Errorf("id %q is not a node ID (64 lowercase hex)", abbrev(b.ID))
		}
		return true, nil
	case NodeRemoved:
		if !digest.Valid(b.ID) {
			return true, fmt.Errorf("id %q is not a node ID (64 lowercase hex)", abbrev(b.ID))
		}
		return true, checkText("reason", b.Reason, MaxReasonLen, false)
	}
	return false, nil
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
