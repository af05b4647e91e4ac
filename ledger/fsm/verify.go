package fsm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/internal/codec"
	"github.com/fedtune/fedtune/ledger/pebblestore"
)

// VerifyOptions configure VerifyChainContext.
type VerifyOptions struct {
	// Logger receives a progress line every few seconds; nil discards.
	Logger *slog.Logger
	// Progress, if set, is called after each verified height.
	Progress func(height, head uint64)
}

// VerifyChain re-derives the chain stored in st from genesis g: for every
// height it decodes the stored block and checks its height, previous hash,
// tx root and time, then re-applies its transactions on a fresh in-memory
// state (re-verifying every signature, role, nonce and round rule) and
// checks that they are all accepted, that the re-derived block is byte for
// byte the stored one (so the state hash matches) and that the tx index
// points at it. Finally it checks the head and that the stored application
// state equals the re-derived one. It returns nil or a *VerifyError naming
// the first height and field that broke.
func VerifyChain(st *pebblestore.State, g *ledger.Genesis) error {
	return VerifyChainContext(context.Background(), st, g, VerifyOptions{})
}

// VerifyChainContext is VerifyChain with a context and options.
func VerifyChainContext(ctx context.Context, st *pebblestore.State, g *ledger.Genesis, opts VerifyOptions) error {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// Validate a copy: Validate fills in parsed keys, and g may be the
	// running FSM's genesis, read concurrently (a snapshot restore verifies
	// while the node answers TLS handshakes from it).
	gc := *g
	gc.Members = slices.Clone(g.Members)
	gc.Nodes = slices.Clone(g.Nodes)
	if err := gc.Validate(); err != nil {
		return err
	}
	g = &gc
	db, err := pebblestore.Open("verify", pebblestore.Options{FS: vfs.NewMem(), NoSync: true})
	if err != nil {
		return fmt.Errorf("ledger: verify: %w", err)
	}
	defer db.Close()
	ref, err := New(db.State(), g, Options{})
	if err != nil {
		return fmt.Errorf("ledger: verify: %w", err)
	}

	sn := st.Snapshot()
	if sn == nil {
		return fmt.Errorf("ledger: verify: %w", pebblestore.ErrClosed)
	}
	defer sn.Close()

	rawHead, ok, err := sn.Get([]byte(keyHead))
	if err != nil {
		return fmt.Errorf("ledger: verify: %w", err)
	}
	if !ok {
		return &ledger.VerifyError{Height: 0, Field: "head", Msg: "no chain in this state (no head record)"}
	}
	hd, err := decodeHead(rawHead)
	if err != nil {
		return &ledger.VerifyError{Height: 0, Field: "head", Msg: err.Error()}
	}

	// Height 0: the genesis block must be exactly the one g produces.
	want0, _ := genesisBlock(g)
	raw0, ok, err := sn.Get(blockKey(0))
	if err != nil {
		return fmt.Errorf("ledger: verify: %w", err)
	}
	if !ok {
		return &ledger.VerifyError{Height: 0, Field: "block", Msg: "genesis block missing"}
	}
	if !bytes.Equal(raw0, ledger.EncodeBlock(want0)) {
		got, err := ledger.DecodeBlock(raw0)
		if err != nil {
			return &ledger.VerifyError{Height: 0, Field: "encoding", Msg: err.Error()}
		}
		return &ledger.VerifyError{Height: 0, Field: headerDiff(&got.Header, &want0.Header, "genesis"), Msg: "genesis block differs from the one the genesis file gives"}
	}

	prev := want0
	last := time.Now()
	for h := uint64(1); h <= hd.Height; h++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		raw, ok, err := sn.Get(blockKey(h))
		if err != nil {
			return fmt.Errorf("ledger: verify: %w", err)
		}
		if !ok {
			return &ledger.VerifyError{Height: h, Field: "block", Msg: fmt.Sprintf("missing; the head is at height %d", hd.Height)}
		}
		b, err := ledger.DecodeBlock(raw)
		if err != nil {
			return &ledger.VerifyError{Height: h, Field: "encoding", Msg: err.Error()}
		}
		if b.Header.Height != h {
			return &ledger.VerifyError{Height: h, Field: "height", Msg: fmt.Sprintf("header says height %d", b.Header.Height)}
		}
		if ph := prev.Hash(); b.Header.PrevHash != ph {
			return &ledger.VerifyError{Height: h, Field: "prev_hash", Msg: fmt.Sprintf("header has %x, block %d hashes to %x", b.Header.PrevHash, h-1, ph)}
		}
		if root := ledger.TxRoot(b.Txs); b.Header.TxRoot != root {
			return &ledger.VerifyError{Height: h, Field: "tx_root", Msg: fmt.Sprintf("header has %x, the block's %d txs give %x", b.Header.TxRoot, len(b.Txs), root)}
		}
		if b.Header.Time <= prev.Header.Time {
			return &ledger.VerifyError{Height: h, Field: "time", Msg: fmt.Sprintf("%d is not after the previous block's %d", b.Header.Time, prev.Header.Time)}
		}
		if len(b.Txs) == 0 {
			return &ledger.VerifyError{Height: h, Field: "txs", Msg: "block has no transactions; the FSM never makes an empty block"}
		}
		res := ref.ApplyProposal(ledger.Proposal{Proposer: b.Header.Proposer, Time: b.Header.Time, Txs: b.Txs})
		if res.Err != nil {
			if errors.Is(res.Err, ErrFSMBroken) {
				return fmt.Errorf("ledger: verify: %w", res.Err)
			}
			return &ledger.VerifyError{Height: h, Field: "block", Msg: res.Err.Error()}
		}
		for i, r := range res.Results {
			if r.Err != nil {
				return &ledger.VerifyError{Height: h, Field: fmt.Sprintf("tx[%d]", i), Msg: fmt.Sprintf("tx %x would be rejected: %v", r.Hash[:8], r.Err)}
			}
		}
		got := res.Block
		if got == nil || !bytes.Equal(ledger.EncodeBlock(got), raw) {
			if got == nil {
				return &ledger.VerifyError{Height: h, Field: "block", Msg: "re-applying the block's txs made no block"}
			}
			field := headerDiff(&b.Header, &got.Header, "block")
			msg := "stored block differs from the re-derived one"
			switch field {
			case "state_hash":
				msg = fmt.Sprintf("header has %x, re-applying the block's txs gives %x", b.Header.StateHash, got.Header.StateHash)
			case "time":
				msg = fmt.Sprintf("header has %d, re-applying gives %d", b.Header.Time, got.Header.Time)
			}
			return &ledger.VerifyError{Height: h, Field: field, Msg: msg}
		}
		for i, tx := range b.Txs {
			th := ledger.TxHash(tx)
			v, ok, err := sn.Get(txIndexKey(th))
			if err != nil {
				return fmt.Errorf("ledger: verify: %w", err)
			}
			r := codec.NewReader(v)
			if !ok || r.U64() != h || r.U32() != uint32(i) || r.Done() != nil {
				return &ledger.VerifyError{Height: h, Field: "tx_index", Msg: fmt.Sprintf("index entry of tx[%d] %x does not point at height %d index %d", i, th[:8], h, i)}
			}
		}
		prev = b
		if opts.Progress != nil {
			opts.Progress(h, hd.Height)
		}
		if time.Since(last) > 5*time.Second {
			log.Info("verifying chain", "height", h, "head", hd.Height)
			last = time.Now()
		}
	}
	if ph := prev.Hash(); ph != hd.Hash || hd.StateHash != prev.Header.StateHash || hd.Time != prev.Header.Time {
		return &ledger.VerifyError{Height: hd.Height, Field: "head", Msg: "head record does not match the last block"}
	}
	if _, ok, err := sn.Get(blockKey(hd.Height + 1)); err != nil {
		return fmt.Errorf("ledger: verify: %w", err)
	} else if ok {
		return &ledger.VerifyError{Height: hd.Height + 1, Field: "head", Msg: "a block is stored above the head"}
	}
	if err := compareState(sn, db.State()); err != nil {
		err.Height = hd.Height
		return err
	}
	// The update index is outside the state hash; a state that says it
	// has one must hold exactly the re-derived one.
	if _, ok, err := sn.Get([]byte(keyUpdateIdxVer)); err != nil {
		return fmt.Errorf("ledger: verify: %w", err)
	} else if ok {
		if err := comparePrefix(sn, db.State(), prefixUpdateIdx, "update_index"); err != nil {
			err.Height = hd.Height
			return err
		}
	}
	log.Info("chain verified", "height", hd.Height, "hash", fmt.Sprintf("%x", hd.Hash))
	return nil
}

