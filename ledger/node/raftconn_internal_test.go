package node

import (
	"crypto/ed25519"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/fedtune/fedtune/internal/tlsid"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/fsm"
	"github.com/fedtune/fedtune/ledger/pebblestore"
)

// raftConnNode is a Node with a real FSM (genesis nodes voters, admin a
// member) and a raft stream layer listening on loopback, plus a way to
// apply admin txs proposed by the genesis node.
type raftConnNode struct {
	n     *Node
	sl    *tlsStreamLayer
	admin ed25519.PrivateKey
	nonce uint64
}

func newRaftConnNode(t *testing.T, self ed25519.PrivateKey, nodes ...ed25519.PrivateKey) *raftConnNode {
	t.Helper()
	admin, _ := authKey(t)
	g := &ledger.Genesis{ChainID: "chain", Time: time.Now().Add(-time.Hour), Policy: ledger.DefaultPolicy(), Source: "test",
		Members: []ledger.GenesisMember{{Name: "admin", Role: ledger.RoleAdmin, PublicKey: hex.EncodeToString(admin.Public().(ed25519.PublicKey))}}}
	for i, k := range nodes {
		g.Nodes = append(g.Nodes, ledger.GenesisNode{Name: "node-" + string(rune('a'+i)), PublicKey: hex.EncodeToString(k.Public().(ed25519.PublicKey))})
	}
	if err := g.Validate(); err != nil {
		t.Fatal(err)
	}
	db, err := pebblestore.Open("db", pebblestore.Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	f, err := fsm.New(db.State(), g, fsm.Options{})
	if err != nil {
		t.Fatal(err)
	}
	n := &Node{key: self, genesis: g, genesisNodes: map[string]bool{}, fsm: f}
	for _, gn := range g.Nodes {
		n.genesisNodes[ledger.KeyID(gn.Key)] = true
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sl, err := n.newTLSStreamLayer(ln)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sl.Close() })
	return &raftConnNode{n: n, sl: sl, admin: admin}
}

// apply commits admin body in a block proposed (signed) by proposer.
func (r *raftConnNode) apply(t *testing.T, proposer ed25519.PrivateKey, body ledger.TxBody) {
	t.Helper()
	r.nonce++
	tx, err := ledger.SignTx(r.admin, "chain", r.nonce, body)
	if err != nil {
		t.Fatal(err)
	}
	p := ledger.SignProposal(proposer, "chain", ledger.Proposal{Time: time.Now().UnixNano(), Txs: [][]byte{tx}})
	res := r.n.fsm.ApplyProposal(p)
	if res.Err != nil || res.Block == nil || res.Results[0].Err != nil {
		t.Fatalf("apply %s: %+v", body.TxType(), res)
	}
}

// echo accepts one connection and echoes what it reads until it fails;
// the error that ended it comes back on the channel.
func (r *raftConnNode) echo() chan error {
	errc := make(chan error, 1)
	go func() {
		c, err := r.sl.Accept()
		if err != nil {
			errc <- err
			return
		}
		defer c.Close()
		_, err = io.Copy(c, c)
		errc <- err
	}()
	return errc
}

func nodeAddedFor(k ed25519.PrivateKey, port string) ledger.NodeAdded {
	return ledger.NodeAdded{PublicKey: hex.EncodeToString(k.Public().(ed25519.PublicKey)), RaftAddress: "127.0.0.1:" + port, GRPCAddress: "127.0.0.1:1" + port}
}

