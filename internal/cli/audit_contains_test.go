package cli

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	coordinatorv1 "github.com/fedtune/fedtune/api/coordinator/v1"
	"github.com/fedtune/fedtune/coordinator"
	"github.com/fedtune/fedtune/datasets"
	"github.com/fedtune/fedtune/internal/audit"
	"github.com/fedtune/fedtune/internal/devnet"
	"github.com/fedtune/fedtune/internal/fedtest"
	"github.com/fedtune/fedtune/internal/tlsid"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
	"github.com/fedtune/fedtune/trainer"
)

// containsNet is a one-node ledger, a coordinator over TLS, two real
// trainer nodes on shipped shards (t1, t2), a lying trainer (liar: a real
// gRPC client of the coordinator that answers every proof question with a
// forged inclusion proof, and never answers about silentLeaf) and a
// registered trainer that never connects (offline).
type containsNet struct {
	dir, ledger, coord string
	ids                map[string]string // name → member ID
	datasets           map[string]string // trainer name → dataset digest
	keys               map[string]string // name → key file
	silent             chan struct{}     // a question about silentLeaf reached the liar
}

var silentLeaf = datasets.SampleDigest("the liar never answers about this sample")

func shardPath(name string) string {
	return filepath.Join("..", "..", "datasets", "testdata", "shards", name+".jsonl")
}

