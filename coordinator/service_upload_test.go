package coordinator

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fedtune/fedtune/ledger"
)

func TestDownloadAllowed(t *testing.T) {
	const me, other = "aaaa1111aaaa1111", "bbbb2222bbbb2222"
	update := &ledger.UpdateSubmission{JobID: "j", Round: 3, Trainer: me, Height: 9}
	member := func(r ledger.Role, active bool) *ledger.Member {
		return &ledger.Member{Role: r, Active: active}
	}
	for _, tc := range []struct {
		name   string
		peer   string
		m      *ledger.Member
		author *ledger.UpdateSubmission
		want   string // "" allowed
	}{
		{"stranger, model", other, nil, nil, "is not a ledger member"},
		{"stranger, update", other, nil, update, "is not a ledger member"},
		{"removed trainer, own update", me, member(ledger.RoleTrainer, false), update, "was removed from the ledger"},
		{"trainer, model", other, member(ledger.RoleTrainer, true), nil, ""},
		{"trainer, own update", me, member(ledger.RoleTrainer, true), update, ""},
		{"trainer, another's update", other, member(ledger.RoleTrainer, true), update, "it is the update of trainer aaaa1111aaaa1111 in job j round 3"},
		{"other coordinator, update", other, member(ledger.RoleCoordinator, true), update, "only that trainer, the aggregators job j designates, the verifiers its verify rule names, auditors and admins"},
		{"designated aggregator, update", other, member(ledger.RoleAggregator, true), update, ""},
		{"other aggregator, update", me + "x", member(ledger.RoleAggregator, true), update, "only that trainer, the aggregators job j designates"},
		{"named verifier, update", other, member(ledger.RoleVerifier, true), update, ""},
		{"other verifier, update", me + "x", member(ledger.RoleVerifier, true), update, "only that trainer"},
		{"auditor, update", other, member(ledger.RoleAuditor, true), update, ""},
		{"admin, update", other, member(ledger.RoleAdmin, true), update, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := DownloadAllowed(tc.peer, tc.m, "d1", tc.author, []string{other})
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "download d1") {
				t.Fatalf("error %v, want one naming the blob and %q", err, tc.want)
			}
		})
	}
}

