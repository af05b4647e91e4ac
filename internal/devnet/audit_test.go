package devnet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	coordinatorv1 "github.com/fedtune/fedtune/api/coordinator/v1"
	ledgerv1 "github.com/fedtune/fedtune/api/ledger/v1"
	"github.com/fedtune/fedtune/coordinator"
	"github.com/fedtune/fedtune/internal/audit"
	"github.com/fedtune/fedtune/internal/fedtest"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
)

// auditTx is a decoded transaction with where it is on the chain.
type auditTx struct {
	height uint64
	index  int
	tx     *ledger.Tx
}

// auditExportChain streams every block from c into an export file at path (the
// `fedtune audit export` format) and returns the decoded transactions.
func auditExportChain(t *testing.T, ctx context.Context, c *client.Client, genesis, path string) []auditTx {
	t.Helper()
	g, err := os.ReadFile(genesis)
	if err != nil {
		t.Fatal(err)
	}
	var txs []auditTx
	err = audit.WriteFileAtomic(path, 0o644, func(w io.Writer) error {
		ew, err := audit.NewExportWriter(w, g)
		if err != nil {
			return err
		}
		err = c.Blocks(ctx, 0, false, func(vb *client.VerifiedBlock) error {
			for i, raw := range vb.Block.Txs {
				tx, err := ledger.DecodeTx(raw)
				if err != nil {
					return err
				}
				txs = append(txs, auditTx{vb.Block.Header.Height, i, tx})
			}
			return ew.WriteBlock(vb.Block)
		})
		if err != nil {
			return err
		}
		return ew.Close()
	})
	if err != nil {
		t.Fatal(err)
	}
	return txs
}

