package fsm

import (
	"errors"
	"testing"

	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/internal/codec"
)

// tamperChain builds a chain of five blocks with a whole round.
func tamperChain(t *testing.T) (*cast, *chain) {
	c := newCast()
	ch := newChain(t, c.genesis(t), c.node.id)
	fullRound(t, c, ch)
	if err := VerifyChain(ch.db.State(), ch.fsm.Genesis()); err != nil {
		t.Fatalf("untouched chain: %v", err)
	}
	return c, ch
}

func setKey(t *testing.T, ch *chain, key, val []byte) {
	t.Helper()
	b := ch.db.State().NewBatch()
	defer b.Close()
	if err := b.Set(key, val); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(); err != nil {
		t.Fatal(err)
	}
}

func storedBlock(t *testing.T, ch *chain, h uint64) []byte {
	t.Helper()
	raw, ok, err := ch.db.State().Get(blockKey(h))
	if err != nil || !ok {
		t.Fatalf("block %d: %v", h, err)
	}
	return raw
}

func TestVerifyChainTamper(t *testing.T) {
	const h = 3    // the block with three UpdateSubmitted txs
	headerOff := 1 // after the block version byte
	cases := []struct {
		name   string
		tamper func(t *testing.T, ch *chain)
		height uint64
		field  string
	}{
		{"flip a prev_hash byte", func(t *testing.T, ch *chain) {
			raw := storedBlock(t, ch, h)
			raw[headerOff+1+8+5] ^= 1
			setKey(t, ch, blockKey(h), raw)
		}, h, "prev_hash"},
		{"flip a state_hash byte", func(t *testing.T, ch *chain) {
			raw := storedBlock(t, ch, h)
			raw[headerOff+1+8+64+7] ^= 1
			setKey(t, ch, blockKey(h), raw)
		}, h, "state_hash"},
		{"flip a tx_root byte", func(t *testing.T, ch *chain) {
			raw := storedBlock(t, ch, h)
			raw[headerOff+1+8+32] ^= 1
			setKey(t, ch, blockKey(h), raw)
		}, h, "tx_root"},
		{"flip a byte in a tx", func(t *testing.T, ch *chain) {
			raw := storedBlock(t, ch, h)
			raw[len(raw)-20] ^= 1
			setKey(t, ch, blockKey(h), raw)
		}, h, "tx_root"},
		{"flip the version byte", func(t *testing.T, ch *chain) {
			raw := storedBlock(t, ch, h)
			raw[0] ^= 1
			setKey(t, ch, blockKey(h), raw)
		}, h, "encoding"},
		{"rewind the time", func(t *testing.T, ch *chain) {
			b, _ := ledger.DecodeBlock(storedBlock(t, ch, h))
			b.Header.Time = 5
			setKey(t, ch, blockKey(h), ledger.EncodeBlock(b))
		}, h, "time"},
		{"drop a tx", func(t *testing.T, ch *chain) {
			b, _ := ledger.DecodeBlock(storedBlock(t, ch, h))
			b.Txs = b.Txs[:2]
			b.Header.NumTxs = 2
			setKey(t, ch, blockKey(h), ledger.EncodeBlock(b))
		}, h, "tx_root"},
		{"drop a tx and fix the tx root", func(t *testing.T, ch *chain) {
			b, _ := ledger.DecodeBlock(storedBlock(t, ch, h))
			b.Txs = b.Txs[1:]
			b.Header.NumTxs = 2
			b.Header.TxRoot = ledger.TxRoot(b.Txs)
			setKey(t, ch, blockKey(h), ledger.EncodeBlock(b))
		}, h, "state_hash"},
		{"drop a tx, a later block then rejects", func(t *testing.T, ch *chain) {
			// Remove the rejected update's submission from block 3: block
			// 4's UpdateRejected then names an update that was never sent.
			b, _ := ledger.DecodeBlock(storedBlock(t, ch, h))
			b.Txs = b.Txs[:2]
			b.Header.NumTxs = 2
			b.Header.TxRoot = ledger.TxRoot(b.Txs)
			// Forge the state hash too, and re-link block 4.
			b.Header.StateHash = replayStateHash(t, ch, h, b)
			setKey(t, ch, blockKey(h), ledger.EncodeBlock(b))
			nb, _ := ledger.DecodeBlock(storedBlock(t, ch, h+1))
			nb.Header.PrevHash = b.Hash()
			setKey(t, ch, blockKey(h+1), ledger.EncodeBlock(nb))
		}, h + 1, "tx[0]"},
		{"forge a tx's signature", func(t *testing.T, ch *chain) {
			b, _ := ledger.DecodeBlock(storedBlock(t, ch, h))
			e, _ := ledger.DecodeEnvelope(b.Txs[1])
			e.Signatures[0].Sig[0] ^= 1
			b.Txs[1] = e.Encode()
			b.Header.TxRoot = ledger.TxRoot(b.Txs)
			setKey(t, ch, blockKey(h), ledger.EncodeBlock(b))
		}, h, "tx[1]"},
		{"delete a block", func(t *testing.T, ch *chain) {
			b := ch.db.State().NewBatch()
			defer b.Close()
			b.Delete(blockKey(h))
			b.Commit()
		}, h, "block"},
		{"edit a member's role in the state", func(t *testing.T, ch *chain) {
			c := newCast()
			m, _ := ch.fsm.Member(c.auditor.id)
			m.Role = ledger.RoleAdmin
			setKey(t, ch, memberKey(m.ID), mustJSON(m))
		}, 5, "state"},
		{"point the tx index elsewhere", func(t *testing.T, ch *chain) {
			b, _ := ledger.DecodeBlock(storedBlock(t, ch, h))
			var w codec.Writer
			w.U64(1)
			w.U32(0)
			setKey(t, ch, txIndexKey(ledger.TxHash(b.Txs[0])), w.B)
		}, h, "tx_index"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, ch := tamperChain(t)
			tc.tamper(t, ch)
			err := VerifyChain(ch.db.State(), ch.fsm.Genesis())
			var ve *ledger.VerifyError
			if !errors.As(err, &ve) {
				t.Fatalf("got %v, want a VerifyError", err)
			}
			t.Logf("%v", err)
			if ve.Height != tc.height || ve.Field != tc.field {
				t.Fatalf("got height %d field %s, want height %d field %s", ve.Height, ve.Field, tc.height, tc.field)
			}
		})
	}
}

