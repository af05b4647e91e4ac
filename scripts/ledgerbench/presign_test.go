package main

import (
	"bytes"
	"crypto/ed25519"
	"testing"
	"time"

	"github.com/fedtune/fedtune/ledger"
)

// TestPresign: presign gives each client exactly the txs driveGRPC would
// sign inline for its next nonces, in order.
func TestPresign(t *testing.T) {
	var keys []ed25519.PrivateKey
	for range 3 {
		k, err := ledger.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
	}
	nonces := []uint64{0, 5, 9}
	pre := presign("chain", keys, nonces, 4)
	if len(pre) != len(keys) {
		t.Fatalf("%d clients presigned, want %d", len(pre), len(keys))
	}
	for ci, txs := range pre {
		if len(txs) != 4 {
			t.Fatalf("client %d: %d txs, want 4", ci, len(txs))
		}
		for k, env := range txs {
			want, err := benchTx(keys[ci], "chain", ci, nonces[ci]+uint64(k)+1)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(env, want) {
				t.Fatalf("client %d tx %d differs from the inline one", ci, k)
			}
			tx, err := ledger.DecodeTx(env)
			if err != nil || tx.Nonce != nonces[ci]+uint64(k)+1 {
				t.Fatalf("client %d tx %d: nonce %v, err %v", ci, k, tx, err)
			}
		}
	}
	if got := presignCount(8000, 10*time.Second, 256); got != 313 {
		t.Fatalf("presignCount = %d, want 313", got)
	}
	if presignCount(0, time.Second, 1) != 0 || presign("chain", keys, nonces, 0) != nil {
		t.Fatal("a rate of 0 must presign nothing")
	}
}
