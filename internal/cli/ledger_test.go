package cli

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fedtune/fedtune/internal/freeport"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/pebblestore"
)

// syncBuffer is a bytes.Buffer safe for a running command's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// run runs the fedtune command line and returns its stdout.
func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out, errb syncBuffer
	err := RunWith(ctx, args, &out, &errb)
	if err != nil {
		t.Logf("fedtune %s: %v\nstderr: %s", strings.Join(args, " "), err, errb.String())
	}
	return out.String(), err
}

func mustRun(t *testing.T, args ...string) string {
	t.Helper()
	out, err := run(t, args...)
	if err != nil {
		t.Fatalf("fedtune %s: %v", strings.Join(args, " "), err)
	}
	return out
}

func freeAddr(t *testing.T) string {
	t.Helper()
	addr, err := freeport.Addr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// tamperBlock rewrites the stored block at height h with its time moved by
// one nanosecond, as a disk-level forgery would.
func tamperBlock(t *testing.T, dir string, h uint64) {
	t.Helper()
	db, err := pebblestore.Open(dir, pebblestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	key := binary.BigEndian.AppendUint64([]byte("c/b/"), h)
	val, ok, err := db.State().Get(key)
	if err != nil || !ok {
		t.Fatalf("block %d not found under %q: %v", h, key, err)
	}
	b, err := ledger.DecodeBlock(val)
	if err != nil {
		t.Fatal(err)
	}
	b.Header.Time++
	batch := db.State().NewBatch()
	if err := batch.Set(key, ledger.EncodeBlock(b)); err != nil {
		t.Fatal(err)
	}
	if err := batch.Commit(); err != nil {
		t.Fatal(err)
	}
}

func TestKeygen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "alice.key")
	out := mustRun(t, "keygen", "-o", path)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("key mode %#o, want 0600", fi.Mode().Perm())
	}
	data, _ := os.ReadFile(path)
	if b, _ := pem.Decode(data); b == nil || b.Type != "PRIVATE KEY" {
		t.Fatalf("key file is not a PKCS#8 PEM block:\n%s", data)
	}
	k, err := ledger.LoadKey(path)
	if err != nil {
		t.Fatal(err)
	}
	id := ledger.KeyID(k.Public().(ed25519.PublicKey))
	if first := strings.SplitN(out, "\n", 2)[0]; first != id {
		t.Fatalf("printed %q, want the ID %s", first, id)
	}
	pub, err := ledger.LoadPublicKey(filepath.Join(dir, "alice.pub"))
	if err != nil || !pub.Equal(k.Public()) {
		t.Fatalf("alice.pub: %v", err)
	}
	// A key in a folder that does not exist yet: the folder is made.
	nested := filepath.Join(dir, "devnet", "keys", "solo.key")
	mustRun(t, "keygen", "-o", nested)
	if fi, err := os.Stat(filepath.Dir(nested)); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("keygen into a new folder: %v, %v", fi, err)
	}
	// It refuses to overwrite a key.
	if _, err := run(t, "keygen", "-o", path); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Fatalf("overwrite: %v", err)
	}
	if _, err := run(t, "keygen"); err == nil {
		t.Fatal("keygen without -o succeeded")
	}
}

func TestLedgerBadConfig(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "node.yaml")
	cfg := "data_dir: data\nkey_file: node.key\nraft_adress: 127.0.0.1:1\ngrpc_address: 127.0.0.1:2\n"
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := run(t, "ledger", "start", "--config", path)
	if err == nil {
		t.Fatal("start with a bad config succeeded")
	}
	want := path + `:3: unknown key "raft_adress"`
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not name file and line (%s)", err, want)
	}
}

