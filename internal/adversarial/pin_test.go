package adversarial

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	ledgerv1 "github.com/fedtune/fedtune/api/ledger/v1"
	"github.com/fedtune/fedtune/internal/cli"
	"github.com/fedtune/fedtune/internal/devnet"
	"github.com/fedtune/fedtune/internal/tlsid"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
	"github.com/fedtune/fedtune/trainer"
)

// pinFakeHeight is the height the fake ledger claims every tx at.
const pinFakeHeight = 7

// pinFakeLedger is a ledger gRPC server that holds no chain. It answers
// every Submit "committed at pinFakeHeight" and, asked for proof,
// fabricates a consistent block holding the tx: the block hashes right,
// its tx root covers the tx, the inclusion proof verifies. It can sign a
// checkpoint only with its own key (cosignKey, when set). calls counts
// the RPCs that reached it.
type pinFakeLedger struct {
	ledgerv1.UnimplementedLedgerServer
	chainID   string
	proposer  string // a node ID to name as the block's proposer
	cosignKey ed25519.PrivateKey
	calls     atomic.Int64

	mu    sync.Mutex
	block *ledger.Block // the last fabricated block
}

func (f *pinFakeLedger) fabricate(tx []byte) *ledger.Block {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.block = &ledger.Block{Header: ledger.Header{Height: pinFakeHeight, TxRoot: ledger.TxRoot([][]byte{tx}), NumTxs: 1,
		Time: time.Now().UnixNano(), Proposer: f.proposer}, Txs: [][]byte{tx}}
	return f.block
}

func (f *pinFakeLedger) current() *ledger.Block {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.block
}

func (f *pinFakeLedger) Submit(_ context.Context, req *ledgerv1.SubmitRequest) (*ledgerv1.SubmitResponse, error) {
	f.calls.Add(1)
	resp := &ledgerv1.SubmitResponse{}
	for _, tx := range req.Txs {
		f.fabricate(tx)
		resp.Results = append(resp.Results, &ledgerv1.TxResult{Status: ledgerv1.TxStatus_TX_STATUS_COMMITTED, Height: pinFakeHeight})
	}
	return resp, nil
}

func (f *pinFakeLedger) Status(context.Context, *ledgerv1.StatusRequest) (*ledgerv1.StatusResponse, error) {
	f.calls.Add(1)
	return &ledgerv1.StatusResponse{Height: pinFakeHeight, ChainId: f.chainID}, nil
}

func (f *pinFakeLedger) GetTx(_ context.Context, req *ledgerv1.GetTxRequest) (*ledgerv1.GetTxResponse, error) {
	f.calls.Add(1)
	b := f.current()
	if b == nil {
		return nil, status.Error(codes.NotFound, "no such tx")
	}
	h := ledger.TxHash(b.Txs[0])
	if !bytes.Equal(req.Hash, h[:]) {
		return nil, status.Error(codes.NotFound, "no such tx")
	}
	proof, err := ledger.InclusionProof(b.Txs, 0)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &ledgerv1.GetTxResponse{Height: pinFakeHeight, Index: 0, TreeSize: 1, Envelope: b.Txs[0], Proof: proof,
		TxRoot: b.Header.TxRoot[:]}, nil
}

func (f *pinFakeLedger) response() (*ledgerv1.BlockResponse, error) {
	b := f.current()
	if b == nil {
		return nil, status.Error(codes.NotFound, "no such block")
	}
	hash := b.Hash()
	return &ledgerv1.BlockResponse{Height: pinFakeHeight, Hash: hash[:], Block: ledger.EncodeBlock(b)}, nil
}

// GetBlock answers whatever the caller asks for, with the one
// cosignature the fake can make (none without cosignKey).
func (f *pinFakeLedger) GetBlock(context.Context, *ledgerv1.GetBlockRequest) (*ledgerv1.BlockResponse, error) {
	f.calls.Add(1)
	resp, err := f.response()
	if err != nil || f.cosignKey == nil {
		return resp, err
	}
	cp := client.SignCheckpoint(f.cosignKey, f.chainID, pinFakeHeight, [32]byte(resp.Hash))
	resp.Cosignatures = append(resp.Cosignatures, client.CheckpointToProto(&cp))
	return resp, nil
}

func (f *pinFakeLedger) StreamBlocks(_ *ledgerv1.StreamBlocksRequest, s grpc.ServerStreamingServer[ledgerv1.BlockResponse]) error {
	f.calls.Add(1)
	resp, err := f.response()
	if err != nil {
		return err
	}
	return s.Send(resp)
}

// pinServeFake serves f on loopback over TLS with key's certificate and
// returns its address.
func pinServeFake(t *testing.T, f *pinFakeLedger, key ed25519.PrivateKey) string {
	t.Helper()
	creds, err := tlsid.ServerOption(key, tlsid.AllowAny())
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(creds)
	ledgerv1.RegisterLedgerServer(srv, f)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return ln.Addr().String()
}

// pinTx is a validly signed MemberAdded from the devnet's admin.
func pinTx(t *testing.T, n *devnet.Net, name string) []byte {
	t.Helper()
	k := newKey(t)
	tx, err := ledger.SignTx(n.Keys["admin"], n.ChainID, 1000, ledger.MemberAdded{
		PublicKey: hex.EncodeToString(k.Public().(ed25519.PublicKey)), Role: ledger.RoleTrainer, Name: name})
	if err != nil {
		t.Fatal(err)
	}
	return tx
}

