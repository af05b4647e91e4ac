package coordinator

import (
	"crypto/rand"
	"encoding/hex"
	"slices"
	"sort"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	coordinatorv1 "github.com/fedtune/fedtune/api/coordinator/v1"
)

// MaxSessionsPerTrainer is how many Join sessions one trainer key may hold
// at once: its session and the one a reconnect makes before the old
// stream is noticed gone. A key that joins again and again holds no more
// than this, so it cannot fill the coordinator's memory with sessions.
const MaxSessionsPerTrainer = 2

// sessionUnusedTTL is how long a session whose Tasks stream was never
// opened is kept; after it the session no longer counts and is dropped.
const sessionUnusedTTL = challengeTTL

// session is one Join of a trainer: the queues its Tasks stream sends.
type session struct {
	id       string
	trainer  string
	datasets []string
	tasks    chan *coordinatorv1.Task
	proofs   chan *coordinatorv1.Task // proof questions, apart from tasks (service_prove.go)
	active   bool                     // a Tasks stream is open
	done     chan struct{}            // closed when the session is dropped
	created  time.Time                // when Join made it
}

// sessionTable holds the trainers' sessions and the trainer members known
// from their joins. Its zero value is ready; safe for concurrent use. It
// calls nothing outside itself while it holds its lock.
type sessionTable struct {
	mu       sync.Mutex
	sessions map[string]*session
	members  map[string]bool // trainer members that joined, until the ledger says otherwise
}

// open makes a session of trainer id with its datasets (Join), after
// capLocked made room for it, and counts id as a member.
func (t *sessionTable) open(id string, datasets []string, now time.Time) (string, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.capLocked(id, now); err != nil {
		return "", err
	}
	var b [16]byte
	_, _ = rand.Read(b[:])
	sid := hex.EncodeToString(b[:])
	t.sessions[sid] = &session{id: sid, trainer: id, datasets: datasets, tasks: make(chan *coordinatorv1.Task, 16),
		proofs: make(chan *coordinatorv1.Task, maxProofsPerTrainer), done: make(chan struct{}), created: now}
	if t.members == nil {
		t.members = map[string]bool{}
	}
	t.members[id] = true
	return sid, nil
}

// capLocked makes room for one more session of trainer id (t.mu held). It
// drops the trainer's sessions never used within sessionUnusedTTL; then,
// while the trainer would hold more than MaxSessionsPerTrainer, it drops
// its oldest session whose Tasks stream was never opened (a trainer that
// reconnects after a failed stream replaces its stale session rather than
// locking itself out). Only when every held session streams is the new
// one refused.
func (t *sessionTable) capLocked(id string, now time.Time) error {
	if t.sessions == nil {
		t.sessions = map[string]*session{}
	}
	var unused []*session
	n := 0
	for sid, ss := range t.sessions {
		if ss.trainer != id {
			continue
		}
		if !ss.active && now.Sub(ss.created) > sessionUnusedTTL {
			close(ss.done)
			delete(t.sessions, sid)
			continue
		}
		if !ss.active {
			unused = append(unused, ss)
		}
		n++
	}
	sort.Slice(unused, func(i, j int) bool { return unused[i].created.Before(unused[j].created) })
	for ; n >= MaxSessionsPerTrainer && len(unused) > 0; n-- {
		close(unused[0].done)
		delete(t.sessions, unused[0].id)
		unused = unused[1:]
	}
	if n >= MaxSessionsPerTrainer {
		return status.Errorf(codes.ResourceExhausted, "join: trainer %s already streams tasks in %d sessions, the most one key may hold; close one first",
			abbrev(id), n)
	}
	return nil
}

// trainerOf returns the trainer of session sid ("" if none).
func (t *sessionTable) trainerOf(sid string) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if ss := t.sessions[sid]; ss != nil {
		return ss.trainer
	}
	return ""
}

// activate marks session sid as streaming and drops the trainer's other
// sessions (a newer session replaces older ones). It returns nil when the
// session is unknown, already streams, or ok refuses its trainer.
func (t *sessionTable) activate(sid string, ok func(trainer string) bool) *session {
	t.mu.Lock()
	defer t.mu.Unlock()
	ss := t.sessions[sid]
	if ss == nil || ss.active || !ok(ss.trainer) {
		return nil
	}
	for id, o := range t.sessions {
		if o != ss && o.trainer == ss.trainer {
			close(o.done)
			delete(t.sessions, id)
		}
	}
	ss.active = true
	return ss
}

// leave removes ss if it is still the table's; it reports whether it was.
func (t *sessionTable) leave(ss *session) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.sessions[ss.id] != ss {
		return false
	}
	delete(t.sessions, ss.id)
	return true
}

// sendTask queues task on trainer's session without blocking: found says
// the trainer has a session, sent that the task was queued.
func (t *sessionTable) sendTask(trainer string, task *coordinatorv1.Task) (found, sent bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, ss := range t.sessions {
		if ss.trainer != trainer {
			continue
		}
		select {
		case ss.tasks <- task:
			return true, true
		default:
			return true, false
		}
	}
	return false, false
}

// sendProof queues a proof question on trainer's streaming session without
// blocking: connected says it has one, sent that the question was queued.
func (t *sessionTable) sendProof(trainer string, task *coordinatorv1.Task) (connected, sent bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, ss := range t.sessions {
		if ss.trainer != trainer || !ss.active {
			continue
		}
		select {
		case ss.proofs <- task:
			return true, true
		default:
			return true, false
		}
	}
	return false, false
}

// joined returns the trainers with an open task stream, sorted.
func (t *sessionTable) joined() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []string
	for _, ss := range t.sessions {
		if ss.active {
			out = append(out, ss.trainer)
		}
	}
	slices.Sort(out)
	return out
}

// streaming returns the TrainerJoined events of the open task streams.
func (t *sessionTable) streaming() []TrainerJoined {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []TrainerJoined
	for _, ss := range t.sessions {
		if ss.active {
			out = append(out, TrainerJoined{Trainer: ss.trainer, Datasets: ss.datasets})
		}
	}
	slices.SortFunc(out, func(a, b TrainerJoined) int {
		switch {
		case a.Trainer < b.Trainer:
			return -1
		case a.Trainer > b.Trainer:
			return 1
		}
		return 0
	})
	return out
}

// memberList returns the trainer members known from joins, sorted.
func (t *sessionTable) memberList() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []string
	for id, ok := range t.members {
		if ok {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

// drop forgets member id and closes its sessions (the ledger no longer
// holds it as an active trainer).
func (t *sessionTable) drop(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.members, id)
	for sid, ss := range t.sessions {
		if ss.trainer == id {
			close(ss.done)
			delete(t.sessions, sid)
		}
	}
}

// closeAll closes and forgets every session (the service stops).
func (t *sessionTable) closeAll() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, ss := range t.sessions {
		close(ss.done)
	}
	t.sessions = map[string]*session{}
}
