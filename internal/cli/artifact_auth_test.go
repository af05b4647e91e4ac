package cli

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fedtune/fedtune/artifact"
	"github.com/fedtune/fedtune/coordinator"
)

// The coordinator's artifact store takes uploads only from active ledger
// members: a trainer's "artifact put" is stored, a stranger's key is
// refused and nothing of its blob is kept; downloads too are for members.
func TestCoordinatorUploadsMembersOnly(t *testing.T) {
	dir := t.TempDir()
	keys, ids := map[string]string{}, map[string]string{}
	var g strings.Builder
	g.WriteString("chain_id: upload-auth\nmembers:\n")
	for _, m := range []struct{ name, role string }{{"admin", "admin"}, {"coord", "coordinator"}, {"agg", "aggregator"}, {"t1", "trainer"}} {
		var pub string
		keys[m.name], ids[m.name], pub = testKey(t, dir, m.name)
		fmt.Fprintf(&g, "  - name: %s\n    role: %s\n    public_key: %s\n", m.name, m.role, pub)
	}
	g.WriteString("policy:\n  block_interval: 5ms\n")
	genesis := filepath.Join(dir, "genesis.yaml")
	if err := os.WriteFile(genesis, []byte(g.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	nd := startCLINode(t, dir, genesis, "node1", true)
	waitOutput(t, "state:   Leader", "ledger", "status", "--addr", nd.grpc)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	srv, err := coordinator.NewServer(ctx, coordinator.ServerConfig{Listen: "127.0.0.1:0", CoordinatorKey: keys["coord"], AggregatorKey: keys["agg"],
		Ledger: nd.grpc, DataDir: filepath.Join(dir, "coordinator"), Tick: time.Second, MetricsAddress: "127.0.0.1:0"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	wg.Add(1)
	go func() { defer wg.Done(); _ = srv.Run(ctx) }()

	blob := filepath.Join(dir, "update.bin")
	data := []byte(strings.Repeat("an update, ", 1000))
	if err := os.WriteFile(blob, data, 0o644); err != nil {
		t.Fatal(err)
	}
	d := artifact.DigestOf(data)
	stranger := filepath.Join(dir, "stranger.key")
	mustRun(t, "keygen", "-o", stranger)
	put := func(key string) (string, error) {
		return run(t, "artifact", "put", blob, "--addr", srv.Addr(), "--key", key, "--server-id", ids["coord"])
	}
	if _, err := put(stranger); err == nil || !strings.Contains(err.Error(), "PermissionDenied") || !strings.Contains(err.Error(), "not an active ledger member") {
		t.Fatalf("a stranger's put: %v, want PermissionDenied naming membership", err)
	}
	if _, err := srv.Store().Stat(d); err == nil {
		t.Fatal("the stranger's blob was stored")
	}
	out, err := put(keys["t1"])
	if err != nil || strings.TrimSpace(out) != d {
		t.Fatalf("the trainer's put: %q, %v; want %s", out, err, d)
	}
	// Downloads are by need: a stranger gets nothing, a member the blob.
	got := filepath.Join(dir, "got.bin")
	if _, err := run(t, "artifact", "get", d, "-o", got, "--addr", srv.Addr(), "--key", stranger, "--server-id", ids["coord"]); err == nil ||
		!strings.Contains(err.Error(), "PermissionDenied") || !strings.Contains(err.Error(), "is not a ledger member") {
		t.Fatalf("a stranger's get: %v, want PermissionDenied naming membership", err)
	}
	if _, err := os.Stat(got); err == nil {
		t.Fatal("a refused get left a file")
	}
	mustRun(t, "artifact", "get", d, "-o", got, "--addr", srv.Addr(), "--key", keys["t1"], "--server-id", ids["coord"])

	// The process's /metrics has the artifact service's counts and the
	// coordinator's spot-check counters.
	resp, err := http.Get("http://" + srv.MetricsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`fedtune_artifact_uploads_total{result="stored"} 1`, "fedtune_coordinator_drawn_updates_total 0",
		"fedtune_coordinator_unverified_total 0", "fedtune_coordinator_suspensions_total 0"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
