package ledger

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/fedtune/fedtune/internal/strictyaml"
)

// Genesis is the chain's founding document (configs/genesis.yaml): its ID,
// first members, ledger nodes and policy. Height 0 of every chain records it.
//
// A member's public_key is either a PKIX "PUBLIC KEY" PEM block (a YAML
// block scalar, as `fedtune keygen` prints it) or the raw key as 64 hex
// characters. An optional id, if given, must equal the key's ID, which
// catches a key pasted into the wrong entry.
type Genesis struct {
	// ChainID names the chain; every transaction's payload carries it.
	ChainID string `yaml:"chain_id"`
	// Time is the genesis block's time (optional; zero means unix 0).
	Time time.Time `yaml:"genesis_time,omitempty"`
	// Members are the first members. At least one must be an admin.
	Members []GenesisMember `yaml:"members"`
	// Nodes are the ledger nodes whose keys may cosign checkpoints.
	Nodes []GenesisNode `yaml:"nodes,omitempty"`
	// Policy bounds blocks and sets the checkpoint quorum.
	Policy Policy `yaml:"policy"`

	// Source is the file name or label the genesis was parsed from, used in
	// error messages.
	Source string `yaml:"-"`
}

// GenesisMember is one member listed in the genesis file.
type GenesisMember struct {
	Name      string `yaml:"name"`
	Role      Role   `yaml:"role"`
	PublicKey string `yaml:"public_key"`
	ID        string `yaml:"id,omitempty"`

	// Key is PublicKey parsed; set by ParseGenesis and Validate.
	Key ed25519.PublicKey `yaml:"-"`
}

// GenesisNode is one ledger node: its name (for logs) and node key.
type GenesisNode struct {
	Name      string `yaml:"name"`
	PublicKey string `yaml:"public_key"`
	ID        string `yaml:"id,omitempty"`

	// Key is PublicKey parsed; set by ParseGenesis and Validate.
	Key ed25519.PublicKey `yaml:"-"`
}

// Policy is the ledger's policy, fixed at genesis.
type Policy struct {
	// MaxBlockTxs is the most transactions in one block; the FSM rejects the
	// rest of a larger proposal with CodeTooLarge.
	MaxBlockTxs int `yaml:"max_block_txs"`
	// MaxBlockBytes is the most envelope bytes in one block.
	MaxBlockBytes int `yaml:"max_block_bytes"`
	// MaxTxBytes is the largest envelope accepted.
	MaxTxBytes int `yaml:"max_tx_bytes"`
	// BlockInterval is how long a leader waits to fill a block before
	// proposing what it has (used by ledger/node).
	BlockInterval time.Duration `yaml:"block_interval"`
	// CheckpointQuorum is how many distinct node cosignatures a checkpoint
	// needs. Zero means a majority of Nodes (1 if no nodes are listed).
	CheckpointQuorum int `yaml:"checkpoint_quorum"`
	// MaxClockSkew bounds how far a proposal's time may be ahead of a
	// replica's clock (see the package doc, "Proposers and time"). Zero
	// means DefaultMaxClockSkew.
	MaxClockSkew time.Duration `yaml:"max_clock_skew"`
}

// DefaultMaxClockSkew is Policy.MaxClockSkew when a genesis leaves it out.
const DefaultMaxClockSkew = 30 * time.Second

// ClockSkew returns the effective MaxClockSkew.
func (p Policy) ClockSkew() time.Duration {
	if p.MaxClockSkew <= 0 {
		return DefaultMaxClockSkew
	}
	return p.MaxClockSkew
}

// DefaultPolicy returns the policy fields a genesis file leaves out.
func DefaultPolicy() Policy {
	return Policy{
		MaxBlockTxs:   1000,
		MaxBlockBytes: 8 << 20,
		MaxTxBytes:    256 << 10,
		BlockInterval: 50 * time.Millisecond,
		MaxClockSkew:  DefaultMaxClockSkew,
	}
}

// ErrGenesis is wrapped by every error of LoadGenesis, ParseGenesis and
// Validate.
var ErrGenesis = errors.New("invalid genesis")

// LoadGenesis reads, decodes strictly and validates a genesis file.
func LoadGenesis(path string) (*Genesis, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrGenesis, err)
	}
	return ParseGenesis(path, data)
}

