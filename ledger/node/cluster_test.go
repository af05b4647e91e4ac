package node_test

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	ledgerv1 "github.com/fedtune/fedtune/api/ledger/v1"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
	"github.com/fedtune/fedtune/ledger/node"
)

// TestCluster runs a real three-node cluster on loopback TCP with pebble on
// disk: txs submitted to a follower commit; cosigned blocks, inclusion
// proofs and queries are served; a fourth node joins from a snapshot and
// is promoted; the leader stops, a new one is elected and nothing committed
// is lost; the stopped node is removed from the configuration.
func TestCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	c := newCluster(t, 3)
	for _, nd := range c.nodes {
		nd.start(nd.config(3, ""))
	}
	live := c.nodes[:3]
	leader := c.leader(live...)
	var follower *client.Client
	var fnode *tnode
	for _, nd := range live {
		if nd != leader {
			follower, fnode = nd.client, nd
			break
		}
	}
	_ = follower

	// Txs submitted to a follower are forwarded to the leader and commit.
	var committed [][32]byte
	var members []ed25519.PrivateKey
	for range 5 {
		tx, k := c.adminTx()
		c.submit(fnode, tx)
		committed = append(committed, ledger.TxHash(tx))
		members = append(members, k)
	}
	// A batch in one call.
	var batch [][]byte
	for range 10 {
		tx, _ := c.adminTx()
		batch = append(batch, tx)
		committed = append(committed, ledger.TxHash(tx))
	}
	// Each call (or phase) gets its own deadline: the waits between them
	// may take a minute or more on a busy -race run, and one context for
	// the whole test would expire on the way.
	callCtx := func(d time.Duration) context.Context {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		t.Cleanup(cancel)
		return ctx
	}
	ctx := callCtx(30 * time.Second)
	rs, err := fnode.client.Submit(ctx, batch...)
	if err != nil {
		t.Fatal(err)
	}
	var head uint64
	for i, r := range rs {
		if r.Status != ledgerv1.TxStatus_TX_STATUS_COMMITTED {
			t.Fatalf("batch tx %d: %v %s", i, r.Status, r.Reason)
		}
		head = max(head, r.Height)
	}
	// Resubmitting a committed tx answers with its height, changing nothing.
	again, err := fnode.client.Submit(ctx, batch[0])
	if err != nil || again[0].Status != ledgerv1.TxStatus_TX_STATUS_COMMITTED || again[0].Height != rs[0].Height {
		t.Fatalf("resubmit: %v %v", again, err)
	}
	c.waitHeight(head, live...)
	c.sameChains(head, live...)

	t.Run("BadTxs", func(t *testing.T) { testBadTxs(t, c, fnode, members[0]) })
	t.Run("Cosignatures", func(t *testing.T) { testCosignatures(t, c, fnode, head) })
	t.Run("TxProofAndQueries", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		r, err := fnode.client.Tx(ctx, committed[3])
		if err != nil {
			t.Fatal(err)
		}
		if ledger.TxHash(r.Envelope) != committed[3] {
			t.Fatal("wrong envelope")
		}
		id := ledger.KeyID(members[0].Public().(ed25519.PublicKey))
		js, err := fnode.client.Query(ctx, ledgerv1.QueryKind_QUERY_KIND_MEMBER, id, 0)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(js), "trainer") {
			t.Fatalf("member record %s", js)
		}
		if _, err := fnode.client.Query(ctx, ledgerv1.QueryKind_QUERY_KIND_MODEL, strings.Repeat("ab", 32), 0); err == nil {
			t.Fatal("query of an unknown model succeeded")
		}
		var missing [32]byte
		if _, err := fnode.client.Tx(ctx, missing); err == nil {
			t.Fatal("unknown tx found")
		}
	})

	// A fourth node joins from a snapshot: the leader snapshots and keeps a
	// single trailing log entry, so the new node must install the snapshot.
	if err := leader.n.Snapshot(); err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	tx, _ := c.adminTx()
	c.submit(leader, tx)
	committed = append(committed, ledger.TxHash(tx))
	if err := leader.n.Snapshot(); err != nil {
		t.Fatalf("second snapshot: %v", err)
	}
	n4 := c.addNode(3, false)
	if _, _, err := node.Init(c.genesis, n4.dataDir, n4.keyPath); err != nil {
		t.Fatal(err)
	}
	n4.start(n4.config(0, fnode.grpcAddr))
	// Starting alone changes nothing: raft membership follows admin txs.
	time.Sleep(500 * time.Millisecond)
	if s, err := leader.suffrage(n4.id); err != nil || s != "" {
		t.Fatalf("node 3 is in raft (%q, %v) before any NodeAdded", s, err)
	}
	k4, _ := ledger.LoadKey(n4.keyPath)
	c.submit(leader, c.adminSign(ledger.NodeAdded{PublicKey: hex.EncodeToString(k4.Public().(ed25519.PublicKey)),
		RaftAddress: n4.raftAddr, GRPCAddress: n4.grpcAddr, Name: "node3"}))
	waitFor(t, 60*time.Second, "node 3 to become a non-voter", func() error {
		if s, err := leader.suffrage(n4.id); err != nil || s != "nonvoter" {
			return fmt.Errorf("suffrage %q, %v", s, err)
		}
		return nil
	})
	c.submit(leader, c.adminSign(ledger.NodePromoted{ID: n4.id}))
	waitFor(t, 60*time.Second, "node 3 to become a voter", func() error {
		if s, err := leader.suffrage(n4.id); err != nil || s != "voter" {
			return fmt.Errorf("suffrage %q, %v", s, err)
		}
		return nil
	})
	st, _ := leader.status()
	c.waitHeight(st.Height, n4)
	if s := n4.n.RaftStats()["last_snapshot_index"]; s == "0" || s == "" {
		t.Errorf("node 3 did not install a snapshot (last_snapshot_index %q)", s)
	}
	live = append(live, n4)
	c.sameChains(st.Height, live...)
	// Only the genesis nodes' checkpoints count as cosignatures.
	vb, err := n4.client.Block(callCtx(30*time.Second), st.Height, 3, c.chainID)
	if err != nil {
		t.Fatalf("cosigned block from the joined node: %v", err)
	}
	for _, cp := range vb.Cosignatures {
		if cp.NodeID == n4.id {
			t.Errorf("checkpoint of non-genesis node %d counted", n4.idx)
		}
	}

	// Stop the leader: a new one is elected and nothing committed is lost.
	old := leader
	old.stop()
	var rest []*tnode
	for _, nd := range live {
		if nd != old {
			rest = append(rest, nd)
		}
	}
	leader = c.leader(rest...)
	if leader == old {
		t.Fatal("stopped node still leads")
	}
	for range 3 {
		tx, _ := c.adminTx()
		c.submit(rest[0], tx)
		committed = append(committed, ledger.TxHash(tx))
	}
	txOn := func(nd *tnode, h [32]byte) error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := nd.client.Tx(ctx, h)
		return err
	}
	for _, h := range committed {
		for _, nd := range rest {
			if err := txOn(nd, h); err != nil {
				// Followers may lag a moment behind the leader.
				waitFor(t, 10*time.Second, "tx everywhere", func() error { return txOn(nd, h) })
			}
		}
	}

	// Remove the stopped node: it leaves the configuration.
	if err := rest[0].client.Remove(callCtx(10*time.Second), old.id); err == nil {
		t.Fatal("the Remove RPC still changes raft membership")
	}
	c.submit(rest[0], c.adminSign(ledger.NodeRemoved{ID: old.id, Reason: "stopped"}))
	waitFor(t, 10*time.Second, "removal", func() error {
		st, err := rest[len(rest)-1].status()
		if err != nil {
			return err
		}
		for _, p := range st.Peers {
			if p.NodeId == old.id {
				return fmt.Errorf("node %d still in %v", old.idx, st.Peers)
			}
		}
		if len(st.Peers) != 3 {
			return fmt.Errorf("peers %v", st.Peers)
		}
		return nil
	})
	st, _ = leader.status()
	c.waitHeight(st.Height, rest...)
	c.sameChains(st.Height, rest...)
}

