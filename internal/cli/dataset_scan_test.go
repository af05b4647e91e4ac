package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fedtune/fedtune/datasets/scan"
	"github.com/fedtune/fedtune/internal/digest"
	"github.com/fedtune/fedtune/ledger"
)

const plantedData = "../../datasets/scan/testdata/planted.txt"

// TestDatasetScanJSON checks the exact --json interface: one object with
// samples and findings (sample, kind, text), nothing else.
func TestDatasetScanJSON(t *testing.T) {
	out := mustRun(t, "dataset", "scan", plantedData, "--json")
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	var res struct {
		Samples  *int `json:"samples"`
		Findings []struct {
			Sample *int    `json:"sample"`
			Kind   *string `json:"kind"`
			Text   *string `json:"text"`
		} `json:"findings"`
	}
	if err := dec.Decode(&res); err != nil || dec.More() {
		t.Fatalf("output is not one JSON object of the interface: %v\n%s", err, out)
	}
	if res.Samples == nil || *res.Samples != 20 || len(res.Findings) != 41 {
		t.Fatalf("samples %v findings %d, want 20 and 41 (the planted set without terms)", res.Samples, len(res.Findings))
	}
	for _, f := range res.Findings {
		if f.Sample == nil || f.Kind == nil || f.Text == nil {
			t.Fatalf("finding lacks a field: %s", out)
		}
	}
	terms := filepath.Join(t.TempDir(), "terms.txt")
	if err := os.WriteFile(terms, []byte("# people\njohn smith\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out := mustRun(t, "dataset", "scan", plantedData, "--terms", terms, "--json"); !strings.Contains(out, `{"sample":18,"kind":"term","text":"John Smith"}`) {
		t.Fatalf("--terms: %s", out)
	}
	if out := mustRun(t, "dataset", "scan", "../../datasets/testdata/english/train.txt", "--json"); out != `{"samples":154,"findings":[]}`+"\n" {
		t.Fatalf("shipped English text: %q", out)
	}
	if out := mustRun(t, "dataset", "scan", plantedData); !strings.Contains(out, "20 samples (text), 41 findings (email 4, phone 22, card 7, ip 8, term 0)") ||
		!strings.Contains(out, `sample 11: card  "4111 1111 1111 1111"`) {
		t.Fatalf("human output: %s", out)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"dataset", "scan", "../../datasets/testdata"}, "is a folder"},
		{[]string{"dataset", "scan", plantedData, "--attest", "--report", "r.json"}, "--attest needs --report FILE and --key"},
		{[]string{"dataset", "scan", plantedData, "--terms", "/nonexistent/terms"}, "terms"},
		{[]string{"dataset", "scan", plantedData, "--format", "jsonl"}, "planted.txt:1: record is not a JSON object"},
	} {
		if _, err := run(t, tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("fedtune %s: %v, want %q", strings.Join(tc.args, " "), err, tc.want)
		}
	}
}

