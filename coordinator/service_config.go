package coordinator

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

// ErrServerConfig is wrapped by every error about a coordinator config file.
var ErrServerConfig = errors.New("coordinator: bad config")

// ServerConfig is the coordinator process's YAML file (fedtune
// coordinator start --config FILE). Relative paths are resolved against
// the file's folder.
type ServerConfig struct {
	// Listen is the host:port of the gRPC server (coordinator and artifact
	// services); port 0 picks a free one.
	Listen string `yaml:"listen"`
	// CoordinatorKey and AggregatorKey are the ledger keys of the two roles
	// this process plays (PKCS#8 PEM). AggregatorKey is not used (and not
	// required) when Aggregator names a remote aggregator.
	CoordinatorKey string `yaml:"coordinator_key"`
	AggregatorKey  string `yaml:"aggregator_key"`
	// Aggregator, when set, is a standalone aggregator process (fedtune
	// aggregator start) that aggregates and signs the aggregator-role
	// transactions; absent, the aggregator runs in this process.
	Aggregator *RemoteAggregatorConfig `yaml:"aggregator"`
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
	// DataDir holds the artifact store and the active job.
	DataDir string `yaml:"data_dir"`
	// Insecure serves plain-text gRPC (no TLS, no peer identities).
	Insecure bool `yaml:"insecure"`
	// Tick is how often rounds are ticked (deadlines checked).
	Tick time.Duration `yaml:"tick"`
	// Job, when set, is launched at start unless a job is being resumed.
	Job string `yaml:"job"`
	// EvalDataRoot is the folder a job's eval.data path is read from (a
	// relative path that must stay inside it); empty, eval.data must be the
	// digest of a blob in the artifact store. The coordinator reads no
	// other path a job names.
	EvalDataRoot string `yaml:"eval_data_root"`
	// Artifacts bounds what the artifact service accepts.
	Artifacts ArtifactLimits `yaml:"artifacts"`
	// MetricsAddress is the host:port of the Prometheus /metrics endpoint
	// (the coordinator's and the artifact service's metrics); empty, off.
	MetricsAddress string `yaml:"metrics_address"`
}

// ArtifactLimits are the artifact service's limits (artifact.ServerConfig).
// Sizes are in bytes; a zero field takes its DefaultArtifactLimits value.
type ArtifactLimits struct {
	// MaxBlobSize refuses an upload announcing more bytes.
	MaxBlobSize int64 `yaml:"max_blob_size"`
	// MemberQuota bounds the bytes one member holds in the store: the
	// blobs it uploaded and its partial uploads.
	MemberQuota int64 `yaml:"member_quota"`
	// MemberInFlight bounds the bytes one member's uploads under way may
	// announce together.
	MemberInFlight int64 `yaml:"member_in_flight"`
	// IdleTimeout closes an upload or download stream on which nothing
	// moved for this long.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// PruneAfter removes a partial upload not written to for this long.
	PruneAfter time.Duration `yaml:"prune_after"`
}

// withDefaults returns a with its zero fields set to the defaults.
func (a ArtifactLimits) withDefaults() ArtifactLimits {
	d := DefaultArtifactLimits()
	for _, f := range []struct{ v, def *int64 }{{&a.MaxBlobSize, &d.MaxBlobSize}, {&a.MemberQuota, &d.MemberQuota}, {&a.MemberInFlight, &d.MemberInFlight}} {
		if *f.v == 0 {
			*f.v = *f.def
		}
	}
	if a.IdleTimeout == 0 {
		a.IdleTimeout = d.IdleTimeout
	}
	if a.PruneAfter == 0 {
		a.PruneAfter = d.PruneAfter
	}
	return a
}

// DefaultArtifactLimits are the limits a config leaves out: blobs up to
// 4 GiB, 64 GiB stored and 8 GiB in flight per member, a 1-minute idle
// timeout, partial uploads pruned after a day.
func DefaultArtifactLimits() ArtifactLimits {
	return ArtifactLimits{MaxBlobSize: 4 << 30, MemberQuota: 64 << 30, MemberInFlight: 8 << 30,
		IdleTimeout: time.Minute, PruneAfter: 24 * time.Hour}
}

// RemoteAggregatorConfig names a standalone aggregator.
type RemoteAggregatorConfig struct {
	// Address is the aggregator's host:port.
	Address string `yaml:"address"`
	// ID is the aggregator's ledger key ID; the TLS peer must prove it and
	// be an active aggregator member of the ledger.
	ID string `yaml:"id"`
}