// replayStateHash re-derives the state hash block h would have with b's txs.
func replayStateHash(t *testing.T, ch *chain, h uint64, b *ledger.Block) [32]byte {
	t.Helper()
	ref := newChain(t, ch.fsm.Genesis(), "")
	for i := uint64(1); i < h; i++ {
		pb, _ := ch.fsm.Block(i)
		if res := ref.fsm.ApplyProposal(ledger.Proposal{Proposer: pb.Header.Proposer, Time: pb.Header.Time, Txs: pb.Txs}); res.Block == nil {
			t.Fatal("replay")
		}
	}
	res := ref.fsm.ApplyProposal(ledger.Proposal{Proposer: b.Header.Proposer, Time: b.Header.Time, Txs: b.Txs})
	if res.Block == nil {
		t.Fatal("replay of forged block")
	}
	return res.Block.Header.StateHash
}

func TestVerifyChainOtherGenesis(t *testing.T) {
	_, ch := tamperChain(t)
	g := newCast().genesis(t)
	g.Policy.MaxBlockTxs = 7
	err := VerifyChain(ch.db.State(), g)
	var ve *ledger.VerifyError
	if !errors.As(err, &ve) || ve.Height != 0 || ve.Field != "state_hash" {
		t.Fatalf("got %v", err)
	}
}
