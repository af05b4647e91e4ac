package fedtest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"go/build"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/fedtune/fedtune/"

// repoRoot returns the repository root (two levels above this package).
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// packages returns every package directory of the module (relative paths)
// with its default-build imports, skipping testdata and separate modules.
func packages(t *testing.T) map[string]*build.Package {
	t.Helper()
	root := repoRoot(t)
	pkgs := map[string]*build.Package{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil
		}
		name := d.Name()
		if path != root && (name == "testdata" || strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") || name == "bin") {
			return filepath.SkipDir
		}
		if path != root {
			if _, err := os.Stat(filepath.Join(path, "go.mod")); err == nil {
				return filepath.SkipDir // a separate module
			}
		}
		p, err := build.ImportDir(path, 0)
		if err != nil {
			if _, ok := err.(*build.NoGoError); ok {
				return nil
			}
			t.Errorf("%s: %v", path, err)
			return nil
		}
		rel, _ := filepath.Rel(root, path)
		pkgs[filepath.ToSlash(rel)] = p
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return pkgs
}

// TestLayoutPackageDocs checks that every library package says what it owns.
func TestLayoutPackageDocs(t *testing.T) {
	for rel, p := range packages(t) {
		if p.Name == "main" && strings.HasPrefix(rel, "scripts") {
			continue
		}
		if strings.TrimSpace(p.Doc) == "" {
			t.Errorf("package %s (%s) has no package doc comment: add a doc.go", p.Name, rel)
		}
	}
}

// goPackage is what TestLayoutDependencyRules reads of "go list -json".
type goPackage struct {
	ImportPath string
	Imports    []string // the packages it imports directly
	Deps       []string // every package it imports, directly or not (default build)
	Module     *struct{ Path string }
	Dir        string
}

// importGraph is the default build's import graph of the module's
// packages and their dependencies: packages of the module by their path
// relative to it, others by import path.
type importGraph struct {
	imports, deps map[string][]string
	mod           map[string]bool // the module's packages
}

// ours reports whether p is a package of the module.
func (g *importGraph) ours(p string) bool { return g.mod[p] }

// via returns the direct import of p through which p depends on dep.
func (g *importGraph) via(p, dep string) string {
	for _, d := range g.imports[p] {
		if d == dep || slices.Contains(g.deps[d], dep) {
			return d
		}
	}
	return "?"
}

// moduleDeps runs "go list -deps -json ./..." at the repository root and
// returns the import graph of the module's packages in the default build.
func moduleDeps(t *testing.T) *importGraph {
	t.Helper()
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Skip("the go command is not on PATH: TestLayoutDependencyRules reads the import graph with go list -deps")
	}
	cmd := exec.Command(goCmd, "list", "-deps", "-json", "./...")
	cmd.Dir = repoRoot(t)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps -json ./...: %v\n%s", err, stderr.Bytes())
	}
	mod := strings.TrimSuffix(module, "/")
	rel := func(path string) string {
		if r, ok := strings.CutPrefix(path, module); ok {
			return r
		}
		return path
	}
	g := &importGraph{imports: map[string][]string{}, deps: map[string][]string{}, mod: map[string]bool{}}
	relAll := func(ps []string) []string {
		out := make([]string, len(ps))
		for i, p := range ps {
			out[i] = rel(p)
		}
		return out
	}
	for dec := json.NewDecoder(bytes.NewReader(out)); ; {
		var p goPackage
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("go list output: %v", err)
		}
		r := rel(p.ImportPath)
		g.imports[r], g.deps[r] = relAll(p.Imports), relAll(p.Deps)
		if p.Module != nil && p.Module.Path == mod {
			g.mod[r] = true
			// Read the package's folder, so that go test's cache reruns
			// this test when a source file there is added or changes.
			_, _ = os.ReadDir(p.Dir)
		}
	}
	if len(g.mod) == 0 {
		t.Fatal("go list found no package of the module")
	}
	return g
}

