package coordinator

import (
	"context"
	"crypto/ed25519"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/ledger"
)

// TestJobStoreActive follows the active job's files through the states a
// coordinator leaves them in: none, saved, finished, saved again, and a
// job file that no longer parses.
func TestJobStoreActive(t *testing.T) {
	yaml := testJob("base")
	cases := []struct {
		name    string
		setup   func(t *testing.T, js *jobStore)
		want    string // the active job's name, "" for none
		wantErr string
	}{
		{name: "none", setup: func(*testing.T, *jobStore) {}},
		{name: "saved", setup: func(t *testing.T, js *jobStore) {
			if err := js.saveActive(yaml, "jobs/a.yaml"); err != nil {
				t.Fatal(err)
			}
		}, want: "twin-round"},
		{name: "done", setup: func(t *testing.T, js *jobStore) {
			if err := js.saveActive(yaml, "jobs/a.yaml"); err != nil {
				t.Fatal(err)
			}
			if err := js.markDone("model"); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "saved after done", setup: func(t *testing.T, js *jobStore) {
			if err := js.saveActive(yaml, "jobs/a.yaml"); err != nil {
				t.Fatal(err)
			}
			if err := js.markDone("model"); err != nil {
				t.Fatal(err)
			}
			if err := js.saveActive(yaml, "jobs/a.yaml"); err != nil {
				t.Fatal(err)
			}
		}, want: "twin-round"},
		{name: "unparsable", setup: func(t *testing.T, js *jobStore) {
			if err := js.saveActive([]byte("name: x\nrounds: [\n"), "jobs/bad.yaml"); err != nil {
				t.Fatal(err)
			}
		}, wantErr: "jobs/bad.yaml"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			js := &jobStore{dir: t.TempDir()}
			tc.setup(t, js)
			job, err := js.loadActive()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("loadActive: %v, want an error naming %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case tc.want == "" && job != nil:
				t.Fatalf("active job %s, want none", job.Name)
			case tc.want != "" && (job == nil || job.Name != tc.want || job.Source != "jobs/a.yaml"):
				t.Fatalf("active job %+v, want %s from jobs/a.yaml", job, tc.want)
			}
			if saved := tc.name != "none"; js.hasActive() != saved {
				t.Fatalf("hasActive %v, want %v", js.hasActive(), saved)
			}
		})
	}
}

// TestJobStorePrepare prepares a job on the twin ledger: the base model
// and the job are registered, the canonical config is in the store, and
// a second preparation (a restart) finds the same recipe. A store of
// another coordinator, or a job file whose recipe changed, is refused
// before anything is written.
func TestJobStorePrepare(t *testing.T) {
	ctx := context.Background()
	n, err := newTestNet(t, t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	baseDir, _, _, _ := evalFixture(t)
	js := n.s.jobs
	job, err := ParseJob("", testJob(baseDir))
	if err != nil {
		t.Fatal(err)
	}
	j, err := js.prepare(ctx, job, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.ledger.Model(ctx, j.base); err != nil {
		t.Errorf("base model %s not registered: %v", j.base, err)
	}
	rec, err := n.ledger.Job(ctx, job.Name)
	if err != nil {
		t.Fatalf("job not registered: %v", err)
	}
	if rec.Owner != n.s.ID() || rec.Recipe.BaseModel != j.base {
		t.Errorf("job record owner %s base %s, want %s and %s", rec.Owner, rec.Recipe.BaseModel, n.s.ID(), j.base)
	}
	if ok, _ := n.store.Has(job.Digest()); !ok {
		t.Errorf("canonical config %s not in the store", job.Digest())
	}
	if j.files.config == "" || j.m == nil || j.m.Round() != 1 {
		t.Errorf("prepared job: files %+v, round %d", j.files, j.m.Round())
	}
	if _, err := js.prepare(ctx, job, []ledger.Round{}); err != nil {
		t.Fatalf("prepare again (a restart): %v", err)
	}

	other, err := ledger.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	changed, err := ParseJob("", []byte(strings.Replace(string(testJob(baseDir)), "max: 2", "max: 3", 1)))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		js      *jobStore
		job     *Job
		wantErr string
	}{
		{"another coordinator", &jobStore{dir: t.TempDir(), store: n.store, ledger: n.ledger, key: other,
			id: ledger.KeyID(other.Public().(ed25519.PublicKey)), aggID: js.aggID, log: js.log},
			job, "owned by coordinator " + n.s.ID()},
		{"another recipe", js, changed, "another recipe"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := n.ledger.tw.FSM().Height()
			_, err := tc.js.prepare(ctx, tc.job, nil)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("prepare: %v, want an error with %q", err, tc.wantErr)
			}
			if after := n.ledger.tw.FSM().Height(); after != before {
				t.Errorf("ledger height %d → %d: a refused job wrote to the ledger", before, after)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(js.dir, activeJobFile)); err == nil {
		t.Error("prepare wrote the active job file; only saveActive does")
	}
}
