package ledger

import (
	"errors"
	"strings"
	"testing"
)

const validGenesis = `chain_id: test-chain
members:
  - name: admin
    role: admin
    public_key: 42efefc0e3a5a60998260a3ae62af34288e87b41eab4cedda300e8a907dba8d6
`

func TestParseGenesisErrors(t *testing.T) {
	cases := []struct {
		name string
		yaml string
		want []string // substrings of the error
	}{
		{"unknown top key", validGenesis + "colour: blue\n", []string{"g.yaml:6:", `unknown key "colour"`}},
		{"unknown nested key", strings.Replace(validGenesis, "    role: admin\n", "    role: admin\n    rol: x\n", 1), []string{"g.yaml:5:", `unknown key "rol"`}},
		{"unknown policy key", validGenesis + "policy:\n  max_txs: 5\n", []string{"g.yaml:7:", `unknown key "max_txs"`}},
		{"bad type", validGenesis + "policy:\n  max_block_txs: lots\n", []string{"g.yaml:7:", "lots"}},
		{"bad duration", validGenesis + "policy:\n  block_interval: soon\n", []string{"g.yaml:7"}},
		{"syntax", "chain_id: [\n", []string{"g.yaml:"}},
		{"empty", "", []string{"empty"}},
		{"two documents", validGenesis + "---\nchain_id: x\n", []string{"more than one YAML document"}},
		{"no chain id", strings.Replace(validGenesis, "chain_id: test-chain", "chain_id: ''", 1), []string{"chain_id is required"}},
		{"bad chain id", strings.Replace(validGenesis, "test-chain", "'my chain!'", 1), []string{"chain_id"}},
		{"bad role", strings.Replace(validGenesis, "role: admin", "role: boss", 1), []string{`members[0] (admin): role "boss"`, "no admin"}},
		{"bad key", strings.Replace(validGenesis, "42efefc0", "zzzz", 1), []string{"members[0] (admin): public_key"}},
		{"id mismatch", validGenesis + "    id: 0000000000000000000000000000000000000000000000000000000000000000\n", []string{"does not match public_key"}},
		{"duplicate key", validGenesis + "  - name: again\n    role: trainer\n    public_key: 42efefc0e3a5a60998260a3ae62af34288e87b41eab4cedda300e8a907dba8d6\n", []string{"members[1] (again): the same public key as members[0]"}},
		{"no members", "chain_id: x\n", []string{"members: none listed"}},
		{"time", validGenesis + "genesis_time: 1900-01-01T00:00:00Z\n", []string{"genesis_time 1900-01-01T00:00:00Z must be between 1970 and 2200"}},
		{"policy", validGenesis + "policy:\n  max_block_txs: 0\n  max_tx_bytes: 10\n  block_interval: -1s\n  checkpoint_quorum: -1\n",
			[]string{"max_block_txs 0", "max_tx_bytes 10", "block_interval", "checkpoint_quorum -1"}},
		{"quorum above nodes", validGenesis + "nodes:\n  - name: n\n    public_key: 3386e7512a8f0efe6a9a41b99cc2548e5df218092235b63600026b4222439c5d\npolicy:\n  checkpoint_quorum: 2\n",
			[]string{"checkpoint_quorum 2 is more than the 1 nodes"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseGenesis("g.yaml", []byte(tc.yaml))
			if !errors.Is(err, ErrGenesis) {
				t.Fatalf("got %v, want ErrGenesis", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestGenesisDefaultsAndHash(t *testing.T) {
	g, err := ParseGenesis("g.yaml", []byte(validGenesis))
	if err != nil {
		t.Fatal(err)
	}
	if g.Policy != DefaultPolicy() || g.Quorum() != 1 {
		t.Fatalf("policy %+v", g.Policy)
	}
	// The same genesis with the key as PEM hashes the same.
	pemForm := strings.Replace(validGenesis, "public_key: 42efefc0e3a5a60998260a3ae62af34288e87b41eab4cedda300e8a907dba8d6",
		"public_key: |\n      -----BEGIN PUBLIC KEY-----\n      MCowBQYDK2VwAyEAQu/vwOOlpgmYJgo65irzQojoe0HqtM7dowDoqQfbqNY=\n      -----END PUBLIC KEY-----", 1)
	g2, err := ParseGenesis("pem.yaml", []byte(pemForm))
	if err != nil {
		t.Fatal(err)
	}
	if g.Hash() != g2.Hash() {
		t.Fatal("PEM and hex forms hash differently")
	}
	g3, _ := ParseGenesis("g.yaml", []byte(validGenesis+"policy:\n  max_block_txs: 9\n"))
	if g3.Hash() == g.Hash() {
		t.Fatal("policy change did not change the hash")
	}
}
