package adversarial

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	ledgerv1 "github.com/fedtune/fedtune/api/ledger/v1"
	"github.com/fedtune/fedtune/datasets"
	"github.com/fedtune/fedtune/internal/cli"
	"github.com/fedtune/fedtune/internal/devnet"
	"github.com/fedtune/fedtune/internal/digest"
	"github.com/fedtune/fedtune/internal/dspub"
	"github.com/fedtune/fedtune/internal/tlsid"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
)

// omitLedger is a lying ledger node operator: a gRPC server with a genesis
// node's key that forwards every read to the real node behind it, but
// leaves the published dataset named omit out of its index (the published
// listing, and the dataset's own query). With tamper it also drops the
// dataset's DatasetPublished from the block it streams, recomputing the
// block's tx root, so that each block it sends still checks on its own.
type omitLedger struct {
	ledgerv1.UnimplementedLedgerServer
	up     ledgerv1.LedgerClient
	omit   string // the dataset's name
	digest string // and its digest
	tamper atomic.Bool
	// uncosigned: GetBlock answers without the cosignatures (as a node
	// serving a chain of its own making would have to).
	uncosigned atomic.Bool
}

func (o *omitLedger) Status(ctx context.Context, req *ledgerv1.StatusRequest) (*ledgerv1.StatusResponse, error) {
	return o.up.Status(ctx, req)
}

func (o *omitLedger) GetTx(ctx context.Context, req *ledgerv1.GetTxRequest) (*ledgerv1.GetTxResponse, error) {
	return o.up.GetTx(ctx, req)
}

func (o *omitLedger) GetBlock(ctx context.Context, req *ledgerv1.GetBlockRequest) (*ledgerv1.BlockResponse, error) {
	if o.uncosigned.Load() {
		req.MinCosignatures = 0
	}
	resp, err := o.up.GetBlock(ctx, req)
	if err == nil && o.uncosigned.Load() {
		resp.Cosignatures = nil
	}
	return resp, err
}

func (o *omitLedger) Query(ctx context.Context, req *ledgerv1.QueryRequest) (*ledgerv1.QueryResponse, error) {
	if req.Kind == ledgerv1.QueryKind_QUERY_KIND_DATASET && req.Key == o.digest {
		return nil, status.Errorf(codes.NotFound, "dataset %s: %v", req.Key, ledger.ErrRecordNotFound)
	}
	resp, err := o.up.Query(ctx, req)
	if err != nil || req.Kind != ledgerv1.QueryKind_QUERY_KIND_PUBLISHED_DATASETS {
		return resp, err
	}
	var p ledger.PublishedPage
	if err := json.Unmarshal(resp.Json, &p); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	kept := p.Datasets[:0]
	for _, d := range p.Datasets {
		if d.Name != o.omit {
			kept = append(kept, d)
		}
	}
	p.Datasets = kept
	if resp.Json, err = json.Marshal(p); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return resp, nil
}

func (o *omitLedger) StreamBlocks(req *ledgerv1.StreamBlocksRequest, s grpc.ServerStreamingServer[ledgerv1.BlockResponse]) error {
	up, err := o.up.StreamBlocks(s.Context(), req)
	if err != nil {
		return err
	}
	for {
		resp, err := up.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if o.tamper.Load() {
			if resp, err = o.dropPublished(resp); err != nil {
				return err
			}
		}
		if err := s.Send(resp); err != nil {
			return err
		}
	}
}

// dropPublished removes the omitted dataset's DatasetPublished from the
// block in resp, keeping the block consistent in itself.
func (o *omitLedger) dropPublished(resp *ledgerv1.BlockResponse) (*ledgerv1.BlockResponse, error) {
	b, err := ledger.DecodeBlock(resp.Block)
	if err != nil {
		return nil, err
	}
	var txs [][]byte
	for _, raw := range b.Txs {
		if tx, err := ledger.DecodeTx(raw); err == nil {
			if p, ok := tx.Body.(ledger.DatasetPublished); ok && digest.Bytes([]byte(p.Manifest)) == o.digest {
				continue
			}
		}
		txs = append(txs, raw)
	}
	if len(txs) == len(b.Txs) {
		return resp, nil
	}
	b.Txs = txs
	b.Header.TxRoot, b.Header.NumTxs = ledger.TxRoot(txs), uint32(len(txs))
	hash := b.Hash()
	return &ledgerv1.BlockResponse{Height: resp.Height, Hash: hash[:], Block: ledger.EncodeBlock(b)}, nil
}

// serveOmitLedger serves o over TLS with key's certificate (a genesis
// node's: the operator of that node lies) and returns its address.
func serveOmitLedger(t *testing.T, o *omitLedger, key ed25519.PrivateKey) string {
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
	ledgerv1.RegisterLedgerServer(srv, o)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return ln.Addr().String()
}

// publishSmall publishes a five-sample text dataset named name as who and
// returns its digest.
func publishSmall(t *testing.T, ctx context.Context, nw *devnet.Network, c *client.Client, who, name string) string {
	t.Helper()
	key := nw.Keys[who]
	d := &datasets.Dataset{Name: name}
	for i := range 5 {
		d.Samples = append(d.Samples, datasets.Sample{ID: fmt.Sprint(i), Text: fmt.Sprintf("%s sample %d", name, i)})
	}
	p, err := datasets.Publish(d, datasets.PublishOptions{Name: name, Format: dspub.FormatText, Licence: "CC0-1.0", ShardSamples: 2,
		Owner: ledger.KeyID(key.Public().(ed25519.PublicKey))})
	if err != nil {
		t.Fatal(err)
	}
	sm, err := dspub.Sign(key, &p.Manifest)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.NewSigner(c, key).Submit(ctx, ledger.DatasetPublished{Manifest: string(sm.Envelope)}); err != nil {
		t.Fatalf("publish %s: %v", name, err)
	}
	return sm.Digest
}

