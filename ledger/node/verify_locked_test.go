package node

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/ledger/pebblestore"
)

// TestVerifyDataDirLocked: the data of a node that is still running (its
// store held open by another process) is refused with what to do, not
// with pebble's lock error alone.
func TestVerifyDataDirLocked(t *testing.T) {
	if dir := os.Getenv("FEDTUNE_HOLD_STORE"); dir != "" {
		// The child: hold the store open until the parent closes stdin.
		db, err := pebblestore.Open(dir, pebblestore.Options{})
		if err != nil {
			t.Fatal(err)
		}
		os.Stdout.WriteString("held\n")
		bufio.NewReader(os.Stdin).ReadString('\n')
		db.Close()
		return
	}
	dir := t.TempDir()
	g, err := os.ReadFile(filepath.Join("..", "..", "configs", "genesis.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, genesisName), g, 0o644); err != nil {
		t.Fatal(err)
	}
	child := exec.Command(os.Args[0], "-test.run=^TestVerifyDataDirLocked$")
	child.Env = append(os.Environ(), "FEDTUNE_HOLD_STORE="+filepath.Join(dir, "pebble"))
	stdin, err := child.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stdin.Close(); child.Wait() }()
	if line, err := bufio.NewReader(stdout).ReadString('\n'); err != nil || line != "held\n" {
		t.Fatalf("the child did not hold the store: %q, %v", line, err)
	}
	_, err = VerifyDataDir(context.Background(), dir, nil)
	if err == nil || !strings.Contains(err.Error(), "is its ledger node still running?") {
		t.Fatalf("VerifyDataDir of a store another process holds: %v", err)
	}
}