// under reports whether package rel is dir or inside it.
func under(rel, dir string) bool { return rel == dir || strings.HasPrefix(rel, dir+"/") }

// leaves are the helper packages that import nothing of ours but each
// other.
var leaves = []string{
	"internal/atomicfile", "internal/clock", "internal/digest", "internal/dsse", "internal/fedtest",
	"internal/freeport", "internal/safetext", "internal/spdx", "internal/dspub", "internal/strictjson", "internal/strictyaml", "internal/tlsid",
}

// programs wire every package together and may import anything.
var programs = []string{"cmd", "scripts", "internal/cli", "internal/devnet", "internal/audit", "internal/adversarial", "internal/spotcheck"}

// roleOf names the role a package belongs to ("" for none). A role is a
// process of the network; each talks to the others over gRPC only.
func roleOf(rel string) string {
	switch {
	case under(rel, "coordinator"):
		return "coordinator"
	case under(rel, "trainer"):
		return "trainer"
	case under(rel, "ledger/node"):
		return "ledger node"
	case under(rel, "aggregator/node"):
		return "aggregator node"
	case under(rel, "verifier"):
		return "verifier" // replays drawn updates through a Replayer its program gives it
	case under(rel, "inference") && !under(rel, "inference/receipt"):
		return "inference" // its receipt format is a pure format any package may read
	}
	return ""
}

func inAny(rel string, dirs []string) bool {
	for _, d := range dirs {
		if under(rel, d) {
			return true
		}
	}
	return false
}

func pebbleOrRaft(dep string) bool {
	return under(dep, "github.com/cockroachdb/pebble") || strings.HasPrefix(dep, "github.com/hashicorp/raft")
}

// layer is the rule of one kind of package: why, and what it may not
// import (transitively); forbids returns true for a forbidden dependency.
type layer struct {
	name    string
	why     string
	forbids func(dep string) bool
}