// TestAttackFakeLedgerStrangerKey: a fake ledger server with its own
// (non-node) key on loopback. Without a pin it is believed (the old
// behaviour, still the CLI's without --genesis, with a warning). A CLI
// command and a trainer configured with the devnet's genesis file refuse
// it at the TLS handshake, naming its key; no RPC reaches it.
func TestAttackFakeLedgerStrangerKey(t *testing.T) {
	ctx := testContext(t, time.Minute)
	n := prepareNet(t, ctx, devnet.Options{})
	fakeKey := newKey(t)
	fakeID := ledger.KeyID(fakeKey.Public().(ed25519.PublicKey))
	f := &pinFakeLedger{chainID: n.ChainID, proposer: n.ID("node-1")}
	addr := pinServeFake(t, f, fakeKey)
	refused := "is not one of the 3 ledger nodes pinned by genesis"

	// Unpinned: the fake answers, and the CLI warns.
	var out, errOut bytes.Buffer
	if err := cli.RunWith(ctx, []string{"ledger", "status", "--addr", addr}, &out, &errOut); err != nil {
		t.Fatalf("unpinned ledger status: %v", err)
	}
	if !strings.Contains(errOut.String(), "warning: the ledger is not pinned") {
		t.Errorf("unpinned ledger status printed no warning:\n%s", errOut.String())
	}
	before := f.calls.Load()
	if before == 0 {
		t.Fatal("the fake saw no call from the unpinned client")
	}

	// The CLI with the genesis file.
	for _, args := range [][]string{
		{"ledger", "status", "--addr", addr, "--genesis", n.GenesisPath()},
		{"ledger", "query", "member", n.ID("admin"), "--addr", addr, "--genesis", n.GenesisPath()},
	} {
		out.Reset()
		errOut.Reset()
		err := cli.RunWith(ctx, args, &out, &errOut)
		if err == nil || !strings.Contains(err.Error(), tlsid.ErrNotAllowed.Error()) || !strings.Contains(err.Error(), refused) || !strings.Contains(err.Error(), fakeID) {
			t.Errorf("%s: %v, want a TLS refusal naming key %s", strings.Join(args[:2], " "), err, fakeID)
		}
		if strings.Contains(errOut.String(), "warning") {
			t.Errorf("%s with --genesis warned:\n%s", strings.Join(args[:2], " "), errOut.String())
		}
	}

	// A trainer whose config (written by devnet, ledger_genesis set) points
	// at the fake.
	cfg, err := trainer.LoadConfig(filepath.Join(n.Dir, "trainer-1", "trainer.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.LedgerGenesis != n.GenesisPath() {
		t.Fatalf("devnet trainer config: ledger_genesis %q, want %q", cfg.LedgerGenesis, n.GenesisPath())
	}
	cfg.Ledger = addr
	tr, err := trainer.New(*cfg, trainer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	err = tr.Run(tctx)
	if err == nil || tctx.Err() != nil || !strings.Contains(err.Error(), refused) || !strings.Contains(err.Error(), fakeID) {
		t.Errorf("trainer against the fake ledger: %v (ctx %v), want it to stop at once on a TLS refusal naming key %s", err, tctx.Err(), fakeID)
	}
	if got := f.calls.Load(); got != before {
		t.Errorf("%d RPCs reached the fake from pinned clients, want none", got-before)
	}
}

// TestAttackFakeLedgerFabricatedCommit: a ledger server holding a genesis
// node's key (one lying node operator) claims a tx committed and backs the
// claim with a consistent fabricated block and inclusion proof, plus its
// own checkpoint. An unpinned SubmitWait believes it (the old behaviour);
// one pinned by the genesis file refuses it: the block lacks the genesis
// quorum (2 of 3) of node cosignatures.
func TestAttackFakeLedgerFabricatedCommit(t *testing.T) {
	ctx := testContext(t, time.Minute)
	n := prepareNet(t, ctx, devnet.Options{})
	f := &pinFakeLedger{chainID: n.ChainID, proposer: n.ID("node-1"), cosignKey: n.Keys["node-1"]}
	addr := pinServeFake(t, f, n.Keys["node-1"])

	unpinned, err := client.Dial(ctx, addr, n.Keys["admin"], nil)
	if err != nil {
		t.Fatal(err)
	}
	defer unpinned.Close()
	if h, err := unpinned.SubmitWait(ctx, pinTx(t, n, "pin-believed")); err != nil || h != pinFakeHeight {
		t.Fatalf("unpinned SubmitWait: %d, %v; want the fabricated height %d (the fake must be consistent)", h, err, pinFakeHeight)
	}

	pin, err := client.LoadPin(n.GenesisPath())
	if err != nil {
		t.Fatal(err)
	}
	if pin.Quorum != 2 || len(pin.Nodes) != 3 || pin.ChainID != n.ChainID {
		t.Fatalf("pin of the devnet genesis: %+v", pin)
	}
	pinned, err := client.DialPinned(ctx, addr, n.Keys["admin"], pin)
	if err != nil {
		t.Fatal(err)
	}
	defer pinned.Close()
	start := time.Now()
	h, err := pinned.SubmitWait(ctx, pinTx(t, n, "pin-refused"))
	if err == nil {
		t.Fatalf("pinned SubmitWait believed a fabricated commit at height %d", h)
	}
	if !errors.Is(err, client.ErrUnproven) || !strings.Contains(err.Error(), "not enough cosignatures") ||
		!strings.Contains(err.Error(), "has 1 valid cosignatures from the 3 nodes pinned by genesis") || !strings.Contains(err.Error(), "want 2") {
		t.Fatalf("pinned SubmitWait: %v, want ErrUnproven for 1 of 2 pinned cosignatures", err)
	}
	t.Logf("refused after %v: %v", time.Since(start).Round(time.Millisecond), err)
}
