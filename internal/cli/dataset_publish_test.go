package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fedtune/fedtune/datasets"
	"github.com/fedtune/fedtune/internal/devnet"
	"github.com/fedtune/fedtune/internal/fedtest"
)

// TestNoRaceDatasetPublish publishes a shipped shard with the CLI, lists,
// shows and fetches it, and checks that the fetched samples give the
// published root.
func TestNoRaceDatasetPublish(t *testing.T) {
	fedtest.SkipUnderRace(t)
	if testing.Short() {
		t.Skip("a whole network")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	n, err := devnet.Prepare(ctx, devnet.Options{Dir: t.TempDir(), Repo: "../..", InProcess: true, Trainers: 1, MinTrainers: 1,
		JobName: "cli-publish", Rounds: 1, LocalSteps: 3, PretrainSteps: 2})
	if err != nil {
		t.Fatal(err)
	}
	nw, err := n.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer nw.Stop()
	ledgerFlags := []string{"--addr", n.LedgerGRPC[0], "--genesis", n.GenesisPath()}
	art := []string{"--artifacts", n.Coordinator, "--artifacts-id", n.ID("coordinator")}
	key := func(who string) []string { return []string{"--key", filepath.Join(n.Dir, "keys", who+".key")} }
	var stderr string // the last command's
	cli := func(args ...string) (string, error) {
		var out, errb bytes.Buffer
		err := RunWith(ctx, args, &out, &errb)
		stderr = errb.String()
		return out.String(), err
	}
	card := filepath.Join(t.TempDir(), "README.md")
	if err := os.WriteFile(card, []byte("# Shard 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join("..", "..", "datasets", "testdata", "shards", "trainer-1.jsonl")
	args := append(append(append([]string{"dataset", "publish", src, "--name", "shard-one", "--license", "CC-BY-SA-4.0", "--card", card,
		"--shard-samples", "100"}, key("trainer-1")...), ledgerFlags...), art...)
	if _, err := cli(append(append([]string(nil), args...), "--license", "cc-by-sa")...); err == nil || !strings.Contains(err.Error(), "not a known SPDX licence ID") {
		t.Fatalf("publish with a bad licence: %v", err)
	}
	out, err := cli(args...)
	if err != nil || !strings.Contains(out, "published shard-one as ") {
		t.Fatalf("publish: %q, %v", out, err)
	}
	// 601 samples in shards of 100: 7 shards, the leaves, the card.
	if !strings.Contains(stderr, "uploads 9/9 (100%)") {
		t.Errorf("publish shows no upload progress:\n%s", stderr)
	}
	if _, err := cli(args...); err == nil || !strings.Contains(err.Error(), "already") {
		t.Fatalf("publishing twice: %v", err)
	}
	out, err = cli(append([]string{"dataset", "ls"}, ledgerFlags...)...)
	if err != nil || !strings.Contains(out, "shard-one") || !strings.Contains(out, "CC-BY-SA-4.0") {
		t.Fatalf("ls: %q, %v", out, err)
	}
	out, err = cli(append([]string{"dataset", "show", "shard-one"}, ledgerFlags...)...)
	if err != nil || !strings.Contains(out, "share-alike") || !strings.Contains(out, "published") || !strings.Contains(out, "samples 0..99") {
		t.Fatalf("show: %q, %v", out, err)
	}
	dir := filepath.Join(t.TempDir(), "fetched")
	out, err = cli(append(append(append([]string{"dataset", "fetch", "shard-one", "-o", dir}, key("trainer-1")...), ledgerFlags...), art...)...)
	if err != nil || !strings.Contains(out, "checked against root") {
		t.Fatalf("fetch: %q, %v", out, err)
	}
	if !strings.Contains(stderr, "downloads 9/9 (100%)") {
		t.Errorf("fetch shows no download progress:\n%s", stderr)
	}
	d, err := datasets.Load(filepath.Join(dir, "data.jsonl"), datasets.Options{})
	if err != nil {
		t.Fatal(err)
	}
	orig, err := loadDataset(src, datasets.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Samples) != len(orig.Samples) {
		t.Fatalf("fetched %d samples, published %d", len(d.Samples), len(orig.Samples))
	}
	if c, err := os.ReadFile(filepath.Join(dir, "README.md")); err != nil || string(c) != "# Shard 1\n" {
		t.Fatalf("card %q, %v", c, err)
	}
}