// ParseGenesis decodes a genesis document strictly (an unknown key is an
// error naming name and the line), fills policy defaults and validates it.
// name labels the source in error messages.
func ParseGenesis(name string, data []byte) (*Genesis, error) {
	g := &Genesis{Policy: DefaultPolicy()}
	if err := strictyaml.Decode(name, data, g); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrGenesis, err)
	}
	g.Source = name
	if err := g.Validate(); err != nil {
		return nil, err
	}
	return g, nil
}

var chainIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// Validate checks the genesis and reports every problem at once, each naming
// the field, and parses the public keys into Key.
func (g *Genesis) Validate() error {
	var errs []string
	add := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }

	if g.ChainID == "" {
		add("chain_id is required (for example chain_id: fedtune-devnet)")
	} else if !chainIDPattern.MatchString(g.ChainID) {
		add("chain_id %q must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit", abbrev(g.ChainID))
	}
	if !g.Time.IsZero() && (g.Time.Before(time.Unix(0, 0)) || g.Time.After(time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC))) {
		add("genesis_time %s must be between 1970 and 2200", g.Time.Format(time.RFC3339))
	}
	if len(g.Members) == 0 {
		add("members: none listed; list at least one member with role admin")
	}
	ids := map[string]string{}
	admins := 0
	for i := range g.Members {
		m := &g.Members[i]
		where := fmt.Sprintf("members[%d]", i)
		if m.Name != "" {
			where += fmt.Sprintf(" (%s)", m.Name)
		}
		if err := checkText("name", m.Name, MaxTextLen, false); err != nil {
			add("%s: %v", where, err)
		}
		if !m.Role.Valid() {
			add("%s: role %q is not one of admin, coordinator, aggregator, trainer, auditor, inference", where, m.Role)
		}
		if m.Role == RoleAdmin {
			admins++
		}
		key, err := ParsePublicKey(m.PublicKey)
		if err != nil {
			add("%s: public_key: %v", where, err)
			continue
		}
		m.Key = key
		id := KeyID(key)
		if m.ID != "" && m.ID != id {
			add("%s: id %s does not match public_key, whose ID is %s", where, m.ID, id)
		}
		if prev, ok := ids[id]; ok {
			add("%s: the same public key as %s; each member needs its own key", where, prev)
		}
		ids[id] = where
	}
	if len(g.Members) > 0 && admins == 0 {
		add("members: no admin; at least one member needs role admin, or members can never change")
	}
	nodeIDs := map[string]string{}
	for i := range g.Nodes {
		n := &g.Nodes[i]
		where := fmt.Sprintf("nodes[%d]", i)
		if n.Name != "" {
			where += fmt.Sprintf(" (%s)", n.Name)
		}
		if err := checkText("name", n.Name, MaxTextLen, false); err != nil {
			add("%s: %v", where, err)
		}
		key, err := ParsePublicKey(n.PublicKey)
		if err != nil {
			add("%s: public_key: %v", where, err)
			continue
		}
		n.Key = key
		id := KeyID(key)
		if n.ID != "" && n.ID != id {
			add("%s: id %s does not match public_key, whose ID is %s", where, n.ID, id)
		}
		if prev, ok := nodeIDs[id]; ok {
			add("%s: the same public key as %s", where, prev)
		}
		nodeIDs[id] = where
	}
	p := &g.Policy
	if p.MaxBlockTxs < 1 || p.MaxBlockTxs > MaxTxsPerBlock {
		add("policy.max_block_txs %d must be between 1 and %d", p.MaxBlockTxs, MaxTxsPerBlock)
	}
	if p.MaxTxBytes < 1024 || p.MaxTxBytes > MaxEnvelopeBytes {
		add("policy.max_tx_bytes %d must be between 1024 and %d", p.MaxTxBytes, MaxEnvelopeBytes)
	}
	if p.MaxBlockBytes < p.MaxTxBytes {
		add("policy.max_block_bytes %d must be at least policy.max_tx_bytes (%d)", p.MaxBlockBytes, p.MaxTxBytes)
	}
	if p.BlockInterval <= 0 || p.BlockInterval > time.Minute {
		add("policy.block_interval %s must be above 0 and at most 1m (for example 50ms)", p.BlockInterval)
	}
	if p.MaxClockSkew < 0 || p.MaxClockSkew > 0 && (p.MaxClockSkew < time.Second || p.MaxClockSkew > 24*time.Hour) {
		add("policy.max_clock_skew %s must be between 1s and 24h (for example 30s)", p.MaxClockSkew)
	}
	if p.CheckpointQuorum < 0 {
		add("policy.checkpoint_quorum %d must not be negative", p.CheckpointQuorum)
	} else if len(g.Nodes) > 0 && p.CheckpointQuorum > len(g.Nodes) {
		add("policy.checkpoint_quorum %d is more than the %d nodes listed", p.CheckpointQuorum, len(g.Nodes))
	}
	if len(errs) > 0 {
		src := g.Source
		if src == "" {
			src = "genesis"
		}
		return fmt.Errorf("%w: %s: %s", ErrGenesis, src, strings.Join(errs, "; "))
	}
	return nil
}

