package cli

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	coordinatorv1 "github.com/fedtune/fedtune/api/coordinator/v1"
	"github.com/fedtune/fedtune/internal/devnet"
	"github.com/fedtune/fedtune/internal/fedtest"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/trainer"
	"gopkg.in/yaml.v3"
)

func TestTrainerInit(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "t1")
	var out, errb bytes.Buffer
	args := []string{"trainer", "init", "--dir", dir, "--data", "../../datasets/testdata/shards/trainer-1.jsonl",
		"--coordinator", "127.0.0.1:7400", "--insecure", "--name", "t1"}
	if err := RunWith(context.Background(), args, &out, &errb); err != nil {
		t.Fatalf("%v\n%s", err, errb.String())
	}
	c, err := trainer.LoadConfig(filepath.Join(dir, "trainer.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	k, err := ledger.LoadKey(c.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	if id := strings.TrimSpace(out.String()); id != ledger.KeyID(k.Public().(ed25519.PublicKey)) {
		t.Errorf("printed %q, key ID is %s", id, ledger.KeyID(k.Public().(ed25519.PublicKey)))
	}
	for _, want := range []string{"admin add-member --role trainer --pubkey " + filepath.Join(dir, "trainer.pub"), "trainer join --config " + filepath.Join(dir, "trainer.yaml")} {
		if !strings.Contains(errb.String(), want) {
			t.Errorf("trainer init does not say what comes next (%q):\n%s", want, errb.String())
		}
	}
	if st, err := os.Stat(c.Data); err != nil || st.Size() == 0 {
		t.Errorf("data path %s: %v", c.Data, err)
	}
	// A second init refuses to overwrite.
	if err := RunWith(context.Background(), args, &out, &errb); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Errorf("second init: %v", err)
	}
	// TLS without the coordinator's ID is refused with the field named.
	err = RunWith(context.Background(), []string{"trainer", "init", "--dir", t.TempDir(), "--data", "x", "--coordinator", "a:1"}, &out, &errb)
	if err == nil || !strings.Contains(err.Error(), "coordinator_id") {
		t.Errorf("init without coordinator id: %v", err)
	}
	if !strings.Contains(errb.String(), "warning: no --genesis") {
		t.Errorf("init without --genesis printed no warning:\n%s", errb.String())
	}
	// --genesis is written as an absolute path, once it is a genesis with nodes.
	dir2 := filepath.Join(t.TempDir(), "t2")
	args = []string{"trainer", "init", "--dir", dir2, "--data", "../../datasets/testdata/shards/trainer-1.jsonl",
		"--coordinator", "127.0.0.1:7400", "--insecure", "--genesis", "../../configs/genesis.yaml"}
	if err := RunWith(context.Background(), args, &out, &errb); err != nil {
		t.Fatal(err)
	}
	if c, err = trainer.LoadConfig(filepath.Join(dir2, "trainer.yaml")); err != nil || !filepath.IsAbs(c.LedgerGenesis) ||
		!strings.HasSuffix(c.LedgerGenesis, filepath.Join("configs", "genesis.yaml")) {
		t.Errorf("trainer init --genesis: ledger_genesis %q, %v", c.LedgerGenesis, err)
	}
	args[len(args)-1] = "../../configs/ledger/genesis-minimal.yaml"
	args[3] = filepath.Join(t.TempDir(), "t3")
	if err := RunWith(context.Background(), args, &out, &errb); err == nil || !strings.Contains(err.Error(), "--genesis") {
		t.Errorf("trainer init --genesis of a genesis without nodes: %v", err)
	}
}

func TestPrintJobStatus(t *testing.T) {
	id := func(c string) string { return strings.Repeat(c, 64) }
	st := &coordinatorv1.StatusResponse{JobId: "demo", State: "running", RoundsTotal: 3, Model: id("m"),
		Rounds: []*coordinatorv1.Round{{Round: 1, Status: "committed", ModelDigest: id("m"), Selected: []string{id("a"), id("b")},
			Updates: []*coordinatorv1.TrainerUpdate{
				{Trainer: id("a"), UpdateDigest: id("1"), Samples: 10, Metrics: map[string]float64{"loss": 1.25}, Weight: 1},
				{Trainer: id("b"), UpdateDigest: id("2"), Samples: 5, Rejected: true, RejectReason: "NaN"},
			}}}}
	var b bytes.Buffer
	PrintJobStatus(&b, st)
	for _, want := range []string{"job demo: running, 1 of 3 rounds recorded", "aaaaaaaaaaaa", "1.2500", "rejected", "latest model: " + id("m")} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("status output lacks %q:\n%s", want, b.String())
		}
	}
}

