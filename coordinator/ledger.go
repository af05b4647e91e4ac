package coordinator

import (
	"context"
	"crypto/ed25519"
	"errors"
	"sync"

	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
)

// Ledger is what the Service needs of the ledger: submitting a signed
// transaction and waiting for its fate, and typed reads of the records it
// decides on. NodeLedger is the real one, over a ledger node's gRPC
// client; the service's tests use the ledger FSM in memory
// (ledgertest.Twin).
//
// Reads that find no record return an error wrapping
// ledger.ErrRecordNotFound; a rejected transaction an error wrapping
// client.ErrRejected and the ledger's typed *ledger.TxError.
type Ledger interface {
	// Submit signs body with key and the key's next nonce and waits until
	// the ledger commits it (the height) or rejects it.
	Submit(ctx context.Context, key ed25519.PrivateKey, body ledger.TxBody) (uint64, error)
	Member(ctx context.Context, id string) (*ledger.Member, error)
	Dataset(ctx context.Context, digest string) (*ledger.Dataset, error)
	Model(ctx context.Context, digest string) (*ledger.Model, error)
	Job(ctx context.Context, id string) (*ledger.JobRecord, error)
	// Round reads round n of job at least at height minHeight (0: the
	// latest the ledger has): a node behind it waits for it, bounded.
	Round(ctx context.Context, job string, n, minHeight uint64) (*ledger.Round, error)
	UpdatesByDigest(ctx context.Context, digest string) ([]ledger.UpdateSubmission, error)
	// Suspensions reads the trainers a verifier's rejection suspended
	// from job, at least at height minHeight (0: the latest).
	Suspensions(ctx context.Context, job string, minHeight uint64) ([]ledger.Suspension, error)
}

// ledgerRounds returns job's rounds 1, 2, … up to the first l does not
// have (client.Client.Rounds over a Ledger).
func ledgerRounds(ctx context.Context, l Ledger, job string) ([]ledger.Round, error) {
	var out []ledger.Round
	for n := uint64(1); ; n++ {
		r, err := l.Round(ctx, job, n, 0)
		if errors.Is(err, ledger.ErrRecordNotFound) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		out = append(out, *r)
	}
}

// NodeLedger is the Ledger of a ledger node's client: its typed queries
// and one client.Signer per key (which keeps the key's nonce).
type NodeLedger struct {
	c *client.Client

	mu      sync.Mutex
	signers map[string]*client.Signer
}

// NewNodeLedger returns the Ledger of client c.
func NewNodeLedger(c *client.Client) *NodeLedger {
	return &NodeLedger{c: c, signers: map[string]*client.Signer{}}
}

// Client returns the node client.
func (l *NodeLedger) Client() *client.Client { return l.c }

// Submit implements Ledger through the key's Signer.
func (l *NodeLedger) Submit(ctx context.Context, key ed25519.PrivateKey, body ledger.TxBody) (uint64, error) {
	id := ledger.KeyID(key.Public().(ed25519.PublicKey))
	l.mu.Lock()
	s := l.signers[id]
	if s == nil {
		s = client.NewSigner(l.c, key)
		l.signers[id] = s
	}
	l.mu.Unlock()
	return s.Submit(ctx, body)
}

// Member implements Ledger.
func (l *NodeLedger) Member(ctx context.Context, id string) (*ledger.Member, error) {
	return l.c.Member(ctx, id)
}

// Dataset implements Ledger.
func (l *NodeLedger) Dataset(ctx context.Context, digest string) (*ledger.Dataset, error) {
	return l.c.Dataset(ctx, digest)
}

// Model implements Ledger.
func (l *NodeLedger) Model(ctx context.Context, digest string) (*ledger.Model, error) {
	return l.c.Model(ctx, digest)
}

// Job implements Ledger.
func (l *NodeLedger) Job(ctx context.Context, id string) (*ledger.JobRecord, error) {
	return l.c.Job(ctx, id)
}

// Round implements Ledger (client.RoundAt).
func (l *NodeLedger) Round(ctx context.Context, job string, n, minHeight uint64) (*ledger.Round, error) {
	return l.c.RoundAt(ctx, job, n, minHeight)
}

// Suspensions implements Ledger (client.Suspensions).
func (l *NodeLedger) Suspensions(ctx context.Context, job string, minHeight uint64) ([]ledger.Suspension, error) {
	return l.c.Suspensions(ctx, job, minHeight)
}

// UpdatesByDigest implements Ledger.
func (l *NodeLedger) UpdatesByDigest(ctx context.Context, digest string) ([]ledger.UpdateSubmission, error) {
	return l.c.UpdatesByDigest(ctx, digest)
}
