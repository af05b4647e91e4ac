package client

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"sync"

	"github.com/fedtune/fedtune/ledger"
)

// Signer submits transactions signed with one ledger key, keeping the
// key's nonce: it reads the next nonce from the ledger the first time and
// after any failure, and counts up locally otherwise. Safe for concurrent
// use (submissions are serialised).
type Signer struct {
	key    ed25519.PrivateKey
	id     string
	ledger *Client

	mu      sync.Mutex
	chainID string
	nonce   uint64
	known   bool
}

// NewSigner returns a Signer for key over the ledger client c.
func NewSigner(c *Client, key ed25519.PrivateKey) *Signer {
	return &Signer{key: key, id: ledger.KeyID(key.Public().(ed25519.PublicKey)), ledger: c}
}

// ID returns the signer's ledger key ID.
func (s *Signer) ID() string { return s.id }

// Client returns the ledger client the signer submits through.
func (s *Signer) Client() *Client { return s.ledger }

// Submit signs body with the next nonce and waits until the ledger commits
// it (returning the height) or rejects it (a *RejectedError, as
// Client.SubmitWait).
func (s *Signer) Submit(ctx context.Context, body ledger.TxBody) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h, err := s.submit(ctx, body)
	var te *ledger.TxError
	if errors.As(err, &te) && te.Cause == ledger.CauseNonceStale {
		// The key signed elsewhere too (a CLI command beside a running
		// node): the refused tx used nothing; sign again with the
		// ledger's next nonce, once.
		return s.submit(ctx, body)
	}
	return h, err
}

func (s *Signer) submit(ctx context.Context, body ledger.TxBody) (uint64, error) {
	if !s.known {
		if s.chainID == "" {
			st, err := s.ledger.Status(ctx)
			if err != nil {
				return 0, fmt.Errorf("ledger status: %w", err)
			}
			s.chainID = st.ChainId
		}
		n, err := s.ledger.Nonce(ctx, s.id)
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