// headerDiff names the first header field that differs, or whole when the
// headers are equal (the difference is elsewhere in the block).
func headerDiff(got, want *ledger.Header, whole string) string {
	if f := ledger.HeaderDiff(got, want); f != "" {
		return f
	}
	return whole
}

type iterGetter interface {
	Get(key []byte) ([]byte, bool, error)
	Iter(prefix []byte, fn func(k, v []byte) error) error
}

// compareState checks that the stored application state equals the
// re-derived one, key for key.
func compareState(stored, derived iterGetter) *ledger.VerifyError {
	return comparePrefix(stored, derived, prefixApp, "state")
}

// comparePrefix compares the keys under prefix of two states; the error
// names field.
func comparePrefix(stored, derived iterGetter, prefix, field string) *ledger.VerifyError {
	var verr *ledger.VerifyError
	n := 0
	err := stored.Iter([]byte(prefix), func(k, v []byte) error {
		n++
		dv, ok, err := derived.Get(k)
		if err != nil {
			return err
		}
		if !ok {
			verr = &ledger.VerifyError{Field: field, Msg: fmt.Sprintf("stored key %q is not in the re-derived state", k)}
			return pebblestore.ErrStopIter
		}
		if !bytes.Equal(dv, v) {
			verr = &ledger.VerifyError{Field: field, Msg: fmt.Sprintf("stored value of %q differs from the re-derived one", k)}
			return pebblestore.ErrStopIter
		}
		return nil
	})
	if err != nil {
		return &ledger.VerifyError{Field: field, Msg: err.Error()}
	}
	if verr != nil {
		return verr
	}
	m := 0
	if err := derived.Iter([]byte(prefix), func(k, v []byte) error { m++; return nil }); err != nil {
		return &ledger.VerifyError{Field: field, Msg: err.Error()}
	}
	if m != n {
		return &ledger.VerifyError{Field: field, Msg: fmt.Sprintf("stored %s has %d keys, the re-derived one %d", field, n, m)}
	}
	return nil
}