// auditCopyTree copies the regular files under src to dst.
func auditCopyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestNoRaceNetworkAudit runs a two-round job on a whole devnet and audits
// it: the lineage a node serves against the transactions in its blocks,
// `audit contains` answered by the trainers for a sample of trainer-1's
// shard and for a sample from nowhere, an
// export re-verified offline with every aggregation re-run from the
// coordinator's artifact store, a swapped update artifact named by Verify,
// and the lineage drawn by Graphviz.
func TestNoRaceNetworkAudit(t *testing.T) {
	fedtest.SkipUnderRace(t)
	if testing.Short() {
		t.Skip("a whole network")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	start := time.Now()
	n := prepare(t, ctx, Options{JobName: "audit", Rounds: 2, LocalSteps: 5})
	nw, err := n.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer nw.Stop()
	if _, err := n.Launch(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := n.Follow(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != coordinator.JobDone || len(st.Rounds) != 2 || st.Model == "" {
		t.Fatalf("job ended %s (%s) with %d rounds, model %q; want done with 2", st.State, st.Detail, len(st.Rounds), st.Model)
	}
	t.Logf("job done in %s (with setup)", time.Since(start).Round(time.Millisecond))

	// Read the chain from node 1 into an export; the transactions in it are
	// what the lineage must match.
	work := t.TempDir()
	exportPath := filepath.Join(work, "chain.fedtune")
	lc, err := n.Ledger(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	txs := auditExportChain(t, ctx, lc, n.path("genesis.yaml"), exportPath)
	lc.Close()

	datasets := map[string]ledger.DatasetRegistered{} // by digest
	owners := map[string]string{}                     // dataset digest → registering trainer
	type sub struct {
		ledger.UpdateSubmitted
		trainer string
		height  uint64
		index   int
	}
	submitted := map[string]sub{}                   // job/round/trainer → update
	opened := map[uint64]ledger.RoundOpened{}       // by round
	committed := map[uint64]ledger.RoundCommitted{} // by round
	committedAt := map[uint64]uint64{}              // round → height
	for _, h := range txs {
		switch b := h.tx.Body.(type) {
		case ledger.DatasetRegistered:
			datasets[b.Digest], owners[b.Digest] = b, h.tx.Signer
		case ledger.RoundOpened:
			if b.JobID == n.JobName {
				opened[b.Round] = b
			}
		case ledger.UpdateSubmitted:
			submitted[fmt.Sprintf("%s/%d/%s", b.JobID, b.Round, h.tx.Signer)] = sub{b, h.tx.Signer, h.height, h.index}
		case ledger.RoundCommitted:
			if b.JobID == n.JobName {
				committed[b.Round], committedAt[b.Round] = b, h.height
			}
		}
	}
	if len(committed) != 2 || len(opened) != 2 {
		t.Fatalf("the chain has %d opened and %d committed rounds of job %s, want 2 and 2", len(opened), len(committed), n.JobName)
	}

	// 1. The lineage a node serves over gRPC lists exactly what the chain
	// recorded.
	lc3, err := n.Ledger(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	js, err := lc3.Query(ctx, ledgerv1.QueryKind_QUERY_KIND_LINEAGE, st.Model, 0)
	lc3.Close()
	if err != nil {
		t.Fatal(err)
	}
	l, err := audit.DecodeLineage(js)
	if err != nil {
		t.Fatal(err)
	}
	if l.Model.Digest != st.Model || l.Base.Digest != n.BaseDigest {
		t.Errorf("lineage of %s: model %s, base %s; want base %s", st.Model, l.Model.Digest, l.Base.Digest, n.BaseDigest)
	}
	if len(l.Rounds) != 2 {
		t.Fatalf("lineage has %d rounds, want 2", len(l.Rounds))
	}
	wantDatasets := map[string]bool{}
	for i, lr := range l.Rounds {
		r := uint64(2 - i) // newest first
		o, c := opened[r], committed[r]
		if lr.JobID != n.JobName || lr.Round != r || lr.ModelDigest != c.ModelDigest || lr.BaseModel != o.BaseModel ||
			lr.ConfigDigest != o.ConfigDigest || lr.Strategy != c.Strategy {
			t.Errorf("lineage round[%d] = %s/%d model %s base %s config %s strategy %s; the chain has %s/%d model %s base %s config %s strategy %s",
				i, lr.JobID, lr.Round, lr.ModelDigest, lr.BaseModel, lr.ConfigDigest, lr.Strategy, o.JobID, r, c.ModelDigest, o.BaseModel, o.ConfigDigest, c.Strategy)
		}
		if len(lr.Contributors) != len(c.Contributors) || len(c.Contributors) != 3 {
			t.Errorf("round %d: lineage lists %d contributors, RoundCommitted %d, want 3", r, len(lr.Contributors), len(c.Contributors))
		}
		got := map[string]ledger.LineageContribution{}
		for _, lc := range lr.Contributors {
			if _, dup := got[lc.Trainer]; dup {
				t.Errorf("round %d: trainer %s listed twice", r, lc.Trainer)
			}
			got[lc.Trainer] = lc
		}
		for _, cc := range c.Contributors {
			u := submitted[fmt.Sprintf("%s/%d/%s", n.JobName, r, cc.Trainer)]
			want := ledger.LineageContribution{Trainer: cc.Trainer, UpdateDigest: cc.UpdateDigest, DatasetDigest: u.DatasetDigest, Samples: u.Samples, Weight: cc.Weight,
				Published: ledger.RangeDatasets(u.DatasetDigest, u.Ranges)}
			if u.UpdateDigest != cc.UpdateDigest {
				t.Errorf("round %d: trainer %s committed update %s but submitted %q", r, cc.Trainer, cc.UpdateDigest, u.UpdateDigest)
			}
			if !reflect.DeepEqual(got[cc.Trainer], want) {
				t.Errorf("round %d: lineage contributor %+v, the chain says %+v", r, got[cc.Trainer], want)
			}
			if owners[u.DatasetDigest] != cc.Trainer {
				t.Errorf("round %d: trainer %s cited dataset %s registered by %q", r, cc.Trainer, u.DatasetDigest, owners[u.DatasetDigest])
			}
			wantDatasets[u.DatasetDigest] = true
		}
		if len(lr.Rejected) != 0 {
			t.Errorf("round %d: lineage lists rejected updates %v; the chain has none", r, lr.Rejected)
		}
	}
	if len(l.Datasets) != len(wantDatasets) || len(wantDatasets) != 3 {
		t.Errorf("lineage lists %d datasets, contributors cite %d, want 3", len(l.Datasets), len(wantDatasets))
	}
	for _, d := range l.Datasets {
		reg, ok := datasets[d.Digest]
		if !ok || !wantDatasets[d.Digest] || d.Samples != reg.Samples || d.Licence != reg.Licence || d.Name != reg.Name || d.Owner != owners[d.Digest] ||
			d.Root != reg.Root || len(d.Root) != 64 || d.Bytes != reg.Bytes {
			t.Errorf("lineage dataset %+v; the chain registered %+v by %s (cited: %v)", d, reg, owners[d.Digest], wantDatasets[d.Digest])
		}
	}

	// 1b. audit contains, through the coordinator and the trainers, each
	// proof checked against the roots the ledger recorded: a record of
	// trainer-1's shard is in trainer-1's dataset and provably in no
	// other; a sample from nowhere is provably in none.
	conn, err := n.dial("admin")
	if err != nil {
		t.Fatal(err)
	}
	cc := coordinatorv1.NewCoordinatorClient(conn)
	shard1, err := os.ReadFile(n.Shards[0])
	if err != nil {
		t.Fatal(err)
	}
	inT1, nowhere := filepath.Join(work, "sample.jsonl"), filepath.Join(work, "nowhere.txt")
	if err := os.WriteFile(inT1, append(bytes.SplitN(shard1, []byte("\n"), 2)[0], '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(nowhere, []byte("No trainer ever saw this sentence.\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		sample string
		in     string // the trainer whose dataset holds it ("" none)
	}{{inT1, n.ID("trainer-1")}, {nowhere, ""}} {
		leaf, err := audit.SampleLeaf(tc.sample, "")
		if err != nil {
			t.Fatal(err)
		}
		cstart := time.Now()
		rep, err := audit.Contains(ctx, cc, st.Model, leaf, audit.LineageDatasets(l), 20*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if err := rep.Err(); err != nil || len(rep.Datasets) != 3 {
			t.Errorf("contains %s: %d datasets, %v; want 3 answered", filepath.Base(tc.sample), len(rep.Datasets), err)
		}
		for _, d := range rep.Datasets {
			want := audit.Excluded
			if d.Trainer == tc.in {
				want = audit.Included
			}
			if d.Result != want {
				t.Errorf("contains %s: dataset %s of %s: %s (%s), want %s", filepath.Base(tc.sample), d.Name, abbrevID(d.Trainer), d.Result, d.Detail, want)
			}
		}
		var table bytes.Buffer
		if err := audit.RenderContains(&table, rep, "table"); err != nil {
			t.Fatal(err)
		}
		t.Logf("audit contains %s in %s:\n%s", filepath.Base(tc.sample), time.Since(cstart).Round(time.Millisecond), table.String())
	}
	conn.Close()

	// The job file the devnet launched is the one the rounds committed to.
	job, err := coordinator.LoadJob(n.JobFile)
	if err != nil {
		t.Fatal(err)
	}
	if job.Digest() != opened[1].ConfigDigest {
		t.Errorf("job file digest %s, RoundOpened config_digest %s", job.Digest(), opened[1].ConfigDigest)
	}
	store := n.path("coordinator", "artifacts") // an artifact.Store folder
	nw.Stop()                                   // the store and chain are final; audit them offline

	// 2. The export verifies offline, re-running both aggregations from the
	// coordinator's artifact store.
	f, err := os.Open(exportPath)
	if err != nil {
		t.Fatal(err)
	}
	e, err := audit.ReadExport(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	opts := audit.VerifyOptions{Artifacts: store, Jobs: []string{n.JobFile}, Logger: testLogger(t)}
	vstart := time.Now()
	rep, err := audit.Verify(ctx, e, opts)
	if err != nil {
		t.Fatalf("verify with the coordinator's artifacts: %v", err)
	}
	t.Logf("verified height %d, %d txs, %d rounds, %d re-aggregated, %d artifacts in %s",
		rep.Height, rep.Txs, rep.Rounds, rep.Reaggregated, rep.Artifacts, time.Since(vstart).Round(time.Millisecond))
	if rep.Rounds != 2 || rep.Reaggregated != 2 {
		t.Errorf("verify: %d committed rounds, %d re-aggregated; want 2 and 2", rep.Rounds, rep.Reaggregated)
	}

	// Without the job file: the LoRA job's initial adapter digest is in its
	// recipe on the chain (JobRegistered) and the blob in the coordinator's
	// store, so every round re-runs from the export and artifacts alone.
	rep, err = audit.Verify(ctx, e, audit.VerifyOptions{Artifacts: store})
	if err != nil || rep.Reaggregated != 2 {
		t.Fatalf("verify without the job file: %+v %v, want both rounds re-aggregated", rep, err)
	}
	var mm *audit.Mismatch
	var initAdapter string
	var registeredAt int64
	for h, raw := range e.Blocks[1:] {
		b, err := ledger.DecodeBlock(raw)
		if err != nil {
			t.Fatal(err)
		}
		for _, txb := range b.Txs {
			if tx, err := ledger.DecodeTx(txb); err == nil {
				if jr, ok := tx.Body.(ledger.JobRegistered); ok {
					initAdapter, registeredAt = jr.Recipe.InitialAdapter, int64(h+1)
				}
			}
		}
	}
	if initAdapter == "" {
		t.Fatal("the chain's JobRegistered records no initial adapter for the LoRA job")
	}
	// Without the adapter's blob, Verify names the recipe's field.
	noInit := filepath.Join(work, "no-init")
	auditCopyTree(t, store, noInit)
	p, ok := audit.ArtifactPath(noInit, initAdapter)
	if !ok {
		t.Fatalf("initial adapter %s is not in the coordinator's store", initAdapter)
	}
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	_, err = audit.Verify(ctx, e, audit.VerifyOptions{Artifacts: noInit})
	if !errors.As(err, &mm) || mm.Field != "recipe.initial_adapter" || mm.Height != registeredAt {
		t.Errorf("verify without the initial adapter: %v, want a recipe.initial_adapter mismatch at height %d", err, registeredAt)
	}

	// A copy of the store with one update's bytes swapped for another's:
	// Verify names that update's transaction.
	bad := filepath.Join(work, "tampered")
	auditCopyTree(t, store, bad)
	victim, donor := committed[2].Contributors[0].UpdateDigest, committed[2].Contributors[1].UpdateDigest
	vp, ok1 := audit.ArtifactPath(bad, victim)
	dp, ok2 := audit.ArtifactPath(bad, donor)
	if !ok1 || !ok2 {
		t.Fatalf("updates %s and %s not both in the copied store", victim, donor)
	}
	b, err := os.ReadFile(dp)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(vp, b, 0o644); err != nil {
		t.Fatal(err)
	}
	opts.Artifacts = bad
	_, err = audit.Verify(ctx, e, opts)
	vs := submitted[fmt.Sprintf("%s/2/%s", n.JobName, committed[2].Contributors[0].Trainer)]
	if !errors.As(err, &mm) || !errors.Is(err, audit.ErrMismatch) {
		t.Fatalf("verify with a swapped update: %v, want a *Mismatch", err)
	}
	t.Logf("swapped update: %v", mm)
	if mm.Height != int64(vs.height) || mm.Tx != vs.index || mm.Field != "update_digest" || !strings.Contains(mm.Msg, fmt.Sprintf("round 2, update of trainer %s", vs.trainer)) || !strings.Contains(mm.Msg, victim) || !strings.Contains(mm.Msg, donor) {
		t.Errorf("verify with update %s swapped for %s: %v; want height %d tx[%d] update_digest naming both", victim, donor, mm, vs.height, vs.index)
	}

	// 3. The lineage as Graphviz DOT, drawn by dot when it is installed.
	var dot bytes.Buffer
	if err := audit.Render(&dot, audit.NewGraph(l, nil), "dot"); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{st.Model, committed[1].ModelDigest, n.BaseDigest} {
		if !strings.Contains(dot.String(), d) {
			t.Errorf("DOT does not name model %s", d)
		}
	}
	bin, err := exec.LookPath("dot")
	if err != nil {
		t.Log("dot (graphviz) is not installed; skipping the PNG rendering")
		return
	}
	dotFile, png := filepath.Join(work, "lineage.dot"), filepath.Join(work, "lineage.png")
	if err := os.WriteFile(dotFile, dot.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.CommandContext(ctx, bin, "-Tpng", "-o", png, dotFile).CombinedOutput(); err != nil {
		t.Fatalf("dot -Tpng: %v\n%s", err, out)
	}
	img, err := os.ReadFile(png)
	if err != nil || !bytes.HasPrefix(img, []byte("\x89PNG\r\n\x1a\n")) || len(img) < 1000 {
		t.Errorf("dot -Tpng wrote %d bytes (%v), want a PNG", len(img), err)
	}
	t.Logf("dot -Tpng: %d-byte PNG of %d DOT lines (total %s)", len(img), strings.Count(dot.String(), "\n"), time.Since(start).Round(time.Millisecond))
}

func abbrevID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
