package coordinator

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	ledgerv1 "github.com/fedtune/fedtune/api/ledger/v1"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/node"
)

// Signer submits transactions signed with one ledger key, keeping the
// key's nonce: it reads the next nonce from the ledger the first time and
// after any failure, and counts up locally otherwise. Safe for concurrent
// use (submissions are serialised).
type Signer struct {
	key    ed25519.PrivateKey
	id     string
	ledger *node.Client

	mu      sync.Mutex
	chainID string
	nonce   uint64
	known   bool
}

// NewSigner returns a Signer for key over the ledger client c.
func NewSigner(c *node.Client, key ed25519.PrivateKey) *Signer {
	return &Signer{key: key, id: ledger.KeyID(key.Public().(ed25519.PublicKey)), ledger: c}
}

// ID returns the signer's ledger key ID.
func (s *Signer) ID() string { return s.id }

// Submit signs body with the next nonce and waits until the ledger commits
// it (returning the height) or rejects it (an error wrapping
// node.ErrRejected with the ledger's reason).
func (s *Signer) Submit(ctx context.Context, body ledger.TxBody) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.known {
		if s.chainID == "" {
			st, err := s.ledger.Status(ctx)
			if err != nil {
				return 0, fmt.Errorf("ledger status: %w", err)
			}
			s.chainID = st.ChainId
		}
		n, err := QueryNonce(ctx, s.ledger, s.id)
		if err != nil {
			return 0, err
		}
		s.nonce, s.known = n, true
	}
	env, err := ledger.SignTx(s.key, s.chainID, s.nonce+1, body)
	if err != nil {
		return 0, fmt.Errorf("sign %s: %w", body.TxType(), err)
	}
	h, err := s.ledger.SubmitWait(ctx, env)
	if err != nil {
		s.known = false // re-read the nonce: the tx may or may not have used it
		return 0, fmt.Errorf("%s: %w", body.TxType(), err)
	}
	s.nonce++
	return h, nil
}

// QueryNonce returns the last nonce the ledger applied for signer id.
func QueryNonce(ctx context.Context, c *node.Client, id string) (uint64, error) {
	js, err := c.Query(ctx, ledgerv1.QueryKind_QUERY_KIND_NONCE, id, 0)
	if err != nil {
		return 0, fmt.Errorf("nonce of %s: %w", abbrev(id), err)
	}
	var n uint64
	if err := json.Unmarshal(js, &n); err != nil {
		return 0, fmt.Errorf("nonce of %s: %w", abbrev(id), err)
	}
	return n, nil
}

// ErrLedgerRecordNotFound is returned by the ledger queries of this file
// when the record does not exist.
var ErrLedgerRecordNotFound = errors.New("coordinator: ledger record not found")

// queryJSON reads one ledger record into v; ErrLedgerRecordNotFound when
// the ledger has none.
func queryJSON(ctx context.Context, c *node.Client, kind ledgerv1.QueryKind, key string, round uint64, v any) error {
	js, err := c.Query(ctx, kind, key, round)
	if status.Code(err) == codes.NotFound {
		return fmt.Errorf("%s %s: %w", kind, abbrev(key), ErrLedgerRecordNotFound)
	}
	if err != nil {
		return fmt.Errorf("query %s %s: %w", kind, abbrev(key), err)
	}
	if err := json.Unmarshal(js, v); err != nil {
		return fmt.Errorf("query %s %s: %w", kind, abbrev(key), err)
	}
	return nil
}

// QueryMember returns the ledger's record of member id.
func QueryMember(ctx context.Context, c *node.Client, id string) (*ledger.Member, error) {
	var m ledger.Member
	if err := queryJSON(ctx, c, ledgerv1.QueryKind_QUERY_KIND_MEMBER, id, 0, &m); err != nil {
		return nil, err
	}
	return &m, nil
}

// QueryDataset returns the ledger's record of dataset digest.
func QueryDataset(ctx context.Context, c *node.Client, digest string) (*ledger.Dataset, error) {
	var d ledger.Dataset
	if err := queryJSON(ctx, c, ledgerv1.QueryKind_QUERY_KIND_DATASET, digest, 0, &d); err != nil {
		return nil, err
	}
	return &d, nil
}

// QueryModel returns the ledger's record of model digest.
func QueryModel(ctx context.Context, c *node.Client, digest string) (*ledger.Model, error) {
	var m ledger.Model
	if err := queryJSON(ctx, c, ledgerv1.QueryKind_QUERY_KIND_MODEL, digest, 0, &m); err != nil {
		return nil, err
	}
	return &m, nil
}

// QueryJob returns a registered job: its owner and round recipe (whose
// Aggregators are the job's designated aggregators).
func QueryJob(ctx context.Context, c *node.Client, job string) (*ledger.JobRecord, error) {
	var j ledger.JobRecord
	if err := queryJSON(ctx, c, ledgerv1.QueryKind_QUERY_KIND_JOB, job, 0, &j); err != nil {
		return nil, err
	}
	return &j, nil
}

// QueryRound returns round n of job as the ledger records it, with its
// updates.
func QueryRound(ctx context.Context, c *node.Client, job string, n uint64) (*ledger.Round, error) {
	var r ledger.Round
	if err := queryJSON(ctx, c, ledgerv1.QueryKind_QUERY_KIND_ROUND, job, n, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// QueryRounds returns the job's rounds 1, 2, … up to the first the ledger
// does not have.
func QueryRounds(ctx context.Context, c *node.Client, job string) ([]ledger.Round, error) {
	var out []ledger.Round
	for n := uint64(1); ; n++ {
		r, err := QueryRound(ctx, c, job, n)
		if errors.Is(err, ErrLedgerRecordNotFound) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		out = append(out, *r)
	}
}