// TestDatasetScanAttestLedger runs a one-node ledger: a trainer registers
// the planted data's manifest, an auditor scans it, writes the report and a
// signed attestation and submits it; the ledger's dataset record then holds
// the failing pii-scan. A trainer's attestation and a scan of data the
// manifest does not describe are refused.
func TestDatasetScanAttestLedger(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a ledger node")
	}
	dir := t.TempDir()
	adminKey, _, adminPub := testKey(t, dir, "admin")
	nodeKey, _, _ := testKey(t, dir, "node")
	trainerKey, _, trainerPub := testKey(t, dir, "trainer")
	auditorKey, auditorID, auditorPub := testKey(t, dir, "auditor")
	_ = adminKey
	genesis := filepath.Join(dir, "genesis.yaml")
	g := fmt.Sprintf("chain_id: scan-test\nmembers:\n  - {name: admin, role: admin, public_key: %s}\n  - {name: trainer, role: trainer, public_key: %s}\n"+
		"  - {name: auditor, role: auditor, public_key: %s}\npolicy:\n  block_interval: 5ms\n", adminPub, trainerPub, auditorPub)
	if err := os.WriteFile(genesis, []byte(g), 0o644); err != nil {
		t.Fatal(err)
	}
	mustRun(t, "ledger", "init", "--genesis", genesis, "--data", filepath.Join(dir, "data"), "--key", nodeKey)
	addr := freeAddr(t)
	cfgPath := filepath.Join(dir, "node.yaml")
	cfg := fmt.Sprintf("data_dir: data\nkey_file: node.key\nraft_address: %s\ngrpc_address: %s\nmetrics_address: %s\nbootstrap: true\nallow_unpinned: true\nraft:\n  heartbeat_timeout: 300ms\n  election_timeout: 300ms\n  leader_lease_timeout: 150ms\n",
		freeAddr(t), addr, freeAddr(t))
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var nodeErr syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- RunWith(ctx, []string{"ledger", "start", "--config", cfgPath}, &syncBuffer{}, &nodeErr)
	}()
	defer func() {
		cancel()
		<-done
		if t.Failed() {
			t.Logf("node log:\n%s", nodeErr.String())
		}
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := run(t, "ledger", "status", "--addr", addr)
		if err == nil && strings.Contains(out, "state:   Leader") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node did not become leader: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	manifest := filepath.Join(dir, "planted.manifest.json")
	mustRun(t, "dataset", "manifest", plantedData, "--license", "CC0-1.0", "--source", "made up", "--key", trainerKey, "-o", manifest)
	mustRun(t, "dataset", "register", manifest, "--key", trainerKey, "--addr", addr)
	sm, err := readManifestFile(manifest, nil)
	if err != nil {
		t.Fatal(err)
	}

	report := filepath.Join(dir, "scan.json")
	out := mustRun(t, "dataset", "scan", plantedData, "--report", report, "--attest", "--key", auditorKey, "--manifest", manifest)
	attestation := filepath.Join(dir, "scan.attestation.json")
	if !strings.Contains(out, "attestation "+attestation+": pii-scan of dataset "+sm.Digest+" by "+auditorID+": fail") {
		t.Fatalf("scan printed %q", out)
	}
	rb, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	var rep ScanReport
	if err := json.Unmarshal(rb, &rep); err != nil || rep.Dataset != sm.Digest || rep.Pass || rep.Samples != 20 || rep.Counts[scan.KindCard] != 7 {
		t.Fatalf("report %+v: %v", rep, err)
	}
	env, err := os.ReadFile(attestation)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ledger.LoadPublicKey(filepath.Join(dir, "auditor.pub"))
	if err != nil {
		t.Fatal(err)
	}
	st, err := ledger.VerifyStatement(env, pub)
	if err != nil {
		t.Fatal(err)
	}
	exe, _ := os.Executable()
	if tool, _ := digest.File(exe); st.Dataset() != sm.Digest || st.Predicate.Report != digest.Bytes(rb) || st.Predicate.Tool.Digest != tool ||
		st.Predicate.Result.Findings != 41 || st.Predicate.Result.Pass {
		t.Fatalf("statement %+v", st)
	}

	// A trainer may not attest; the auditor may.
	trainerAtt := filepath.Join(dir, "trainer.attestation.json")
	mustRun(t, "dataset", "scan", plantedData, "--report", filepath.Join(dir, "t.json"), "--attest", "--key", trainerKey, "--manifest", manifest, "-o", trainerAtt)
	if _, err := run(t, "dataset", "attest", trainerAtt, "--key", trainerKey, "--addr", addr); err == nil || !strings.Contains(err.Error(), "needs role auditor") {
		t.Fatalf("trainer's attestation: %v", err)
	}
	if _, err := run(t, "dataset", "attest", attestation, "--key", trainerKey, "--addr", addr); err == nil || !strings.Contains(err.Error(), "is signed by key") {
		t.Fatalf("auditor's attestation submitted with the trainer's key: %v", err)
	}
	out = mustRun(t, "dataset", "attest", attestation, "--key", auditorKey, "--addr", addr)
	if !strings.Contains(out, "dataset "+sm.Digest+" attested: pii-scan fail") {
		t.Fatalf("attest printed %q", out)
	}
	out = mustRun(t, "ledger", "query", "dataset", sm.Digest, "--addr", addr)
	var d ledger.Dataset
	if err := json.Unmarshal([]byte(out), &d); err != nil || len(d.Attestations) != 1 || d.Attestations[0].Auditor != auditorID ||
		d.Attestations[0].Report != digest.Bytes(rb) || d.Attestations[0].Result.Pass {
		t.Fatalf("ledger dataset record %s: %v", out, err)
	}

	// Data the manifest does not describe is not attested as its dataset.
	other := filepath.Join(dir, "other.txt")
	if err := os.WriteFile(other, bytes.Repeat([]byte("clean line\n"), 3), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := run(t, "dataset", "scan", other, "--report", filepath.Join(dir, "o.json"), "--attest", "--key", auditorKey, "--manifest", manifest); err == nil ||
		!strings.Contains(err.Error(), "is not the dataset of") {
		t.Fatalf("scan of other data against the manifest: %v", err)
	}
}
