package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/internal/audit"
	"github.com/fedtune/fedtune/internal/audit/provenancetest"
)

// checkProvenanceCommands runs `audit provenance` for model on the chain
// of TestDatasetAndAuditCommands: from the export and from the node, each
// format, the same bytes both ways, each valid against its schema; and the
// errors of bad flags, with no file written.
func checkProvenanceCommands(t *testing.T, dir, model, addr, genesis, export, key string) {
	t.Helper()
	for _, format := range audit.ProvenanceFormats {
		file := filepath.Join(dir, "provenance."+format+".json")
		mustRun(t, "audit", "provenance", model, "--format", format, "--export", export, "--key", key, "-o", file)
		fromExport, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		fromNode := mustRun(t, "audit", "provenance", model, "--format", format, "--ledger", addr, "--genesis", genesis, "--key", key)
		if fromNode != string(fromExport) {
			t.Errorf("%s: the node's provenance differs from the export's:\n%s\n---\n%s", format, fromNode, fromExport)
		}
		if err := provenancetest.Validate(format, fromExport); err != nil {
			t.Errorf("%s: %v", format, err)
		}
	}
	out := filepath.Join(dir, "never.json")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--export", export}, `--format ""`},
		{[]string{"--export", export, "--format", "slsa"}, `--format "slsa"`},
		{[]string{"--export", export, "--format", "in-toto"}, "--key"},
		{[]string{"--export", export, "--ledger", addr, "--format", "spdx"}, "exactly one of --ledger"},
		{[]string{"--export", export, "--format", "spdx", "--quorum", "2"}, "--quorum reads from a node"},
		{[]string{"--export", export, "--format", "in-toto", "--key", filepath.Join(dir, "nokey.key")}, "--key"},
	} {
		args := append([]string{"audit", "provenance", model, "-o", out}, tc.args...)
		if _, err := run(t, args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err = %v, want one saying %q", tc.args, err, tc.want)
		}
	}
	if _, err := run(t, "audit", "provenance", strings.Repeat("0", 64), "--format", "spdx", "--export", export, "-o", out); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("provenance of an unknown model: %v", err)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("a failed provenance command left %s: %v", out, err)
	}
}
