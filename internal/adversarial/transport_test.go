package adversarial

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	ledgerv1 "github.com/fedtune/fedtune/api/ledger/v1"
	"github.com/fedtune/fedtune/internal/devnet"
	"github.com/fedtune/fedtune/internal/tlsid"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
)

// TestAttackRaftStrangerTLS: a stranger speaks raft over TLS with the
// certificate of its own (non-node) key. The node refuses the handshake
// before raft reads a byte.
func TestAttackRaftStrangerTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three ledger nodes")
	}
	ctx := testContext(t, 2*time.Minute)
	nw := startLedgers(t, ctx)
	before := waitSettled(t, ctx, nw.Net)
	terms := raftTerms(t, ctx, nw.Net)

	cfg, err := tlsid.ClientConfig(newKey(t), tlsid.AllowAny())
	if err != nil {
		t.Fatal(err)
	}
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: cfg}
	conn, err := d.DialContext(ctx, "tcp", nw.Net.LedgerRaft[0])
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	// In TLS 1.3 the client's side of the handshake ends before the server
	// has checked its certificate: the refusal arrives as an alert on the
	// first read. Send what a raft RPC starts with (its type byte) anyway.
	_, werr := conn.Write([]byte{0})
	_, rerr := io.ReadAll(conn)
	err = errors.Join(werr, rerr)
	if err == nil || !strings.Contains(err.Error(), "bad certificate") {
		t.Fatalf("the raft port did not refuse a stranger's certificate: %v", err)
	}
	requireUnchanged(t, ctx, nw.Net, before)
	if got := raftTerms(t, ctx, nw.Net); fmt.Sprint(got) != fmt.Sprint(terms) {
		t.Fatalf("raft terms moved: %v -> %v", terms, got)
	}
}

// TestAttackRaftPlainAppendEntries: a stranger sends what hashicorp/raft's
// NetworkTransport sends, in plain TCP: an AppendEntries with a much
// higher term naming itself leader. The node wants a TLS handshake, gets
// none, and closes the connection: no term change, no entry.
func TestAttackRaftPlainAppendEntries(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three ledger nodes")
	}
	ctx := testContext(t, 2*time.Minute)
	nw := startLedgers(t, ctx)
	before := waitSettled(t, ctx, nw.Net)
	terms := raftTerms(t, ctx, nw.Net)

	tr, err := raft.NewTCPTransport("127.0.0.1:0", nil, 1, 5*time.Second, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	c, err := nw.Net.Ledger(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	st, err := c.Status(ctx)
	c.Close()
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(map[string]string{"attack": "forged entry"})
	req := &raft.AppendEntriesRequest{
		RPCHeader:         raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("attacker"), Addr: []byte(tr.LocalAddr())},
		Term:              st.Term + 100,
		PrevLogEntry:      st.AppliedIndex,
		PrevLogTerm:       st.Term,
		Entries:           []*raft.Log{{Index: st.AppliedIndex + 1, Term: st.Term + 100, Type: raft.LogCommand, Data: body}},
		LeaderCommitIndex: st.AppliedIndex + 1,
	}
	var resp raft.AppendEntriesResponse
	err = tr.AppendEntries(raft.ServerID(nw.Net.ID("node-1")), raft.ServerAddress(nw.Net.LedgerRaft[0]), req, &resp)
	if err == nil {
		t.Fatalf("plain-text AppendEntries answered: %+v", resp)
	}
	if !strings.Contains(err.Error(), "EOF") && !strings.Contains(err.Error(), "reset") {
		t.Fatalf("AppendEntries failed, but not because the node closed the connection: %v", err)
	}
	requireUnchanged(t, ctx, nw.Net, before)
	if got := raftTerms(t, ctx, nw.Net); fmt.Sprint(got) != fmt.Sprint(terms) {
		t.Fatalf("raft terms moved: %v -> %v", terms, got)
	}
}

// transportDirectory returns the gRPC address node i's directory holds for
// each node of its raft configuration (Status reports them).
func transportDirectory(t *testing.T, ctx context.Context, n *devnet.Net, i int) map[string]string {
	t.Helper()
	st := nodeStatus(t, ctx, n, i)
	dir := map[string]string{}
	for _, p := range st.Peers {
		dir[p.NodeId] = p.GrpcAddress
	}
	return dir
}

