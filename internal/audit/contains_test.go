package audit

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	coordinatorv1 "github.com/fedtune/fedtune/api/coordinator/v1"
	"github.com/fedtune/fedtune/coordinator"
	"github.com/fedtune/fedtune/datasets"
	"github.com/fedtune/fedtune/ledger"
)

// shardTree is the Merkle tree of a shipped shard and its ledger record.
func shardTree(t testing.TB) (*datasets.Dataset, *datasets.Tree, ledger.Dataset) {
	t.Helper()
	d, err := datasets.Load(filepath.Join("..", "..", "datasets", "testdata", "shards", "trainer-1.jsonl"), datasets.Options{})
	if err != nil {
		t.Fatal(err)
	}
	hs, _ := datasets.SampleHashes(d)
	tr := datasets.NewTree(hs)
	root := tr.Root()
	return d, tr, ledger.Dataset{Digest: strings.Repeat("d", 64), Name: "shard", Owner: strings.Repeat("e", 64),
		Root: hex.EncodeToString(root[:]), Samples: tr.Size()}
}

// TestCheckAnswer judges answers as `audit contains` does: valid proofs
// are included or excluded; forged, mismatched, relayed failures and a
// record without a root are unanswered with the reason.
func TestCheckAnswer(t *testing.T) {
	d, tr, rec := shardTree(t)
	in := datasets.SampleDigest(d.Samples[3].Text)
	out := datasets.SampleDigest("not in the shard")
	proof := func(leaf [32]byte) []byte {
		p, err := tr.Prove(leaf)
		if err != nil {
			t.Fatal(err)
		}
		return p.Encode()
	}
	forged := func() []byte {
		p, _ := tr.Prove(out)
		l := p.Right
		if l == nil {
			l = p.Left
		}
		p.Kind, p.Leaf, p.Left, p.Right = datasets.ProofInclusion, l, nil, nil
		p.Leaf.Hash = p.Sample
		return p.Encode()
	}()
	answered := func(b []byte) *coordinatorv1.ProofAnswer {
		return &coordinatorv1.ProofAnswer{Dataset: rec.Digest, Trainer: rec.Owner, Status: coordinatorv1.ProofStatus_PROOF_STATUS_ANSWERED, Proof: b}
	}
	noRoot := rec
	noRoot.Root = ""
	smaller := rec
	smaller.Samples--
	for _, tc := range []struct {
		name   string
		rec    ledger.Dataset
		leaf   [32]byte
		a      *coordinatorv1.ProofAnswer
		result string
		detail string
	}{
		{"included", rec, in, answered(proof(in)), Included, "leaf "},
		{"excluded", rec, out, answered(proof(out)), Excluded, "between adjacent leaves"},
		{"forged inclusion", rec, out, answered(forged), Unanswered, ReasonBadProof + ": leaf (index"},
		{"proof of another sample", rec, out, answered(proof(in)), Unanswered, ReasonBadProof + ": it is about sample"},
		{"another tree size", smaller, in, answered(proof(in)), Unanswered, ReasonBadProof + ": tree_size"},
		{"garbage", rec, in, answered([]byte("{")), Unanswered, ReasonBadProof},
		{"empty", rec, in, answered(nil), Unanswered, ReasonBadProof},
		{"no root on the ledger", noRoot, in, answered(proof(in)), Unanswered, ReasonNoRoot},
		{"another trainer answered", rec, in, &coordinatorv1.ProofAnswer{Trainer: strings.Repeat("f", 64), Status: coordinatorv1.ProofStatus_PROOF_STATUS_ANSWERED, Proof: proof(in)}, Unanswered, ReasonBadProof + ": answered for trainer"},
		{"not connected", rec, in, &coordinatorv1.ProofAnswer{Status: coordinatorv1.ProofStatus_PROOF_STATUS_NOT_CONNECTED}, Unanswered, ReasonNotConnected},
		{"timeout", rec, in, &coordinatorv1.ProofAnswer{Status: coordinatorv1.ProofStatus_PROOF_STATUS_TIMEOUT, Detail: "no answer"}, Unanswered, ReasonTimeout + ": no answer"},
		{"refused", rec, in, &coordinatorv1.ProofAnswer{Status: coordinatorv1.ProofStatus_PROOF_STATUS_REFUSED, Detail: "nope"}, Unanswered, ReasonRefused + ": nope"},
		{"unknown status", rec, in, &coordinatorv1.ProofAnswer{Status: 99}, Unanswered, "the coordinator answered with status"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := CheckAnswer(tc.rec, tc.leaf, tc.a)
			if r.Result != tc.result || !strings.HasPrefix(r.Detail, tc.detail) {
				t.Errorf("%s (%s), want %s (%s…)", r.Result, r.Detail, tc.result, tc.detail)
			}
			if (r.Proof != nil) != (tc.result != Unanswered) {
				t.Errorf("proof kept: %v", r.Proof != nil)
			}
		})
	}
}

