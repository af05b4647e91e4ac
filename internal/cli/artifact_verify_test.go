package cli

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/artifact"
)

// TestArtifactVerifyNeedsDir: artifact verify without --dir, or with one
// that is not a folder, refuses instead of making a store there.
func TestArtifactVerifyNeedsDir(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	for _, args := range [][]string{{"artifact", "verify"}, {"artifact", "verify", "--dir", "missing"}} {
		var out, errb bytes.Buffer
		if err := RunWith(context.Background(), args, &out, &errb); err == nil || !strings.Contains(err.Error(), "dir") {
			t.Errorf("%v: %v, want a refusal naming --dir", args, err)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("artifact verify made %d entries in the working folder", len(ents))
	}
}

// TestArtifactVerifyLockedStore: a store its server holds is refused with
// what to do instead.
func TestArtifactVerifyLockedStore(t *testing.T) {
	dir := t.TempDir()
	st, err := artifact.OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var out, errb bytes.Buffer
	err = RunWith(context.Background(), []string{"artifact", "verify", "--dir", dir}, &out, &errb)
	if err == nil || !strings.Contains(err.Error(), "stop it first") || !strings.Contains(err.Error(), "audit verify --artifacts") {
		t.Fatalf("artifact verify of a held store: %v", err)
	}
}
