//go:build fedcuda || fedcudaemu

package cli

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/fedtune/fedtune/model/engine/cudadev"
)

// TestServeCUDA serves a tiny model with --device cuda (GPU 0; the CPU
// emulation under -tags fedcudaemu), asks for a greedy and a sampled
// completion, and replays both receipts with audit receipt --replay
// --device cuda: the same tokens, bit for bit.
func TestServeCUDA(t *testing.T) {
	if dev, err := cudadev.Open(0); err != nil {
		if errors.Is(err, cudadev.ErrNoDevice) {
			t.Skipf("no usable GPU: %v", err)
		}
		t.Fatal(err)
	} else if err := dev.Close(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	mdir, rdir, keyFile := filepath.Join(dir, "m"), filepath.Join(dir, "receipts"), filepath.Join(dir, "key")
	mustCLI(t, "model", "init", "--config", "../../configs/models/tiny.yaml", "--seed", "4", "-o", mdir)
	mustCLI(t, "keygen", "-o", keyFile)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errb syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- RunWith(ctx, []string{"serve", "--model", mdir, "--addr", "127.0.0.1:0", "--model-id", "tiny", "--device", "cuda:0",
			"--max-concurrent", "2", "--key", keyFile, "--receipts-dir", rdir}, &out, &errb)
	}()
	re := regexp.MustCompile(`on (http://\S+/v1/)`)
	var url string
	for deadline := time.Now().Add(60 * time.Second); url == ""; {
		if m := re.FindStringSubmatch(out.String()); m != nil {
			url = m[1]
			break
		}
		select {
		case err := <-done:
			t.Fatalf("serve ended: %v\n%s", err, errb.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve did not start:\n%s", errb.String())
		}
	}
	for _, body := range []string{
		`{"model":"tiny","prompt":"abc","max_tokens":6,"temperature":0}`,
		`{"model":"tiny","prompt":"xyz","max_tokens":5,"temperature":0.8,"seed":5}`,
	} {
		res, err := http.Post(url+"completions", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d %s", body, res.StatusCode, b)
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve: %v\n%s", err, errb.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatal("serve did not stop")
	}
	if !strings.Contains(errb.String(), "device=cuda:0") {
		t.Errorf("the serving log does not name the device:\n%s", errb.String())
	}
	bundles, err := filepath.Glob(filepath.Join(rdir, "*.json"))
	if err != nil || len(bundles) != 2 {
		t.Fatalf("receipt bundles %v, %v; want 2", bundles, err)
	}
	for _, p := range bundles {
		if o := mustCLI(t, "audit", "receipt", p, "--replay", "--model", mdir, "--device", "cuda"); !strings.Contains(o, "ok   replay") ||
			!strings.Contains(o, "on the cuda device") {
			t.Errorf("%s: audit receipt --replay --device cuda:\n%s", filepath.Base(p), o)
		}
	}
	if _, err := os.Stat(rdir); err != nil {
		t.Fatal(err)
	}
}
