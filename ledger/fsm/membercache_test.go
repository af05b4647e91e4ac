package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/fedtune/fedtune/ledger"
)

// TestMemberCacheFollowsState checks that Apply's member cache never serves
// a record the committed state (or the block being built) has replaced:
// removals and re-additions with another role take effect in the next block
// and within the same block, on the sequential path and on precheck's
// parallel one (8+ txs), and after a Restore.
func TestMemberCacheFollowsState(t *testing.T) {
	c := newCast()
	g := c.genesis(t)
	ch := newChain(t, g, c.node.id)
	n := 0
	reg := func(a *actor) []byte {
		n++
		return a.sign(t, ledger.ModelRegistered{Digest: digest(fmt.Sprint("cache ", n)), Name: "m", Licence: "l", Source: "s"})
	}
	code := func(r TxResult) ledger.Code {
		var te *ledger.TxError
		if errors.As(r.Err, &te) {
			return te.Code
		}
		return ""
	}
	// many returns k txs by the coordinator after first, so that the
	// proposal is large enough for the parallel precheck.
	many := func(first []byte, k int) [][]byte {
		txs := [][]byte{first}
		for range k {
			txs = append(txs, reg(c.coord))
		}
		return txs
	}
	for _, k := range []int{0, 9} { // sequential, then parallel precheck
		t.Run(fmt.Sprintf("txs=%d", k+1), func(t *testing.T) {
			ch.mustApply(many(reg(c.coord), k)...) // the coordinator is cached

			// Removed in one block: rejected in the next.
			ch.mustApply(c.admin.sign(t, ledger.MemberRemoved{ID: c.coord.id, Reason: "test"}))
			res := ch.propose(many(reg(c.coord), k)...)
			for i, r := range res.Results {
				if code(r) != ledger.CodeUnknownSigner {
					t.Fatalf("tx %d of a removed member: %v, want %s", i, r.Err, ledger.CodeUnknownSigner)
				}
			}
			c.coord.nonce -= uint64(k + 1) // rejected txs use no nonce

			// Re-added as an auditor: a coordinator tx is now forbidden.
			ch.mustApply(c.admin.sign(t, ledger.MemberAdded{PublicKey: c.coord.pubHex(), Role: ledger.RoleAuditor}))
			res = ch.propose(many(reg(c.coord), k)...)
			for i, r := range res.Results {
				if code(r) != ledger.CodeForbidden {
					t.Fatalf("tx %d of a member now auditor: %v, want %s", i, r.Err, ledger.CodeForbidden)
				}
			}
			c.coord.nonce -= uint64(k + 1)

			// Back as coordinator, then removed within the same block as its
			// txs: they are rejected.
			ch.mustApply(c.admin.sign(t, ledger.MemberRemoved{ID: c.coord.id, Reason: "test"}))
			ch.mustApply(c.admin.sign(t, ledger.MemberAdded{PublicKey: c.coord.pubHex(), Role: ledger.RoleCoordinator}))
			ch.mustApply(many(reg(c.coord), k)...)
			res = ch.propose(append([][]byte{c.admin.sign(t, ledger.MemberRemoved{ID: c.coord.id, Reason: "test"})}, many(reg(c.coord), k)...)...)
			if res.Results[0].Err != nil {
				t.Fatalf("removal: %v", res.Results[0].Err)
			}
			for i, r := range res.Results[1:] {
				if code(r) != ledger.CodeUnknownSigner {
					t.Fatalf("tx %d after a removal in the same block: %v, want %s", i, r.Err, ledger.CodeUnknownSigner)
				}
			}
			c.coord.nonce -= uint64(k + 1)
			ch.mustApply(c.admin.sign(t, ledger.MemberAdded{PublicKey: c.coord.pubHex(), Role: ledger.RoleCoordinator}))
		})
	}

	// A Restore to a state where the coordinator was removed drops the
	// cached (active) record.
	ch.mustApply(reg(c.coord)) // cached as active
	other := newChain(t, g, c.node.id)
	var buf bytes.Buffer
	other.mustApply(c.admin.signNonce(t, 1, ledger.MemberRemoved{ID: c.coord.id, Reason: "test"}))
	sn := other.db.State().Snapshot()
	if _, err := sn.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	sn.Close()
	if err := ch.fsm.Restore(nopCloser{bytes.NewReader(buf.Bytes())}); err != nil {
		t.Fatal(err)
	}
	ch.index = ch.fsm.AppliedIndex()
	res := ch.propose(c.coord.signNonce(t, 1, ledger.ModelRegistered{Digest: digest("after restore"), Name: "m", Licence: "l", Source: "s"}))
	if code(res.Results[0]) != ledger.CodeUnknownSigner {
		t.Fatalf("after restore: %v, want %s", res.Results[0].Err, ledger.CodeUnknownSigner)
	}
}
