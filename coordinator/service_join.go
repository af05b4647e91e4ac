package coordinator

import (
	"sort"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// MaxSessionsPerTrainer is how many Join sessions one trainer key may hold
// at once: its session and the one a reconnect makes before the old
// stream is noticed gone. A key that joins again and again holds no more
// than this, so it cannot fill the coordinator's memory with sessions.
const MaxSessionsPerTrainer = 2

// sessionUnusedTTL is how long a session whose Tasks stream was never
// opened is kept; after it the session no longer counts and is dropped.
const sessionUnusedTTL = challengeTTL

// capSessions makes room for one more session of trainer id (Run
// goroutine). It drops the trainer's sessions never used within
// sessionUnusedTTL; then, while the trainer would hold more than
// MaxSessionsPerTrainer, it drops its oldest session whose Tasks stream was
// never opened (a trainer that reconnects after a failed stream replaces
// its stale session rather than locking itself out). Only when every held
// session streams is the new one refused.
func (s *Service) capSessions(id string, now time.Time) error {
	var unused []*session
	n := 0
	for sid, ss := range s.sessions {
		if ss.trainer != id {
			continue
		}
		if !ss.active && now.Sub(ss.created) > sessionUnusedTTL {
			close(ss.done)
			delete(s.sessions, sid)
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
		delete(s.sessions, unused[0].id)
		unused = unused[1:]
	}
	if n >= MaxSessionsPerTrainer {
		return status.Errorf(codes.ResourceExhausted, "join: trainer %s already streams tasks in %d sessions, the most one key may hold; close one first",
			abbrev(id), n)
	}
	return nil
}