// TestLedgerFlow runs a one-node ledger through the command line: keygen,
// ledger init, start, status, admin add-member, blocks, query, tx, and
// verify after a clean stop.
func TestLedgerFlow(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a ledger node")
	}
	dir := t.TempDir()
	key := func(name string) (string, string) {
		p := filepath.Join(dir, name+".key")
		out := mustRun(t, "keygen", "-o", p)
		return p, strings.SplitN(out, "\n", 2)[0]
	}
	adminKey, _ := key("admin")
	nodeKey, nodeID := key("node")
	_, trainerID := key("trainer")
	adminPub, err := ledger.LoadPublicKey(filepath.Join(dir, "admin.pub"))
	if err != nil {
		t.Fatal(err)
	}
	genesis := filepath.Join(dir, "genesis.yaml")
	g := fmt.Sprintf("chain_id: cli-test\nmembers:\n  - name: admin\n    role: admin\n    public_key: %s\npolicy:\n  block_interval: 5ms\n", hex.EncodeToString(adminPub))
	if err := os.WriteFile(genesis, []byte(g), 0o644); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	out := mustRun(t, "ledger", "init", "--genesis", genesis, "--data", data, "--key", nodeKey)
	if !strings.Contains(out, nodeID) || !strings.Contains(out, "cli-test") {
		t.Fatalf("init printed %q", out)
	}

	addr := freeAddr(t)
	cfgPath := filepath.Join(dir, "node.yaml")
	cfg := fmt.Sprintf("data_dir: data\nkey_file: node.key\nraft_address: %s\ngrpc_address: %s\nmetrics_address: %s\nbootstrap: true\nallow_unpinned: true\nraft:\n  heartbeat_timeout: 300ms\n  election_timeout: 300ms\n  leader_lease_timeout: 150ms\n",
		freeAddr(t), addr, freeAddr(t))
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var nodeOut, nodeErr syncBuffer
	done := make(chan error, 1)
	go func() { done <- RunWith(ctx, []string{"ledger", "start", "--config", cfgPath}, &nodeOut, &nodeErr) }()
	stopped := false
	defer func() {
		if !stopped {
			cancel()
			<-done
		}
		if t.Failed() {
			t.Logf("node log:\n%s", nodeErr.String())
		}
	}()

	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := run(t, "ledger", "status", "--addr", addr)
		if err == nil && strings.Contains(out, "state:   Leader") {
			if !strings.Contains(out, nodeID) {
				t.Fatalf("status lacks the node ID:\n%s", out)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node did not become leader: %v\n%s", err, out)
		}
		time.Sleep(100 * time.Millisecond)
	}

	out = mustRun(t, "admin", "add-member", "--role", "trainer", "--pubkey", filepath.Join(dir, "trainer.pub"),
		"--key", adminKey, "--name", "trainer-1", "--addr", addr)
	m := regexp.MustCompile(`MemberAdded committed at height 1: tx ([0-9a-f]{64})`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("add-member printed %q", out)
	}
	// A second add of the same key is rejected, with the reason.
	if _, err := run(t, "admin", "add-member", "--role", "trainer", "--pubkey", filepath.Join(dir, "trainer.pub"),
		"--key", adminKey, "--addr", addr); err == nil || !strings.Contains(err.Error(), "rejected") {
		t.Fatalf("second add-member: %v", err)
	}
	if _, err := run(t, "admin", "add-member", "--role", "wizard", "--pubkey", filepath.Join(dir, "trainer.pub"),
		"--key", adminKey, "--addr", addr); err == nil || !strings.Contains(err.Error(), "wizard") {
		t.Fatalf("bad role: %v", err)
	}

	out = mustRun(t, "ledger", "blocks", "--addr", addr)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "0 ") || !strings.HasPrefix(lines[1], "1 ") || !strings.Contains(lines[1], "txs=1") {
		t.Fatalf("blocks printed:\n%s", out)
	}
	out = mustRun(t, "ledger", "blocks", "--addr", addr, "--from", "1", "--quorum", "1")
	if !strings.Contains(out, "cosigs=1") {
		t.Fatalf("blocks --quorum 1 printed:\n%s", out)
	}
	if _, err := run(t, "ledger", "blocks", "--addr", addr, "--quorum", "2"); err == nil {
		t.Fatal("quorum 2 on a one-node ledger succeeded")
	}

	// --follow prints new blocks until interrupted.
	fctx, fcancel := context.WithCancel(context.Background())
	var followOut syncBuffer
	fdone := make(chan error, 1)
	go func() {
		fdone <- RunWith(fctx, []string{"ledger", "blocks", "--addr", addr, "--from", "1", "--follow"}, &followOut, &syncBuffer{})
	}()
	_, auditorID := key("auditor")
	mustRun(t, "admin", "add-member", "--role", "auditor", "--pubkey", filepath.Join(dir, "auditor.pub"), "--key", adminKey, "--addr", addr)
	followDeadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(followOut.String(), "\n2 ") {
		if time.Now().After(followDeadline) {
			t.Fatalf("follow printed %q", followOut.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	fcancel()
	if err := <-fdone; err != nil {
		t.Fatalf("blocks --follow: %v", err)
	}

	out = mustRun(t, "ledger", "query", "member", trainerID, "--addr", addr)
	if !strings.Contains(out, `"trainer"`) {
		t.Fatalf("query member printed %q", out)
	}
	out = mustRun(t, "ledger", "tx", m[1], "--addr", addr)
	if !strings.Contains(out, "height 1 index 0 of 1") {
		t.Fatalf("tx printed %q", out)
	}
	_ = auditorID

	// Stop (as SIGINT would) and verify the chain on disk.
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("ledger start returned %v", err)
	}
	stopped = true
	out = mustRun(t, "ledger", "verify", "--data", data)
	if !strings.Contains(out, "chain OK: 2 blocks") {
		t.Fatalf("verify printed %q", out)
	}
	// Tamper with block 1 on disk: verify fails naming the height and field.
	tamperBlock(t, filepath.Join(data, "pebble"), 2)
	_, err = run(t, "ledger", "verify", "--data", data)
	if err == nil || !strings.Contains(err.Error(), "height 2") {
		t.Fatalf("verify of a tampered chain: %v", err)
	}
	t.Logf("tampered chain: %v", err)

	// Re-initializing with another genesis is refused.
	other := filepath.Join(dir, "other.yaml")
	if err := os.WriteFile(other, []byte(strings.Replace(g, "cli-test", "other", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := run(t, "ledger", "init", "--genesis", other, "--data", data, "--key", nodeKey); err == nil {
		t.Fatal("init over another chain succeeded")
	}
}
