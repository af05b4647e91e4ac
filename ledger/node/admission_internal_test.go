package node

import (
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/fedtune/fedtune/internal/tlsid"
	"github.com/fedtune/fedtune/ledger"
)

// admissionCtx is the context of a gRPC call over TLS from host with key's
// certificate (no certificate when key is nil).
func admissionCtx(t *testing.T, host string, key ed25519.PrivateKey) context.Context {
	t.Helper()
	p := &peer.Peer{Addr: &net.TCPAddr{IP: net.ParseIP(host), Port: 40000}}
	if key != nil {
		c, err := tlsid.Certificate(key)
		if err != nil {
			t.Fatal(err)
		}
		x, err := x509.ParseCertificate(c.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		ti := credentials.TLSInfo{}
		ti.State.PeerCertificates = []*x509.Certificate{x}
		p.AuthInfo = ti
	}
	return peer.NewContext(context.Background(), p)
}

// TestCallerOf: a TLS key names the caller only when it is a ledger node or
// an active member; anything else is named by its host, whatever key it
// shows.
func TestCallerOf(t *testing.T) {
	ka, ida := authKey(t)
	r := newRaftConnNode(t, ka, ka)
	member, idm := authKey(t)
	removed, _ := authKey(t)
	stranger, _ := authKey(t)
	for _, k := range []ed25519.PrivateKey{member, removed} {
		r.apply(t, ka, ledger.MemberAdded{PublicKey: hex.EncodeToString(k.Public().(ed25519.PublicKey)), Role: ledger.RoleTrainer})
	}
	r.apply(t, ka, ledger.MemberRemoved{ID: ledger.KeyID(removed.Public().(ed25519.PublicKey))})
	for _, tc := range []struct {
		name          string
		key           ed25519.PrivateKey
		want          string
		node, trusted bool
	}{
		{"ledger node", ka, "node " + ida, true, true},
		{"active member", member, "key " + idm, false, true},
		{"removed member", removed, "host 10.1.2.3", false, false},
		{"stranger", stranger, "host 10.1.2.3", false, false},
		{"no certificate", nil, "host 10.1.2.3", false, false},
	} {
		c := r.n.callerOf(admissionCtx(t, "10.1.2.3", tc.key))
		if c.name != tc.want || c.node != tc.node || c.trusted != tc.trusted {
			t.Errorf("%s: %+v, want %q node=%v trusted=%v", tc.name, c, tc.want, tc.node, tc.trusted)
		}
	}
}

// TestLimitersNonMembers: callers that are no members share one budget,
// whatever name they come under; members keep their own.
func TestLimitersNonMembers(t *testing.T) {
	cfg := LimitsConfig{SubmitTxRate: 1000, SubmitTxBurst: 1000, NonMemberTxRate: 0.001, NonMemberTxBurst: 10,
		NonMemberByteRate: 0.001, NonMemberByteBurst: 1000}.withDefaults()
	ls := newLimiters(cfg)
	for i := range 5 {
		if err := ls.allow(caller{name: "host 10.0.0." + string(rune('1'+i))}, 2, 10); err != nil {
			t.Fatalf("non-member %d within the shared budget: %v", i, err)
		}
	}
	err := ls.allow(caller{name: "host 10.0.0.9"}, 1, 10)
	if err == nil || !strings.Contains(err.Error(), "not members of the chain") || !strings.Contains(err.Error(), "limits.non_member_tx_rate") {
		t.Fatalf("a sixth host past the shared budget: %v", err)
	}
	if err := ls.allow(caller{name: "host 10.0.0.10"}, 0, 2000); err == nil || !strings.Contains(err.Error(), "non_member_byte_rate") {
		t.Fatalf("over the shared byte budget: %v", err)
	}
	if err := ls.allow(caller{name: "key m", trusted: true}, 100, 10000); err != nil {
		t.Fatalf("a member is held by the non-members' budget: %v", err)
	}
}

// TestLimitersReads: each caller has its own read budget; non-members
// also share one, so a flood of them under fresh names leaves members'
// budgets whole.
func TestLimitersReads(t *testing.T) {
	cfg := LimitsConfig{QueryRate: 0.001, QueryBurst: 3, NonMemberQueryRate: 0.001, NonMemberQueryBurst: 4}.withDefaults()
	ls := newLimiters(cfg)
	for i := range 3 {
		if _, err := ls.allowRead(caller{name: "key m", trusted: true}); err != nil {
			t.Fatalf("member read %d within its burst: %v", i, err)
		}
	}
	shared, err := ls.allowRead(caller{name: "key m", trusted: true})
	if err == nil || shared || !strings.Contains(err.Error(), "caller key m is over its read rate") || !strings.Contains(err.Error(), "limits.query_rate") {
		t.Fatalf("a member's fourth read: %v", err)
	}
	for i := range 4 {
		if _, err := ls.allowRead(caller{name: "host 10.0.0." + string(rune('1'+i))}); err != nil {
			t.Fatalf("non-member %d within the shared burst: %v", i, err)
		}
	}
	shared, err = ls.allowRead(caller{name: "host 10.0.0.9"})
	if err == nil || !shared || !strings.Contains(err.Error(), "limits.non_member_query_rate") {
		t.Fatalf("a fifth host past the shared read budget: %v", err)
	}
	if _, err := ls.allowRead(caller{name: "key other", trusted: true}); err != nil {
		t.Fatalf("another member is held by the non-members' budget: %v", err)
	}
	d := LimitsConfig{}.withDefaults()
	if d.QueryRate <= 0 || d.QueryBurst < int(d.QueryRate) || d.NonMemberQueryRate <= 0 || d.NonMemberQueryBurst <= 0 || d.NonMemberQueryRate > d.QueryRate {
		t.Errorf("read defaults %+v", d)
	}
	if err := (LimitsConfig{QueryRate: -1}).validate(); err == nil {
		t.Error("a negative query_rate was accepted")
	}
}

// TestLimitersBounded: past MaxCallers, new callers share one overflow
// bucket instead of each getting a fresh burst, and the map stays bounded.
func TestLimitersBounded(t *testing.T) {
	cfg := LimitsConfig{SubmitTxRate: 0.001, SubmitTxBurst: 5, MaxCallers: 3}.withDefaults()
	ls := newLimiters(cfg)
	var refused int
	for i := range 20 {
		if err := ls.allow(caller{name: "key " + string(rune('a'+i)), trusted: true}, 1, 1); err != nil {
			if !strings.Contains(err.Error(), "over its Submit rate") {
				t.Fatal(err)
			}
			refused++
		}
	}
	if len(ls.m) != 3 {
		t.Fatalf("limiter map holds %d callers, cap 3", len(ls.m))
	}
	// 3 own buckets; the 17 others share 5 tokens.
	if refused != 12 {
		t.Fatalf("refused %d of 20 new callers, want 12", refused)
	}
}

// TestNewRefusesUnpinnedGenesis: a genesis that lists no nodes starts a
// node only with allow_unpinned.
func TestNewRefusesUnpinnedGenesis(t *testing.T) {
	dir := t.TempDir()
	key, _ := authKey(t)
	admin, _ := authKey(t)
	keyPath := filepath.Join(dir, "node.key")
	if err := ledger.SaveKey(keyPath, key); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o700); err != nil {
		t.Fatal(err)
	}
	g := "chain_id: unpinned\nmembers:\n  - name: admin\n    role: admin\n    public_key: " + hex.EncodeToString(admin.Public().(ed25519.PublicKey)) + "\n"
	if err := os.WriteFile(filepath.Join(data, genesisName), []byte(g), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, allow := range []bool{false, true} {
		cfg := &Config{DataDir: data, KeyFile: keyPath, RaftAddress: "127.0.0.1:0", GRPCAddress: "127.0.0.1:0", AllowUnpinned: allow}
		n, err := New(cfg, Options{})
		if !allow {
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "lists no nodes") || !strings.Contains(err.Error(), "allow_unpinned: true") {
				t.Fatalf("unpinned genesis without allow_unpinned: %v", err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("with allow_unpinned: %v", err)
		}
		_ = n.closeAll()
	}
}

// TestSignedBy: a follower forwards an unknown signer's tx from a
// non-member caller only when the caller's TLS key signed it.
func TestSignedBy(t *testing.T) {
	k, id := authKey(t)
	other, _ := authKey(t)
	tx, err := ledger.SignTx(k, "chain", 1, ledger.ModelRegistered{Digest: strings.Repeat("ab", 32), Name: "m", Licence: "l", Source: "s"})
	if err != nil {
		t.Fatal(err)
	}
	otherID := ledger.KeyID(other.Public().(ed25519.PublicKey))
	for _, tc := range []struct {
		name string
		env  []byte
		id   string
		want bool
	}{
		{"own key", tx, id, true},
		{"another key's tx", tx, otherID, false},
		{"no TLS key", tx, "", false},
		{"not a tx", []byte("junk"), id, false},
	} {
		if got := signedBy(tc.env, tc.id); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}
