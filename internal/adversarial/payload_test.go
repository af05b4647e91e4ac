package adversarial

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fedtune/fedtune/aggregator"
	ledgerv1 "github.com/fedtune/fedtune/api/ledger/v1"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/safetensors"
	"github.com/fedtune/fedtune/trainer"
)

// payloadSignRaw signs payload exactly as given, as any member can: an
// ed25519 signature over DSSE PAE(PayloadType, payload).
func payloadSignRaw(key ed25519.PrivateKey, payload string) []byte {
	return ledger.SignEnvelope(key, ledger.PayloadType, []byte(payload)).Encode()
}

// payloadNonce returns the signer's last nonce on the chain.
func payloadNonce(t *testing.T, ctx context.Context, c *client.Client, id string) uint64 {
	t.Helper()
	js, err := c.Query(ctx, ledgerv1.QueryKind_QUERY_KIND_NONCE, id, 0)
	if err != nil {
		t.Fatalf("nonce of %s: %v", id, err)
	}
	var n uint64
	if err := json.Unmarshal(js, &n); err != nil {
		t.Fatalf("nonce of %s: %v", id, err)
	}
	return n
}

// TestAttackPayloadTwoReadings: a coordinator signs ModelRegistered payloads
// that encoding/json would read differently from a strict reader (a second
// "NAME", a duplicate "name", an escaped duplicate, an unknown field), or
// whose name hides its text behind a bidi override or a zero-width space.
// Each is refused with its reason; the chain does not move and no model is
// registered. A canonical payload signed the same way is accepted first, so
// the refusals are the decoder's, not the signing's.
func TestAttackPayloadTwoReadings(t *testing.T) {
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
	model := func(digest, extra string) string {
		return `{"digest":"` + digest + `","name":"benign-data","licence":"mit","source":"hf://x"` + extra + `}`
	}

	// Control: the canonical form is accepted and recorded as signed.
	good := digestOf("good")
	if _, err := c.SubmitWait(ctx, payloadSignRaw(key, payload(nonce, model(good, "")))); err != nil {
		t.Fatalf("canonical payload refused: %v", err)
	}
	before := waitSettled(t, ctx, nw.Net)
	js, err := c.Query(ctx, ledgerv1.QueryKind_QUERY_KIND_MODEL, good, 0)
	if err != nil || !strings.Contains(string(js), `"benign-data"`) {
		t.Fatalf("control model: %s %v", js, err)
	}
	nonce++

	for i, a := range []struct {
		name, body, want string
	}{
		{"name and NAME", model(digestOf("a1"), `,"NAME":"evil-data"`), `ModelRegistered body: unknown field "NAME" at the top level (field names are case-sensitive: did you mean "name"?)`},
		{"duplicate name", model(digestOf("a2"), `,"name":"evil-data"`), `duplicate field "name" at /body`},
		{"escaped duplicate name", model(digestOf("a3"), `,"n\u0061me":"evil-data"`), `duplicate field "name" at /body`},
		{"unknown field", model(digestOf("a4"), `,"owner":"someone-else"`), `ModelRegistered body: unknown field "owner"`},
		{"bidi override in name", strings.Replace(model(digestOf("a5"), ""), "benign-data", `evil\u202Eatad-ngineb`, 1),
			`name "evil\u202eatad-ngineb": bidi control U+202E at character 5 (byte 4)`},
		{"zero-width space in name", strings.Replace(model(digestOf("a6"), ""), "benign-data", `benign\u200B-data`, 1),
			`name "benign\u200b-data": zero-width character U+200B at character 7 (byte 6)`},
	} {
		t.Run(a.name, func(t *testing.T) {
			sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			// Each attack has its own nonce, so that one accepted by
			// mistake does not make the next fail for its nonce.
			_, err := c.SubmitWait(sctx, payloadSignRaw(key, payload(nonce+uint64(i), a.body)))
			if !errors.Is(err, client.ErrRejected) || !strings.Contains(err.Error(), a.want) {
				t.Fatalf("error %v, want a rejection containing %q", err, a.want)
			}
		})
	}
	requireUnchanged(t, ctx, nw.Net, before)
	for _, d := range []string{"a1", "a2", "a3", "a4", "a5", "a6"} {
		if js, err := c.Query(ctx, ledgerv1.QueryKind_QUERY_KIND_MODEL, digestOf(d), 0); err == nil {
			t.Errorf("model %s was registered: %s", d, js)
		}
	}
	// The signer's nonce did not move: nothing of the attacks was applied.
	if got := payloadNonce(t, ctx, c, signer); got != nonce-1 {
		t.Errorf("signer nonce %d after the attacks, want %d", got, nonce-1)
	}
}

// TestAttackPayloadDeltaAsWeights: a full fine-tuning update compressed as
// int8 is a delta from the round's base, and says so (fedtune.kind=delta).
// Read as model weights it is refused; aggregated without the base it is
// refused; mixed into a round of full-weight updates it is rejected by kind.
// Before, a compressed update was the weights themselves and an f16 delta
// loaded as a model without a word.
func TestAttackPayloadDeltaAsWeights(t *testing.T) {
	ctx := testContext(t, time.Minute)
	cfg, err := model.LoadConfigYAML("../../configs/models/tiny.yaml")
	if err != nil {
		t.Fatal(err)
	}
	base, err := model.New(cfg, 1)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	baseDir := filepath.Join(dir, "base")
	if _, err := base.Save(baseDir, safetensors.F32); err != nil {
		t.Fatal(err)
	}
	trained := base.Clone()
	for _, x := range trained.Tensors {
		for i := range x.Data {
			x.Data[i] += 1e-3 * float32(i%7-3)
		}
	}
	// The delta, written where a model's weights would be.
	fake := filepath.Join(dir, "fake")
	if _, err := base.Save(fake, safetensors.F32); err != nil {
		t.Fatal(err)
	}
	deltaPath := filepath.Join(fake, model.WeightsFile)
	if _, err := trainer.WriteDeltaUpdate(deltaPath, trained.Tensors, base.Tensors, "f16", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := model.Load(fake); err == nil || !strings.Contains(err.Error(), `fedtune.kind is "delta": an update to be added to its base, not weights`) {
		t.Errorf("delta loaded as model weights: %v", err)
	}
	st, err := aggregator.New("fedavg", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := aggregator.Aggregate(ctx, aggregator.Request{Strategy: st, Inputs: []aggregator.Input{{Path: deltaPath, Weight: 1, ContributorID: "t1"}}}); err == nil ||
		!strings.Contains(err.Error(), "deltas need the base model") {
		t.Errorf("delta aggregated without its base: %v", err)
	}
	// One full-weights update and one delta in the same round.
	full := filepath.Join(dir, "full.safetensors")
	if _, err := trainer.WriteUpdate(full, trained.Tensors, "none", 0); err != nil {
		t.Fatal(err)
	}
	res, err := aggregator.Aggregate(ctx, aggregator.Request{Strategy: st, Base: filepath.Join(baseDir, model.WeightsFile),
		Inputs: []aggregator.Input{{Path: full, Weight: 1, ContributorID: "t1"}, {Path: deltaPath, Weight: 1, ContributorID: "t2"}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Rejected) != 1 || res.Rejected[0].ContributorID != "t2" || !strings.Contains(res.Rejected[0].Err.Error(), `kind "delta" differs from "full"`) {
		t.Errorf("mixed round: rejected %+v", res.Rejected)
	}
}
