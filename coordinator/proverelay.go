package coordinator

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync"
	"time"

	coordinatorv1 "github.com/fedtune/fedtune/api/coordinator/v1"
)

// Limits of ProveSample.
const (
	// MaxProveDatasets bounds the datasets one ProveSample may name (as
	// many as one caller may have outstanding: ask in batches).
	MaxProveDatasets = maxProofsPerCaller
	// DefaultProveTimeout is how long ProveSample waits for each trainer
	// when the request names no timeout.
	DefaultProveTimeout = 10 * time.Second
	// MaxProveTimeout bounds the wait a request may ask for.
	MaxProveTimeout = 2 * time.Minute
	// MaxProofAnswerBytes bounds a trainer's proof: an honest one holds at
	// most two audit paths of 64 hashes (under 10 KiB of JSON).
	MaxProofAnswerBytes = 16 << 10
	// maxPendingProofs bounds the proof questions in flight at once.
	maxPendingProofs = 4096
	// maxProofsPerTrainer bounds the questions outstanding to one trainer
	// (and its session's proof queue); more are answered BUSY.
	maxProofsPerTrainer = 8
	// maxProofsPerCaller bounds the questions one caller (a TLS key; every
	// plain-text caller counts as one) has outstanding; more are BUSY.
	maxProofsPerCaller = 64
)

// proveRelay holds the proof questions sent to trainers and not yet
// answered, by request ID, with counts per trainer and per caller. Its
// zero value is ready.
type proveRelay struct {
	mu        sync.Mutex
	pending   map[string]*pendingProof
	byTrainer map[string]int
	byCaller  map[string]int
}

// pendingProof is one question to one trainer.
type pendingProof struct {
	trainer string
	dataset string
	caller  string
	answer  chan *coordinatorv1.SubmitProofRequest // buffered 1
}

// add records p and returns its request ID, or why it is refused (the
// coordinator, the trainer or the caller has too many outstanding).
func (r *proveRelay) add(p *pendingProof) (string, string) {
	var b [16]byte
	_, _ = rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pending == nil {
		r.pending, r.byTrainer, r.byCaller = map[string]*pendingProof{}, map[string]int{}, map[string]int{}
	}
	switch {
	case len(r.pending) >= maxPendingProofs:
		return "", fmt.Sprintf("%d proof questions in flight at the coordinator", len(r.pending))
	case r.byTrainer[p.trainer] >= maxProofsPerTrainer:
		return "", fmt.Sprintf("the trainer has %d proof questions outstanding (limit %d)", r.byTrainer[p.trainer], maxProofsPerTrainer)
	case r.byCaller[p.caller] >= maxProofsPerCaller:
		return "", fmt.Sprintf("this caller has %d proof questions outstanding (limit %d)", r.byCaller[p.caller], maxProofsPerCaller)
	}
	r.pending[id] = p
	r.byTrainer[p.trainer]++
	r.byCaller[p.caller]++
	return id, ""
}

// drop forgets question id (mu held).
func (r *proveRelay) drop(id string, p *pendingProof) {
	delete(r.pending, id)
	if r.byTrainer[p.trainer]--; r.byTrainer[p.trainer] <= 0 {
		delete(r.byTrainer, p.trainer)
	}
	if r.byCaller[p.caller]--; r.byCaller[p.caller] <= 0 {
		delete(r.byCaller, p.caller)
	}
}

func (r *proveRelay) remove(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if p := r.pending[id]; p != nil {
		r.drop(id, p)
	}
}

// take removes and returns the question id if trainer was asked it.
func (r *proveRelay) take(id, trainer string) *pendingProof {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.pending[id]
	if p == nil || p.trainer != trainer {
		return nil
	}
	r.drop(id, p)
	return p
}
