package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestAggregatorStartErrors checks that aggregator start names what is
// wrong before it starts anything.
func TestAggregatorStartErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no config", []string{"aggregator", "start"}, "--config is required"},
		{"missing file", []string{"aggregator", "start", "--config", filepath.Join(dir, "none.yaml")}, "no such file"},
		{"unknown key", []string{"aggregator", "start", "--config", write("a.yaml", "listen: a:1\nkee: x\n")}, `:2: unknown key "kee"`},
		{"missing fields", []string{"aggregator", "start", "--config", write("b.yaml", "listen: a:1\n")}, "key: required; ledger: required; coordinator: required"},
		{"bad key file", []string{"aggregator", "start", "--insecure", "--config",
			write("c.yaml", "key: missing.key\nledger: 127.0.0.1:1\ncoordinator: 127.0.0.1:2\n")}, "key:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			err := RunWith(context.Background(), tc.args, &out, &errb)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
		})
	}
}