// TestRaftInboundVotersOnly: a node added by NodeAdded but not promoted may
// be dialled (the leader replicates to it) but may not open a raft
// connection itself; once promoted, it may.
func TestRaftInboundVotersOnly(t *testing.T) {
	ka, _ := authKey(t)
	kc, idc := authKey(t)
	srv := newRaftConnNode(t, ka, ka)
	srv.apply(t, ka, nodeAddedFor(kc, "7003"))
	if !srv.n.isNode(idc) || srv.n.isVoter(idc) {
		t.Fatal("node c should be a non-voting node")
	}
	errc := srv.echo()
	cfg, _ := tlsid.ClientConfig(kc, tlsid.AllowAny())
	c, err := tls.Dial("tcp", srv.sl.Addr().String(), cfg)
	if err == nil {
		_, _ = c.Write([]byte{0})
		_, err = io.ReadAll(c)
		c.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "bad certificate") {
		t.Fatalf("non-voter client: %v, want a bad certificate alert", err)
	}
	if err := <-errc; !errors.Is(err, tlsid.ErrNotAllowed) || !strings.Contains(err.Error(), "not a voting ledger node") {
		t.Fatalf("server side: %v, want ErrNotAllowed (not a voting ledger node)", err)
	}
	// The server side's client config still dials a non-voter.
	if err := srv.n.nodeVerifier()(idc); err != nil {
		t.Fatalf("dialling a non-voter: %v", err)
	}

	srv.apply(t, ka, ledger.NodePromoted{ID: idc})
	errc = srv.echo()
	cli, _ := (&Node{key: kc, genesis: srv.n.genesis, genesisNodes: srv.n.genesisNodes}).newTLSStreamLayer(nil)
	conn, err := cli.Dial(srvAddr(srv.sl), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("promoted node: echo %q: %v", buf, err)
	}
	_ = errc
}

// TestRaftConnPrunedOnRemoval: a voter's open inbound connection is closed
// once a NodeRemoved for it is applied; other voters' connections stay.
func TestRaftConnPrunedOnRemoval(t *testing.T) {
	ka, _ := authKey(t)
	kb, idb := authKey(t)
	kc, idc := authKey(t)
	srv := newRaftConnNode(t, ka, ka, kb, kc)
	dial := func(k ed25519.PrivateKey) net.Conn {
		t.Helper()
		srv.echo()
		cli, _ := (&Node{key: k, genesis: srv.n.genesis, genesisNodes: srv.n.genesisNodes}).newTLSStreamLayer(nil)
		conn, err := cli.Dial(srvAddr(srv.sl), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		if _, err := conn.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4)
		if _, err := io.ReadFull(conn, buf); err != nil {
			t.Fatal(err)
		}
		return conn
	}
	cb, cc := dial(kb), dial(kc)
	if srv.sl.peerConns(idb) != 1 || srv.sl.peerConns(idc) != 1 {
		t.Fatalf("tracked: b %d, c %d", srv.sl.peerConns(idb), srv.sl.peerConns(idc))
	}
	if cut := srv.sl.prune(srv.n.isVoter); len(cut) != 0 {
		t.Fatalf("pruned voters: %v", cut)
	}
	srv.apply(t, ka, ledger.NodeRemoved{ID: idb, Reason: "test"})
	cut := srv.sl.prune(srv.n.isVoter)
	if len(cut) != 1 || cut[0] != idb {
		t.Fatalf("pruned %v, want [b]", cut)
	}
	// b's old connection no longer carries anything.
	_ = cb.SetDeadline(time.Now().Add(5 * time.Second))
	_, _ = cb.Write([]byte("more"))
	got, rerr := io.ReadAll(cb)
	if len(got) != 0 {
		t.Fatalf("the removed node's connection still answers: %q", got)
	}
	var ne net.Error
	if errors.As(rerr, &ne) && ne.Timeout() {
		t.Fatalf("the removed node's connection is open (read timed out): %v", rerr)
	}
	// c's is untouched.
	if _, err := cc.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(cc, buf); err != nil || string(buf) != "pong" {
		t.Fatalf("voter c after pruning b: %q %v", buf, err)
	}
	if srv.sl.peerConns(idb) != 0 || srv.sl.peerConns(idc) != 1 {
		t.Fatal("tracking after prune is wrong")
	}
}