// layerOf returns the rule package rel must follow; ok is false for a
// package that no rule covers, which fails the test: every package of the
// module has its place.
func layerOf(rel string, ours func(dep string) bool) (l layer, ok bool) {
	// trainingCode: models, kernels, aggregation, the trainer, the
	// coordinator, datasets, Gorgonia or gonum.
	trainingCode := func(dep string) bool {
		return ours(dep) && inAny(dep, []string{"model", "kernels", "aggregator", "trainer", "coordinator", "datasets"}) ||
			strings.HasPrefix(dep, "gorgonia.org/") || strings.HasPrefix(dep, "gonum.org/")
	}
	noneOf := func(dirs ...string) func(string) bool {
		return func(dep string) bool { return ours(dep) && inAny(dep, dirs) }
	}
	library := func(dep string) bool { return ours(dep) && (inAny(dep, programs) || roleOf(dep) != "") }
	switch {
	case inAny(rel, programs):
		return layer{"program", "programs may import anything", func(string) bool { return false }}, true
	case inAny(rel, leaves):
		return layer{"leaf", "leaf helpers import nothing of ours but each other", func(dep string) bool {
			return ours(dep) && !inAny(dep, leaves)
		}}, true
	case under(rel, "kernels"):
		return layer{"kernels", "kernels imports nothing of ours", func(dep string) bool {
			return ours(dep) && !under(dep, "kernels")
		}}, true
	case under(rel, "api"):
		return layer{"api", "generated gRPC code imports nothing of ours but other API packages", func(dep string) bool {
			return ours(dep) && !under(dep, "api")
		}}, true
	case rel == "ledger/client":
		return layer{"ledger client", "the ledger client links no training code, no pebble or raft, and no server, state machine or store", func(dep string) bool {
			return trainingCode(dep) || pebbleOrRaft(dep) || library(dep) ||
				ours(dep) && inAny(dep, []string{"ledger/node", "ledger/fsm", "ledger/pebblestore", "ledger/ledgertest"})
		}}, true
	case rel == "ledger" || under(rel, "ledger/internal"):
		return layer{"ledger", "ledger holds the pure formats: no training code, no pebble or raft, no ledger package above it", func(dep string) bool {
			return trainingCode(dep) || pebbleOrRaft(dep) || library(dep) ||
				ours(dep) && under(dep, "ledger") && dep != "ledger" && !under(dep, "ledger/internal")
		}}, true
	case rel == "inference/receipt":
		return layer{"receipt format", "a receipt is a pure format beside the ledger's: no training code, no pebble or raft, no role or program", func(dep string) bool {
			return trainingCode(dep) || pebbleOrRaft(dep) || library(dep)
		}}, true
	case roleOf(rel) != "":
		role := roleOf(rel)
		why := "no role imports another role's package or a program"
		switch role {
		case "trainer":
			why += ", and the trainer links no pebble or raft"
		case "ledger node":
			why += ", and the ledger node links no training code"
		case "aggregator node":
			why += ", and the aggregator node links no Gorgonia and no tokenizer"
		case "verifier":
			why += ", and the verifier links no training code, pebble or raft (its program gives it the replay)"
		}
		return layer{role, why, func(dep string) bool {
			if ours(dep) && (inAny(dep, programs) || roleOf(dep) != "" && roleOf(dep) != role) {
				return true
			}
			switch role {
			case "trainer":
				return pebbleOrRaft(dep)
			case "ledger node":
				return trainingCode(dep)
			case "aggregator node":
				return strings.HasPrefix(dep, "gorgonia.org/") || ours(dep) && under(dep, "model/tokenizer")
			case "verifier":
				return trainingCode(dep) || pebbleOrRaft(dep)
			}
			return false
		}}, true
	case under(rel, "ledger"):
		return layer{"ledger state", "the ledger's state machine and stores import no training code and no role", func(dep string) bool {
			return trainingCode(dep) || library(dep) || ours(dep) && under(dep, "ledger/client")
		}}, true
	case rel == "aggregator/round":
		return layer{"aggregator round", "the aggregator role's core lies below the two roles that run it (the coordinator, the aggregator node): no role, no ledger server or store, no Gorgonia or tokenizer", func(dep string) bool {
			return library(dep) || pebbleOrRaft(dep) || strings.HasPrefix(dep, "gorgonia.org/") ||
				noneOf("trainer", "datasets", "model/tokenizer", "ledger/fsm", "ledger/pebblestore")(dep)
		}}, true
	case under(rel, "aggregator"):
		return layer{"aggregator strategies", "the strategies depend only downward", func(dep string) bool {
			return library(dep) || noneOf("trainer", "coordinator", "ledger", "datasets")(dep)
		}}, true
	case under(rel, "model/gorgoniaref"):
		return layer{"model", "model depends only downward", func(dep string) bool {
			return library(dep) || noneOf("trainer", "coordinator", "aggregator", "ledger", "datasets")(dep)
		}}, true
	case under(rel, "model"):
		return layer{"model", "model depends only downward, and only model/gorgoniaref links Gorgonia", func(dep string) bool {
			return library(dep) || noneOf("trainer", "coordinator", "aggregator", "ledger", "datasets", "model/gorgoniaref")(dep) ||
				strings.HasPrefix(dep, "gorgonia.org/gorgonia")
		}}, true
	case under(rel, "datasets/scan"):
		return layer{"datasets scan", "the personal-data scanner reads bytes: nothing of ours but leaf helpers", func(dep string) bool {
			return ours(dep) && !inAny(dep, leaves)
		}}, true
	case under(rel, "datasets"):
		return layer{"datasets", "datasets depends only downward", func(dep string) bool {
			return library(dep) || noneOf("trainer", "coordinator", "aggregator", "ledger", "model", "kernels")(dep)
		}}, true
	case under(rel, "eval"):
		return layer{"eval", "eval scores a model on a data file: model and datasets, no role, ledger or aggregation", func(dep string) bool {
			return library(dep) || noneOf("trainer", "coordinator", "aggregator", "ledger", "artifact")(dep)
		}}, true
	case under(rel, "artifact"):
		return layer{"artifact", "artifact stores bytes, knowing nothing of what they mean", func(dep string) bool {
			return library(dep) || noneOf("ledger", "model", "aggregator", "trainer", "coordinator", "datasets", "kernels")(dep)
		}}, true
	}
	return layer{}, false
}

