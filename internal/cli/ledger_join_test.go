package cli

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fedtune/fedtune/ledger"
)

// cliNode is a ledger node run by "fedtune ledger start" in this process.
type cliNode struct {
	id, grpc, raft string
	stop           func()
}

// startCLINode makes a key and data dir for name, writes its config and
// runs "ledger start" until the test ends.
func startCLINode(t *testing.T, dir, genesis, name string, bootstrap bool) *cliNode {
	t.Helper()
	keyPath := filepath.Join(dir, name+".key")
	out := mustRun(t, "keygen", "-o", keyPath)
	nd := &cliNode{id: strings.SplitN(out, "\n", 2)[0], grpc: freeAddr(t), raft: freeAddr(t)}
	data := filepath.Join(dir, name)
	mustRun(t, "ledger", "init", "--genesis", genesis, "--data", data, "--key", keyPath)
	cfg := fmt.Sprintf("data_dir: %s\nkey_file: %s\nraft_address: %s\ngrpc_address: %s\nbootstrap: %v\nallow_unpinned: true\nraft:\n  heartbeat_timeout: 500ms\n",
		name, name+".key", nd.raft, nd.grpc, bootstrap)
	cfgPath := filepath.Join(dir, name+".yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var logs syncBuffer
	done := make(chan error, 1)
	go func() { done <- RunWith(ctx, []string{"ledger", "start", "--config", cfgPath}, &syncBuffer{}, &logs) }()
	stopped := false
	nd.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("%s: ledger start returned %v", name, err)
		}
		if t.Failed() {
			t.Logf("%s log:\n%s", name, logs.String())
		}
	}
	t.Cleanup(nd.stop)
	return nd
}

// waitOutput runs the command until its output contains want.
func waitOutput(t *testing.T, want string, args ...string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		var out syncBuffer
		err := RunWith(ctx, args, &out, &syncBuffer{})
		cancel()
		if err == nil && strings.Contains(out.String(), want) {
			return out.String()
		}
		if time.Now().After(deadline) {
			t.Fatalf("fedtune %s: no %q in output after 30s: %v\n%s", strings.Join(args, " "), want, err, out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestLedgerJoinRemove grows a one-node ledger to two with "ledger join
// --voter" (admin-signed NodeAdded and NodePromoted) and shrinks it again
// with "ledger remove" (NodeRemoved); a stranger's join changes nothing.
func TestLedgerJoinRemove(t *testing.T) {
	if testing.Short() {
		t.Skip("runs ledger nodes")
	}
	dir := t.TempDir()
	admin, err := ledger.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	genesis := filepath.Join(dir, "genesis.yaml")
	g := fmt.Sprintf("chain_id: join-test\nmembers:\n  - name: admin\n    role: admin\n    public_key: %s\n", hex.EncodeToString(admin.Public().(ed25519.PublicKey)))
	if err := os.WriteFile(genesis, []byte(g), 0o644); err != nil {
		t.Fatal(err)
	}
	n1 := startCLINode(t, dir, genesis, "n1", true)
	waitOutput(t, "state:   Leader", "ledger", "status", "--addr", n1.grpc)
	adminKey := filepath.Join(dir, "admin.key")
	if err := ledger.SaveKey(adminKey, admin); err != nil {
		t.Fatal(err)
	}
	n2 := startCLINode(t, dir, genesis, "n2", false)
	waitOutput(t, "node:    "+n2.id, "ledger", "status", "--addr", n2.grpc)
	pub := filepath.Join(dir, "n2.pub")

	// Without an admin key nothing changes: the key must be a member admin.
	stranger := filepath.Join(dir, "stranger.key")
	mustRun(t, "keygen", "-o", stranger)
	if out, err := run(t, "ledger", "join", "--addr", n1.grpc, "--key", stranger, "--pubkey", pub, "--raft-addr", n2.raft, "--grpc-addr", n2.grpc); err == nil || !strings.Contains(err.Error(), "not a member") {
		t.Fatalf("join signed by a stranger: %v\n%s", err, out)
	}
	if st := mustRun(t, "ledger", "status", "--addr", n1.grpc); strings.Contains(st, n2.id) {
		t.Fatalf("stranger's join changed raft membership:\n%s", st)
	}

	out := mustRun(t, "ledger", "join", "--addr", n1.grpc, "--key", adminKey, "--pubkey", pub, "--raft-addr", n2.raft, "--grpc-addr", n2.grpc, "--voter")
	if !strings.Contains(out, "added "+n2.id+" as a voter") {
		t.Fatalf("join printed %q", out)
	}
	st := waitOutput(t, n2.id+"  voter", "ledger", "status", "--addr", n2.grpc)
	for _, want := range []string{"state:   Follower", n1.id + "  voter", "leader:  " + n1.id + " " + n1.grpc} {
		if !strings.Contains(st, want) {
			t.Fatalf("status of n2 lacks %q:\n%s", want, st)
		}
	}

	if _, err := run(t, "ledger", "remove", "--addr", n2.grpc, "--key", adminKey, "--node-id", "xyz"); err == nil {
		t.Fatal("remove of a malformed ID succeeded")
	}
	mustRun(t, "ledger", "remove", "--addr", n2.grpc, "--key", adminKey, "--node-id", n2.id)
	waitFor := time.Now().Add(20 * time.Second)
	for {
		st = mustRun(t, "ledger", "status", "--addr", n1.grpc)
		if !strings.Contains(st, n2.id) {
			break
		}
		if time.Now().After(waitFor) {
			t.Fatalf("removed node still listed:\n%s", st)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
