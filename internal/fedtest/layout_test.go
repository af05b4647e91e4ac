package fedtest

import (
	"go/build"
	"io/fs"
	"os"
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

// TestPackageDocs checks that every library package says what it owns.
func TestPackageDocs(t *testing.T) {
	for rel, p := range packages(t) {
		if p.Name == "main" && strings.HasPrefix(rel, "scripts") {
			continue
		}
		if strings.TrimSpace(p.Doc) == "" {
			t.Errorf("package %s (%s) has no package doc comment: add a doc.go", p.Name, rel)
		}
	}
}

// TestDependencyRules checks the layering DESIGN.md asks for.
func TestDependencyRules(t *testing.T) {
	rules := []struct {
		pkgPrefix string
		forbidden []string
		why       string
	}{
		{"kernels", []string{module}, "kernels imports nothing of ours"},
		{"ledger", []string{module + "model", module + "aggregator", module + "trainer", module + "coordinator", module + "kernels", module + "datasets", "gorgonia.org/"}, "ledger imports no training code"},
		{"aggregator", []string{module + "trainer", module + "coordinator", module + "ledger"}, "aggregator depends only downward"},
		{"aggregator/round", []string{module + "trainer", module + "coordinator", module + "aggregator/node", module + "model", module + "datasets"}, "the aggregator role's core lies below both roles that run it"},
		{"aggregator/node", []string{module + "trainer", module + "model", module + "datasets"}, "the aggregator node is a role: it imports no other role and no training code"},
		{"model", []string{module + "trainer", module + "coordinator", module + "aggregator", module + "ledger"}, "model depends only downward"},
		{"datasets", []string{module + "trainer", module + "coordinator", module + "aggregator", module + "ledger", module + "model"}, "datasets depends only downward"},
		{"artifact", []string{module + "ledger", module + "model", module + "aggregator", module + "trainer", module + "coordinator", module + "datasets", module + "kernels"}, "artifact stores bytes, knowing nothing of what they mean"},
		{"coordinator", []string{module + "trainer"}, "the coordinator talks to trainers over the network only"},
		{"", []string{"gorgonia.org/cu"}, "the default build must not import gorgonia.org/cu: its init exits without a GPU"},
	}
	// except names the subpackages that a prefix rule leaves to rules of
	// their own.
	except := map[string][]string{"aggregator": {"aggregator/round", "aggregator/node"}}
	for rel, p := range packages(t) {
		for _, r := range rules {
			if !strings.HasPrefix(rel, r.pkgPrefix) || slices.Contains(except[r.pkgPrefix], rel) {
				continue
			}
			for _, imp := range p.Imports {
				for _, f := range r.forbidden {
					if strings.HasPrefix(imp, f) {
						t.Errorf("%s imports %s: %s", rel, imp, r.why)
					}
				}
			}
		}
	}
}
