package coordinator

import (
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// MaxSessionsPerTrainer is how many Join sessions one trainer key may hold
// at once: its session and the one a reconnect makes before the old
// stream is noticed gone. A key that joins again and again is refused
// beyond it, so it cannot fill the coordinator's memory with sessions.
const MaxSessionsPerTrainer = 2

// sessionUnusedTTL is how long a session whose Tasks stream was never
// opened is kept; after it the session no longer counts and is dropped.
const sessionUnusedTTL = challengeTTL

// capSessions drops trainer id's sessions that were never used within
// sessionUnusedTTL and refuses a new one when the trainer still holds
// MaxSessionsPerTrainer (Run goroutine).
func (s *Service) capSessions(id string, now time.Time) error {
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
		n++
	}
	if n >= MaxSessionsPerTrainer {
		return status.Errorf(codes.ResourceExhausted, "join: trainer %s already holds %d sessions, the most one key may hold; use one (open its Tasks stream) or wait %s for an unused one to expire",
			abbrev(id), n, sessionUnusedTTL)
	}
	return nil
}
