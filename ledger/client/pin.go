package client

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	ledgerv1 "github.com/fedtune/fedtune/api/ledger/v1"

	"github.com/fedtune/fedtune/internal/digest"
	"github.com/fedtune/fedtune/internal/tlsid"
	"github.com/fedtune/fedtune/ledger"
)

// Pin is what a client trusts about the ledger it talks to, read from the
// chain's genesis file: the chain ID, the node keys a ledger server may
// prove at the TLS handshake, and how many of their checkpoint
// cosignatures make a commit count.
//
// The pinned nodes are the genesis file's nodes, plus any node IDs the
// client's configuration adds (ledger_node_ids): a node added later by an
// admin-signed NodeAdded is not in the genesis file, and a client accepts
// its key only when its operator lists it. Cosignatures count only from
// pinned nodes (the ledger gathers them from the genesis nodes).
type Pin struct {
	// ChainID is the genesis chain ID; cosignatures must name it.
	ChainID string
	// Nodes are the pinned node key IDs, sorted.
	Nodes []string
	// Quorum is the genesis policy's checkpoint quorum: how many
	// cosignatures from pinned nodes a block must carry for SubmitWait to
	// count a tx in it as committed.
	Quorum int
	// Source names the genesis file, for messages.
	Source string
}

// PinGenesis pins the nodes of g plus extra node IDs. A genesis that
// lists no nodes cannot pin a server and is an error.
func PinGenesis(g *ledger.Genesis, extra ...string) (*Pin, error) {
	if len(g.Nodes) == 0 {
		return nil, fmt.Errorf("genesis %s lists no nodes, so the ledger's node keys cannot be pinned", g.Source)
	}
	p := &Pin{ChainID: g.ChainID, Quorum: g.Quorum(), Source: g.Source}
	for _, n := range g.Nodes {
		p.Nodes = append(p.Nodes, ledger.KeyID(n.Key))
	}
	for _, id := range extra {
		if !digest.Valid(id) {
			return nil, fmt.Errorf("ledger node ID %q is not a key ID (64 lowercase hex digits)", id)
		}
		p.Nodes = append(p.Nodes, id)
	}
	slices.Sort(p.Nodes)
	p.Nodes = slices.Compact(p.Nodes)
	return p, nil
}

// LoadPin reads the genesis file at path and pins its nodes plus extra. An
// empty path pins nothing: it returns (nil, nil), and extra must be empty
// (node IDs without the genesis file would pin no chain ID or quorum).
func LoadPin(path string, extra ...string) (*Pin, error) {
	if path == "" {
		if len(extra) > 0 {
			return nil, fmt.Errorf("ledger_node_ids need ledger_genesis (the genesis file names the chain and its quorum)")
		}
		return nil, nil
	}
	g, err := ledger.LoadGenesis(path)
	if err != nil {
		return nil, err
	}
	return PinGenesis(g, extra...)
}

// UnpinnedWarning is what services log and commands print when no genesis
// file pins the ledger.
const UnpinnedWarning = "the ledger is not pinned: any TLS key is accepted as a ledger node and commits are not checked for node cosignatures, so a fake ledger server can claim commits; give the chain's genesis file (ledger_genesis, or --genesis) to pin it"

// Has reports whether id is a pinned node.
func (p *Pin) Has(id string) bool {
	_, ok := slices.BinarySearch(p.Nodes, id)
	return ok
}

// Verifier accepts a TLS server that proves a pinned node key.
func (p *Pin) Verifier() tlsid.Verifier {
	return func(id string) error {
		if p.Has(id) {
			return nil
		}
		return fmt.Errorf("key %s is not one of the %d ledger nodes pinned by genesis %s (chain %s)", id, len(p.Nodes), p.Source, p.ChainID)
	}
}

// DialPinned dials addr like Dial, pinned by pin: the server must prove a
// pinned node key, and SubmitWait and VerifyCommitted also require the
// block of a commit to carry pin.Quorum cosignatures from pinned nodes. A
// nil pin dials unpinned (any server key; proofs checked against what the
// server serves).
func DialPinned(ctx context.Context, addr string, key ed25519.PrivateKey, pin *Pin, opts ...grpc.DialOption) (*Client, error) {
	var allow tlsid.Verifier
	if pin != nil {
		allow = pin.Verifier()
	}
	c, err := Dial(ctx, addr, key, allow, opts...)
	if err != nil {
		return nil, err
	}
	c.pin = pin
	return c, nil
}

// Pin returns the client's pin (nil when unpinned).
func (c *Client) Pin() *Pin { return c.pin }

// pinnedCosignatures fetches block h with its cosignatures (the node is
// asked to gather c.pin.Quorum) and checks that at least c.pin.Quorum of
// them, for c.pin.ChainID, are from pinned nodes.
func (c *Client) pinnedCosignatures(ctx context.Context, h uint64) (*VerifiedBlock, error) {
	p := c.pin
	resp, err := c.api.GetBlock(ctx, &ledgerv1.GetBlockRequest{Height: h, MinCosignatures: uint32(p.Quorum)})
	if err != nil {
		if status.Code(err) == codes.FailedPrecondition {
			msg := strings.TrimPrefix(status.Convert(err).Message(), ErrQuorum.Error()+": ")
			return nil, fmt.Errorf("%w: %s", ErrQuorum, msg)
		}
		return nil, err
	}
	vb, err := verifyBlockResponse(resp, h, 0, p.ChainID)
	if err != nil {
		return nil, err
	}
	var ok []string
	for _, cp := range vb.Cosignatures {
		if p.Has(cp.NodeID) {
			ok = append(ok, short(cp.NodeID))
		}
	}
	if len(ok) < p.Quorum {
		return nil, fmt.Errorf("%w: block %d has %d valid cosignatures from the %d nodes pinned by genesis %s (%s), want %d",
			ErrQuorum, h, len(ok), len(p.Nodes), p.Source, strings.Join(ok, ", "), p.Quorum)
	}
	return vb, nil
}

// pinQuorumWait bounds how long pinnedBlock asks again while a block's
// cosignatures fall short: a tx just committed is on a majority of nodes,
// which apply it within moments, so a longer shortfall is an answer.
const pinQuorumWait = 3 * time.Second

// pinRetry is how long pinnedBlock waits before asking again (a node
// reuses a gather that missed some cosignatures for about as long).
const pinRetry = 250 * time.Millisecond

// pinnedBlock is pinnedCosignatures, asked again while the cosignatures
// fall short (peers that have not applied the block yet), for up to
// pinQuorumWait or until ctx ends.
func (c *Client) pinnedBlock(ctx context.Context, h uint64) (*VerifiedBlock, error) {
	deadline := time.Now().Add(pinQuorumWait)
	for {
		vb, err := c.pinnedCosignatures(ctx, h)
		if err == nil || !errors.Is(err, ErrQuorum) || time.Now().After(deadline) {
			return vb, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(pinRetry):
		}
	}
}
