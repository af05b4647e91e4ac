package trainer

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/fedtune/fedtune/datasets"
	"github.com/fedtune/fedtune/internal/digest"
	"github.com/fedtune/fedtune/internal/strictyaml"
)

// ErrConfig is wrapped by every error about a trainer config file.
var ErrConfig = errors.New("trainer: bad config")

// Config is a trainer node's YAML configuration. Relative paths are
// resolved against the config file's folder.
type Config struct {
	// Name labels the trainer in logs and its dataset's manifest.
	Name string `yaml:"name"`
	// KeyFile is the trainer's ed25519 ledger key (PKCS#8 PEM).
	KeyFile string `yaml:"key_file"`
	// Coordinator is the coordinator's gRPC address (host:port); it serves
	// the artifact service too.
	Coordinator string `yaml:"coordinator"`
	// CoordinatorID is the coordinator's ledger key ID, which its TLS
	// certificate must prove (required unless Insecure).
	CoordinatorID string `yaml:"coordinator_id"`
	// Ledger is a ledger node's gRPC address.
	Ledger string `yaml:"ledger"`
	// LedgerGenesis is the chain's genesis file. It pins the ledger: the
	// node at Ledger must prove one of its nodes' keys at the TLS
	// handshake, and a tx counts as committed only in a block cosigned by
	// the genesis quorum of those nodes. Empty, any server key is accepted
	// (a warning is logged at start).
	LedgerGenesis string `yaml:"ledger_genesis,omitempty"`
	// LedgerNodeIDs adds the key IDs of nodes added after genesis (by
	// NodeAdded) to the pinned ones; needs LedgerGenesis.
	LedgerNodeIDs []string `yaml:"ledger_node_ids,omitempty"`
	// Data is the local training data (text, folder of .txt, or JSONL).
	// Empty: the trainer has no data of its own and takes part only in
	// jobs on published data, training on the ranges each round gives it.
	Data string `yaml:"data"`
	// Licence is the SPDX licence of the data, recorded in its manifest.
	Licence string `yaml:"licence"`
	// Source describes the data's origin in its manifest (not its path).
	Source string `yaml:"source"`
	// WorkDir holds the local artifact store, models and updates.
	WorkDir string `yaml:"work_dir"`
	// Insecure talks plain-text gRPC to the coordinator (no TLS).
	Insecure bool `yaml:"insecure"`
	// Device is where local training runs: DeviceCPU (the default, ""
	// too: the engine's training step on its Host device, on the CPU),
	// DeviceHost (the same), DeviceGorgonia (model/gorgoniaref's Gorgonia
	// graph) or DeviceCUDA (the engine on GPU 0; needs a binary built with
	// -tags fedcuda).
	Device string `yaml:"device,omitempty"`
	// AuditWindowRounds is how many of each job's newest rounds the
	// trainer keeps step checkpoints for (WorkDir/checkpoints/JOB/ROUND),
	// which auditors replaying its updates bisect; 0 is
	// DefaultAuditWindowRounds.
	AuditWindowRounds int `yaml:"audit_window_rounds,omitempty"`
	// CheckpointEvery keeps the step checkpoint of every CheckpointEvery-th
	// step of a round (and of its last) instead of every step's: less disk
	// and time on large full models. The round's commitment and disclosed
	// step digests still cover every step, so a replay still names the
	// first differing step; it names the operation within it only when
	// that step's checkpoint was kept. 0 or 1: every step.
	CheckpointEvery int `yaml:"checkpoint_every,omitempty"`
}

// DefaultConfig returns the defaults: licence CC0-1.0, work dir "work".
func DefaultConfig() Config {
	return Config{Licence: "CC0-1.0", Source: "local data of the trainer", WorkDir: "work"}
}

// LoadConfig reads a config file over DefaultConfig (unknown keys are
// errors naming the file and line), resolves relative paths and validates.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	c, err := ParseConfig(path, data)
	if err != nil {
		return nil, err
	}
	c.resolve(filepath.Dir(path))
	return c, nil
}

// ParseConfig decodes and validates a config; name labels messages.
func ParseConfig(name string, data []byte) (*Config, error) {
	c := DefaultConfig()
	if err := strictyaml.Decode(name, data, &c); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return &c, nil
}

func (c *Config) resolve(dir string) {
	for _, p := range []*string{&c.KeyFile, &c.Data, &c.WorkDir, &c.LedgerGenesis} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
}

// Validate reports every missing or bad field at once.
func (c *Config) Validate() error {
	var msgs []string
	need := func(field, v string) {
		if v == "" {
			msgs = append(msgs, field+": required")
		}
	}
	need("key_file", c.KeyFile)
	need("coordinator", c.Coordinator)
	need("ledger", c.Ledger)
	need("work_dir", c.WorkDir)
	if !c.Insecure && c.CoordinatorID == "" {
		msgs = append(msgs, "coordinator_id: required unless insecure (the key ID the coordinator's TLS certificate must prove)")
	}
	if c.CoordinatorID != "" && !digest.Valid(c.CoordinatorID) {
		msgs = append(msgs, fmt.Sprintf("coordinator_id: %q is not a key ID (64 lowercase hex)", c.CoordinatorID))
	}
	if len(c.LedgerNodeIDs) > 0 && c.LedgerGenesis == "" {
		msgs = append(msgs, "ledger_node_ids: needs ledger_genesis (the genesis file names the chain and its cosignature quorum)")
	}
	for _, id := range c.LedgerNodeIDs {
		if !digest.Valid(id) {
			msgs = append(msgs, fmt.Sprintf("ledger_node_ids: %q is not a key ID (64 lowercase hex)", id))
		}
	}
	if err := datasets.ValidateLicence(c.Licence); err != nil {
		msgs = append(msgs, "licence: "+err.Error())
	}
	if err := ValidateDevice(c.Device); err != nil {
		msgs = append(msgs, "device: "+err.Error())
	}
	if c.AuditWindowRounds < 0 || c.AuditWindowRounds > MaxAuditWindowRounds {
		msgs = append(msgs, fmt.Sprintf("audit_window_rounds: %d, want 0 (the default, %d) to %d", c.AuditWindowRounds, DefaultAuditWindowRounds, MaxAuditWindowRounds))
	}
	if c.CheckpointEvery < 0 || c.CheckpointEvery > MaxCheckpointEvery {
		msgs = append(msgs, fmt.Sprintf("checkpoint_every: %d, want 0 (every step) to %d", c.CheckpointEvery, MaxCheckpointEvery))
	}
	if len(msgs) > 0 {
		return fmt.Errorf("%w: %s", ErrConfig, strings.Join(msgs, "; "))
	}
	return nil
}

// Encode returns the config as YAML.
func (c *Config) Encode() ([]byte, error) { return yaml.Marshal(c) }