// transportDial dials a ledger node's gRPC service with key as the TLS
// identity and returns the raw client.
func transportDial(t *testing.T, addr string, key ed25519.PrivateKey) ledgerv1.LedgerClient {
	t.Helper()
	opt, err := tlsid.DialOption(key, tlsid.AllowAny())
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(addr, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return ledgerv1.NewLedgerClient(cc)
}

// TestAttackPeersForgedEntry: the Peers directory is poisoned with an
// entry for a real node pointing to the attacker's address, first by a
// stranger, then by a node key (node-3's, stolen) speaking for another
// node (node-2), then through a Join request. All are refused, the
// directories are unchanged, and a Submit through a follower still commits
// for real.
func TestAttackPeersForgedEntry(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three ledger nodes")
	}
	ctx := testContext(t, 2*time.Minute)
	nw := startLedgers(t, ctx)
	n := nw.Net
	waitSettled(t, ctx, n)
	var dirs []map[string]string
	for i := range n.LedgerGRPC {
		dirs = append(dirs, transportDirectory(t, ctx, n, i))
	}
	attacker, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer attacker.Close()
	victim := n.ID("node-2")
	seq := uint64(time.Now().Add(time.Hour).UnixNano())

	for _, tc := range []struct {
		name string
		key  ed25519.PrivateKey
		code codes.Code
		want string
	}{
		{"stranger", newKey(t), codes.PermissionDenied, "Peers is for ledger nodes only"},
		{"node-3 for node-2", n.Keys["node-3"], codes.InvalidArgument, "not by the node it describes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Signed by the caller's key, as the best forgery it can make.
			e := &ledgerv1.Peer{NodeId: victim, RaftAddress: attacker.Addr().String(), GrpcAddress: attacker.Addr().String(), Seq: seq,
				PublicKey: tc.key.Public().(ed25519.PublicKey),
				Signature: ed25519.Sign(tc.key, []byte("any bytes: the caller cannot sign as node-2"))}
			for i := range n.LedgerGRPC {
				_, err := transportDial(t, n.LedgerGRPC[i], tc.key).Peers(ctx, &ledgerv1.PeersRequest{Self: e})
				if status.Code(err) != tc.code || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("node %d: Peers with a forged entry: %v, want %v %q", i, err, tc.code, tc.want)
				}
			}
		})
	}
	// A Join naming node-2 with the attacker's addresses gives at most a
	// hint, which never replaces the entry node-2 signed. (Whether Join
	// itself is refused is the membership rules' business.)
	for i := range n.LedgerGRPC {
		jctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, _ = transportDial(t, n.LedgerGRPC[i], newKey(t)).Join(jctx, &ledgerv1.JoinRequest{
			NodeId: victim, RaftAddress: attacker.Addr().String(), GrpcAddress: attacker.Addr().String()})
		cancel()
	}
	for i := range n.LedgerGRPC {
		if got := transportDirectory(t, ctx, n, i); fmt.Sprint(got) != fmt.Sprint(dirs[i]) {
			t.Fatalf("node %d's directory changed: %v -> %v", i, dirs[i], got)
		}
	}

	// A Submit through a follower is forwarded to the real leader.
	c0, err := n.Ledger(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	st, err := c0.Status(ctx)
	c0.Close()
	if err != nil {
		t.Fatal(err)
	}
	follower := -1
	for i := range n.LedgerGRPC {
		if n.ID(fmt.Sprintf("node-%d", i+1)) != st.LeaderId {
			follower = i
			break
		}
	}
	fc, err := n.Ledger(ctx, follower)
	if err != nil {
		t.Fatal(err)
	}
	defer fc.Close()
	nonceJSON, err := fc.Query(ctx, ledgerv1.QueryKind_QUERY_KIND_NONCE, n.ID("admin"), 0)
	if err != nil {
		t.Fatal(err)
	}
	var nonce uint64
	if err := json.Unmarshal(nonceJSON, &nonce); err != nil {
		t.Fatal(err)
	}
	member := newKey(t)
	tx, err := ledger.SignTx(n.Keys["admin"], n.ChainID, nonce+1, ledger.MemberAdded{
		PublicKey: hex.EncodeToString(member.Public().(ed25519.PublicKey)), Role: ledger.RoleTrainer, Name: "transport-after-attack"})
	if err != nil {
		t.Fatal(err)
	}
	h, err := fc.SubmitWait(ctx, tx)
	if err != nil {
		t.Fatalf("submit through follower %d: %v", follower, err)
	}
	if _, err := fc.Tx(ctx, ledger.TxHash(tx)); err != nil {
		t.Fatalf("tx committed at %d not found: %v", h, err)
	}
}

// transportFakeLedger claims every Submit committed at height 424242 and
// holds no chain.
type transportFakeLedger struct {
	ledgerv1.UnimplementedLedgerServer
}

