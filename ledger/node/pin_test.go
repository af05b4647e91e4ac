package node_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fedtune/fedtune/internal/tlsid"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
)

func TestLoadPin(t *testing.T) {
	c := newCluster(t, 3)
	nodeIDs := map[string]bool{}
	for _, nd := range c.nodes {
		nodeIDs[nd.id] = true
	}
	noNodes := filepath.Join(c.dir, "no-nodes.yaml")
	g, err := os.ReadFile(c.genesis)
	if err != nil {
		t.Fatal(err)
	}
	head, _, _ := strings.Cut(string(g), "nodes:\n")
	if err := os.WriteFile(noNodes, []byte(head), 0o644); err != nil {
		t.Fatal(err)
	}
	extra := strings.Repeat("ab", 32)
	for _, tc := range []struct {
		name    string
		path    string
		extra   []string
		want    string // error text; "" = ok
		nodes   int
		nilPin  bool
		allowed string
	}{
		{name: "genesis", path: c.genesis, nodes: 3, allowed: c.nodes[1].id},
		{name: "genesis and a later node", path: c.genesis, extra: []string{extra}, nodes: 4, allowed: extra},
		{name: "the same node twice", path: c.genesis, extra: []string{c.nodes[0].id}, nodes: 3},
		{name: "nothing", nilPin: true},
		{name: "node IDs without genesis", extra: []string{extra}, want: "ledger_node_ids need ledger_genesis"},
		{name: "bad node ID", path: c.genesis, extra: []string{"NODE-4"}, want: `"NODE-4" is not a key ID`},
		{name: "genesis without nodes", path: noNodes, want: "lists no nodes"},
		{name: "no such file", path: filepath.Join(c.dir, "absent.yaml"), want: "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := client.LoadPin(tc.path, tc.extra...)
			if tc.want != "" {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("LoadPin: %+v, %v; want an error with %q", p, err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.nilPin {
				if p != nil {
					t.Fatalf("LoadPin of nothing: %+v, want nil", p)
				}
				return
			}
			if len(p.Nodes) != tc.nodes || p.ChainID != c.chainID || p.Quorum != 2 {
				t.Fatalf("pin %+v: want %d nodes, chain %s, quorum 2", p, tc.nodes, c.chainID)
			}
			v := p.Verifier()
			if tc.allowed != "" {
				if err := v(tc.allowed); err != nil {
					t.Errorf("verifier refuses pinned %s: %v", tc.allowed, err)
				}
			}
			stranger := strings.Repeat("cd", 32)
			if err := v(stranger); err == nil || !strings.Contains(err.Error(), "is not one of the") || !strings.Contains(err.Error(), stranger) {
				t.Errorf("verifier of a stranger: %v", err)
			}
		})
	}
}

// TestPinnedClient: a client pinned by the cluster's genesis submits and
// sees its tx committed with the genesis quorum of cosignatures; pinned
// by another chain's genesis it is refused at the TLS handshake.
func TestPinnedClient(t *testing.T) {
	c := newCluster(t, 3)
	for _, nd := range c.nodes {
		nd.start(nd.config(3, ""))
	}
	leader := c.leader(c.nodes...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pin, err := client.LoadPin(c.genesis)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ledger.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	for _, nd := range c.nodes {
		pc, err := client.DialPinned(ctx, nd.grpcAddr, key, pin)
		if err != nil {
			t.Fatal(err)
		}
		tx, _ := c.adminTx()
		start := time.Now()
		h, err := pc.SubmitWait(ctx, tx)
		if err != nil {
			t.Fatalf("pinned SubmitWait via node %d: %v", nd.idx, err)
		}
		t.Logf("pinned SubmitWait via node %d (leader %v): height %d in %v", nd.idx, nd == leader, h, time.Since(start).Round(time.Millisecond))
		if pc.Pin() != pin {
			t.Fatal("Pin() is not the pin given")
		}
		pc.Close()
	}

	// Another chain's genesis pins other nodes.
	other := newCluster(t, 3)
	otherPin, err := client.LoadPin(other.genesis)
	if err != nil {
		t.Fatal(err)
	}
	pc, err := client.DialPinned(ctx, leader.grpcAddr, key, otherPin)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	tx, _ := c.adminTx()
	_, err = pc.SubmitWait(ctx, tx)
	if err == nil || !strings.Contains(err.Error(), tlsid.ErrNotAllowed.Error()) || !strings.Contains(err.Error(), leader.id) {
		t.Fatalf("SubmitWait pinned to another chain's nodes: %v, want a TLS refusal naming %s", err, leader.id)
	}
	if ctx.Err() != nil {
		t.Fatal("SubmitWait retried a TLS refusal until the context ended")
	}
}

// BenchmarkSubmitWaitPinned: one sequential SubmitWait, unpinned and
// pinned (the extra GetBlock gathering the genesis quorum of
// cosignatures), through the leader and through a follower.
func BenchmarkSubmitWaitPinned(b *testing.B) {
	c := newCluster(b, 3)
	for _, nd := range c.nodes {
		nd.start(nd.config(3, ""))
	}
	leader := c.leader(c.nodes...)
	follower := c.nodes[0]
	if follower == leader {
		follower = c.nodes[1]
	}
	pin, err := client.LoadPin(c.genesis)
	if err != nil {
		b.Fatal(err)
	}
	key, err := ledger.GenerateKey()
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	for _, via := range []struct {
		name string
		nd   *tnode
	}{{"leader", leader}, {"follower", follower}} {
		for _, p := range []*client.Pin{nil, pin} {
			name := via.name + "/unpinned"
			if p != nil {
				name = via.name + "/pinned"
			}
			b.Run(name, func(b *testing.B) {
				cl, err := client.DialPinned(ctx, via.nd.grpcAddr, key, p)
				if err != nil {
					b.Fatal(err)
				}
				defer cl.Close()
				txs := make([][]byte, b.N)
				for i := range txs {
					txs[i], _ = c.adminTx()
				}
				b.ResetTimer()
				for i := range b.N {
					if _, err := cl.SubmitWait(ctx, txs[i]); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
