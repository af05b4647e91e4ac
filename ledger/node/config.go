package node

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fedtune/fedtune/internal/digest"
	"github.com/fedtune/fedtune/internal/strictyaml"
)

// ErrConfig is wrapped by every configuration error.
var ErrConfig = errors.New("ledger node config")

// Config is a ledger node's YAML configuration, decoded strictly by
// LoadConfig: an unknown key is an error naming the file and line.
type Config struct {
	// NodeID is the node's ID (hex SHA-256 of its public key). Optional: it
	// is derived from KeyFile, and when set must match it.
	NodeID string `yaml:"node_id"`
	// DataDir holds the genesis file, the pebble database, raft snapshots
	// and the peer directory. Relative paths are resolved against the
	// config file's directory.
	DataDir string `yaml:"data_dir"`
	// KeyFile is the node's ed25519 key (PKCS#8 PEM).
	KeyFile string `yaml:"key_file"`
	// RaftAddress is the host:port raft listens on and advertises.
	RaftAddress string `yaml:"raft_address"`
	// GRPCAddress is the host:port the Ledger gRPC service listens on.
	GRPCAddress string `yaml:"grpc_address"`
	// MetricsAddress is the host:port of the Prometheus /metrics endpoint;
	// empty turns it off.
	MetricsAddress string `yaml:"metrics_address"`
	// Bootstrap makes this node bootstrap a new cluster of Peers (itself
	// included) when its data directory holds no raft state yet.
	Bootstrap bool `yaml:"bootstrap"`
	// Peers lists the cluster's nodes (for Bootstrap) and seeds the peer
	// directory.
	Peers []PeerConfig `yaml:"peers"`
	// Join is the gRPC address of a running node that this node, when its
	// data directory holds no raft state yet, tells its addresses to; it
	// then waits until an admin's NodeAdded makes the leader add it.
	Join string `yaml:"join"`
	// JoinAsVoter is ignored (kept so that old configs load): a node
	// becomes a voter only through an admin-signed NodePromoted.
	JoinAsVoter bool `yaml:"join_as_voter"`
	// Raft tunes the raft library.
	Raft RaftConfig `yaml:"raft"`
	// Limits bound what one caller may ask of this node's gRPC service.
	Limits LimitsConfig `yaml:"limits"`
	// AllowUnpinned lets the node start on a genesis that lists no nodes.
	// Such a chain pins no node keys: any key may take part in raft and
	// call the node-to-node RPCs. For development only; New refuses such
	// a genesis without it.
	AllowUnpinned bool `yaml:"allow_unpinned"`

	// path is the file the config was loaded from, if any.
	path string
}

// PeerConfig names one ledger node.
type PeerConfig struct {
	ID          string `yaml:"id"`
	RaftAddress string `yaml:"raft_address"`
	GRPCAddress string `yaml:"grpc_address"`
}

// RaftConfig holds raft timing and snapshot settings. Zero values take the
// defaults of DefaultRaftConfig.
type RaftConfig struct {
	HeartbeatTimeout   time.Duration `yaml:"heartbeat_timeout"`
	ElectionTimeout    time.Duration `yaml:"election_timeout"`
	LeaderLeaseTimeout time.Duration `yaml:"leader_lease_timeout"`
	CommitTimeout      time.Duration `yaml:"commit_timeout"`
	// SnapshotThreshold is how many log entries since the last snapshot
	// trigger a new one.
	SnapshotThreshold uint64 `yaml:"snapshot_threshold"`
	// SnapshotInterval is how often raft checks SnapshotThreshold.
	SnapshotInterval time.Duration `yaml:"snapshot_interval"`
	// TrailingLogs is how many log entries are kept after a snapshot.
	TrailingLogs uint64 `yaml:"trailing_logs"`
	// RetainSnapshots is how many snapshots the snapshot store keeps.
	RetainSnapshots int `yaml:"retain_snapshots"`
}

// DefaultRaftConfig returns the raft settings used for zero fields, except
// that an unset election timeout is at least the heartbeat timeout and an
// unset leader lease at most half of it.
func DefaultRaftConfig() RaftConfig {
	return RaftConfig{
		HeartbeatTimeout:   1000 * time.Millisecond,
		ElectionTimeout:    1000 * time.Millisecond,
		LeaderLeaseTimeout: 500 * time.Millisecond,
		CommitTimeout:      20 * time.Millisecond,
		SnapshotThreshold:  8192,
		SnapshotInterval:   2 * time.Minute,
		TrailingLogs:       10240,
		RetainSnapshots:    2,
	}
}

