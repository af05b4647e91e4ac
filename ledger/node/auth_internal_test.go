package node

import (
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	ledgerv1 "github.com/fedtune/fedtune/api/ledger/v1"
	"github.com/fedtune/fedtune/internal/tlsid"
	"github.com/fedtune/fedtune/ledger"
)

func authKey(t testing.TB) (ed25519.PrivateKey, string) {
	t.Helper()
	k, err := ledger.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k, ledger.KeyID(k.Public().(ed25519.PublicKey))
}

func TestPeerEntryVerify(t *testing.T) {
	kx, x := authKey(t)
	ky, _ := authKey(t)
	good := func() peerEntry {
		return signPeer(kx, "chain", PeerConfig{ID: x, RaftAddress: "127.0.0.1:1", GRPCAddress: "127.0.0.1:2"}, 7)
	}
	for _, tc := range []struct {
		name string
		edit func(*peerEntry)
		want string // "" = valid
	}{
		{"valid", func(*peerEntry) {}, ""},
		{"other chain", func(e *peerEntry) { *e = signPeer(kx, "other", e.PeerConfig, e.Seq) }, "does not verify"},
		{"signed by another node", func(e *peerEntry) { *e = signPeer(ky, "chain", e.PeerConfig, e.Seq) }, "not by the node it describes"},
		{"address changed", func(e *peerEntry) { e.GRPCAddress = "10.0.0.1:2" }, "does not verify"},
		{"raft address changed", func(e *peerEntry) { e.RaftAddress = "10.0.0.1:1" }, "does not verify"},
		{"seq changed", func(e *peerEntry) { e.Seq++ }, "does not verify"},
		{"unsigned", func(e *peerEntry) { e.Signature = nil }, "not signed"},
		{"short key", func(e *peerEntry) { e.PublicKey = e.PublicKey[:31] }, "public key is 31 bytes"},
		{"bad ID", func(e *peerEntry) { e.ID = strings.ToUpper(e.ID) }, "not 64 lowercase hex"},
		{"no gRPC address", func(e *peerEntry) { *e = signPeer(kx, "chain", PeerConfig{ID: x, RaftAddress: "a"}, 1) }, "want a non-empty gRPC address"},
		{"long address", func(e *peerEntry) {
			*e = signPeer(kx, "chain", PeerConfig{ID: x, GRPCAddress: strings.Repeat("a", maxPeerAddrLen+1)}, 1)
		}, "at most 256 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := good()
			tc.edit(&e)
			err := e.verify("chain")
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrBadPeer) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("verify: %v, want ErrBadPeer with %q", err, tc.want)
			}
		})
	}
}

func TestPeerDirPutSigned(t *testing.T) {
	kx, x := authKey(t)
	ky, y := authKey(t)
	kz, z := authKey(t)
	nodes := map[string]bool{x: true, y: true}
	path := filepath.Join(t.TempDir(), "peers.json")
	seed := PeerConfig{ID: y, RaftAddress: "seed:1", GRPCAddress: "seed:2"}
	d, err := loadPeerDir(path, "chain", func(id string) bool { return nodes[id] }, []PeerConfig{seed})
	if err != nil {
		t.Fatal(err)
	}
	x1 := signPeer(kx, "chain", PeerConfig{ID: x, RaftAddress: "x:1", GRPCAddress: "x:2"}, 10)
	if err := d.putSigned(x1); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		e    peerEntry
		want error
	}{
		{"X's entry signed by Y", signPeer(ky, "chain", PeerConfig{ID: x, GRPCAddress: "evil:2"}, 99), ErrBadPeer},
		{"X's entry, tampered address", func() peerEntry { e := x1; e.GRPCAddress = "evil:2"; e.Seq = 99; return e }(), ErrBadPeer},
		{"not a ledger node", signPeer(kz, "chain", PeerConfig{ID: z, GRPCAddress: "z:2"}, 1), errNotNode},
		{"older entry of X", signPeer(kx, "chain", PeerConfig{ID: x, GRPCAddress: "old:2"}, 9), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := d.putSigned(tc.e)
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("putSigned: %v, want %v", err, tc.want)
			}
			if p, _ := d.get(x); p != x1.PeerConfig {
				t.Fatalf("directory entry of X is now %+v", p)
			}
			if _, ok := d.get(z); ok {
				t.Fatal("a non-node's entry was stored")
			}
		})
	}
	// A hint never replaces a known entry; a signed entry replaces a seed.
	if err := d.putHint(PeerConfig{ID: x, GRPCAddress: "hint:2"}); err != nil {
		t.Fatal(err)
	}
	if p, _ := d.get(x); p != x1.PeerConfig {
		t.Fatalf("a hint replaced X's signed entry: %+v", p)
	}
	if p, _ := d.get(y); p != seed {
		t.Fatalf("seed of Y: %+v", p)
	}
	y1 := signPeer(ky, "chain", PeerConfig{ID: y, RaftAddress: "y:1", GRPCAddress: "y:2"}, 5)
	if err := d.putSigned(y1); err != nil {
		t.Fatal(err)
	}
	// Reloaded: the signed entries survive and win over the seed.
	d2, err := loadPeerDir(path, "chain", func(id string) bool { return nodes[id] }, []PeerConfig{seed})
	if err != nil {
		t.Fatal(err)
	}
	if p, _ := d2.get(x); p != x1.PeerConfig {
		t.Fatalf("reloaded X: %+v", p)
	}
	if p, _ := d2.get(y); p != y1.PeerConfig {
		t.Fatalf("reloaded Y: %+v", p)
	}
	// Once Y is no longer a ledger node, its saved entry is dropped on load.
	delete(nodes, y)
	d3, err := loadPeerDir(path, "chain", func(id string) bool { return nodes[id] }, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := d3.get(y); ok {
		t.Fatal("entry of a former node kept")
	}
}