// Quorum returns the effective checkpoint quorum: CheckpointQuorum, or a
// majority of the genesis nodes when it is zero (1 if none are listed).
func (g *Genesis) Quorum() int {
	if g.Policy.CheckpointQuorum > 0 {
		return g.Policy.CheckpointQuorum
	}
	return len(g.Nodes)/2 + 1
}

// canonicalGenesis is the form Hash covers: keys as hex, time as unix nanos.
type canonicalGenesis struct {
	ChainID string         `json:"chain_id"`
	Time    int64          `json:"time"`
	Members []canonicalKey `json:"members"`
	Nodes   []canonicalKey `json:"nodes"`
	Policy  struct {
		MaxBlockTxs      int   `json:"max_block_txs"`
		MaxBlockBytes    int   `json:"max_block_bytes"`
		MaxTxBytes       int   `json:"max_tx_bytes"`
		BlockInterval    int64 `json:"block_interval_ns"`
		CheckpointQuorum int   `json:"checkpoint_quorum"`
		// MaxClockSkew is left out when it is the default, so that the
		// genesis files written before it existed keep their hash.
		MaxClockSkew int64 `json:"max_clock_skew_ns,omitempty"`
	} `json:"policy"`
}

type canonicalKey struct {
	Name      string `json:"name"`
	Role      Role   `json:"role,omitempty"`
	PublicKey string `json:"public_key"`
}

// Canonical returns the genesis as canonical JSON, the bytes its Hash
// covers and the FSM stores. g must be valid.
func (g *Genesis) Canonical() []byte {
	c := canonicalGenesis{ChainID: g.ChainID, Time: g.UnixNano(), Members: []canonicalKey{}, Nodes: []canonicalKey{}}
	for _, m := range g.Members {
		c.Members = append(c.Members, canonicalKey{Name: m.Name, Role: m.Role, PublicKey: hexKey(m.PublicKey)})
	}
	for _, n := range g.Nodes {
		c.Nodes = append(c.Nodes, canonicalKey{Name: n.Name, PublicKey: hexKey(n.PublicKey)})
	}
	c.Policy.MaxBlockTxs = g.Policy.MaxBlockTxs
	c.Policy.MaxBlockBytes = g.Policy.MaxBlockBytes
	c.Policy.MaxTxBytes = g.Policy.MaxTxBytes
	c.Policy.BlockInterval = int64(g.Policy.BlockInterval)
	c.Policy.CheckpointQuorum = g.Quorum()
	if sk := g.Policy.ClockSkew(); sk != DefaultMaxClockSkew {
		c.Policy.MaxClockSkew = int64(sk)
	}
	out, err := json.Marshal(c)
	if err != nil {
		panic("ledger: encode genesis: " + err.Error())
	}
	return out
}

func hexKey(s string) string {
	k, err := ParsePublicKey(s)
	if err != nil {
		return ""
	}
	return hex.EncodeToString(k)
}

// UnixNano returns the genesis time in unix nanoseconds (0 when unset).
func (g *Genesis) UnixNano() int64 {
	if g.Time.IsZero() {
		return 0
	}
	return g.Time.UnixNano()
}

// Hash returns the SHA-256 of the genesis in a canonical form (keys as hex,
// defaults filled), so two files that say the same thing hash the same.
// The genesis block's state commits to it.
func (g *Genesis) Hash() [32]byte { return sha256.Sum256(g.Canonical()) }
