package spotcheck

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/fedtune/fedtune/artifact"
	"github.com/fedtune/fedtune/coordinator"
	"github.com/fedtune/fedtune/internal/digest"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/modeltest"
	"github.com/fedtune/fedtune/model/safetensors"
)

// The fetch from the artifact store runs end to end in internal/devnet's
// TestNetworkSpotCheck (the verifier there has no model folder); here,
// the --model override is held to the ledger's digest.
func TestFolderOverride(t *testing.T) {
	m, err := model.New(modeltest.TinyConfig(), 1)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if _, err := m.Save(dir, safetensors.F32); err != nil {
		t.Fatal(err)
	}
	d, err := m.Digest()
	if err != nil {
		t.Fatal(err)
	}
	other := strings.Repeat("ab", 32)
	var s FoundationSource // no ledger: an override never reaches it
	for _, tc := range []struct {
		name, base, override, want string
	}{
		{"matching override", d, dir, ""},
		{"other weights", other, dir, `but job "j"'s recipe records base model ` + other},
		{"no recorded base, no override", "", "", "records no base_model digest; give the verifier --model"},
		{"no recorded base, override", "", dir, ""},
		{"override not a model", d, t.TempDir(), "--model"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			job := &ledger.JobRecord{JobID: "j", Recipe: ledger.RoundRecipe{BaseModel: tc.base}}
			got, err := s.Folder(context.Background(), job, tc.override)
			if tc.want == "" {
				if err != nil || got != tc.override {
					t.Fatalf("got %q, %v; want %q", got, err, tc.override)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// Several fetchers (verifiers, or one restarted) share one cache folder
// and lay out the same foundation model at once: each gets a whole
// folder, checked by digest, and nothing of their temporary folders is
// left. Each fetcher has its own artifact store already holding the
// pre-training job's init config, so the race is on the cache alone.
func TestFolderConcurrentFetchers(t *testing.T) {
	tiny := modeltest.TinyConfig()
	raw, err := tiny.EncodeJSON()
	if err != nil {
		t.Fatal(err)
	}
	cd := digest.Bytes(raw)
	m, err := coordinator.InitialModelFrom(raw, cd, 7)
	if err != nil {
		t.Fatal(err)
	}
	want, err := m.Digest()
	if err != nil {
		t.Fatal(err)
	}
	job := &ledger.JobRecord{JobID: "pre", Recipe: ledger.RoundRecipe{Mode: ledger.RecipePretrain, BaseModel: want, InitConfig: cd, InitSeed: 7}}
	cache := t.TempDir()
	for attempt := range 3 {
		if attempt == 2 {
			// A folder left behind that is not the model (a crash, or
			// tampering): the fetchers replace it.
			dir := filepath.Join(cache, "model-"+want)
			if err := os.RemoveAll(dir); err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, model.WeightsFile), []byte("not weights"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		const n = 8
		srcs := make([]*FoundationSource, n)
		for i := range srcs {
			st, err := artifact.OpenStore(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := st.Put(context.Background(), bytes.NewReader(raw)); err != nil {
				t.Fatal(err)
			}
			// No connection: the store holds the one blob it needs.
			srcs[i] = &FoundationSource{Artifacts: artifact.NewClient(nil), Store: st, CacheDir: cache}
		}
		dirs, errs := make([]string, n), make([]error, n)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i, s := range srcs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				dirs[i], errs[i] = s.Folder(context.Background(), job, "")
			}()
		}
		close(start)
		wg.Wait()
		for i := range n {
			if errs[i] != nil {
				t.Fatalf("attempt %d, fetcher %d: %v", attempt, i, errs[i])
			}
			if got, err := model.DigestPath(dirs[i]); err != nil || got != want {
				t.Fatalf("attempt %d, fetcher %d: folder %s holds %s (%v), want %s", attempt, i, dirs[i], got, err, want)
			}
		}
		ents, err := os.ReadDir(cache)
		if err != nil {
			t.Fatal(err)
		}
		if len(ents) != 1 || ents[0].Name() != "model-"+want {
			var names []string
			for _, e := range ents {
				names = append(names, e.Name())
			}
			t.Fatalf("attempt %d: cache holds %v, want only model-%s", attempt, names, want)
		}
	}
}

func TestInstall(t *testing.T) {
	write := func(t *testing.T, dir string, files map[string]string) {
		t.Helper()
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, body := range files {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	files := map[string]string{"config.json": "{}", "model.safetensors": "weights"}
	for _, tc := range []struct {
		name     string
		existing map[string]string // nil: no dir
	}{
		{"no dir", nil},
		{"identical dir", files},
		{"dir with other weights", map[string]string{"config.json": "{}", "model.safetensors": "forged"}},
		{"dir with a file missing", map[string]string{"config.json": "{}"}},
		{"dir with an extra file", map[string]string{"config.json": "{}", "model.safetensors": "weights", "x": ""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			tmp, dir := filepath.Join(root, "fetch-1"), filepath.Join(root, "model-x")
			write(t, tmp, files)
			if tc.existing != nil {
				write(t, dir, tc.existing)
			}
			if err := install(tmp, dir); err != nil {
				t.Fatal(err)
			}
			same, why, err := sameFiles(dir, dir)
			if err != nil || !same {
				t.Fatalf("%v %s", err, why)
			}
			for name, body := range files {
				if b, err := os.ReadFile(filepath.Join(dir, name)); err != nil || string(b) != body {
					t.Fatalf("%s: %q, %v; want %q", name, b, err, body)
				}
			}
			if ents, _ := os.ReadDir(dir); len(ents) != len(files) {
				t.Fatalf("dir holds %d files, want %d", len(ents), len(files))
			}
			if ents, _ := os.ReadDir(root); len(ents) != 1 {
				t.Fatalf("left behind: %v", ents)
			}
		})
	}
}