// A job's eval.data is read only from the artifact store (by digest) or
// from inside the eval data root; anything else is refused naming the field.
func TestOpenEvalData(t *testing.T) {
	s, err := newTestService(t, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	if err := os.MkdirAll(filepath.Join(root, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(dir, "secret.txt")
	for p, data := range map[string]string{secret: "secret", filepath.Join(root, "sub", "eval.jsonl"): `{"text":"x"}`, filepath.Join(root, "eval.txt"): "plain",
		filepath.Join(root, "Eval.NDJSON"): `{"text":"z"}`} {
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(secret, filepath.Join(root, "link.txt")); err != nil {
		t.Fatal(err)
	}
	jsonBlob, _, err := s.cfg.Store.Put(context.Background(), strings.NewReader("  \n{\"text\":\"y\"}\n"))
	if err != nil {
		t.Fatal(err)
	}
	textBlob, _, err := s.cfg.Store.Put(context.Background(), strings.NewReader("plain text"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		root, data string
		jsonl      bool
		content    string
		want       string
	}{
		{root, "sub/eval.jsonl", true, `{"text":"x"}`, ""},
		{root, "eval.txt", false, "plain", ""},
		{root, "Eval.NDJSON", true, `{"text":"z"}`, ""}, // eval.IsDataset's rule, as fedtune eval reads it
		{"", jsonBlob, true, "  \n{\"text\":\"y\"}\n", ""},
		{root, textBlob, false, "plain text", ""},
		{root, strings.Repeat("ab", 32), false, "", "eval.data: blob abab"},
		{root, secret, false, "", "eval.data: " + `"` + secret + `" is an absolute path`},
		{root, "../secret.txt", false, "", `eval.data: "../secret.txt" leaves the coordinator's eval_data_root`},
		{root, "sub/../../secret.txt", false, "", "leaves the coordinator's eval_data_root"},
		{root, "link.txt", false, "", `eval.data: "link.txt" in the coordinator's eval_data_root`},
		{root, "missing.txt", false, "", `eval.data: "missing.txt" in the coordinator's eval_data_root`},
		{root, "sub", false, "", "is not a regular file"},
		{"", "eval.txt", false, "", "this coordinator has no eval_data_root"},
	} {
		t.Run(tc.data, func(t *testing.T) {
			s.cfg.EvalDataRoot = tc.root
			job := DefaultJob()
			job.Eval.Data = tc.data
			f, jsonl, err := s.openEvalData(job)
			if tc.want != "" {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("error %v, want %q", err, tc.want)
				}
				if s.checkEvalData(context.Background(), job) == nil {
					t.Fatal("checkEvalData let it through")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			got, _ := io.ReadAll(f)
			if jsonl != tc.jsonl || !bytes.Equal(got, []byte(tc.content)) {
				t.Fatalf("read %q (jsonl %v), want %q (jsonl %v)", got, jsonl, tc.content, tc.jsonl)
			}
		})
	}
}

// A trainer key holds at most MaxSessionsPerTrainer sessions; unused ones
// expire and stop counting.
func TestCapSessions(t *testing.T) {
	s, err := newTestService(t, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	add := func(id, trainer string, active bool, age time.Duration) {
		if s.sessions.sessions == nil {
			s.sessions.sessions = map[string]*session{}
		}
		s.sessions.sessions[id] = &session{id: id, trainer: trainer, active: active, created: now.Add(-age), done: make(chan struct{})}
	}
	add("s1", "t1", true, time.Hour) // its stream is open: never expires
	add("s2", "t1", false, time.Second)
	add("s3", "t2", false, time.Second)
	// t1 is at the cap: its unused s2 makes room for the new session.
	if err := s.sessions.capLocked("t1", now); err != nil {
		t.Fatalf("t1 replacing its unused session: %v", err)
	}
	if _, ok := s.sessions.sessions["s2"]; ok {
		t.Fatal("the unused session was kept past the cap")
	}
	if err := s.sessions.capLocked("t2", now); err != nil {
		t.Fatalf("second session of t2: %v", err)
	}
	// Two streaming sessions: a third is refused.
	add("s4", "t1", true, time.Second)
	if err := s.sessions.capLocked("t1", now); err == nil || !strings.Contains(err.Error(), "already streams tasks in 2 sessions") || !strings.Contains(err.Error(), "ResourceExhausted") {
		t.Fatalf("third session of t1: %v, want ResourceExhausted naming the cap", err)
	}
	// An unused session expires after its TTL.
	add("s5", "t2", false, sessionUnusedTTL+time.Second)
	if err := s.sessions.capLocked("t2", now); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.sessions.sessions["s5"]; ok {
		t.Fatal("the expired session was kept")
	}
	if _, ok := s.sessions.sessions["s1"]; !ok {
		t.Fatal("the streaming session was dropped")
	}
}

// Only the model that an update's own round committed (one contributor)
// makes the update a model every member may download.
func TestModelFreesUpdate(t *testing.T) {
	author := &ledger.UpdateSubmission{JobID: "j", Round: 3, Trainer: "t1", Height: 9}
	for _, tc := range []struct {
		name string
		m    *ledger.Model
		want bool
	}{
		{"committed by the update's round", &ledger.Model{JobID: "j", Round: 3, Registrar: "agg", Height: 12}, true},
		{"registered by a coordinator", &ledger.Model{Registrar: "rival", Height: 12}, false},
		{"committed by another round of the job", &ledger.Model{JobID: "j", Round: 4, Registrar: "agg", Height: 20}, false},
		{"committed by another job's round", &ledger.Model{JobID: "k", Round: 3, Registrar: "rogue", Height: 12}, false},
		{"no model record", nil, false},
	} {
		if got := ModelFreesUpdate(tc.m, author); got != tc.want {
			t.Errorf("%s: ModelFreesUpdate = %v, want %v", tc.name, got, tc.want)
		}
	}
	if ModelFreesUpdate(&ledger.Model{JobID: "j", Round: 3}, nil) {
		t.Error("a model frees no update when there is none")
	}
}

// eval.data naming a blob that the ledger knows as an update is refused,
// naming the field, even when the blob is in the store.
func TestEvalDataNotAnUpdate(t *testing.T) {
	s, err := newTestService(t, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	update, _, err := s.cfg.Store.Put(context.Background(), strings.NewReader("a trainer's update"))
	if err != nil {
		t.Fatal(err)
	}
	// The ledger's answer, as updateAuthor caches it (this service's
	// ledger client reaches no node).
	s.authors.m = map[string]ledger.UpdateSubmission{update: {JobID: "j", Round: 2, Trainer: "aaaa1111aaaa1111", Height: 7}}
	job := DefaultJob()
	job.Eval.Data = update
	err = s.checkEvalData(context.Background(), job)
	if err == nil || !strings.Contains(err.Error(), "eval.data: blob "+update+" is the update of trainer aaaa1111aaaa1111 in job j round 2") {
		t.Fatalf("checkEvalData: %v; want a refusal naming eval.data and the update", err)
	}
	if _, err := s.evaluate(context.Background(), evalTask{job: job}); err == nil || !strings.Contains(err.Error(), "eval.data: blob "+update+" is the update") {
		t.Fatalf("evaluate: %v; want the same refusal", err)
	}
}

// When the ledger cannot say whether eval.data is an update, the launch is
// refused as unavailable (try again), not as a bad job.
func TestEvalDataLedgerDown(t *testing.T) {
	n, err := newTestNet(t, t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	blob, _, err := n.store.Put(context.Background(), strings.NewReader("eval text"))
	if err != nil {
		t.Fatal(err)
	}
	job := DefaultJob()
	job.Eval.Data = blob
	n.ledger.down.Store(true)
	err = n.s.checkEvalData(context.Background(), job)
	if !errors.Is(err, errEvalDataUnchecked) || !strings.Contains(err.Error(), "eval.data: cannot check blob "+blob) {
		t.Fatalf("checkEvalData with no ledger: %v; want errEvalDataUnchecked naming eval.data", err)
	}
}

func TestPendingAllowed(t *testing.T) {
	const up, other = "aaaa1111aaaa1111", "bbbb2222bbbb2222"
	for _, tc := range []struct {
		name string
		peer string
		m    *ledger.Member
		want string // "" allowed
	}{
		{"stranger", other, nil, "is not a ledger member"},
		{"uploader", up, &ledger.Member{Role: ledger.RoleTrainer, Active: true}, ""},
		{"removed uploader", up, &ledger.Member{Role: ledger.RoleTrainer}, "was removed"},
		{"other trainer", other, &ledger.Member{Role: ledger.RoleTrainer, Active: true}, "the ledger does not record it yet"},
		{"aggregator", other, &ledger.Member{Role: ledger.RoleAggregator, Active: true}, "only its uploader, auditors and admins"},
		{"auditor", other, &ledger.Member{Role: ledger.RoleAuditor, Active: true}, ""},
		{"admin", other, &ledger.Member{Role: ledger.RoleAdmin, Active: true}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := PendingAllowed(tc.peer, tc.m, "d1", []string{up})
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "download d1") {
				t.Fatalf("error %v, want one naming the blob and %q", err, tc.want)
			}
		})
	}
}
