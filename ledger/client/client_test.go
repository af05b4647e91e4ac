package client

import (
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"

	ledgerv1 "github.com/fedtune/fedtune/api/ledger/v1"
	"github.com/fedtune/fedtune/ledger"
)

func testBlockResponse(t testing.TB) (*ledgerv1.BlockResponse, [32]byte) {
	b := &ledger.Block{Header: ledger.Header{Height: 3, Time: 99, NumTxs: 1, Proposer: SignCheckpoint(fixedKey(6), "c", 0, [32]byte{}).NodeID}, Txs: [][]byte{[]byte("tx")}}
	b.Header.TxRoot = ledger.TxRoot(b.Txs)
	h := b.Hash()
	cp := SignCheckpoint(fixedKey(5), "c", 3, h)
	return &ledgerv1.BlockResponse{Height: 3, Hash: h[:], Block: ledger.EncodeBlock(b), Cosignatures: []*ledgerv1.Checkpoint{CheckpointToProto(&cp)}}, h
}

func TestVerifyBlockResponse(t *testing.T) {
	resp, h := testBlockResponse(t)
	vb, err := verifyBlockResponse(resp, 3, 1, "c")
	if err != nil {
		t.Fatal(err)
	}
	if vb.Hash != h || len(vb.Cosignatures) != 1 {
		t.Fatalf("got %+v", vb)
	}
	if _, err := verifyBlockResponse(resp, 3, 2, "c"); !errors.Is(err, ErrQuorum) {
		t.Fatalf("quorum 2: %v", err)
	}
	if _, err := verifyBlockResponse(resp, 4, 0, "c"); err == nil {
		t.Fatal("wrong height accepted")
	}
	if _, err := verifyBlockResponse(resp, 3, 0, "other"); !errors.Is(err, ErrBadCheckpoint) {
		t.Fatalf("other chain: %v", err)
	}
	bad := proto.Clone(resp).(*ledgerv1.BlockResponse)
	bad.Block[len(bad.Block)-1] ^= 1
	if _, err := verifyBlockResponse(bad, 3, 0, "c"); err == nil {
		t.Fatal("altered block accepted")
	}
}

// FuzzVerifyBlockResponse feeds outside bytes to the client's block check:
// it must never panic, and must reject anything whose hash does not match.
func FuzzVerifyBlockResponse(f *testing.F) {
	resp, _ := testBlockResponse(f)
	seed, _ := proto.Marshal(resp)
	f.Add(seed, uint64(3))
	f.Add([]byte{}, uint64(0))
	f.Fuzz(func(t *testing.T, data []byte, h uint64) {
		var r ledgerv1.BlockResponse
		if proto.Unmarshal(data, &r) != nil {
			return
		}
		vb, err := verifyBlockResponse(&r, h, 0, "")
		if err != nil {
			return
		}
		if got := vb.Block.Hash(); got != vb.Hash || vb.Block.Header.Height != h || ledger.TxRoot(vb.Block.Txs) != vb.Block.Header.TxRoot {
			t.Fatal("accepted a block that does not match")
		}
	})
}
