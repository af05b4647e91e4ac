package node

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/fedtune/fedtune/internal/digest"
	"github.com/fedtune/fedtune/internal/strictyaml"
	"github.com/fedtune/fedtune/kernels"
)

// ErrConfig is wrapped by every error about an aggregator config file.
var ErrConfig = errors.New("aggregator: bad config")

// Config is the aggregator process's YAML file (fedtune aggregator start
// --config FILE). Relative paths are resolved against the file's folder.
type Config struct {
	// Listen is the host:port of the Aggregator gRPC service; port 0 picks
	// a free one.
	Listen string `yaml:"listen"`
	// Key is the aggregator's ledger key (PKCS#8 PEM, role aggregator).
	Key string `yaml:"key"`
	// Ledger is a ledger node's gRPC address.
	Ledger string `yaml:"ledger"`
	// LedgerGenesis is the chain's genesis file. It pins the ledger: the
	// node at Ledger must prove one of its nodes' keys at the TLS
	// handshake, and a tx counts as committed only in a block cosigned by
	// the genesis quorum of those nodes. Empty, any server key is accepted
	// (a warning is logged at start).
	LedgerGenesis string `yaml:"ledger_genesis"`
	// LedgerNodeIDs adds the key IDs of nodes added after genesis (by
	// NodeAdded) to the pinned ones; needs LedgerGenesis.
	LedgerNodeIDs []string `yaml:"ledger_node_ids"`
	// Coordinator is the coordinator's address (its artifact service).
	Coordinator string `yaml:"coordinator"`
	// CoordinatorID is the coordinator's ledger key ID: the only peer
	// allowed to call, and the artifact server it expects. Required
	// unless Insecure.
	CoordinatorID string `yaml:"coordinator_id"`
	// DataDir holds the local artifact store and scratch files.
	DataDir string `yaml:"data_dir"`
	// Insecure serves and dials plain-text gRPC (no TLS, no identities).
	Insecure bool `yaml:"insecure"`
	// Backend names the kernels backend that reduces the updates: cpu
	// (the default), reference, or cuda in a binary built with -tags
	// fedcuda. All give the same bits.
	Backend string `yaml:"backend"`
}

// DefaultConfig returns the defaults: listen on 127.0.0.1:7500, data dir
// "aggregator".
func DefaultConfig() Config { return Config{Listen: "127.0.0.1:7500", DataDir: "aggregator"} }

// LoadConfig reads a config file over DefaultConfig (unknown keys are
// errors naming file and line), resolves paths, applies edit (a command
// line's flags, say) and validates the result.
func LoadConfig(path string, edit ...func(*Config)) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	c, err := decodeConfig(path, data)
	if err != nil {
		return nil, err
	}
	dir := filepath.Dir(path)
	for _, p := range []*string{&c.Key, &c.DataDir, &c.LedgerGenesis} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	for _, e := range edit {
		e(c)
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// ParseConfig decodes and validates a config; name labels messages.
func ParseConfig(name string, data []byte) (*Config, error) {
	c, err := decodeConfig(name, data)
	if err != nil {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return c, nil
}

func decodeConfig(name string, data []byte) (*Config, error) {
	c := DefaultConfig()
	if err := strictyaml.Decode(name, data, &c); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	return &c, nil
}

// Validate reports every missing or bad field at once.
func (c *Config) Validate() error {
	var msgs []string
	for _, f := range []struct{ name, v string }{{"listen", c.Listen}, {"key", c.Key}, {"ledger", c.Ledger},
		{"coordinator", c.Coordinator}, {"data_dir", c.DataDir}} {
		if f.v == "" {
			msgs = append(msgs, f.name+": required")
		}
	}
	if !c.Insecure && c.CoordinatorID == "" {
		msgs = append(msgs, "coordinator_id: required over TLS")
	}
	if len(c.LedgerNodeIDs) > 0 && c.LedgerGenesis == "" {
		msgs = append(msgs, "ledger_node_ids: needs ledger_genesis (the genesis file names the chain and its cosignature quorum)")
	}
	for _, id := range c.LedgerNodeIDs {
		if !digest.Valid(id) {
			msgs = append(msgs, fmt.Sprintf("ledger_node_ids: %q is not a ledger key ID (64 lowercase hex digits)", id))
		}
	}
	if c.Backend != "" && !slices.Contains(kernels.Backends(), c.Backend) {
		// Open of a name not registered opens nothing; its error names
		// the choices and, for cuda, the build tag.
		_, err := kernels.Open(c.Backend)
		msgs = append(msgs, fmt.Sprintf("backend: %v", err))
	}
	if len(msgs) > 0 {
		return fmt.Errorf("%w: %s", ErrConfig, strings.Join(msgs, "; "))
	}
	return nil
}
