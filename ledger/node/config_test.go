package node

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestExampleConfigs loads every example node config in configs/ledger.
func TestExampleConfigs(t *testing.T) {
	paths, err := filepath.Glob("../../configs/ledger/node*.yaml")
	if err != nil || len(paths) == 0 {
		t.Fatalf("no example configs: %v", err)
	}
	for _, p := range paths {
		t.Run(filepath.Base(p), func(t *testing.T) {
			cfg, err := LoadConfig(p)
			if err != nil {
				t.Fatal(err)
			}
			if !filepath.IsAbs(cfg.DataDir) || !filepath.IsAbs(cfg.KeyFile) {
				t.Fatalf("relative paths not resolved: %q %q", cfg.DataDir, cfg.KeyFile)
			}
		})
	}
}

const goodConfig = `data_dir: data
key_file: node.key
raft_address: 127.0.0.1:7001
grpc_address: 127.0.0.1:7101
bootstrap: true
peers:
  - id: a1f3c0de00000000000000000000000000000000000000000000000000000000
    raft_address: 127.0.0.1:7001
    grpc_address: 127.0.0.1:7101
raft:
  heartbeat_timeout: 200ms
`

func TestParseConfig(t *testing.T) {
	cfg, err := ParseConfig("good.yaml", []byte(goodConfig))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Raft.HeartbeatTimeout != 200*time.Millisecond || len(cfg.Peers) != 1 || !cfg.Bootstrap {
		t.Fatalf("decoded %+v", cfg)
	}
	rd := cfg.Raft.withDefaults()
	if rd.ElectionTimeout != DefaultRaftConfig().ElectionTimeout || rd.HeartbeatTimeout != 200*time.Millisecond {
		t.Fatalf("defaults: %+v", rd)
	}

	tests := []struct {
		name, yaml, want string
	}{
		{"unknown key", strings.Replace(goodConfig, "bootstrap:", "bootstrapp:", 1), `bad.yaml:5: unknown key "bootstrapp"`},
		{"unknown nested key", goodConfig + "  election: 1s\n", `bad.yaml:12: unknown key "election"`},
		{"bad type", strings.Replace(goodConfig, "bootstrap: true", "bootstrap: [1]", 1), "bad.yaml:5:"},
		{"bad duration", strings.Replace(goodConfig, "200ms", "soon", 1), "bad.yaml:11:"},
		{"empty", "", "bad.yaml: the file is empty"},
		{"two documents", goodConfig + "---\ndata_dir: x\n", "more than one YAML document"},
		{"missing fields", "bootstrap: true\n", "data_dir: required; key_file: required; raft_address: required; grpc_address: required"},
		{"bad address", strings.Replace(goodConfig, "grpc_address: 127.0.0.1:7101\nbootstrap", "grpc_address: localhost\nbootstrap", 1), `grpc_address: "localhost" is not host:port`},
		{"bad peer id", strings.Replace(goodConfig, "a1f3c0de", "XYZ", 1), "peers[0].id:"},
		{"bootstrap and join", goodConfig + "join: 127.0.0.1:7102\n", "bootstrap and join"},
		{"lease above heartbeat", goodConfig + "  leader_lease_timeout: 1s\n", "leader_lease_timeout"},
		{"bad node id", "node_id: abc\n" + goodConfig, "node_id:"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig("bad.yaml", []byte(tc.yaml))
			if err == nil {
				t.Fatal("accepted")
			}
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestLoadConfigNamesFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "n.yaml")
	if err := os.WriteFile(p, []byte("data_dir: d\nkey_file: k\nbogus: 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := LoadConfig(p)
	if err == nil || !strings.Contains(err.Error(), p+`:3: unknown key "bogus"`) {
		t.Fatalf("error %v", err)
	}
	if _, err := LoadConfig(filepath.Join(dir, "missing.yaml")); err == nil {
		t.Fatal("missing file loaded")
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(goodConfig))
	f.Add([]byte("data_dir: d\nkey_file: k\nraft_address: :1\ngrpc_address: :2\njoin: 1.2.3.4:5\n"))
	f.Add([]byte("peers: [{id: 1}]\n"))
	f.Add([]byte("raft: {heartbeat_timeout: -1s}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ParseConfig("fuzz.yaml", data)
		if err != nil {
			if cfg != nil {
				t.Fatal("config and error both returned")
			}
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("parsed config does not validate: %v", err)
		}
	})
}