// TestAttackNodeOmitsPublishedDataset: a lying node operator leaves a
// published dataset out of its index. `dataset ls` from the index proves
// each dataset it lists but cannot see the one left out (what its help
// says it trusts the node for); `dataset ls --from-chain` re-derives the
// list from the whole chain and lists it. When the liar also drops the
// dataset's tx from the block it streams, --from-chain refuses the chain
// instead of listing less: the blocks no longer chain to the head that
// the genesis nodes cosigned.
func TestAttackNodeOmitsPublishedDataset(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three ledger nodes")
	}
	ctx := testContext(t, 2*time.Minute)
	nw := startLedgers(t, ctx)
	c, err := nw.Ledger(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	publishSmall(t, ctx, nw, c, "trainer-1", "kept-first")
	hidden := publishSmall(t, ctx, nw, c, "trainer-2", "hidden-set")
	publishSmall(t, ctx, nw, c, "trainer-1", "kept-last")

	conn, err := grpc.NewClient(nw.LedgerGRPC[0], mustDialOption(t, newKey(t)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	liar := &omitLedger{up: ledgerv1.NewLedgerClient(conn), omit: "hidden-set", digest: hidden}
	addr := serveOmitLedger(t, liar, nw.Keys["node-1"])

	ls := func(args ...string) (string, string, error) {
		var out, errb bytes.Buffer
		err := cli.RunWith(ctx, append([]string{"dataset", "ls", "--addr", addr, "--genesis", nw.GenesisPath()}, args...), &out, &errb)
		return out.String(), errb.String(), err
	}
	out, _, err := ls()
	if err != nil {
		t.Fatalf("dataset ls from the liar's index: %v", err)
	}
	if strings.Contains(out, "hidden-set") || !strings.Contains(out, "kept-first") || !strings.Contains(out, "kept-last") {
		t.Fatalf("dataset ls from the index:\n%s\nwant the liar's list (kept-first, kept-last), as the help says it trusts the node for completeness", out)
	}
	out, errOut, err := ls("--from-chain")
	if err != nil {
		t.Fatalf("dataset ls --from-chain: %v\n%s", err, errOut)
	}
	for _, want := range []string{"kept-first", "hidden-set", "kept-last"} {
		if !strings.Contains(out, want) {
			t.Errorf("dataset ls --from-chain lacks %s:\n%s", want, out)
		}
	}
	if !strings.Contains(errOut, "cosigned by") || !strings.Contains(errOut, "of the 3 genesis nodes") {
		t.Errorf("dataset ls --from-chain does not say which head it listed to:\n%s", errOut)
	}

	// audit verify --ledger re-derives the same chain and checks its head
	// against the genesis nodes' cosignatures.
	var vout, verr bytes.Buffer
	if err := cli.RunWith(ctx, []string{"audit", "verify", "--ledger", addr, "--genesis", nw.GenesisPath()}, &vout, &verr); err != nil ||
		!strings.Contains(vout.String(), "OK: chain verified") || !strings.Contains(vout.String(), "of the 3 genesis nodes") {
		t.Fatalf("audit verify --ledger through the liar: %v\n%s%s", err, vout.String(), verr.String())
	}

	// A head without the genesis quorum's cosignatures is not believed:
	// neither by dataset ls --from-chain nor by audit verify --ledger.
	liar.uncosigned.Store(true)
	out, _, err = ls("--from-chain")
	if err == nil || !strings.Contains(err.Error(), "cosignature") || strings.Contains(out, "kept-first") {
		t.Fatalf("dataset ls --from-chain with an uncosigned head: %v\n%s", err, out)
	}
	vout.Reset()
	if err := cli.RunWith(ctx, []string{"audit", "verify", "--ledger", addr, "--genesis", nw.GenesisPath()}, &vout, &verr); err == nil || !strings.Contains(err.Error(), "cosignature") {
		t.Fatalf("audit verify --ledger with an uncosigned head: %v\n%s", err, vout.String())
	}
	liar.uncosigned.Store(false)

	liar.tamper.Store(true)
	out, errOut, err = ls("--from-chain")
	if err == nil {
		t.Fatalf("dataset ls --from-chain believed a chain without hidden-set's tx:\n%s\n%s", out, errOut)
	}
	rec, rerr := c.Dataset(ctx, hidden)
	if rerr != nil {
		t.Fatal(rerr)
	}
	if at := fmt.Sprintf("height %d", rec.Height); !strings.Contains(err.Error(), "does not verify") || !strings.Contains(err.Error(), at) {
		t.Fatalf("dataset ls --from-chain on a tampered chain: %v; want it to say the chain does not verify at %s", err, at)
	}
	if strings.Contains(out, "kept-first") {
		t.Errorf("dataset ls --from-chain printed a list from a tampered chain:\n%s", out)
	}
	t.Logf("refused: %v", err)
}

// mustDialOption is a TLS dial option as key, accepting any server key
// (the liar forwards to the real node as a client would).
func mustDialOption(t *testing.T, key ed25519.PrivateKey) grpc.DialOption {
	t.Helper()
	opt, err := tlsid.DialOption(key, tlsid.AllowAny())
	if err != nil {
		t.Fatal(err)
	}
	return opt
}
