package client

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	ledgerv1 "github.com/fedtune/fedtune/api/ledger/v1"
	"github.com/fedtune/fedtune/internal/tlsid"
	"github.com/fedtune/fedtune/ledger"
)

// scriptedLedger answers Submit with "committed at height", and GetTx,
// GetBlock and Status from a chain of one block (at blockHeight) that may
// or may not hold the tx, with optional lies.
type scriptedLedger struct {
	ledgerv1.UnimplementedLedgerServer
	height      uint64 // claimed commit height
	blockHeight uint64
	block       *ledger.Block
	txIndex     int // index of the tx in block; -1: absent
	proofHeight uint64
	badRoot     bool
	// lagging: the node has not applied blockHeight when first asked for
	// the tx, and applies it while it answers the Status that follows (a
	// follower a little behind the leader that answered the Submit).
	lagging bool
	applied atomic.Bool
}

func (s *scriptedLedger) Submit(_ context.Context, req *ledgerv1.SubmitRequest) (*ledgerv1.SubmitResponse, error) {
	return &ledgerv1.SubmitResponse{Results: []*ledgerv1.TxResult{{Status: ledgerv1.TxStatus_TX_STATUS_COMMITTED, Height: s.height}}}, nil
}

func (s *scriptedLedger) Status(context.Context, *ledgerv1.StatusRequest) (*ledgerv1.StatusResponse, error) {
	s.applied.Store(true)
	return &ledgerv1.StatusResponse{Height: s.blockHeight}, nil
}

func (s *scriptedLedger) GetTx(_ context.Context, req *ledgerv1.GetTxRequest) (*ledgerv1.GetTxResponse, error) {
	if s.txIndex < 0 || s.lagging && !s.applied.Load() {
		return nil, status.Error(codes.NotFound, "no such tx")
	}
	proof, err := ledger.InclusionProof(s.block.Txs, uint64(s.txIndex))
	if err != nil {
		return nil, err
	}
	root := s.block.Header.TxRoot
	if s.badRoot {
		// A self-consistent proof for a one-tx tree: verifies alone, but
		// is not the block's root.
		root = ledger.TxRoot(s.block.Txs[s.txIndex : s.txIndex+1])
		proof = nil
		return &ledgerv1.GetTxResponse{Height: s.proofHeight, Index: 0, Envelope: s.block.Txs[s.txIndex], Proof: proof, TreeSize: 1, TxRoot: root[:]}, nil
	}
	return &ledgerv1.GetTxResponse{Height: s.proofHeight, Index: uint64(s.txIndex), Envelope: s.block.Txs[s.txIndex], Proof: proof,
		TreeSize: uint64(len(s.block.Txs)), TxRoot: root[:]}, nil
}

func (s *scriptedLedger) StreamBlocks(req *ledgerv1.StreamBlocksRequest, stream ledgerv1.Ledger_StreamBlocksServer) error {
	if req.FromHeight > s.blockHeight {
		return nil
	}
	if req.FromHeight != s.blockHeight {
		return status.Errorf(codes.NotFound, "block %d", req.FromHeight)
	}
	h := s.block.Hash()
	return stream.Send(&ledgerv1.BlockResponse{Height: req.FromHeight, Hash: h[:], Block: ledger.EncodeBlock(s.block)})
}

func TestSubmitWaitNeedsProof(t *testing.T) {
	tx := []byte("the tx")
	other := []byte("another tx")
	mkBlock := func(txs ...[]byte) *ledger.Block {
		b := &ledger.Block{Header: ledger.Header{Height: 5, NumTxs: uint32(len(txs))}, Txs: txs}
		b.Header.TxRoot = ledger.TxRoot(txs)
		return b
	}
	for _, tc := range []struct {
		name string
		srv  *scriptedLedger
		want string // "" = committed
	}{
		{"honest", &scriptedLedger{height: 5, blockHeight: 5, block: mkBlock(other, tx), txIndex: 1, proofHeight: 5}, ""},
		{"applies the block between GetTx and Status", &scriptedLedger{height: 5, blockHeight: 5, block: mkBlock(other, tx), txIndex: 1, proofHeight: 5, lagging: true}, ""},
		{"claims a height its chain has, without the tx", &scriptedLedger{height: 5, blockHeight: 5, block: mkBlock(other), txIndex: -1}, "does not hold it"},
		{"claims height 424242", &scriptedLedger{height: 424242, blockHeight: 424242, block: mkBlock(other), txIndex: -1}, "head 424242) does not hold it"},
		{"proof for another height", &scriptedLedger{height: 4, blockHeight: 5, block: mkBlock(other, tx), txIndex: 1, proofHeight: 5}, "puts it at height 5"},
		{"proof against another root", &scriptedLedger{height: 5, blockHeight: 5, block: mkBlock(other, tx), txIndex: 1, proofHeight: 5, badRoot: true}, "is not the block's"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, k, kid := serveLedger(t, tc.srv)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			c, err := Dial(ctx, addr, k, tlsid.ExpectID(kid))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			h, err := c.SubmitWait(ctx, tx)
			if tc.want == "" {
				if err != nil || h != tc.srv.height {
					t.Fatalf("SubmitWait = %d, %v; want %d", h, err, tc.srv.height)
				}
				return
			}
			if !errors.Is(err, ErrUnproven) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("SubmitWait = %d, %v; want ErrUnproven with %q", h, err, tc.want)
			}
		})
	}
}