// TestRenderContains writes both formats and rejects others.
func TestRenderContains(t *testing.T) {
	rep := &ContainsReport{Model: "m", Sample: "s", Datasets: []ContainsResult{
		{Dataset: strings.Repeat("a", 64), Name: "one", Trainer: strings.Repeat("b", 64), Result: Included, Detail: "leaf 1 of 2"},
		{Dataset: strings.Repeat("c", 64), Trainer: strings.Repeat("d", 64), Result: Unanswered, Detail: "refused: a\nb"}}}
	var b bytes.Buffer
	if err := RenderContains(&b, rep, "table"); err != nil {
		t.Fatal(err)
	}
	if s := b.String(); !strings.Contains(s, "one") || !strings.Contains(s, "aaaaaaaaaaaa") || !strings.Contains(s, "refused: a b") || strings.Count(s, "\n") != 4 {
		t.Errorf("table:\n%s", s)
	}
	b.Reset()
	if err := RenderContains(&b, rep, "json"); err != nil || !strings.Contains(b.String(), `"result": "unanswered"`) {
		t.Errorf("json: %v\n%s", err, b.String())
	}
	if err := RenderContains(&b, rep, "xml"); err == nil {
		t.Error("xml rendered")
	}
	if err := rep.Err(); err == nil || !strings.Contains(err.Error(), "1 of 2") {
		t.Errorf("Err = %v", err)
	}
}

// FuzzCheckAnswer feeds arbitrary proof bytes, as a trainer could send
// them, to the answer checker: it must never panic, and must never call a
// sample included unless the bytes are a real proof for it.
func FuzzCheckAnswer(f *testing.F) {
	d, tr, rec := shardTree(f)
	in := datasets.SampleDigest(d.Samples[0].Text)
	for _, leaf := range [][32]byte{in, datasets.SampleDigest("x")} {
		p, err := tr.Prove(leaf)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(p.Encode())
	}
	f.Add([]byte(`{"version":1,"kind":"inclusion"}`))
	f.Add([]byte("null"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := CheckAnswer(rec, in, &coordinatorv1.ProofAnswer{Status: coordinatorv1.ProofStatus_PROOF_STATUS_ANSWERED, Proof: data})
		switch r.Result {
		case Included:
			if r.Proof == nil || r.Proof.Leaf == nil || r.Proof.Leaf.Hash != hex.EncodeToString(in[:]) {
				t.Fatalf("included without a proof of the sample: %+v", r)
			}
		case Excluded:
			t.Fatalf("sample %x is in the shard, yet an exclusion proof verified: %+v", in, r.Proof)
		}
	})
}

// batchProver answers ProveSample from one real tree for every dataset and
// records the requests it got.
type batchProver struct {
	tree     *datasets.Tree
	requests []int // datasets named by each request
	recvOpt  []int // the MaxCallRecvMsgSize each request allowed (0: none)
}

func (b *batchProver) ProveSample(_ context.Context, in *coordinatorv1.ProveSampleRequest, opts ...grpc.CallOption) (*coordinatorv1.ProveSampleResponse, error) {
	b.requests = append(b.requests, len(in.Datasets))
	size := 0
	for _, o := range opts {
		if m, ok := o.(grpc.MaxRecvMsgSizeCallOption); ok {
			size = m.MaxRecvMsgSize
		}
	}
	b.recvOpt = append(b.recvOpt, size)
	p, err := b.tree.Prove([32]byte(in.LeafHash))
	if err != nil {
		return nil, err
	}
	resp := &coordinatorv1.ProveSampleResponse{}
	for _, d := range in.Datasets {
		resp.Answers = append(resp.Answers, &coordinatorv1.ProofAnswer{Dataset: d.Dataset, Trainer: d.Trainer,
			Status: coordinatorv1.ProofStatus_PROOF_STATUS_ANSWERED, Proof: p.Encode()})
	}
	return resp, nil
}

// TestContainsBatches asks about more datasets than one ProveSample may
// name: Contains asks in batches within the coordinator's limit, allows
// large responses, names a dataset listed twice once, and judges every
// answer.
func TestContainsBatches(t *testing.T) {
	if MaxAskDatasets != coordinator.MaxProveDatasets {
		t.Fatalf("MaxAskDatasets %d, the coordinator's limit is %d", MaxAskDatasets, coordinator.MaxProveDatasets)
	}
	d, tr, rec := shardTree(t)
	var ds []ledger.Dataset
	for i := range 2*MaxAskDatasets + 5 {
		r := rec
		r.Digest = fmt.Sprintf("%064x", i)
		ds = append(ds, r)
	}
	ds = append(ds, ds[0]) // listed twice: asked once
	leaf := datasets.SampleDigest(d.Samples[3].Text)
	p := &batchProver{tree: tr}
	rep, err := Contains(context.Background(), p, "m", leaf, ds, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if want := []int{MaxAskDatasets, MaxAskDatasets, 5}; !slices.Equal(p.requests, want) {
		t.Errorf("requests named %v datasets, want %v", p.requests, want)
	}
	for i, s := range p.recvOpt {
		if s != MaxAnswerBytes {
			t.Errorf("request %d allowed a %d-byte response, want %d", i, s, MaxAnswerBytes)
		}
	}
	if len(rep.Datasets) != len(ds) || rep.Err() != nil {
		t.Fatalf("%d results (err %v), want %d answered", len(rep.Datasets), rep.Err(), len(ds))
	}
	for _, r := range rep.Datasets {
		if r.Result != Included {
			t.Errorf("%s: %s (%s), want included", r.Dataset, r.Result, r.Detail)
		}
	}
}