// DefaultServerConfig returns the defaults: listen on 127.0.0.1:7400,
// data dir "coordinator", tick 1s, DefaultArtifactLimits.
func DefaultServerConfig() ServerConfig {
	return ServerConfig{Listen: "127.0.0.1:7400", DataDir: "coordinator", Tick: time.Second, Artifacts: DefaultArtifactLimits()}
}

// LoadServerConfig reads a config file over DefaultServerConfig (unknown
// keys are errors naming file and line), resolves paths and validates.
func LoadServerConfig(path string) (*ServerConfig, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrServerConfig, err)
	}
	c, err := ParseServerConfig(path, data)
	if err != nil {
		return nil, err
	}
	dir := filepath.Dir(path)
	for _, p := range []*string{&c.CoordinatorKey, &c.AggregatorKey, &c.DataDir, &c.Job, &c.EvalDataRoot, &c.LedgerGenesis} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	return c, nil
}

// ParseServerConfig decodes and validates a config; name labels messages.
func ParseServerConfig(name string, data []byte) (*ServerConfig, error) {
	c := DefaultServerConfig()
	if err := strictyaml.Decode(name, data, &c); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrServerConfig, err)
	}
	c.Artifacts = c.Artifacts.withDefaults()
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return &c, nil
}

// Validate reports every missing or bad field at once.
func (c *ServerConfig) Validate() error {
	var msgs []string
	type field struct{ name, v string }
	fields := []field{{"listen", c.Listen}, {"coordinator_key", c.CoordinatorKey}}
	if a := c.Aggregator; a != nil {
		fields = append(fields, field{"aggregator.address", a.Address}, field{"aggregator.id", a.ID})
		if a.ID != "" && !digest.Valid(a.ID) {
			msgs = append(msgs, fmt.Sprintf("aggregator.id: %q is not a ledger key ID (64 hex digits)", a.ID))
		}
	} else {
		fields = append(fields, field{"aggregator_key", c.AggregatorKey})
	}
	fields = append(fields, field{"ledger", c.Ledger}, field{"data_dir", c.DataDir})
	for _, f := range fields {
		if f.v == "" {
			msgs = append(msgs, f.name+": required")
		}
	}
	if c.MetricsAddress != "" {
		if _, _, err := net.SplitHostPort(c.MetricsAddress); err != nil {
			msgs = append(msgs, fmt.Sprintf("metrics_address: %q is not host:port: %v", c.MetricsAddress, err))
		}
	}
	if len(c.LedgerNodeIDs) > 0 && c.LedgerGenesis == "" {
		msgs = append(msgs, "ledger_node_ids: needs ledger_genesis (the genesis file names the chain and its cosignature quorum)")
	}
	for _, id := range c.LedgerNodeIDs {
		if !digest.Valid(id) {
			msgs = append(msgs, fmt.Sprintf("ledger_node_ids: %q is not a ledger key ID (64 hex digits)", id))
		}
	}
	if c.Tick < 10*time.Millisecond || c.Tick > time.Minute {
		msgs = append(msgs, fmt.Sprintf("tick: %s is not between 10ms and 1m", c.Tick))
	}
	a := c.Artifacts.withDefaults()
	for _, f := range []struct {
		name string
		v    int64
	}{{"artifacts.max_blob_size", a.MaxBlobSize}, {"artifacts.member_quota", a.MemberQuota}, {"artifacts.member_in_flight", a.MemberInFlight}} {
		if f.v < 1 {
			msgs = append(msgs, fmt.Sprintf("%s: %d is not a positive number of bytes", f.name, f.v))
		}
	}
	if a.MaxBlobSize > 0 && a.MemberInFlight > 0 && a.MemberInFlight < a.MaxBlobSize {
		msgs = append(msgs, fmt.Sprintf("artifacts.member_in_flight: %d is less than artifacts.max_blob_size %d, so no member could upload a blob of the maximum size", a.MemberInFlight, a.MaxBlobSize))
	}
	if a.IdleTimeout < 100*time.Millisecond || a.IdleTimeout > time.Hour {
		msgs = append(msgs, fmt.Sprintf("artifacts.idle_timeout: %s is not between 100ms and 1h", a.IdleTimeout))
	}
	if a.PruneAfter < time.Second || a.PruneAfter > 30*24*time.Hour {
		msgs = append(msgs, fmt.Sprintf("artifacts.prune_after: %s is not between 1s and 720h", a.PruneAfter))
	}
	if len(msgs) > 0 {
		return fmt.Errorf("%w: %s", ErrServerConfig, strings.Join(msgs, "; "))
	}
	return nil
}