func TestNoRaceRoundCommands(t *testing.T) {
	fedtest.SkipUnderRace(t)
	if testing.Short() {
		t.Skip("a whole network")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	n, err := devnet.Prepare(ctx, devnet.Options{Dir: t.TempDir(), Repo: "../..", InProcess: true, Trainers: 2, MinTrainers: 2,
		JobName: "cli", Rounds: 1, LocalSteps: 3, PretrainSteps: 2})
	if err != nil {
		t.Fatal(err)
	}
	nw, err := n.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer nw.Stop()
	conn := []string{"--coordinator", n.Coordinator, "--key", filepath.Join(n.Dir, "keys", "admin.key"), "--coordinator-id", n.ID("coordinator")}
	var out, errb bytes.Buffer
	// A trainer key may not launch jobs.
	bad := []string{"round", "launch", "-f", n.JobFile, "--coordinator", n.Coordinator, "--key", filepath.Join(n.Dir, "keys", "trainer-1.key"), "--coordinator-id", n.ID("coordinator")}
	if err := RunWith(ctx, bad, &out, &errb); err == nil || !strings.Contains(err.Error(), "PermissionDenied") {
		t.Errorf("launch with a trainer key: %v", err)
	}
	// A job on published data under a licence it does not accept is
	// refused at registration; the launcher is told which dataset and
	// which licence, without gRPC's wrapping.
	lc, err := n.Ledger(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close()
	dg := publishTiny(t, ctx, n, lc, "trainer-1", "by-only", "CC-BY-4.0")
	var job map[string]any
	raw, err := os.ReadFile(n.JobFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, &job); err != nil {
		t.Fatal(err)
	}
	job["name"] = "cli-licence"
	job["datasets"] = map[string]any{"published": []string{dg}, "range_samples": 2, "licenses": []string{"MIT"}}
	refused := filepath.Join(t.TempDir(), "licence.yaml")
	if raw, err = yaml.Marshal(job); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(refused, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	err = RunWith(ctx, append([]string{"round", "launch", "-f", refused}, conn...), &out, &errb)
	for _, want := range []string{"refused by the coordinator", dg, `"by-only"`, `licence "CC-BY-4.0"`, "does not accept", "it accepts MIT"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("launch of a job refusing its data's licence: %v; want %q in it", err, want)
		}
	}
	if strings.Contains(err.Error(), "rpc error") {
		t.Errorf("the refusal keeps gRPC's wrapping: %v", err)
	}
	// Published data the ledger does not hold is named as such.
	job["name"] = "cli-unknown"
	unknown := strings.Repeat("ab", 32)
	job["datasets"] = map[string]any{"published": []string{unknown}, "range_samples": 2}
	if raw, err = yaml.Marshal(job); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "unknown.yaml")
	if err := os.WriteFile(missing, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	err = RunWith(ctx, append([]string{"round", "launch", "-f", missing}, conn...), &out, &errb)
	for _, want := range []string{"datasets.published[0] " + unknown, "no dataset with this digest is on the ledger", "fedtune dataset ls"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("launch of a job on unknown published data: %v; want %q in it", err, want)
		}
	}
	// A model.path with no model on the coordinator's machine is named,
	// with the path it resolved to.
	job["name"], job["datasets"], job["model"] = "cli-nomodel", map[string]any{"manifests": []string{}}, map[string]any{"path": "nowhere/tiny"}
	if raw, err = yaml.Marshal(job); err != nil {
		t.Fatal(err)
	}
	nomodel := filepath.Join(t.TempDir(), "nomodel.yaml")
	if err := os.WriteFile(nomodel, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	err = RunWith(ctx, append([]string{"round", "launch", "-f", nomodel}, conn...), &out, &errb)
	for _, want := range []string{`model.path "nowhere/tiny" is ` + filepath.Join(filepath.Dir(nomodel), "nowhere", "tiny"), "holds no model there"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("launch of a job whose model.path holds nothing: %v; want %q in it", err, want)
		}
	}
	// A job the ledger has no rounds of: the coordinator's reason, without
	// gRPC's wrapping.
	err = RunWith(ctx, append([]string{"round", "status", "cli-never"}, conn...), &out, &errb)
	if err == nil || !strings.Contains(err.Error(), "cli-never (NotFound)") || strings.Contains(err.Error(), "rpc error") {
		t.Errorf("round status of an unknown job: %v; want the reason and (NotFound), no gRPC wrapping", err)
	}
	// A trainer whose key no admin added is told so, and what to do.
	tdir := filepath.Join(t.TempDir(), "stranger")
	if err := RunWith(ctx, []string{"trainer", "init", "--dir", tdir, "--data", "../../datasets/testdata/shards/trainer-1.jsonl", "--coordinator", n.Coordinator,
		"--coordinator-id", n.ID("coordinator"), "--ledger", n.LedgerGRPC[0], "--genesis", n.GenesisPath()}, &out, &errb); err != nil {
		t.Fatal(err)
	}
	jctx, jcancel := context.WithTimeout(ctx, time.Minute)
	err = RunWith(jctx, []string{"trainer", "join", "--config", filepath.Join(tdir, "trainer.yaml")}, &out, &errb)
	jcancel()
	for _, want := range []string{"is not an active member of the ledger", "admin add-member --role trainer"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("join of a trainer no admin added: %v; want %q in it", err, want)
		}
	}
	// A trainer whose config names another coordinator key stops at once,
	// saying which key answered, instead of reconnecting forever.
	wdir := filepath.Join(t.TempDir(), "wrong-id")
	if err := RunWith(ctx, []string{"trainer", "init", "--dir", wdir, "--data", "../../datasets/testdata/shards/trainer-1.jsonl", "--coordinator", n.Coordinator,
		"--coordinator-id", strings.Repeat("ab", 32), "--ledger", n.LedgerGRPC[0], "--genesis", n.GenesisPath()}, &out, &errb); err != nil {
		t.Fatal(err)
	}
	if err := RunWith(ctx, []string{"admin", "add-member", "--role", "trainer", "--pubkey", filepath.Join(wdir, "trainer.pub"), "--key", filepath.Join(n.Dir, "keys", "admin.key"),
		"--addr", n.LedgerGRPC[0], "--genesis", n.GenesisPath()}, &out, &errb); err != nil {
		t.Fatal(err)
	}
	jctx, jcancel = context.WithTimeout(ctx, time.Minute)
	err = RunWith(jctx, []string{"trainer", "join", "--config", filepath.Join(wdir, "trainer.yaml")}, &out, &errb)
	jcancel()
	for _, want := range []string{"proves key " + n.ID("coordinator"), "not coordinator_id " + strings.Repeat("ab", 32)} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("join with a wrong coordinator_id: %v; want %q in it", err, want)
		}
	}
	// A trainer whose coordinator does not answer yet says so, and keeps
	// trying (it has never joined: no "connection lost").
	udir := filepath.Join(t.TempDir(), "unreachable")
	if err := RunWith(ctx, []string{"trainer", "init", "--dir", udir, "--data", "../../datasets/testdata/shards/trainer-1.jsonl", "--coordinator", "127.0.0.1:1",
		"--coordinator-id", n.ID("coordinator"), "--ledger", n.LedgerGRPC[0], "--genesis", n.GenesisPath()}, &out, &errb); err != nil {
		t.Fatal(err)
	}
	if err := RunWith(ctx, []string{"admin", "add-member", "--role", "trainer", "--pubkey", filepath.Join(udir, "trainer.pub"), "--key", filepath.Join(n.Dir, "keys", "admin.key"),
		"--addr", n.LedgerGRPC[0], "--genesis", n.GenesisPath()}, &out, &errb); err != nil {
		t.Fatal(err)
	}
	var ulog syncBuffer
	jctx, jcancel = context.WithTimeout(ctx, 3*time.Second)
	err = RunWith(jctx, []string{"trainer", "join", "--config", filepath.Join(udir, "trainer.yaml")}, &ulog, &ulog)
	jcancel()
	if err != nil || !strings.Contains(ulog.String(), "coordinator unreachable; retrying") || strings.Contains(ulog.String(), "connection lost") {
		t.Errorf("join with no coordinator: %v\n%s", err, ulog.String())
	}
	// devnet up launches through the same path: the same reason, no
	// gRPC wrapping.
	jobFile := n.JobFile
	n.JobFile = refused
	_, err = n.Launch(ctx)
	n.JobFile = jobFile
	for _, want := range []string{"job " + refused + " refused by the coordinator (FailedPrecondition)", `licence "CC-BY-4.0"`, "it accepts MIT"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("devnet's launch of a job refusing its data's licence: %v; want %q in it", err, want)
		}
	}
	if strings.Contains(err.Error(), "rpc error") {
		t.Errorf("devnet's refusal keeps gRPC's wrapping: %v", err)
	}
	if _, err := lc.Job(ctx, "cli-licence"); !errors.Is(err, ledger.ErrRecordNotFound) {
		t.Errorf("the refused job is on the ledger: %v", err)
	}
	// A job needing more trainers than the network has waits, blocking
	// the coordinator: a trainer may not cancel it, its launcher does,
	// and the coordinator takes the next launch.
	if raw, err = os.ReadFile(n.JobFile); err != nil {
		t.Fatal(err)
	}
	job = map[string]any{}
	if err := yaml.Unmarshal(raw, &job); err != nil {
		t.Fatal(err)
	}
	job["name"] = "cli-big"
	job["trainers"] = map[string]any{"min": 3}
	if raw, err = yaml.Marshal(job); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(filepath.Dir(n.JobFile), "big.yaml")
	if err := os.WriteFile(big, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	errb.Reset()
	if err := RunWith(ctx, append([]string{"round", "launch", "-f", big}, conn...), &out, &errb); err != nil {
		t.Fatalf("launch of a job needing 3 trainers: %v\n%s", err, errb.String())
	}
	if !strings.Contains(errb.String(), "stop it: fedtune round cancel cli-big") {
		t.Errorf("launch does not say how to cancel the job:\n%s", errb.String())
	}
	err = RunWith(ctx, []string{"round", "cancel", "cli-big", "--reason", "mine now", "--coordinator", n.Coordinator,
		"--key", filepath.Join(n.Dir, "keys", "trainer-1.key"), "--coordinator-id", n.ID("coordinator")}, &out, &errb)
	if err == nil || !strings.Contains(err.Error(), "may not cancel job cli-big: it was launched by") || !strings.HasSuffix(err.Error(), "(PermissionDenied)") {
		t.Fatalf("cancel with a trainer key: %v", err)
	}
	err = RunWith(ctx, append([]string{"round", "launch", "-f", n.JobFile}, conn...), &out, &errb)
	if err == nil || !strings.Contains(err.Error(), "job cli-big is still running") || !strings.Contains(err.Error(), "fedtune round cancel cli-big") {
		t.Fatalf("launch while cli-big waits: %v", err)
	}
	out.Reset()
	if err := RunWith(ctx, append([]string{"round", "cancel", "cli-big", "--reason", "needs 3 trainers; the network has 2"}, conn...), &out, &errb); err != nil {
		t.Fatalf("cancel: %v", err)
	}
	if !strings.Contains(out.String(), "job cli-big cancelled at height") || !strings.Contains(out.String(), "no round was open") {
		t.Errorf("cancel printed %q", out.String())
	}
	if rec, err := lc.Job(ctx, "cli-big"); err != nil || rec.Cancelled == nil || !strings.Contains(rec.Cancelled.Reason, "needs 3 trainers") {
		t.Fatalf("cli-big on the ledger: %+v, %v; want it cancelled with the reason", rec, err)
	}
	if err := RunWith(ctx, append([]string{"round", "cancel", "cli-big"}, conn...), &out, &errb); err == nil || !strings.Contains(err.Error(), "has ended") {
		t.Errorf("second cancel: %v", err)
	}
	if err := RunWith(ctx, append([]string{"round", "launch", "-f", n.JobFile}, conn...), &out, &errb); err != nil {
		t.Fatalf("launch: %v\n%s", err, errb.String())
	}
	if !strings.Contains(out.String(), "job cli launched") {
		t.Errorf("launch printed %q", out.String())
	}
	if !strings.Contains(errb.String(), "follow it: fedtune round status cli") {
		t.Errorf("launch does not say how to follow the job:\n%s", errb.String())
	}
	if _, err := n.Follow(ctx); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := RunWith(ctx, append([]string{"round", "status", "cli"}, conn...), &out, &errb); err != nil {
		t.Fatalf("status: %v", err)
	}
	for _, want := range []string{"job cli: done, 1 of 1 rounds recorded", "committed", n.ID("trainer-1")[:12], "latest model:"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("status output lacks %q:\n%s", want, out.String())
		}
	}
	// A second launch of the same job name is refused: its rounds exist.
	if err := RunWith(ctx, append([]string{"round", "launch", "-f", n.JobFile}, conn...), &out, &errb); err == nil || !strings.Contains(err.Error(), "already holds") {
		t.Errorf("relaunch: %v", err)
	}
}
