package cli

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/fedtune/fedtune/datasets"
	"github.com/fedtune/fedtune/internal/audit"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/model/safetensors"
)

// TestDatasetAndAuditCommands runs the dataset and audit commands end to
// end against a real one-node ledger over loopback gRPC: manifest, verify,
// register, prove (inclusion, exclusion, forged), check-proof against the
// ledger, one federated round recorded with `tx submit`, lineage over gRPC
// and from an export, export, and verify (clean and tampered).
func TestDatasetAndAuditCommands(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a ledger node")
	}
	dir := t.TempDir()
	ids := map[string]string{}
	pubHex := func(name string) string {
		pub, err := ledger.LoadPublicKey(filepath.Join(dir, name+".pub"))
		if err != nil {
			t.Fatal(err)
		}
		return hex.EncodeToString(pub)
	}
	var g strings.Builder
	g.WriteString("chain_id: audit-cli\nmembers:\n")
	for _, m := range []struct{ name, role string }{{"admin", "admin"}, {"coord", "coordinator"}, {"agg", "aggregator"}, {"trainer", "trainer"}} {
		out := mustRun(t, "keygen", "-o", filepath.Join(dir, m.name+".key"))
		ids[m.name] = strings.SplitN(out, "\n", 2)[0]
		fmt.Fprintf(&g, "  - name: %s\n    role: %s\n    public_key: %s\n", m.name, m.role, pubHex(m.name))
	}
	g.WriteString("policy:\n  block_interval: 5ms\n")
	genesis := filepath.Join(dir, "genesis.yaml")
	if err := os.WriteFile(genesis, []byte(g.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	nd := startCLINode(t, dir, genesis, "node1", true)
	addr := nd.grpc
	waitOutput(t, "state:   Leader", "ledger", "status", "--addr", addr)
	key := func(name string) string { return filepath.Join(dir, name+".key") }

	// Manifest of a shipped dataset, checked against its samples.
	data := filepath.Join("..", "..", "datasets", "testdata", "english", "train.txt")
	manifest := filepath.Join(dir, "manifest.json")
	out := mustRun(t, "dataset", "manifest", data, "--license", "CC-BY-SA-4.0", "--source", "fedtune datasets/testdata", "--key", key("trainer"), "-o", manifest)
	if !strings.Contains(out, "154 samples") {
		t.Fatalf("manifest printed %q", out)
	}
	raw, err := os.ReadFile(manifest)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(raw)
	digest := hex.EncodeToString(sum[:])
	if !strings.Contains(out, digest) {
		t.Fatalf("manifest printed %q, file digest %s", out, digest)
	}
	out = mustRun(t, "dataset", "verify-manifest", manifest, data, "--pub", filepath.Join(dir, "trainer.pub"))
	if !strings.HasPrefix(out, "OK:") || !strings.Contains(out, "signed by "+ids["trainer"]) {
		t.Fatalf("verify-manifest printed %q", out)
	}
	changed := filepath.Join(dir, "train.txt")
	orig, _ := os.ReadFile(data)
	if err := os.WriteFile(changed, bytes.Replace(orig, []byte("the"), []byte("teh"), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := run(t, "dataset", "verify-manifest", manifest, changed); err == nil || !strings.Contains(err.Error(), "root: the 154 samples of train.txt give") {
		t.Fatalf("verify-manifest of a changed dataset: %v", err)
	}
	if _, err := run(t, "dataset", "manifest", data, "--license", "apache", "--source", "x", "--key", key("trainer"), "-o", filepath.Join(dir, "bad.json")); err == nil || !strings.Contains(err.Error(), "not a known SPDX") {
		t.Fatalf("bad licence: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "bad.json")); !os.IsNotExist(err) {
		t.Fatal("a failed manifest left a file")
	}

	// Register it; a non-owner cannot.
	if _, err := run(t, "dataset", "register", manifest, "--key", key("admin"), "--addr", addr); err == nil {
		t.Fatal("registered with a key that is not the owner's")
	}
	out = mustRun(t, "dataset", "register", manifest, "--key", key("trainer"), "--addr", addr)
	if !strings.Contains(out, "DatasetRegistered committed") {
		t.Fatalf("register printed %q", out)
	}

	// Proofs checked against the ledger's record.
	proof := filepath.Join(dir, "in.json")
	mustRun(t, "dataset", "prove", data, "--id", "train.txt:3", "--manifest", manifest, "-o", proof)
	out = mustRun(t, "audit", "check-proof", proof, "--dataset", digest, "--addr", addr)
	if !strings.Contains(out, "inclusion proof verifies") || !strings.Contains(out, "IS in dataset "+digest) {
		t.Fatalf("check-proof printed %q", out)
	}
	sample := filepath.Join(dir, "sample.txt")
	os.WriteFile(sample, []byte("This sentence was never in the training data.\n"), 0o644)
	out = mustRun(t, "dataset", "prove", data, "--sample", sample, "--manifest", manifest)
	exProof := filepath.Join(dir, "out.json")
	os.WriteFile(exProof, []byte(out), 0o644)
	out = mustRun(t, "audit", "check-proof", exProof, "--dataset", digest, "--addr", addr)
	if !strings.Contains(out, "exclusion proof verifies") || !strings.Contains(out, "is NOT in") {
		t.Fatalf("check-proof printed %q", out)
	}
	var m datasets.SignedManifest
	sm, err := datasets.DecodeManifest(raw, nil)
	if err != nil {
		t.Fatal(err)
	}
	m = *sm
	out = mustRun(t, "audit", "check-proof", proof, "--root", m.Root)
	if !strings.Contains(out, "IS in root") {
		t.Fatalf("check-proof --root printed %q", out)
	}
	// Forge: claim the outsider is included using a real leaf's path.
	var p datasets.Proof
	pj, _ := os.ReadFile(exProof)
	if err := json.Unmarshal(pj, &p); err != nil {
		t.Fatal(err)
	}
	p.Kind, p.Leaf, p.Left, p.Right = datasets.ProofInclusion, p.Right, nil, nil
	p.Leaf.Hash = p.Sample
	forged := filepath.Join(dir, "forged.json")
	os.WriteFile(forged, p.Encode(), 0o644)
	if _, err := run(t, "audit", "check-proof", forged, "--dataset", digest, "--addr", addr); err == nil || !strings.Contains(err.Error(), "audit path does not lead to the root") {
		t.Fatalf("forged proof: %v", err)
	}

	// One round: base model, update, aggregate, all recorded with tx submit.
	art := filepath.Join(dir, "artifacts")
	os.MkdirAll(art, 0o755)
	store := func(vals []float32) string {
		tn, err := safetensors.FromFloat32("w", safetensors.F32, []int{2, 2}, vals)
		if err != nil {
			t.Fatal(err)
		}
		tmp := filepath.Join(dir, "tmp.safetensors")
		d, err := safetensors.WriteFile(tmp, []safetensors.Tensor{tn}, nil)
		if err != nil {
			t.Fatal(err)
		}
		os.MkdirAll(filepath.Join(art, d[:2]), 0o755)
		if err := os.Rename(tmp, filepath.Join(art, d[:2], d)); err != nil {
			t.Fatal(err)
		}
		return d
	}
	base := store([]float32{0, 0, 0, 0})
	upd := store([]float32{1, 2, 3, 4})
	os.WriteFile(filepath.Join(art, digest), raw, 0o644) // the manifest, flat layout
	out = mustRun(t, "aggregate", "--strategy", "fedavg", "--base", filepath.Join(art, base[:2], base), "-o", filepath.Join(dir, "global.safetensors"),
		filepath.Join(art, upd[:2], upd)+"@154")
	model := fileSHA(t, filepath.Join(dir, "global.safetensors"))
	if !strings.Contains(out, model) {
		t.Fatalf("aggregate printed %q, the file's digest is %s", out, model)
	}
	os.MkdirAll(filepath.Join(art, model[:2]), 0o755)
	gb, _ := os.ReadFile(filepath.Join(dir, "global.safetensors"))
	os.WriteFile(filepath.Join(art, model[:2], model), gb, 0o644)
	submit := func(k, typ, body string) {
		t.Helper()
		out := mustRun(t, "tx", "submit", typ, "--key", key(k), "--addr", addr, "--body", body)
		if !strings.Contains(out, "committed") {
			t.Fatalf("tx submit %s printed %q", typ, out)
		}
	}
	cfgDigest := strings.Repeat("c", 64)
	submit("coord", "ModelRegistered", fmt.Sprintf(`{"digest":%q,"name":"tiny","licence":"Apache-2.0","source":"test"}`, base))
	submit("coord", "JobRegistered", fmt.Sprintf(`{"job_id":"job","recipe":{"strategy":"fedavg","compression":"none","min_trainers":1,"aggregators":[%q]}}`, ids["agg"]))
	submit("coord", "RoundOpened", fmt.Sprintf(`{"job_id":"job","round":1,"config_digest":%q,"base_model":%q,"strategy":"fedavg","trainers":[%q],"deadline":%q}`,
		cfgDigest, base, ids["trainer"], time.Now().Add(time.Hour).UTC().Format(time.RFC3339)))
	submit("trainer", "UpdateSubmitted", fmt.Sprintf(`{"job_id":"job","round":1,"update_digest":%q,"dataset_digest":%q,"samples":154}`, upd, digest))
	submit("agg", "RoundCommitted", fmt.Sprintf(`{"job_id":"job","round":1,"model_digest":%q,"strategy":"fedavg","contributors":[{"trainer":%q,"update_digest":%q,"weight":1}]}`,
		model, ids["trainer"], upd))

	out = mustRun(t, "audit", "lineage", model, "--addr", addr, "--format", "json", "--manifests", art)
	if !strings.Contains(out, `"licence": "CC-BY-SA-4.0"`) || !strings.Contains(out, `"root": "`+m.Root) || !strings.Contains(out, `"strategy": "fedavg"`) {
		t.Fatalf("lineage printed %s", out)
	}
	out = mustRun(t, "audit", "lineage", model, "--addr", addr)
	if !strings.Contains(out, "round 1 of job job") {
		t.Fatalf("lineage table printed %s", out)
	}

	// The coordinator's evaluation of the round, signed through `fedtune
	// tx`, shows in the lineage and in audit contributions.
	evalDigest := strings.Repeat("e", 64)
	submit("coord", "RoundEvaluated", fmt.Sprintf(`{"job_id":"job","round":1,"model_digest":%q,"eval_digest":%q,"mean_nll":2.75,"tokens":320,"scores":[{"trainer":%q,"loss_removed":0.0625}]}`,
		model, evalDigest, ids["trainer"]))
	out = mustRun(t, "audit", "lineage", model, "--addr", addr)
	if !strings.Contains(out, "eval loss 2.750000 (mean NLL over 320 tokens") || !strings.Contains(out, "loss removed by "+ids["trainer"][:12]+" alone: +0.062500") {
		t.Fatalf("lineage table without the evaluation: %s", out)
	}
	// Anchored to its signed tx in a cosigned block, the evaluation stays.
	if out, err := run(t, "audit", "lineage", model, "--addr", addr, "--quorum", "1"); err != nil ||
		!strings.Contains(out, "eval loss 2.750000") || !strings.Contains(out, "alone: +0.062500") {
		t.Fatalf("anchored lineage: %v\n%s", err, out)
	}
	plot := filepath.Join(dir, "contrib.png")
	out = mustRun(t, "audit", "contributions", "job", "--ledger", addr, "--genesis", genesis, "--plot", plot)
	if !regexp.MustCompile(`1\s+`+ids["trainer"]+`\s+154\s+\+0\.062500\s+100\.0%`).MatchString(out) || !strings.Contains(out, "eval loss 2.750000 over 320 tokens") {
		t.Fatalf("audit contributions printed %s", out)
	}
	if b, err := os.ReadFile(plot); err != nil || !bytes.HasPrefix(b, []byte("\x89PNG")) {
		t.Fatalf("plot %s: %v", plot, err)
	}
	if _, err := run(t, "audit", "contributions", "no-such-job", "--ledger", addr, "--genesis", genesis); err == nil || !strings.Contains(err.Error(), `job "no-such-job" has no rounds`) {
		t.Fatalf("contributions of an unknown job: %v", err)
	}

	// Export, verify (file and live), lineage from the export.
	export := filepath.Join(dir, "chain.fedtune")
	out = mustRun(t, "audit", "export", "-o", export, "--genesis", genesis, "--addr", addr)
	if !regexp.MustCompile(`exported \d+ blocks`).MatchString(out) {
		t.Fatalf("export printed %q", out)
	}
	out = mustRun(t, "audit", "verify", "--export", export, "--artifacts", art)
	if !strings.Contains(out, "OK: chain verified") || !strings.Contains(out, "1 re-aggregated") || !strings.Contains(out, "1 manifests") {
		t.Fatalf("verify printed %q", out)
	}
	out = mustRun(t, "audit", "verify", "--export", export, "--artifacts", art, "--strict-rejections")
	if !strings.Contains(out, "OK: chain verified") || strings.Contains(out, "WARNING") {
		t.Fatalf("verify --strict-rejections printed %q", out)
	}
	out = mustRun(t, "audit", "verify", "--ledger", addr, "--genesis", genesis)
	if !strings.Contains(out, "OK: chain verified") {
		t.Fatalf("verify --ledger printed %q", out)
	}
	out = mustRun(t, "audit", "lineage", model, "--export", export, "--format", "dot")
	if !strings.HasPrefix(out, "digraph lineage {") {
		t.Fatalf("lineage dot printed %q", out)
	}
	checkProvenanceCommands(t, dir, model, addr, genesis, export, key("admin"))
	// A flipped byte in block 2's header (its state hash).
	e, err := readExportFile(export)
	if err != nil {
		t.Fatal(err)
	}
	e.Blocks[2][1+1+8+32+32+3] ^= 0x80
	bad := filepath.Join(dir, "bad.fedtune")
	os.WriteFile(bad, encodeExportForTest(e), 0o644)
	if _, err := run(t, "audit", "verify", "--export", bad); err == nil || !strings.Contains(err.Error(), "height 2: state_hash") {
		t.Fatalf("verify of a tampered export: %v", err)
	}
	// A swapped update artifact.
	baseBytes, _ := os.ReadFile(filepath.Join(art, base[:2], base))
	os.WriteFile(filepath.Join(art, upd[:2], upd), baseBytes, 0o644)
	if _, err := run(t, "audit", "verify", "--export", export, "--artifacts", art); err == nil || !strings.Contains(err.Error(), "update_digest: ") || !strings.Contains(err.Error(), "hashes to") {
		t.Fatalf("verify with a swapped artifact: %v", err)
	}
}

func encodeExportForTest(e *audit.Export) []byte { return audit.EncodeExport(e) }