// testBadTxs submits invalid txs through gRPC and checks that each comes
// back rejected with its reason and that no state changed.
func testBadTxs(t *testing.T, c *cluster, nd *tnode, trainer ed25519.PrivateKey) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	before, err := nd.status()
	if err != nil {
		t.Fatal(err)
	}
	stranger, _ := ledger.GenerateKey()
	newKey := func() string {
		k, _ := ledger.GenerateKey()
		return hex.EncodeToString(k.Public().(ed25519.PublicKey))
	}
	sign := func(k ed25519.PrivateKey, chain string, nonce uint64, body ledger.TxBody) []byte {
		env, err := ledger.SignTx(k, chain, nonce, body)
		if err != nil {
			t.Fatal(err)
		}
		return env
	}
	valid := sign(c.admin, c.chainID, c.nonce+1, ledger.MemberAdded{PublicKey: newKey(), Role: ledger.RoleAuditor})
	tampered := []byte(strings.Replace(string(valid), `"sig":"`, `"sig":"AAAA`, 1))
	tests := []struct {
		name string
		tx   []byte
		code ledger.Code
	}{
		{"malformed", []byte("not an envelope"), ledger.CodeMalformed},
		{"unknown signer", sign(stranger, c.chainID, 1, ledger.MemberAdded{PublicKey: newKey(), Role: ledger.RoleAdmin}), ledger.CodeUnknownSigner},
		{"forbidden role", sign(trainer, c.chainID, 1, ledger.MemberAdded{PublicKey: newKey(), Role: ledger.RoleAdmin}), ledger.CodeForbidden},
		{"stale nonce", sign(c.admin, c.chainID, 1, ledger.MemberAdded{PublicKey: newKey(), Role: ledger.RoleAuditor}), ledger.CodeBadNonce},
		{"wrong chain", sign(c.admin, "other-chain", c.nonce+1, ledger.MemberAdded{PublicKey: newKey(), Role: ledger.RoleAuditor}), ledger.CodeWrongChain},
		{"tampered signature", tampered, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rs, err := nd.client.Submit(ctx, tc.tx)
			if err != nil {
				t.Fatal(err)
			}
			r := rs[0]
			if r.Status != ledgerv1.TxStatus_TX_STATUS_REJECTED || r.Reason == "" {
				t.Fatalf("got %v %q, want rejected with a reason", r.Status, r.Reason)
			}
			// The node sends the typed reason; the client reads it back.
			var te *ledger.TxError
			if rej := client.Rejection(r); r.Error == nil || !errors.As(rej, &te) || te.Code != ledger.Code(r.Error.Code) {
				t.Fatalf("rejection %v carries no typed reason (%+v)", rej, r.Error)
			}
			if tc.code != "" && (te.Code != tc.code || r.Code != string(tc.code)) {
				t.Fatalf("code %q (%s), want %q", te.Code, r.Reason, tc.code)
			}
			t.Logf("rejected: %s", r.Reason)
		})
	}
	after, err := nd.status()
	if err != nil {
		t.Fatal(err)
	}
	if after.Height != before.Height {
		t.Fatalf("height moved from %d to %d on rejected txs", before.Height, after.Height)
	}
	js, err := nd.client.Query(ctx, ledgerv1.QueryKind_QUERY_KIND_NONCE, ledger.KeyID(c.admin.Public().(ed25519.PublicKey)), 0)
	if err != nil {
		t.Fatal(err)
	}
	var nonce uint64
	if err := json.Unmarshal(js, &nonce); err != nil || nonce != c.nonce {
		t.Fatalf("admin nonce %s, want %d (%v)", js, c.nonce, err)
	}
}