// withDefaults fills zero fields from DefaultRaftConfig.
func (r RaftConfig) withDefaults() RaftConfig {
	d := DefaultRaftConfig()
	if r.HeartbeatTimeout == 0 {
		r.HeartbeatTimeout = d.HeartbeatTimeout
	}
	if r.ElectionTimeout == 0 {
		r.ElectionTimeout = max(d.ElectionTimeout, r.HeartbeatTimeout)
	}
	if r.LeaderLeaseTimeout == 0 {
		r.LeaderLeaseTimeout = min(d.LeaderLeaseTimeout, r.HeartbeatTimeout/2)
	}
	if r.CommitTimeout == 0 {
		r.CommitTimeout = d.CommitTimeout
	}
	if r.SnapshotThreshold == 0 {
		r.SnapshotThreshold = d.SnapshotThreshold
	}
	if r.SnapshotInterval == 0 {
		r.SnapshotInterval = d.SnapshotInterval
	}
	if r.TrailingLogs == 0 {
		r.TrailingLogs = d.TrailingLogs
	}
	if r.RetainSnapshots == 0 {
		r.RetainSnapshots = d.RetainSnapshots
	}
	return r
}

// LoadConfig reads a node config from a YAML file, strictly: unknown keys,
// duplicate keys and type mismatches are errors naming the file and line.
// Relative paths in it are resolved against the file's directory. The
// result is validated.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	cfg, err := parseConfig(path, data)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	cfg.path = path
	dir := filepath.Dir(path)
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	if cfg.DataDir != "" && !filepath.IsAbs(cfg.DataDir) {
		cfg.DataDir = filepath.Join(dir, cfg.DataDir)
	}
	if cfg.KeyFile != "" && !filepath.IsAbs(cfg.KeyFile) {
		cfg.KeyFile = filepath.Join(dir, cfg.KeyFile)
	}
	return cfg, nil
}

// ParseConfig decodes and validates a YAML node config. Errors read
// "name:line: message"; name labels the source.
func ParseConfig(name string, data []byte) (*Config, error) {
	cfg, err := parseConfig(name, data)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	return cfg, nil
}

func parseConfig(name string, data []byte) (*Config, error) {
	var cfg Config
	if err := strictyaml.Decode(name, data, &cfg); err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return &cfg, nil
}

// Validate reports every problem with the config in one error.
func (c *Config) Validate() error {
	var errs []string
	add := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	if c.DataDir == "" {
		add("data_dir: required")
	}
	if c.KeyFile == "" {
		add("key_file: required")
	}
	if c.NodeID != "" && !digest.Valid(c.NodeID) {
		add("node_id: %q is not 64 lowercase hex characters", c.NodeID)
	}
	checkAddr := func(field, v string, required bool) {
		if v == "" {
			if required {
				add("%s: required", field)
			}
			return
		}
		if _, _, err := net.SplitHostPort(v); err != nil {
			add("%s: %q is not host:port: %v", field, v, err)
		}
	}
	checkAddr("raft_address", c.RaftAddress, true)
	checkAddr("grpc_address", c.GRPCAddress, true)
	checkAddr("metrics_address", c.MetricsAddress, false)
	checkAddr("join", c.Join, false)
	if c.Bootstrap && c.Join != "" {
		add("bootstrap and join: set at most one")
	}
	seen := map[string]bool{}
	for i, p := range c.Peers {
		if !digest.Valid(p.ID) {
			add("peers[%d].id: %q is not 64 lowercase hex characters", i, p.ID)
		}
		if seen[p.ID] {
			add("peers[%d].id: %s listed twice", i, p.ID)
		}
		seen[p.ID] = true
		checkAddr(fmt.Sprintf("peers[%d].raft_address", i), p.RaftAddress, true)
		checkAddr(fmt.Sprintf("peers[%d].grpc_address", i), p.GRPCAddress, true)
	}
	r := c.Raft
	if r.HeartbeatTimeout < 0 || r.ElectionTimeout < 0 || r.LeaderLeaseTimeout < 0 || r.CommitTimeout < 0 || r.SnapshotInterval < 0 {
		add("raft: durations must not be negative")
	}
	if r.RetainSnapshots < 0 {
		add("raft.retain_snapshots: must not be negative")
	}
	if err := c.Limits.validate(); err != nil {
		add("%v", err)
	}
	rd := r.withDefaults()
	if rd.LeaderLeaseTimeout > rd.HeartbeatTimeout {
		add("raft.leader_lease_timeout: %v exceeds heartbeat_timeout %v", rd.LeaderLeaseTimeout, rd.HeartbeatTimeout)
	}
	if rd.ElectionTimeout < rd.HeartbeatTimeout {
		add("raft.election_timeout: %v is below heartbeat_timeout %v", rd.ElectionTimeout, rd.HeartbeatTimeout)
	}
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "; "))
	}
	return nil
}
