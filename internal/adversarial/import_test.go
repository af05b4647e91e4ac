package adversarial

// Attacks on the record of an imported model: a coordinator signs a
// ModelRegistered whose source files are malformed (a digest that is not
// one, a path that climbs out of the folder, a list out of order or with a
// path twice). Each is refused by the ledger's rules; nothing changes.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	ledgerv1 "github.com/fedtune/fedtune/api/ledger/v1"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
)

// TestAttackImportSourceHashes: a well-formed record of an import's source
// files is accepted and lands on the ledger as signed; malformed ones,
// signed by the same coordinator as raw payloads (SignTx would refuse to
// sign them), are refused with their reason, and neither the chain nor the
// signer's nonce moves.
func TestAttackImportSourceHashes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three ledger nodes")
	}
	ctx := testContext(t, 3*time.Minute)
	nw := startLedgers(t, ctx)
	c, err := nw.Ledger(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	key := nw.Keys["coordinator"]
	signer := nw.ID("coordinator")
	nonce := payloadNonce(t, ctx, c, signer) + 1
	payload := func(nonce uint64, body string) string {
		return fmt.Sprintf(`{"chain_id":%q,"signer":%q,"nonce":%d,"type":%q,"body":%s}`, nw.ChainID, signer, nonce, ledger.TypeModelRegistered, body)
	}
	src := func(path, sha string) string {
		return fmt.Sprintf(`{"path":%q,"size":1024,"sha256":%q}`, path, sha)
	}
	model := func(d string, sources ...string) string {
		return `{"digest":"` + d + `","name":"imported","licence":"Apache-2.0","source":"hf://x","sources":[` + strings.Join(sources, ",") + `]}`
	}
	cfg, shard := digestOf("config.json"), digestOf("shard")

	good := digestOf("imported-good")
	if _, err := c.SubmitWait(ctx, payloadSignRaw(key, payload(nonce, model(good, src("config.json", cfg), src("model.safetensors", shard))))); err != nil {
		t.Fatalf("well-formed sources refused: %v", err)
	}
	js, err := c.Query(ctx, ledgerv1.QueryKind_QUERY_KIND_MODEL, good, 0)
	if err != nil || !strings.Contains(string(js), cfg) || !strings.Contains(string(js), `"model.safetensors"`) {
		t.Fatalf("control model's sources not on the ledger: %s %v", js, err)
	}
	nonce++
	before := waitSettled(t, ctx, nw.Net)

	attacks := []struct {
		name, body, want string
	}{
		{"short sha256", model(digestOf("b1"), src("config.json", cfg[:63])), "sources[0].sha256"},
		{"upper-case sha256", model(digestOf("b2"), src("config.json", strings.ToUpper(cfg))), "sources[0].sha256"},
		{"no sha256", model(digestOf("b3"), `{"path":"config.json","size":1}`), "sources[0].sha256"},
		{"path traversal", model(digestOf("b4"), src("../../etc/passwd", cfg)), "clean relative path"},
		{"absolute path", model(digestOf("b5"), src("/etc/passwd", cfg)), "clean relative path"},
		{"unsorted", model(digestOf("b6"), src("model.safetensors", shard), src("config.json", cfg)), "sorted by path"},
		{"path twice", model(digestOf("b7"), src("config.json", cfg), src("config.json", shard)), "each path once"},
		{"negative size", model(digestOf("b8"), `{"path":"config.json","size":-1,"sha256":"`+cfg+`"}`), "size"},
		{"unknown field", model(digestOf("b9"), `{"path":"config.json","size":1,"sha256":"`+cfg+`","md5":"x"}`), `unknown field "md5"`},
	}
	for i, a := range attacks {
		t.Run(a.name, func(t *testing.T) {
			sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			_, err := c.SubmitWait(sctx, payloadSignRaw(key, payload(nonce+uint64(i), a.body)))
			if !errors.Is(err, client.ErrRejected) || !strings.Contains(err.Error(), a.want) {
				t.Fatalf("error %v, want a rejection containing %q", err, a.want)
			}
			t.Logf("refused: %v", err)
		})
	}
	requireUnchanged(t, ctx, nw.Net, before)
	for i := range attacks {
		if js, err := c.Query(ctx, ledgerv1.QueryKind_QUERY_KIND_MODEL, digestOf(fmt.Sprintf("b%d", i+1)), 0); err == nil {
			t.Errorf("model b%d was registered: %s", i+1, js)
		}
	}
	if got := payloadNonce(t, ctx, c, signer); got != nonce-1 {
		t.Errorf("signer nonce %d after the attacks, want %d", got, nonce-1)
	}
}
