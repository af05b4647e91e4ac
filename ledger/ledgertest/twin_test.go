package ledgertest_test

import (
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"testing"
	"time"

	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/ledgertest"
)

// The twin applies each Submit as a block of the real FSM at the test's
// clock, keeps the signer's nonce, and rejects as the ledger does.
func TestTwin(t *testing.T) {
	admin, err := ledger.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	g := ledger.Genesis{ChainID: "twin-test", Time: now.Add(-time.Hour), Source: "test",
		Members: []ledger.GenesisMember{{Name: "admin", Role: ledger.RoleAdmin, PublicKey: hex.EncodeToString(admin.Public().(ed25519.PublicKey))}}}
	tw, err := ledgertest.NewTwin(g, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	defer tw.Close()
	changed := tw.Changed()
	for i := range 2 {
		k, _ := ledger.GenerateKey()
		h, err := tw.Submit(admin, ledger.MemberAdded{PublicKey: hex.EncodeToString(k.Public().(ed25519.PublicKey)), Role: ledger.RoleTrainer})
		if err != nil || h != uint64(i+1) {
			t.Fatalf("submit %d: height %d, %v", i, h, err)
		}
		m, err := tw.FSM().Member(ledger.KeyID(k.Public().(ed25519.PublicKey)))
		if err != nil || m.Role != ledger.RoleTrainer {
			t.Fatalf("member %d: %+v, %v", i, m, err)
		}
	}
	select {
	case <-changed:
	default:
		t.Fatal("Changed was not closed by a block")
	}
	b, err := tw.FSM().Block(2)
	if err != nil || b.Header.Time != now.UnixNano()+1 {
		t.Fatalf("block 2: %+v, %v; want the clock's time (made to increase)", b, err)
	}
	_, err = tw.Submit(admin, ledger.MemberAdded{PublicKey: hex.EncodeToString(admin.Public().(ed25519.PublicKey)), Role: ledger.RoleAdmin})
	var te *ledger.TxError
	if !errors.As(err, &te) || te.Code != ledger.CodeAlreadyExists {
		t.Fatalf("adding the admin again: %v; want a TxError already_exists", err)
	}
	if err := tw.AtLeast(2); err != nil {
		t.Fatal(err)
	}
	if err := tw.AtLeast(3); !errors.Is(err, ledgertest.ErrBehind) {
		t.Fatalf("AtLeast(3) at height 2: %v", err)
	}
}