// testCosignatures requires a quorum of cosignatures, and checks that
// forged and conflicting checkpoints are told apart.
func testCosignatures(t *testing.T, c *cluster, nd *tnode, h uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	vb, err := nd.client.Block(ctx, h, 3, c.chainID)
	if err != nil {
		t.Fatalf("block %d with quorum 3: %v", h, err)
	}
	ids := map[string]bool{}
	for _, cp := range vb.Cosignatures {
		ids[cp.NodeID] = true
	}
	for _, n := range c.nodes[:3] {
		if !ids[n.id] {
			t.Errorf("no cosignature from node %d", n.idx)
		}
	}
	if _, err := nd.client.Block(ctx, h, 4, c.chainID); !errors.Is(err, client.ErrQuorum) {
		t.Fatalf("quorum 4 of 3 nodes: %v, want client.ErrQuorum", err)
	}

	// Two checkpoints of one node agree: no fork.
	a, b := vb.Cosignatures[0], vb.Cosignatures[1]
	if err := client.VerifyFork(&a, &b); !errors.Is(err, client.ErrNoFork) {
		t.Fatalf("agreeing checkpoints: %v, want client.ErrNoFork", err)
	}
	// A node key signing another hash for the same height proves a fork.
	key, err := ledger.LoadKey(c.nodes[1].keyPath)
	if err != nil {
		t.Fatal(err)
	}
	other := vb.Hash
	other[0] ^= 1
	conflict := client.SignCheckpoint(key, c.chainID, h, other)
	if err := client.VerifyFork(&a, &conflict); err != nil {
		t.Fatalf("conflicting checkpoints not detected as a fork: %v", err)
	}
	// A forged checkpoint (signature not over its fields) proves nothing.
	forged := conflict
	forged.BlockHash[1] ^= 1
	if err := client.VerifyFork(&a, &forged); !errors.Is(err, client.ErrBadCheckpoint) {
		t.Fatalf("forged checkpoint: %v, want client.ErrBadCheckpoint", err)
	}
	// A checkpoint whose node ID is not its key's is rejected.
	liar := conflict
	liar.NodeID = c.nodes[0].id
	if err := liar.Verify(); !errors.Is(err, client.ErrBadCheckpoint) {
		t.Fatalf("mislabelled checkpoint: %v", err)
	}
}

// TestMetrics checks the /metrics endpoint of a one-node cluster.
func TestMetrics(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	c := newCluster(t, 1)
	nd := c.nodes[0]
	cfg := nd.config(1, "")
	cfg.MetricsAddress = freeAddr(t)
	nd.start(cfg)
	c.leader(nd)
	tx, _ := c.adminTx()
	c.submit(nd, tx)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rs, err := nd.client.Submit(ctx, []byte("junk"))
	if err != nil || rs[0].Status != ledgerv1.TxStatus_TX_STATUS_REJECTED {
		t.Fatalf("junk: %v %v", rs, err)
	}
	resp, err := http.Get("http://" + cfg.MetricsAddress + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, want := range []string{
		"fedtune_ledger_blocks_applied_total 1",
		"fedtune_ledger_txs_committed_total 1",
		"fedtune_ledger_txs_rejected_total 1",
		`fedtune_ledger_refused_total{reason="tx_malformed"} 1`,
		"fedtune_ledger_apply_seconds_count 1",
		"fedtune_ledger_is_leader 1",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}