// pending are known breaches of the rules that a change in flight removes
// (package -> dependency -> why it is still there). An entry that no
// longer matches fails the test: delete it.
var pending = map[string]map[string]string{}

// TestLayoutDependencyRules checks the layering DESIGN.md asks for on the
// transitive imports of every package of the module (go list -deps), with
// a rule for each: a package no rule covers fails.
func TestLayoutDependencyRules(t *testing.T) {
	used := map[string]bool{}
	g := moduleDeps(t)
	var rels []string
	for rel := range g.mod {
		rels = append(rels, rel)
	}
	slices.Sort(rels)
	for _, rel := range rels {
		l, ok := layerOf(rel, g.ours)
		if !ok {
			t.Errorf("package %s has no layering rule: give it one in layerOf", rel)
			continue
		}
		var bad []string
		for _, dep := range g.deps[rel] {
			if strings.HasPrefix(dep, "gorgonia.org/cu") {
				t.Errorf("%s imports %s (via %s): the default build must not import gorgonia.org/cu (its init exits without a GPU)", rel, dep, g.via(rel, dep))
			}
			if !l.forbids(dep) {
				continue
			}
			if why, ok := pending[rel][dep]; ok {
				used[rel+" "+dep] = true
				t.Logf("%s imports %s (pending: %s)", rel, dep, why)
				continue
			}
			bad = append(bad, dep)
		}
		if len(bad) > 0 {
			// Name our packages first: they are the imports to undo.
			slices.SortStableFunc(bad, func(a, b string) int {
				switch {
				case g.ours(a) && !g.ours(b):
					return -1
				case g.ours(b) && !g.ours(a):
					return 1
				}
				return 0
			})
			more := ""
			if len(bad) > 1 {
				more = fmt.Sprintf(" and %d more (%s)", len(bad)-1, strings.Join(bad[1:min(len(bad), 4)], ", "))
			}
			t.Errorf("%s (%s) imports %s via %s%s: %s", rel, l.name, bad[0], g.via(rel, bad[0]), more, l.why)
		}
	}
	for rel, m := range pending {
		for dep := range m {
			if !used[rel+" "+dep] {
				t.Errorf("pending exception %s -> %s no longer applies: delete it", rel, dep)
			}
		}
	}
}

// TestLayoutLayerOf pins the classification the rules rest on.
func TestLayoutLayerOf(t *testing.T) {
	for rel, want := range map[string]string{
		"kernels/cuda": "kernels", "ledger": "ledger", "ledger/internal/codec": "ledger", "ledger/client": "ledger client",
		"ledger/fsm": "ledger state", "ledger/node": "ledger node", "coordinator": "coordinator", "trainer": "trainer",
		"aggregator": "aggregator strategies", "aggregator/node": "aggregator node", "aggregator/round": "aggregator round",
		"internal/tlsid": "leaf", "internal/cli": "program", "cmd/fedtune": "program", "scripts/aggbench": "program",
		"model/engine": "model", "model/commitment": "model", "api/ledger/v1": "api", "inference": "inference",
	} {
		if l, ok := layerOf(rel, func(string) bool { return true }); !ok || l.name != want {
			t.Errorf("layerOf(%s) = %q, %v; want %q", rel, l.name, ok, want)
		}
	}
	if _, ok := layerOf("newpkg", func(string) bool { return true }); ok {
		t.Error("a package outside every rule has a rule")
	}
}
