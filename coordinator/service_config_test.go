package coordinator

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
)

func TestParseServerConfig(t *testing.T) {
	const good = "listen: 127.0.0.1:0\ncoordinator_key: c.key\naggregator_key: a.key\nledger: 127.0.0.1:7101\n"
	// remote has no aggregator_key: a remote aggregator signs its txs.
	const remote = "listen: 127.0.0.1:0\nledger: 127.0.0.1:7101\n"
	for _, tc := range []struct{ name, yaml, wantErr string }{
		{"good", good, ""},
		{"unknown key", good + "colour: red\n", `:5: unknown key "colour"`},
		{"missing", "listen: ''\n", "listen: required; coordinator_key: required; aggregator_key: required; ledger: required"},
		{"tick", good + "tick: 1h\n", "tick: 1h0m0s is not between 10ms and 1m"},
		{"bad duration", good + "tick: soon\n", ":5: "},
		{"remote aggregator", remote + "coordinator_key: c.key\naggregator:\n  address: 127.0.0.1:7500\n  id: " + strings.Repeat("ab", 32) + "\n", ""},
		{"remote aggregator missing", remote + "aggregator: {}\n", "coordinator_key: required; aggregator.address: required; aggregator.id: required"},
		{"remote aggregator bad id", remote + "aggregator: {address: 'h:1', id: ABC}\n", `aggregator.id: "ABC" is not a ledger key ID`},
		{"remote aggregator unknown key", remote + "aggregator: {address: 'h:1', key: x}\n", `:3: unknown key "key"`},
		{"artifact limits", good + "eval_data_root: data\nartifacts:\n  max_blob_size: 1000\n  member_quota: 5000\n  member_in_flight: 2000\n  idle_timeout: 2s\n  prune_after: 1h\n", ""},
		{"artifact limits bad", good + "artifacts: {max_blob_size: -5, member_quota: -1, idle_timeout: 1ms, prune_after: 1000h}\n",
			"artifacts.max_blob_size: -5 is not a positive number of bytes; artifacts.member_quota: -1 is not a positive number of bytes; artifacts.idle_timeout: 1ms is not between 100ms and 1h; artifacts.prune_after: 1000h0m0s is not between 1s and 720h"},
		{"artifact limits zero take defaults", good + "artifacts: {max_blob_size: 0, idle_timeout: 0s}\n", ""},
		{"in flight below max blob", good + "artifacts: {max_blob_size: 1000, member_in_flight: 999}\n", "artifacts.member_in_flight: 999 is less than artifacts.max_blob_size 1000"},
		{"artifact limits unknown key", good + "artifacts: {max_size: 1}\n", `:5: unknown key "max_size"`},
		{"ledger pinned", good + "ledger_genesis: genesis.yaml\nledger_node_ids: ['" + strings.Repeat("ab", 32) + "']\n", ""},
		{"ledger node IDs without genesis", good + "ledger_node_ids: ['" + strings.Repeat("ab", 32) + "']\n", "ledger_node_ids: needs ledger_genesis"},
		{"metrics address", good + "metrics_address: 127.0.0.1:0\n", ""},
		{"metrics address bad", good + "metrics_address: localhost\n", `metrics_address: "localhost" is not host:port`},
		{"ledger node ID bad", good + "ledger_genesis: g.yaml\nledger_node_ids: [NODE]\n", `ledger_node_ids: "NODE" is not a ledger key ID`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseServerConfig("coordinator.yaml", []byte(tc.yaml))
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if c.DataDir != "coordinator" || c.Tick.Seconds() != 1 || c.Artifacts.IdleTimeout <= 0 || c.Artifacts.MaxBlobSize <= 0 {
					t.Errorf("defaults not filled: %+v", c)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, ErrServerConfig) {
				t.Fatalf("error %v, want ErrServerConfig containing %q", err, tc.wantErr)
			}
		})
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(p, []byte(good+"job: jobs/x.yaml\neval_data_root: data\nledger_genesis: genesis.yaml\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := LoadServerConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, got := range []string{c.CoordinatorKey, c.AggregatorKey, c.DataDir, c.Job, c.EvalDataRoot, c.LedgerGenesis} {
		if !strings.HasPrefix(got, dir) {
			t.Errorf("path %s not resolved against %s", got, dir)
		}
	}
}

// The shipped example config loads, with its limits as written.
func TestExampleCoordinatorConfig(t *testing.T) {
	c, err := LoadServerConfig("../configs/coordinator.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Artifacts != DefaultArtifactLimits() {
		t.Errorf("example limits %+v differ from the defaults %+v it documents", c.Artifacts, DefaultArtifactLimits())
	}
	if !strings.HasSuffix(c.LedgerGenesis, filepath.Join("configs", "genesis.yaml")) {
		t.Errorf("ledger_genesis %s", c.LedgerGenesis)
	}
	if !strings.HasSuffix(c.EvalDataRoot, filepath.Join("datasets", "testdata")) {
		t.Errorf("eval_data_root %s", c.EvalDataRoot)
	}
}

func FuzzParseServerConfig(f *testing.F) {
	f.Add([]byte("listen: 127.0.0.1:0\ncoordinator_key: c\naggregator_key: a\nledger: l:1\n"))
	f.Add([]byte("tick: 5ms\n"))
	f.Add([]byte("listen: a:1\ncoordinator_key: c\naggregator_key: a\nledger: l:1\nartifacts: {max_blob_size: 10, member_in_flight: 9}\n"))
	f.Add([]byte("listen: a:1\ncoordinator_key: c\nledger: l:1\naggregator: {address: 'h:1', id: x}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseServerConfig("fuzz", data)
		if err != nil {
			if !errors.Is(err, ErrServerConfig) {
				t.Fatalf("error %v does not wrap ErrServerConfig", err)
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatal(err)
		}
	})
}

func TestAdapterSeedAndHistoryConflict(t *testing.T) {
	if a, b := AdapterSeed(1), AdapterSeed(1); AdapterSeed(1) == AdapterSeed(2) || a != b {
		t.Error("AdapterSeed is not a deterministic function of the job seed")
	}
	rejected := func(code ledger.Code, msg string) error {
		te := &ledger.TxError{Code: code, Msg: msg}
		return fmt.Errorf("RoundOpened: %w", &client.RejectedError{TxError: te, Reason: te.Error()})
	}
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{rejected(ledger.CodeAlreadyExists, "round 2 of job x already exists"), true},
		{rejected(ledger.CodeRoundNotOpen, "round 2 is committed"), true},
		{rejected(ledger.CodeBadNonce, "nonce 3"), false},
		// Only the typed code counts, not words in a message.
		{errors.New("ledger: tx rejected (already_exists): round 2 of job x already exists"), false},
	} {
		if got := historyConflict(tc.err); got != tc.want {
			t.Errorf("historyConflict(%v) = %v", tc.err, got)
		}
	}
}
