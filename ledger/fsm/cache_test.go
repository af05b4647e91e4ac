package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/fedtune/fedtune/ledger"
)

// TestNoteDecodedSameOutcome: a chain whose txs were handed to NoteDecoded
// (as a leader does on submit) makes the same blocks and results as one
// that decodes everything itself, including for a forged signature (the
// cached decoding does not skip verification), and takes the entries out.
func TestNoteDecodedSameOutcome(t *testing.T) {
	c := newCast()
	g := c.genesis(t)
	noted, plain := newChain(t, g, c.node.id), newChain(t, g, c.node.id)
	reg := func(a *actor, n string) []byte {
		return a.sign(t, ledger.ModelRegistered{Digest: digest(n), Name: n, Licence: "l", Source: "s"})
	}
	forged, _ := ledger.DecodeEnvelope(reg(c.coord, "forged"))
	forged.Signatures[0].Sig[3] ^= 1
	for _, n := range []int{1, 3, 12} { // below and above precheck's threshold
		var txs [][]byte
		for i := range n {
			txs = append(txs, reg(c.coord, fmt.Sprint(n, "/", i)))
		}
		txs = append(txs, forged.Encode(), reg(c.trainers[0], fmt.Sprint(n, " wrong role")))
		for _, raw := range txs {
			if tx, err := ledger.DecodeTx(raw); err == nil {
				noted.fsm.NoteDecoded(tx)
			}
		}
		rn, rp := noted.propose(txs...), plain.propose(txs...)
		if !bytes.Equal(ledger.EncodeBlock(rn.Block), ledger.EncodeBlock(rp.Block)) {
			t.Fatalf("%d txs: blocks differ", n)
		}
		for i := range txs {
			if fmt.Sprint(rn.Results[i].Err) != fmt.Sprint(rp.Results[i].Err) {
				t.Fatalf("%d txs: tx %d: noted %v, plain %v", n, i, rn.Results[i].Err, rp.Results[i].Err)
			}
		}
		if !errors.Is(rn.Results[n].Err, ledger.ErrBadSignature) {
			t.Fatalf("forged tx: %v, want bad signature", rn.Results[n].Err)
		}
		if k := len(noted.fsm.decoded.cur) + len(noted.fsm.decoded.old); k != 0 {
			t.Fatalf("%d txs: %d decoded txs left in the cache", n, k)
		}
	}
}

// TestDecodedCacheChecksBytes: a cached decoding is only used for the very
// bytes it was decoded from, and the cache stays bounded.
func TestDecodedCacheChecksBytes(t *testing.T) {
	c := newCast()
	a := c.coord.sign(t, ledger.ModelRegistered{Digest: digest("a"), Name: "a", Licence: "l", Source: "s"})
	b := c.coord.sign(t, ledger.ModelRegistered{Digest: digest("b"), Name: "b", Licence: "l", Source: "s"})
	txA, err := ledger.DecodeTx(a)
	if err != nil {
		t.Fatal(err)
	}
	var dc decodedCache
	wrong := *txA
	wrong.Hash = ledger.TxHash(b) // filed under b's hash, but decoded from a
	dc.put(&wrong)
	if got := dc.take(b); got != nil {
		t.Fatal("take returned a decoding of other bytes")
	}
	dc.put(txA)
	if got := dc.take(a); got != txA {
		t.Fatal("take did not return the cached decoding")
	}
	if got := dc.take(a); got != nil {
		t.Fatal("take returned an entry twice")
	}
	for i := range 3 * maxDecodedCache {
		tx := *txA
		tx.Hash = ledger.TxHash([]byte(fmt.Sprint(i)))
		dc.put(&tx)
		if n := len(dc.cur) + len(dc.old); n > maxDecodedCache {
			t.Fatalf("cache holds %d txs, bound %d", n, maxDecodedCache)
		}
	}
}

// TestNonceCache: the FSM's nonce cache follows committed blocks, sees a
// block's own writes, and is dropped by Restore (else a restored older
// state would reject nonces it has not seen).
func TestNonceCache(t *testing.T) {
	c := newCast()
	ch := newChain(t, c.genesis(t), c.node.id)
	co := c.coord
	reg := func(nonce uint64, n string) []byte {
		return co.signNonce(t, nonce, ledger.ModelRegistered{Digest: digest(n), Name: n, Licence: "l", Source: "s"})
	}
	wantCodes := func(res *ApplyResult, want ...ledger.Code) {
		t.Helper()
		for i, r := range res.Results {
			var got ledger.Code
			var te *ledger.TxError
			if errors.As(r.Err, &te) {
				got = te.Code
			} else if r.Err != nil {
				t.Fatalf("tx %d: %v", i, r.Err)
			}
			if got != want[i] {
				t.Fatalf("tx %d: code %q (%v), want %q", i, got, r.Err, want[i])
			}
		}
	}
	wantCodes(ch.propose(reg(1, "n1")), "")

	snap := snapshotBytes(t, ch.fsm)

	// Within a block the pending nonce counts; across blocks the committed.
	wantCodes(ch.propose(reg(2, "n2"), reg(2, "n2 again"), reg(3, "n3")), "", ledger.CodeBadNonce, "")
	wantCodes(ch.propose(reg(3, "n3 again"), reg(1, "n1 again"), reg(5, "n5")), ledger.CodeBadNonce, ledger.CodeBadNonce, "")
	wantCodes(ch.propose(reg(5, "n5 again"), reg(6, "n6")), ledger.CodeBadNonce, "")

	// Back to the state after nonce 1: nonce 2 is new again there.
	if err := restoreBytes(ch.fsm, snap); err != nil {
		t.Fatal(err)
	}
	wantCodes(ch.propose(reg(2, "n2 after restore"), reg(2, "n2 twice")), "", ledger.CodeBadNonce)
	if err := VerifyChain(ch.db.State(), ch.fsm.Genesis()); err != nil {
		t.Fatal(err)
	}
}