func startContainsNet(t *testing.T) *containsNet {
	t.Helper()
	n := &containsNet{dir: t.TempDir(), ids: map[string]string{}, datasets: map[string]string{}, keys: map[string]string{}, silent: make(chan struct{}, 256)}
	var g strings.Builder
	g.WriteString("chain_id: contains-cli\nmembers:\n")
	for _, m := range []struct{ name, role string }{{"admin", "admin"}, {"coord", "coordinator"}, {"agg", "aggregator"}, {"auditor", "auditor"},
		{"t1", "trainer"}, {"t2", "trainer"}, {"liar", "trainer"}, {"offline", "trainer"}} {
		var pub string
		n.keys[m.name], n.ids[m.name], pub = testKey(t, n.dir, m.name)
		fmt.Fprintf(&g, "  - name: %s\n    role: %s\n    public_key: %s\n", m.name, m.role, pub)
	}
	g.WriteString("policy:\n  block_interval: 5ms\n")
	genesis := filepath.Join(n.dir, "genesis.yaml")
	if err := os.WriteFile(genesis, []byte(g.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	nd := startCLINode(t, n.dir, genesis, "node1", true)
	n.ledger = nd.grpc
	waitOutput(t, "state:   Leader", "ledger", "status", "--addr", n.ledger)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	srv, err := coordinator.NewServer(ctx, coordinator.ServerConfig{Listen: "127.0.0.1:0", CoordinatorKey: n.keys["coord"], AggregatorKey: n.keys["agg"],
		Ledger: n.ledger, DataDir: filepath.Join(n.dir, "coordinator"), Tick: time.Second}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	n.coord = srv.Addr()
	wg.Add(1)
	go func() { defer wg.Done(); _ = srv.Run(ctx) }()

	// The real trainers register their own datasets and join.
	for i, name := range []string{"t1", "t2"} {
		tn, err := trainer.New(trainer.Config{Name: name, KeyFile: n.keys[name], Coordinator: n.coord, CoordinatorID: n.ids["coord"], Ledger: n.ledger,
			Data: shardPath(fmt.Sprintf("trainer-%d", i+1)), Licence: "CC0-1.0", Source: "fedtune shipped shard", WorkDir: filepath.Join(n.dir, name)}, trainer.Options{})
		if err != nil {
			t.Fatal(err)
		}
		n.datasets[name] = tn.DatasetDigest()
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := tn.Run(ctx); err != nil {
				t.Errorf("trainer %s: %v", name, err)
			}
		}()
	}
	// The liar and the offline trainer register theirs with the CLI.
	for _, r := range []struct{ name, data string }{{"liar", shardPath("trainer-3")}, {"offline", filepath.Join("..", "..", "datasets", "testdata", "english", "train.txt")}} {
		m := filepath.Join(n.dir, r.name+".manifest")
		mustRun(t, "dataset", "manifest", r.data, "--license", "CC0-1.0", "--source", "test", "--key", n.keys[r.name], "-o", m)
		sm, err := readManifestFile(m, nil)
		if err != nil {
			t.Fatal(err)
		}
		n.datasets[r.name] = sm.Digest
		mustRun(t, "dataset", "register", m, "--key", n.keys[r.name], "--addr", n.ledger)
	}
	lc, err := client.Dial(ctx, n.ledger, testTLSKey(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close()
	for _, name := range []string{"t1", "t2"} {
		for deadline := time.Now().Add(30 * time.Second); ; {
			if _, err := lc.Dataset(ctx, n.datasets[name]); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("trainer %s did not register dataset %s", name, n.datasets[name])
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	wg.Add(1)
	ready := make(chan struct{})
	go func() { defer wg.Done(); n.runLiar(t, ctx, ready) }()
	select {
	case <-ready:
	case <-time.After(30 * time.Second):
		t.Fatal("the liar did not join")
	}
	// Wait until t1 and t2 are connected.
	cc := n.client(t, "admin")
	for deadline := time.Now().Add(30 * time.Second); ; {
		st, err := cc.Status(ctx, &coordinatorv1.StatusRequest{})
		if err == nil && slices.Contains(st.Joined, n.ids["t1"]) && slices.Contains(st.Joined, n.ids["t2"]) && slices.Contains(st.Joined, n.ids["liar"]) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("trainers did not join: %v %v", st, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return n
}

// client dials the coordinator over TLS as the named member.
func (n *containsNet) client(t *testing.T, as string) coordinatorv1.CoordinatorClient {
	t.Helper()
	k, err := ledger.LoadKey(n.keys[as])
	if err != nil {
		t.Fatal(err)
	}
	opt, err := tlsid.DialOption(k, tlsid.ExpectID(n.ids["coord"]))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(n.coord, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return coordinatorv1.NewCoordinatorClient(conn)
}

// runLiar joins as the liar and answers proof questions with forged
// inclusion proofs built from its real tree.
func (n *containsNet) runLiar(t *testing.T, ctx context.Context, ready chan<- struct{}) {
	d, err := datasets.Load(shardPath("trainer-3"), datasets.Options{})
	if err != nil {
		t.Error(err)
		return
	}
	hs, _ := datasets.SampleHashes(d)
	tree := datasets.NewTree(hs)
	k, err := ledger.LoadKey(n.keys["liar"])
	if err != nil {
		t.Error(err)
		return
	}
	cc := n.client(t, "liar")
	ch, err := cc.Challenge(ctx, &coordinatorv1.ChallengeRequest{})
	if err != nil {
		t.Error(err)
		return
	}
	jr, err := cc.Join(ctx, &coordinatorv1.JoinRequest{PublicKey: k.Public().(ed25519.PublicKey), Challenge: ch.Challenge,
		Signature: client.SignChallenge(k, ch.Challenge), Datasets: []string{n.datasets["liar"]}})
	if err != nil {
		t.Error(err)
		return
	}
	stream, err := cc.Tasks(ctx, &coordinatorv1.TasksRequest{Session: jr.Session})
	if err != nil {
		t.Error(err)
		return
	}
	close(ready)
	for {
		task, err := stream.Recv()
		if err != nil {
			return
		}
		q := task.Prove
		if q == nil {
			continue
		}
		if [32]byte(q.LeafHash) == silentLeaf {
			select {
			case n.silent <- struct{}{}:
			default:
			}
			continue
		}
		p, err := tree.Prove([32]byte(q.LeafHash))
		if err != nil {
			t.Error(err)
			return
		}
		if !p.Included() {
			leaf := p.Right
			if leaf == nil {
				leaf = p.Left
			}
			p.Kind, p.Leaf, p.Left, p.Right = datasets.ProofInclusion, leaf, nil, nil
			p.Leaf.Hash = p.Sample
		}
		if _, err := cc.SubmitProof(ctx, &coordinatorv1.SubmitProofRequest{Session: jr.Session, RequestId: q.RequestId, Proof: p.Encode()}); err != nil {
			t.Error(err)
		}
		// A second answer to the same question is refused.
		if _, err := cc.SubmitProof(ctx, &coordinatorv1.SubmitProofRequest{Session: jr.Session, RequestId: q.RequestId, Proof: p.Encode()}); status.Code(err) != codes.NotFound {
			t.Errorf("a second answer: %v, want NotFound", err)
		}
	}
}

// recordRound records a committed round of job over base with one update
// per named trainer and returns the new model's digest.
func (n *containsNet) recordRound(t *testing.T, job, base string, trainers ...string) string {
	t.Helper()
	submit := func(k, typ, body string) {
		t.Helper()
		mustRun(t, "tx", "submit", typ, "--key", n.keys[k], "--addr", n.ledger, "--body", body)
	}
	var ids, contrib []string
	for _, tr := range trainers {
		ids = append(ids, fmt.Sprintf("%q", n.ids[tr]))
	}
	submit("coord", "JobRegistered", fmt.Sprintf(`{"job_id":%q,"recipe":{"strategy":"fedavg","compression":"none","min_trainers":1,"aggregators":[%q]}}`, job, n.ids["agg"]))
	submit("coord", "RoundOpened", fmt.Sprintf(`{"job_id":%q,"round":1,"config_digest":%q,"base_model":%q,"strategy":"fedavg","trainers":[%s],"deadline":%q}`,
		job, strings.Repeat("c", 64), base, strings.Join(ids, ","), time.Now().Add(time.Hour).UTC().Format(time.RFC3339)))
	for _, tr := range trainers {
		upd := hex.EncodeToString(ledgerDigest(job + tr))
		submit(tr, "UpdateSubmitted", fmt.Sprintf(`{"job_id":%q,"round":1,"update_digest":%q,"dataset_digest":%q,"samples":10}`, job, upd, n.datasets[tr]))
		contrib = append(contrib, fmt.Sprintf(`{"trainer":%q,"update_digest":%q,"weight":%g}`, n.ids[tr], upd, 1/float64(len(trainers))))
	}
	model := hex.EncodeToString(ledgerDigest("model " + job))
	submit("agg", "RoundCommitted", fmt.Sprintf(`{"job_id":%q,"round":1,"model_digest":%q,"strategy":"fedavg","contributors":[%s]}`, job, model, strings.Join(contrib, ",")))
	return model
}

func ledgerDigest(s string) []byte { d := datasets.SampleDigest(s); return d[:] }

// TestAuditContains asks, through a real coordinator and real trainers,
// whether samples were in the datasets behind two models: the relay's
// answers over gRPC, then `fedtune audit contains` outcomes: included,
// excluded, a trainer offline, a lying trainer whose forged proof does not
// verify, a timeout, and a caller that is not a ledger member.
func TestAuditContains(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a ledger node, a coordinator and trainers")
	}
	n := startContainsNet(t)
	base := hex.EncodeToString(ledgerDigest("base"))
	mustRun(t, "tx", "submit", "ModelRegistered", "--key", n.keys["coord"], "--addr", n.ledger, "--body",
		fmt.Sprintf(`{"digest":%q,"name":"tiny","licence":"Apache-2.0","source":"test"}`, base))
	all := n.recordRound(t, "all", base, "t1", "t2", "liar", "offline")
	good := n.recordRound(t, "good", base, "t1", "t2")

	// A record of trainer-1's shard, in no other dataset, and a sample
	// from nowhere.
	shard1, err := os.ReadFile(shardPath("trainer-1"))
	if err != nil {
		t.Fatal(err)
	}
	record := strings.SplitN(string(shard1), "\n", 2)[0]
	inT1 := filepath.Join(n.dir, "sample.jsonl")
	if err := os.WriteFile(inT1, []byte(record+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	leafT1, err := audit.SampleLeaf(inT1, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, other := range []string{"trainer-2", "trainer-3"} {
		d, err := datasets.Load(shardPath(other), datasets.Options{})
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range d.Samples {
			if datasets.SampleDigest(s.Text) == leafT1 {
				t.Fatalf("the sample %s is also in %s", record, other)
			}
		}
	}
	nowhere := filepath.Join(n.dir, "nowhere.txt")
	if err := os.WriteFile(nowhere, []byte("This sentence was never in any training data.\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	t.Run("relay", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cc := n.client(t, "auditor")
		resp, err := cc.ProveSample(ctx, &coordinatorv1.ProveSampleRequest{LeafHash: leafT1[:], TimeoutMs: 5000, Datasets: []*coordinatorv1.DatasetRef{
			{Dataset: n.datasets["t1"], Trainer: n.ids["t1"]},
			{Dataset: n.datasets["t2"], Trainer: n.ids["t2"]},
			{Dataset: n.datasets["liar"], Trainer: n.ids["t1"]}, // t1 does not hold the liar's data
			{Dataset: n.datasets["offline"], Trainer: n.ids["offline"]},
		}})
		if err != nil {
			t.Fatal(err)
		}
		want := []coordinatorv1.ProofStatus{coordinatorv1.ProofStatus_PROOF_STATUS_ANSWERED, coordinatorv1.ProofStatus_PROOF_STATUS_ANSWERED,
			coordinatorv1.ProofStatus_PROOF_STATUS_REFUSED, coordinatorv1.ProofStatus_PROOF_STATUS_NOT_CONNECTED}
		if len(resp.Answers) != len(want) {
			t.Fatalf("%d answers, want %d", len(resp.Answers), len(want))
		}
		for i, a := range resp.Answers {
			if a.Status != want[i] {
				t.Errorf("answer %d: %v (%s), want %v", i, a.Status, a.Detail, want[i])
			}
		}
		if !strings.Contains(resp.Answers[2].Detail, "does not hold dataset") {
			t.Errorf("refusal says %q", resp.Answers[2].Detail)
		}
		for i, wantIn := range []bool{true, false} {
			p, err := datasets.DecodeProof(resp.Answers[i].Proof)
			if err != nil {
				t.Fatal(err)
			}
			if p.Included() != wantIn || p.Sample != hex.EncodeToString(leafT1[:]) {
				t.Errorf("answer %d: %s proof of %s, want included=%v", i, p.Kind, p.Sample, wantIn)
			}
		}
		// The liar stays silent about one sample: the wait ends at the timeout.
		start := time.Now()
		resp, err = cc.ProveSample(ctx, &coordinatorv1.ProveSampleRequest{LeafHash: silentLeaf[:], TimeoutMs: 300,
			Datasets: []*coordinatorv1.DatasetRef{{Dataset: n.datasets["liar"], Trainer: n.ids["liar"]}}})
		if err != nil || resp.Answers[0].Status != coordinatorv1.ProofStatus_PROOF_STATUS_TIMEOUT || time.Since(start) > 5*time.Second {
			t.Errorf("silent trainer: %v %v after %s, want a timeout", resp, err, time.Since(start))
		}
		// Bad requests.
		t1 := &coordinatorv1.DatasetRef{Dataset: n.datasets["t1"], Trainer: n.ids["t1"]}
		if _, err := cc.ProveSample(ctx, &coordinatorv1.ProveSampleRequest{LeafHash: leafT1[:], Datasets: []*coordinatorv1.DatasetRef{t1, t1}}); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), n.datasets["t1"]) {
			t.Errorf("a dataset named twice: %v, want InvalidArgument naming it", err)
		}
		for name, req := range map[string]*coordinatorv1.ProveSampleRequest{
			"short hash":  {LeafHash: leafT1[:31], Datasets: []*coordinatorv1.DatasetRef{{Dataset: n.datasets["t1"], Trainer: n.ids["t1"]}}},
			"no datasets": {LeafHash: leafT1[:]},
			"bad trainer": {LeafHash: leafT1[:], Datasets: []*coordinatorv1.DatasetRef{{Dataset: n.datasets["t1"], Trainer: "t1"}}},
		} {
			if _, err := cc.ProveSample(ctx, req); status.Code(err) != codes.InvalidArgument {
				t.Errorf("%s: %v, want InvalidArgument", name, err)
			}
		}
		// A trainer may not ask.
		if _, err := n.client(t, "t1").ProveSample(ctx, &coordinatorv1.ProveSampleRequest{LeafHash: leafT1[:], Datasets: []*coordinatorv1.DatasetRef{t1}}); status.Code(err) != codes.PermissionDenied {
			t.Errorf("a trainer asking: %v, want PermissionDenied", err)
		}
		// At most 8 questions wait on one trainer: with 8 unanswered
		// questions at the liar, a ninth is BUSY at once.
		for len(n.silent) > 0 {
			<-n.silent
		}
		liar := []*coordinatorv1.DatasetRef{{Dataset: n.datasets["liar"], Trainer: n.ids["liar"]}}
		hold, release := context.WithCancel(ctx)
		var held sync.WaitGroup
		for range 8 {
			held.Add(1)
			go func() {
				defer held.Done()
				_, _ = cc.ProveSample(hold, &coordinatorv1.ProveSampleRequest{LeafHash: silentLeaf[:], TimeoutMs: 60000, Datasets: liar})
			}()
		}
		for range 8 {
			select {
			case <-n.silent:
			case <-ctx.Done():
				t.Fatal("the liar did not get 8 questions")
			}
		}
		resp, err = cc.ProveSample(ctx, &coordinatorv1.ProveSampleRequest{LeafHash: silentLeaf[:], TimeoutMs: 60000, Datasets: liar})
		if err != nil || resp.Answers[0].Status != coordinatorv1.ProofStatus_PROOF_STATUS_BUSY || !strings.Contains(resp.Answers[0].Detail, "outstanding") {
			t.Errorf("a ninth question: %v %v, want BUSY", resp, err)
		}
		release()
		held.Wait()
		// Once the held questions are gone, the liar is asked again.
		for {
			resp, err = cc.ProveSample(ctx, &coordinatorv1.ProveSampleRequest{LeafHash: leafT1[:], TimeoutMs: 5000, Datasets: liar})
			if err != nil {
				t.Fatal(err)
			}
			if resp.Answers[0].Status == coordinatorv1.ProofStatus_PROOF_STATUS_ANSWERED {
				break
			}
			if resp.Answers[0].Status != coordinatorv1.ProofStatus_PROOF_STATUS_BUSY {
				t.Fatalf("after the held questions: %v (%s)", resp.Answers[0].Status, resp.Answers[0].Detail)
			}
			time.Sleep(20 * time.Millisecond)
		}
		// An answer nobody asked for.
		if _, err := cc.SubmitProof(ctx, &coordinatorv1.SubmitProofRequest{Session: "nope", RequestId: "x"}); status.Code(err) != codes.FailedPrecondition {
			t.Errorf("answer without a session: %v, want FailedPrecondition", err)
		}
	})

	type want map[string]string // trainer name → result (+ detail prefix after ": ")
	coordArgs := []string{"--ledger", n.ledger, "--coordinator", n.coord, "--coordinator-id", n.ids["coord"], "--timeout", "5s"}
	for _, tc := range []struct {
		name, model, sample, key string
		want                     want
		errWant                  string
	}{
		{"lineage with a liar and an offline trainer", all, inT1, "auditor",
			want{"t1": "included", "t2": "excluded", "liar": "unanswered: proof does not verify", "offline": "unanswered: trainer not connected"},
			"2 of 4 datasets unanswered"},
		{"sample from nowhere, liar and offline", all, nowhere, "admin",
			want{"t1": "excluded", "t2": "excluded", "liar": "unanswered: proof does not verify", "offline": "unanswered: trainer not connected"},
			"2 of 4 datasets unanswered"},
		{"honest lineage, sample of t1, the coordinator's key", good, inT1, "coord", want{"t1": "included", "t2": "excluded"}, ""},
		{"honest lineage, sample from nowhere", good, nowhere, "auditor", want{"t1": "excluded", "t2": "excluded"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"audit", "contains", "--model", tc.model, "--sample", tc.sample, "--key", n.keys[tc.key], "--format", "json"}, coordArgs...)
			out, err := run(t, args...)
			if tc.errWant == "" && err != nil {
				t.Fatalf("exit error %v, want success", err)
			}
			if tc.errWant != "" && (err == nil || !errors.Is(err, audit.ErrUnanswered) || !strings.Contains(err.Error(), tc.errWant)) {
				t.Fatalf("exit error %v, want %q", err, tc.errWant)
			}
			var rep audit.ContainsReport
			if err := json.Unmarshal([]byte(out), &rep); err != nil {
				t.Fatalf("output is not a JSON report: %v\n%s", err, out)
			}
			got := want{}
			for _, d := range rep.Datasets {
				name := ""
				for nm, id := range n.ids {
					if id == d.Trainer {
						name = nm
					}
				}
				r := d.Result
				if d.Result == audit.Unanswered {
					r += ": " + d.Detail
				}
				got[name] = r
				if d.Dataset != n.datasets[name] || d.Root == "" {
					t.Errorf("%s: dataset %s root %q, want %s with its ledger root", name, d.Dataset, d.Root, n.datasets[name])
				}
			}
			if len(got) != len(tc.want) {
				t.Errorf("report %v, want %v", got, tc.want)
			}
			for name, w := range tc.want {
				if !strings.HasPrefix(got[name], w) {
					t.Errorf("%s: %q, want %q", name, got[name], w)
				}
			}
		})
	}

	// The table names every dataset and its outcome.
	out, err := run(t, append([]string{"audit", "contains", "--model", all, "--sample", inT1, "--key", n.keys["auditor"]}, coordArgs...)...)
	if err == nil {
		t.Fatal("table run: no error, want unanswered datasets")
	}
	t.Logf("audit contains (exit: %v):\n%s", err, out)
	for _, s := range []string{"DATASET", "t1-data", "included", "t2-data", "excluded", "unanswered", "trainer not connected", "proof does not verify", n.datasets["t1"][:12]} {
		if !strings.Contains(out, s) {
			t.Errorf("table lacks %q:\n%s", s, out)
		}
	}
	// With --quorum the lineage, and so the roots the proofs are checked
	// against, are first anchored in cosigned blocks (here the one node's
	// cosignature), and the report says so; a quorum the ledger cannot
	// gather stops it before anyone is asked.
	quorum := append([]string{"audit", "contains", "--model", good, "--sample", inT1, "--key", n.keys["auditor"]}, coordArgs...)
	out, err = run(t, append(quorum, "--quorum", "1")...)
	if err != nil || !strings.Contains(out, "included") || !strings.Contains(out, "\nanchored: 7 records in ") || !strings.Contains(out, "each cosigned by >= 1 nodes (quorum 1;") {
		t.Errorf("contains --quorum 1: %v\n%s", err, out)
	}
	if out, err := run(t, append(quorum, "--quorum", "2")...); err == nil || out != "" || !strings.Contains(err.Error(), "not enough cosignatures") {
		t.Errorf("contains --quorum 2 on one node: %v\n%s", err, out)
	}
	// The lineage shows the roots the ledger recorded, with no manifests
	// at hand.
	d1, err := datasets.Load(shardPath("trainer-1"), datasets.Options{})
	if err != nil {
		t.Fatal(err)
	}
	hs, _ := datasets.SampleHashes(d1)
	root1 := datasets.NewTree(hs).Root()
	for _, f := range []string{"json", "html", "dot"} {
		if out := mustRun(t, "audit", "lineage", all, "--addr", n.ledger, "--format", f); !strings.Contains(out, hex.EncodeToString(root1[:])) {
			t.Errorf("lineage --format %s does not show t1's root %x", f, root1)
		}
	}
	// A trainer may not ask for proofs.
	if _, err := run(t, append([]string{"audit", "contains", "--model", good, "--sample", inT1, "--key", n.keys["t2"]}, coordArgs...)...); err == nil || !strings.Contains(err.Error(), "PermissionDenied") || !strings.Contains(err.Error(), "only auditor and admin") {
		t.Errorf("trainer key: %v, want PermissionDenied", err)
	}
	// A caller that is not a ledger member is refused.
	outsider := filepath.Join(n.dir, "outsider.key")
	mustRun(t, "keygen", "-o", outsider)
	if _, err := run(t, append([]string{"audit", "contains", "--model", good, "--sample", inT1, "--key", outsider}, coordArgs...)...); err == nil || !strings.Contains(err.Error(), "not an active ledger member") {
		t.Errorf("outsider: %v, want a refusal", err)
	}
	// check-proof against the ledger alone: a proof from `dataset prove`
	// without a manifest.
	proof := filepath.Join(n.dir, "proof.json")
	mustRun(t, "dataset", "prove", shardPath("trainer-1"), "--sample", nowhere, "-o", proof)
	if _, err := run(t, "audit", "check-proof", proof, "--ledger", n.ledger); err == nil || !strings.Contains(err.Error(), "--dataset DIGEST") {
		t.Errorf("check-proof without a dataset: %v", err)
	}
	out = mustRun(t, "audit", "check-proof", proof, "--ledger", n.ledger, "--dataset", n.datasets["t1"])
	if !strings.Contains(out, "is NOT in dataset "+n.datasets["t1"]) || !strings.Contains(out, "checked against the ledger's root") {
		t.Errorf("check-proof printed %q", out)
	}
	if _, err := run(t, "audit", "check-proof", proof, "--ledger", n.ledger, "--dataset", n.datasets["t2"]); err == nil || !strings.Contains(err.Error(), "proof does not verify") {
		t.Errorf("check-proof against another dataset: %v", err)
	}
}

// TestNoRaceAuditContainsWhileTraining asks a trainer for a proof while it
// trains a task: the question is put from inside the training loop (after
// its first local step, with more to go), so the answer must come from
// the trainer while its task is still training, before the task's update
// exists; then the round commits with that trainer's update.
func TestNoRaceAuditContainsWhileTraining(t *testing.T) {
	fedtest.SkipUnderRace(t)
	if testing.Short() {
		t.Skip("a whole network")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var (
		mu      sync.Mutex
		events  []string // in order: "step N", "proof <status>"
		answer  *coordinatorv1.ProofAnswer
		askErr  error
		asked   bool
		n       *devnet.Net
		leaf    [32]byte
		dataset string
	)
	note := func(e string) { mu.Lock(); events = append(events, e); mu.Unlock() }
	backend := &trainer.GorgoniaBackend{Progress: func(step int, _ float64) {
		note(fmt.Sprintf("step %d", step))
		mu.Lock()
		first := !asked
		asked = true
		mu.Unlock()
		if !first {
			return
		}
		// Still inside the task's training: ask the coordinator for a
		// proof from this very trainer.
		opt, err := tlsid.DialOption(n.Keys["admin"], tlsid.ExpectID(n.ID("coordinator")))
		if err != nil {
			askErr = err
			return
		}
		conn, err := grpc.NewClient(n.Coordinator, opt)
		if err != nil {
			askErr = err
			return
		}
		defer conn.Close()
		resp, err := coordinatorv1.NewCoordinatorClient(conn).ProveSample(ctx, &coordinatorv1.ProveSampleRequest{LeafHash: leaf[:], TimeoutMs: 30000,
			Datasets: []*coordinatorv1.DatasetRef{{Dataset: dataset, Trainer: n.ID("trainer-1")}}})
		if err != nil {
			askErr = err
			return
		}
		answer = resp.Answers[0]
		note("proof " + answer.Status.String())
	}}
	var err error
	n, err = devnet.Prepare(ctx, devnet.Options{Dir: t.TempDir(), Repo: "../..", InProcess: true, Trainers: 1, MinTrainers: 1,
		JobName: "prove-while-training", Rounds: 1, LocalSteps: 4, PretrainSteps: 2,
		TrainerBackend: func(int) trainer.Backend { return backend }})
	if err != nil {
		t.Fatal(err)
	}
	nw, err := n.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer nw.Stop()
	cfg, err := trainer.LoadConfig(filepath.Join(n.Dir, "trainer-1", "trainer.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	sm, err := readManifestFile(filepath.Join(cfg.WorkDir, "dataset.manifest"), nil)
	if err != nil {
		t.Fatal(err)
	}
	shard, err := os.ReadFile(n.Shards[0])
	if err != nil {
		t.Fatal(err)
	}
	sample := filepath.Join(t.TempDir(), "sample.jsonl")
	if err := os.WriteFile(sample, []byte(strings.SplitN(string(shard), "\n", 2)[0]+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if leaf, err = audit.SampleLeaf(sample, ""); err != nil {
		t.Fatal(err)
	}
	dataset = sm.Digest
	if _, err := n.Launch(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := n.Follow(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	t.Logf("trainer events: %v", events)
	if askErr != nil || answer == nil {
		t.Fatalf("no answer while training: %v (events %v)", askErr, events)
	}
	// The answer came back after step 1, before the task's later steps
	// and so before its update was written or submitted.
	if len(events) < 3 || events[0] != "step 1" || events[1] != "proof PROOF_STATUS_ANSWERED" || events[len(events)-1] != "step 4" {
		t.Errorf("events %v: want step 1, the proof answered, then the remaining steps", events)
	}
	if st.State != coordinator.JobDone || len(st.Rounds) != 1 || st.Rounds[0].Status != string(ledger.StatusCommitted) ||
		len(st.Rounds[0].Updates) != 1 || st.Rounds[0].Updates[0].Trainer != n.ID("trainer-1") {
		t.Fatalf("job %s (%s), rounds %v: want round 1 committed with trainer-1's update", st.State, st.Detail, st.Rounds)
	}
	lc, err := n.Ledger(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close()
	rec, err := lc.Dataset(ctx, dataset)
	if err != nil {
		t.Fatal(err)
	}
	if r := audit.CheckAnswer(*rec, leaf, answer); r.Result != audit.Included {
		t.Errorf("the answer given while training: %s (%s), want included", r.Result, r.Detail)
	}
}