// authKey is a fresh key and its ID.
func authKey(t testing.TB) (ed25519.PrivateKey, string) {
	t.Helper()
	k, err := ledger.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k, ledger.KeyID(k.Public().(ed25519.PublicKey))
}

// serveLedger serves srv over TLS as a fresh key until the test ends and
// returns its address, the key and its ID.
func serveLedger(t *testing.T, srv ledgerv1.LedgerServer) (string, ed25519.PrivateKey, string) {
	t.Helper()
	k, kid := authKey(t)
	creds, err := tlsid.ServerOption(k, tlsid.AllowAny())
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(creds)
	ledgerv1.RegisterLedgerServer(gs, srv)
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)
	return ln.Addr().String(), k, kid
}

// rejectingLedger rejects every tx with a typed reason; old leaves out the
// TxError message (a node from before it), sending only code and reason.
type rejectingLedger struct {
	ledgerv1.UnimplementedLedgerServer
	old bool
}

func (s *rejectingLedger) Submit(_ context.Context, req *ledgerv1.SubmitRequest) (*ledgerv1.SubmitResponse, error) {
	te := &ledger.TxError{Code: ledger.CodeBadNonce, Cause: ledger.CauseNonceStale, Msg: "nonce 3 is not above 7"}
	r := &ledgerv1.TxResult{Status: ledgerv1.TxStatus_TX_STATUS_REJECTED, Reason: te.Error(), Code: string(te.Code)}
	if !s.old {
		r.Error = TxErrorProto(te)
	}
	return &ledgerv1.SubmitResponse{Results: []*ledgerv1.TxResult{r}}, nil
}

// TestSubmitWaitTypedRejection: a rejection reaches the caller as the
// ledger's *TxError (code and cause), through errors.Is and errors.As.
func TestSubmitWaitTypedRejection(t *testing.T) {
	for _, old := range []bool{false, true} {
		addr, k, kid := serveLedger(t, &rejectingLedger{old: old})
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		c, err := Dial(ctx, addr, k, tlsid.ExpectID(kid))
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.SubmitWait(ctx, []byte("tx"))
		c.Close()
		cancel()
		var te *ledger.TxError
		if !errors.Is(err, ErrRejected) || !errors.Is(err, ledger.ErrBadNonce) || errors.Is(err, ledger.ErrForbidden) || !errors.As(err, &te) {
			t.Fatalf("old %v: SubmitWait: %v, want a rejection with code bad_nonce", old, err)
		}
		if want := "ledger node: tx rejected: ledger: tx rejected (bad_nonce): nonce 3 is not above 7"; err.Error() != want {
			t.Errorf("old %v: message %q, want %q", old, err, want)
		}
		if !old && (te.Cause != ledger.CauseNonceStale || te.Msg != "nonce 3 is not above 7") {
			t.Errorf("TxError %+v, want the cause and message apart", te)
		}
	}
}

// TestStatusDetails: a TxError survives a gRPC status as a detail.
func TestStatusDetails(t *testing.T) {
	te := &ledger.TxError{Code: ledger.CodeAlreadyExists, Msg: "round 2 of job x already exists"}
	err := StatusError(codes.FailedPrecondition, fmt.Errorf("submit: %w", &RejectedError{TxError: te, Reason: te.Error()}))
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("code %v", status.Code(err))
	}
	got := FromStatus(err)
	var back *ledger.TxError
	if !errors.Is(got, ErrRejected) || !errors.Is(got, ledger.ErrAlreadyExists) || !errors.As(got, &back) || *back != *te {
		t.Fatalf("FromStatus = %v (%+v), want the TxError back", got, back)
	}
	plain := status.Error(codes.FailedPrecondition, "no TxError here")
	if got := FromStatus(plain); got != plain || errors.Is(got, ErrRejected) {
		t.Fatalf("FromStatus(plain) = %v", got)
	}
	if s := StatusError(codes.Internal, errors.New("boom")); FromStatus(s) != s {
		t.Fatalf("Status without a TxError carries a detail")
	}
}

func TestDialNeedsKey(t *testing.T) {
	if _, err := Dial(context.Background(), "127.0.0.1:1", nil, nil); err == nil || !strings.Contains(err.Error(), "no key for TLS") {
		t.Fatalf("Dial without a key: %v", err)
	}
}

// TestRefusedServerKeyTyped: a server whose TLS key the client refuses
// ends SubmitWait and queries at once, with an error that is
// tlsid.ErrNotAllowed, not only its text.
func TestRefusedServerKeyTyped(t *testing.T) {
	addr, k, _ := serveLedger(t, &rejectingLedger{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, other := authKey(t)
	c, err := Dial(ctx, addr, k, tlsid.ExpectID(other))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.SubmitWait(ctx, []byte("tx")); !errors.Is(err, tlsid.ErrNotAllowed) || status.Code(err) != codes.Unavailable {
		t.Fatalf("SubmitWait: %v, want tlsid.ErrNotAllowed", err)
	}
	if _, err := c.Nonce(ctx, other); !errors.Is(err, tlsid.ErrNotAllowed) {
		t.Fatalf("Nonce: %v, want tlsid.ErrNotAllowed", err)
	}
}
