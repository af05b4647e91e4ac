package ledgertest

import (
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/fsm"
	"github.com/fedtune/fedtune/ledger/pebblestore"
)

// Twin is a ledger in memory: the real FSM on a pebble store over
// vfs.NewMem, fed one proposal per Submit, with no raft and no socket. Its
// blocks carry the time of the clock it was made with, so deadline rules
// follow a test's fake clock. Safe for concurrent use.
type Twin struct {
	db   *pebblestore.DB
	fsm  *fsm.FSM
	node ed25519.PrivateKey
	now  func() time.Time

	mu     sync.Mutex // serialises Submit (nonce read, sign, apply)
	height chan struct{}
}

// NewTwin starts a twin from genesis g, whose Nodes it replaces with one
// node of its own. now gives each block's time (nil: time.Now).
func NewTwin(g ledger.Genesis, now func() time.Time) (*Twin, error) {
	nk, err := ledger.GenerateKey()
	if err != nil {
		return nil, err
	}
	g.Nodes = []ledger.GenesisNode{{Name: "twin", PublicKey: hex.EncodeToString(nk.Public().(ed25519.PublicKey))}}
	if g.Policy == (ledger.Policy{}) {
		g.Policy = ledger.DefaultPolicy()
	}
	if err := g.Validate(); err != nil {
		return nil, err
	}
	if now == nil {
		now = time.Now
	}
	db, err := pebblestore.Open("twin", pebblestore.Options{FS: vfs.NewMem(), NoSync: true})
	if err != nil {
		return nil, err
	}
	tw := &Twin{db: db, node: nk, now: now, height: make(chan struct{})}
	tw.fsm, err = fsm.New(db.State(), &g, fsm.Options{Now: now})
	if err != nil {
		db.Close()
		return nil, err
	}
	return tw, nil
}

// Close releases the store.
func (tw *Twin) Close() error { return tw.db.Close() }

// FSM returns the twin's state machine, for its queries.
func (tw *Twin) FSM() *fsm.FSM { return tw.fsm }

// Height returns the last block's height.
func (tw *Twin) Height() uint64 { return tw.fsm.Height() }

// Apply commits one block holding the signed envelopes txs; it returns the
// block's height and, per tx, nil or the *ledger.TxError that kept it out.
func (tw *Twin) Apply(txs ...[]byte) (uint64, []error, error) {
	tw.mu.Lock()
	defer tw.mu.Unlock()
	return tw.apply(txs)
}

func (tw *Twin) apply(txs [][]byte) (uint64, []error, error) {
	p := ledger.SignProposal(tw.node, tw.fsm.ChainID(), ledger.Proposal{
		Proposer: ledger.KeyID(tw.node.Public().(ed25519.PublicKey)), Time: tw.now().UnixNano(), Txs: txs})
	res := tw.fsm.ApplyProposal(p)
	if res.Err != nil {
		return 0, nil, res.Err
	}
	errs := make([]error, len(res.Results))
	for i, r := range res.Results {
		if r.Err != nil {
			errs[i] = r.Err
		}
	}
	if res.Block != nil {
		close(tw.height)
		tw.height = make(chan struct{})
	}
	return tw.fsm.Height(), errs, nil
}

// Submit signs body with key and the signer's next nonce (as the ledger
// holds it) and commits it in a block of its own: the height, or the
// *ledger.TxError that rejected it.
func (tw *Twin) Submit(key ed25519.PrivateKey, body ledger.TxBody) (uint64, error) {
	tw.mu.Lock()
	defer tw.mu.Unlock()
	n, err := tw.fsm.Nonce(ledger.KeyID(key.Public().(ed25519.PublicKey)))
	if err != nil {
		return 0, err
	}
	env, err := ledger.SignTx(key, tw.fsm.ChainID(), n+1, body)
	if err != nil {
		return 0, err
	}
	h, errs, err := tw.apply([][]byte{env})
	if err != nil {
		return 0, err
	}
	if errs[0] != nil {
		return 0, errs[0]
	}
	return h, nil
}

// Changed returns a channel closed by the next committed block.
func (tw *Twin) Changed() <-chan struct{} {
	tw.mu.Lock()
	defer tw.mu.Unlock()
	return tw.height
}

// ErrBehind is returned by AtLeast for a height the twin has not reached.
var ErrBehind = errors.New("ledgertest: twin has not reached the height")

// AtLeast returns nil when the twin has applied height h, else ErrBehind
// (a twin applies every submit at once, so it never waits: a test asking
// for a height not yet committed has a bug, or simulates a lagging node).
func (tw *Twin) AtLeast(h uint64) error {
	if head := tw.fsm.Height(); h > head {
		return fmt.Errorf("%w: min height %d, head %d", ErrBehind, h, head)
	}
	return nil
}