func (transportFakeLedger) Submit(_ context.Context, req *ledgerv1.SubmitRequest) (*ledgerv1.SubmitResponse, error) {
	resp := &ledgerv1.SubmitResponse{}
	for range req.Txs {
		resp.Results = append(resp.Results, &ledgerv1.TxResult{Status: ledgerv1.TxStatus_TX_STATUS_COMMITTED, Height: 424242})
	}
	return resp, nil
}

func (transportFakeLedger) Status(context.Context, *ledgerv1.StatusRequest) (*ledgerv1.StatusResponse, error) {
	return &ledgerv1.StatusResponse{Height: 424242}, nil
}

func (transportFakeLedger) GetTx(_ context.Context, req *ledgerv1.GetTxRequest) (*ledgerv1.GetTxResponse, error) {
	return nil, status.Errorf(codes.NotFound, "tx %x: not found", req.Hash)
}

// TestAttackFakeLedgerClaimsCommitted: a ledger server (a poisoned
// directory's target, or a lying node) answers "committed at height
// 424242" for a tx that is on no chain. SubmitWait asks for the tx's
// inclusion proof and returns an error instead of the height.
func TestAttackFakeLedgerClaimsCommitted(t *testing.T) {
	ctx := testContext(t, 30*time.Second)
	fakeKey := newKey(t)
	creds, err := tlsid.ServerOption(fakeKey, tlsid.AllowAny())
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(creds)
	ledgerv1.RegisterLedgerServer(srv, transportFakeLedger{})
	go srv.Serve(ln)
	defer srv.Stop()

	c, err := client.Dial(ctx, ln.Addr().String(), newKey(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	admin := newKey(t)
	tx, err := ledger.SignTx(admin, "fedtune-devnet", 1, ledger.MemberAdded{
		PublicKey: hex.EncodeToString(admin.Public().(ed25519.PublicKey)), Role: ledger.RoleTrainer, Name: "never-committed"})
	if err != nil {
		t.Fatal(err)
	}
	h, err := c.SubmitWait(ctx, tx)
	if err == nil {
		t.Fatalf("SubmitWait believed a commit at height %d that no chain holds", h)
	}
	if !errors.Is(err, client.ErrUnproven) || !strings.Contains(err.Error(), "424242") || !strings.Contains(err.Error(), "does not hold it") {
		t.Fatalf("SubmitWait: %v, want ErrUnproven naming height 424242 and the missing tx", err)
	}
}

// TestAttackNodeRPCsFromStranger: a stranger calls the node-to-node RPCs
// (a "forwarded" Submit, whose hop count a follower would set, a
// forwarded Join, GetCheckpoint) with a valid tx. Each is refused for not
// proving a node key, and the chain does not move.
func TestAttackNodeRPCsFromStranger(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three ledger nodes")
	}
	ctx := testContext(t, 2*time.Minute)
	nw := startLedgers(t, ctx)
	n := nw.Net
	before := waitSettled(t, ctx, n)
	member := newKey(t)
	tx, err := ledger.SignTx(n.Keys["admin"], n.ChainID, 1000, ledger.MemberAdded{
		PublicKey: hex.EncodeToString(member.Public().(ed25519.PublicKey)), Role: ledger.RoleTrainer, Name: "transport-forwarded"})
	if err != nil {
		t.Fatal(err)
	}
	const want = "is for ledger nodes only"
	for i := range n.LedgerGRPC {
		c := transportDial(t, n.LedgerGRPC[i], newKey(t))
		calls := map[string]error{}
		_, calls["Submit hops=1"] = c.Submit(ctx, &ledgerv1.SubmitRequest{Txs: [][]byte{tx}, Hops: 1})
		// Join changes nothing for anyone: membership is by admin-signed txs.
		if _, err := c.Join(ctx, &ledgerv1.JoinRequest{NodeId: n.ID("admin"), RaftAddress: "127.0.0.1:1", GrpcAddress: "127.0.0.1:1", Hops: 1}); status.Code(err) != codes.FailedPrecondition ||
			!strings.Contains(err.Error(), "only through admin-signed ledger txs") {
			t.Errorf("node %d: Join hops=1 from a stranger: %v, want FailedPrecondition naming admin-signed txs", i, err)
		}
		_, calls["GetCheckpoint"] = c.GetCheckpoint(ctx, &ledgerv1.GetCheckpointRequest{Height: 0})
		for name, err := range calls {
			if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), want) {
				t.Errorf("node %d: %s from a stranger: %v, want PermissionDenied %q", i, name, err, want)
			}
		}
	}
	requireUnchanged(t, ctx, n, before)
}
