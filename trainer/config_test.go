package trainer

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

const goodConfig = `name: t1
key_file: keys/t1.key
coordinator: 127.0.0.1:7400
coordinator_id: 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
ledger: 127.0.0.1:7101
data: data/shard.jsonl
`

func TestParseConfig(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, wantErr string
	}{
		{"good", goodConfig, ""},
		{"insecure without id", "key_file: k\ncoordinator: a:1\nledger: b:2\ndata: d\ninsecure: true\n", ""},
		{"unknown key", goodConfig + "colour: blue\n", `:7: unknown key "colour"`},
		{"missing fields", "name: x\n", "key_file: required; coordinator: required; ledger: required; coordinator_id: required"},
		{"tls needs id", "key_file: k\ncoordinator: a:1\nledger: b:2\ndata: d\n", "coordinator_id: required unless insecure"},
		{"bad id", strings.Replace(goodConfig, "0123456789abcdef0123", "XYZ", 1), "is not a key ID"},
		{"bad licence", goodConfig + "licence: not a licence\n", "licence:"},
		{"wrong type", goodConfig + "insecure: maybe\n", ":7: "},
		{"ledger pinned", goodConfig + "ledger_genesis: genesis.yaml\nledger_node_ids: ['" + strings.Repeat("ab", 32) + "']\n", ""},
		{"ledger node IDs without genesis", goodConfig + "ledger_node_ids: ['" + strings.Repeat("ab", 32) + "']\n", "ledger_node_ids: needs ledger_genesis"},
		{"audit window", goodConfig + "audit_window_rounds: 10\n", ""},
		{"audit window negative", goodConfig + "audit_window_rounds: -1\n", "audit_window_rounds: -1, want 0 (the default, 4) to 65536"},
		{"audit window absurd", goodConfig + "audit_window_rounds: 100000\n", "audit_window_rounds: 100000"},
		{"checkpoint every", goodConfig + "checkpoint_every: 8\n", ""},
		{"checkpoint every negative", goodConfig + "checkpoint_every: -2\n", "checkpoint_every: -2, want 0 (every step) to 1048576"},
		{"ledger node ID bad", goodConfig + "ledger_genesis: g.yaml\nledger_node_ids: [NODE]\n", `ledger_node_ids: "NODE" is not a key ID`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseConfig("trainer.yaml", []byte(tc.yaml))
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if c.Licence != "CC0-1.0" || c.WorkDir != "work" {
					t.Errorf("defaults not filled: %+v", c)
				}
				want := c.AuditWindowRounds
				if want == 0 {
					want = DefaultAuditWindowRounds
				}
				if keep := c.Checkpoints().Keep; keep != want {
					t.Errorf("checkpoints keep %d rounds for audit_window_rounds %d", keep, c.AuditWindowRounds)
				}
				if every := c.Checkpoints().Every; every != c.CheckpointEvery {
					t.Errorf("checkpoints every %d steps for checkpoint_every %d", every, c.CheckpointEvery)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, ErrConfig) {
				t.Fatalf("error %v, want one wrapping ErrConfig containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestLoadConfigResolvesPaths(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "trainer.yaml")
	if err := os.WriteFile(p, []byte(goodConfig+"ledger_genesis: genesis.yaml\nledger_node_ids: ['"+strings.Repeat("ab", 32)+"']\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := LoadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	for field, got := range map[string]string{"key_file": c.KeyFile, "data": c.Data, "work_dir": c.WorkDir, "ledger_genesis": c.LedgerGenesis} {
		if !strings.HasPrefix(got, dir) {
			t.Errorf("%s = %s, want it under %s", field, got, dir)
		}
	}
	// Encode and parse again: the same config.
	b, err := c.Encode()
	if err != nil {
		t.Fatal(err)
	}
	c2, err := ParseConfig("again", b)
	if err != nil || !reflect.DeepEqual(c2, c) {
		t.Errorf("round trip: %+v, %v; want %+v", c2, err, c)
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(goodConfig))
	f.Add([]byte("insecure: true\n"))
	f.Add([]byte("{"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig("fuzz.yaml", data)
		if err != nil {
			if !errors.Is(err, ErrConfig) {
				t.Fatalf("error %v does not wrap ErrConfig", err)
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("parsed config does not validate: %v", err)
		}
	})
}
