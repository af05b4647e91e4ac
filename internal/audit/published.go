package audit

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"time"

	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/fsm"
)

// publishedPage is how many published datasets PublishedDatasets reads
// from the re-derived state at a time.
const publishedPage = 1000

// PublishedDatasets verifies e in full (as Verify does, without
// artifacts) and returns every published dataset of the state the chain
// derives, in the order they were published (height, then position in
// the block), with the report of the verification. Unlike a node's
// published-dataset index, the list is complete for the chain e holds:
// every DatasetPublished on it is applied again, so a dataset cannot be
// left out without changing a block, which the hash chain (and the
// cosignatures on its head, see AnchorHead) exposes.
func PublishedDatasets(ctx context.Context, e *Export) ([]ledger.PublishedListing, *Report, error) {
	var all []ledger.PublishedListing
	rep, err := verify(ctx, e, VerifyOptions{}, func(f *fsm.FSM) error {
		after := ""
		for {
			p, err := f.PublishedDatasets(after, publishedPage, 1<<30)
			if err != nil {
				return fmt.Errorf("audit: published datasets: %w", err)
			}
			all = append(all, p.Datasets...)
			if p.Next == "" {
				return nil
			}
			after = p.Next
		}
	})
	if err != nil {
		return nil, nil, err
	}
	sort.SliceStable(all, func(i, j int) bool {
		if all[i].Height != all[j].Height {
			return all[i].Height < all[j].Height
		}
		return all[i].TxIndex < all[j].TxIndex
	})
	return all, rep, nil
}

// headQuorumWait bounds how long AnchorHead asks again while the head
// block's cosignatures fall short (peers that have not applied it yet).
const headQuorumWait = 3 * time.Second

// HeadAnchor says which nodes cosigned a chain's head block.
type HeadAnchor struct {
	Height    uint64
	Hash      [32]byte
	Quorum    int
	Cosigners []string // the node IDs whose cosignatures counted, sorted
	Nodes     int      // how many nodes may cosign (0: any node key counted)
}

// AnchorHead checks that the block at height h on src hashes to hash (the
// head of a chain verified block by block, so its hash commits to every
// block before it) and carries at least opts.Quorum valid cosignatures,
// for opts.ChainID, from opts.Nodes (any node when empty). A lying node
// can so not serve a chain of its own making, or leave a block out of the
// one it serves; it can still serve an older head (a shorter, honest
// prefix), which the caller reports by height.
func AnchorHead(ctx context.Context, src BlockSource, h uint64, hash [32]byte, opts AnchorOptions) (*HeadAnchor, error) {
	if opts.Quorum < 1 {
		return nil, fmt.Errorf("audit: anchor head: quorum %d, want at least 1", opts.Quorum)
	}
	if opts.ChainID == "" {
		return nil, errors.New("audit: anchor head: no chain ID")
	}
	a := &anchorer{ctx: ctx, src: src, opts: opts, blocks: map[uint64]*anchorBlock{}, cosigners: map[string]bool{}, minCos: -1}
	if len(opts.Nodes) > 0 {
		a.allowed = map[string]bool{}
		for _, id := range opts.Nodes {
			a.allowed[id] = true
		}
		if opts.Quorum > len(a.allowed) {
			return nil, fmt.Errorf("audit: anchor head: quorum %d exceeds the %d nodes that may cosign", opts.Quorum, len(a.allowed))
		}
	}
	rec := fmt.Sprintf("head block %d", h)
	// A block just applied may not carry its peers' cosignatures yet: ask
	// again for a few seconds before calling the shortfall an answer.
	deadline := time.Now().Add(headQuorumWait)
	b, err := a.block(h, rec)
	for err != nil && errors.Is(err, ErrNotAnchored) && time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(250 * time.Millisecond):
		}
		b, err = a.block(h, rec)
	}
	if err != nil {
		return nil, err
	}
	if b.hash != hash {
		return nil, notAnchored(rec, "the cosigned block hashes to %x, the chain verified ends in %x", b.hash[:8], hash[:8])
	}
	return &HeadAnchor{Height: h, Hash: hash, Quorum: opts.Quorum, Cosigners: slices.Sorted(maps.Keys(a.cosigners)), Nodes: len(a.allowed)}, nil
}