// FuzzPeerEntry feeds arbitrary Peer messages (outside bytes) to the
// directory's decoder and verifier: no panic, and nothing that verifies
// unless signed by the key it names.
func FuzzPeerEntry(f *testing.F) {
	k, id := authKey(f)
	e := signPeer(k, "chain", PeerConfig{ID: id, RaftAddress: "r:1", GRPCAddress: "g:1"}, 3)
	b, err := proto.Marshal(peerToProto(e, "voter"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		var p ledgerv1.Peer
		if proto.Unmarshal(data, &p) != nil {
			return
		}
		e := peerFromProto(&p)
		if e.verify("chain") != nil {
			return
		}
		if ledger.KeyID(e.PublicKey) != e.ID || !ed25519.Verify(e.PublicKey, peerMessage("chain", e.PeerConfig, e.Seq), e.Signature) {
			t.Fatalf("verified an entry not signed by its node: %+v", e)
		}
	})
}

// authNode is the part of a Node the transport's checks use.
func authNode(t *testing.T, key ed25519.PrivateKey, nodes ...ed25519.PrivateKey) *Node {
	t.Helper()
	n := &Node{key: key, genesis: &ledger.Genesis{ChainID: "chain"}, genesisNodes: map[string]bool{}}
	for _, k := range nodes {
		pub := k.Public().(ed25519.PublicKey)
		n.genesis.Nodes = append(n.genesis.Nodes, ledger.GenesisNode{Key: pub})
		n.genesisNodes[ledger.KeyID(pub)] = true
	}
	return n
}

// TestTLSStreamLayer runs raft's stream layer between nodes and against
// strangers on both ends.
func TestTLSStreamLayer(t *testing.T) {
	ka, _ := authKey(t)
	kb, _ := authKey(t)
	stranger, _ := authKey(t)
	serve := func(n *Node) (*tlsStreamLayer, chan error) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		sl, err := n.newTLSStreamLayer(ln)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sl.Close() })
		errc := make(chan error, 1)
		go func() {
			c, err := sl.Accept()
			if err != nil {
				errc <- err
				return
			}
			defer c.Close()
			buf := make([]byte, 4)
			if _, err := io.ReadFull(c, buf); err != nil {
				errc <- err
				return
			}
			_, err = c.Write(buf)
			errc <- err
		}()
		return sl, errc
	}
	t.Run("node to node", func(t *testing.T) {
		srv, errc := serve(authNode(t, ka, ka, kb))
		cli, _ := authNode(t, kb, ka, kb).newTLSStreamLayer(nil)
		c, err := cli.Dial(srvAddr(srv), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4)
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
			t.Fatalf("echo %q: %v", buf, err)
		}
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	})
	t.Run("stranger client", func(t *testing.T) {
		srv, errc := serve(authNode(t, ka, ka, kb))
		cfg, _ := tlsid.ClientConfig(stranger, tlsid.AllowAny())
		c, err := tls.Dial("tcp", string(srvAddr(srv)), cfg)
		if err == nil {
			_, _ = c.Write([]byte("ping"))
			_, err = io.ReadAll(c)
			c.Close()
		}
		if err == nil || !strings.Contains(err.Error(), "bad certificate") {
			t.Fatalf("client side: %v, want a bad certificate alert", err)
		}
		if err := <-errc; !errors.Is(err, tlsid.ErrNotAllowed) || !strings.Contains(err.Error(), "not a ledger node") {
			t.Fatalf("server side: %v, want ErrNotAllowed (not a ledger node)", err)
		}
	})
	t.Run("plain TCP client", func(t *testing.T) {
		srv, errc := serve(authNode(t, ka, ka, kb))
		c, err := net.Dial("tcp", string(srvAddr(srv)))
		if err != nil {
			t.Fatal(err)
		}
		_, _ = c.Write([]byte{0, 0x85, 0xa4, 'T', 'e', 'r', 'm'}) // a msgpack AppendEntries start
		_, _ = io.ReadAll(c)
		c.Close()
		if err := <-errc; err == nil || !strings.Contains(err.Error(), "raft TLS handshake") {
			t.Fatalf("server side: %v, want a failed handshake", err)
		}
	})
	t.Run("stranger server", func(t *testing.T) {
		srv, _ := serve(authNode(t, stranger, stranger))
		cli, _ := authNode(t, kb, ka, kb).newTLSStreamLayer(nil)
		_, err := cli.Dial(srvAddr(srv), 5*time.Second)
		if !errors.Is(err, tlsid.ErrNotAllowed) {
			t.Fatalf("dial a stranger: %v, want ErrNotAllowed", err)
		}
	})
}

func srvAddr(sl *tlsStreamLayer) raft.ServerAddress { return raft.ServerAddress(sl.Addr().String()) }
