package coordinator

import (
	"context"
	"time"
)

// verdictPoll is how often the service reads a verifying round from the
// ledger for its draw and verdicts.
const verdictPoll = 200 * time.Millisecond

// watchVerdicts follows round n of job j, whose SubmissionsClosed the
// ledger committed at height h, while the machine verifies it: it reads
// the round from the ledger and steps the machine with the draw
// (DrawFixed, once the ledger shows the seed) and each drawn update's
// verdict (UpdateVerdict), until the machine moves on, the generation
// changes or ctx ends.
func (s *Service) watchVerdicts(ctx context.Context, gen uint64, j *runningJob, n, h uint64) {
	told := map[string]bool{}
	drawn := false
	for {
		s.mu.Lock()
		live := gen == s.gen && s.job == j && j.m.Verifying(n)
		s.mu.Unlock()
		if !live {
			return
		}
		r, err := s.cfg.Ledger.Round(ctx, j.job.Name, n, h)
		if err != nil {
			s.log.WarnContext(ctx, "cannot read the verifying round", "job", j.job.Name, "round", n, "err", err)
		} else if r.DrawSeed != "" {
			var evs []Event
			if !drawn {
				var ids []string
				for _, u := range r.Updates {
					if u.Drawn {
						ids = append(ids, u.Trainer)
					}
				}
				s.log.InfoContext(ctx, "spot-check draw fixed", "job", j.job.Name, "round", n, "seed", r.DrawSeed, "drawn", len(ids), "of", len(r.Updates))
				evs = append(evs, DrawFixed{Round: n, Drawn: ids})
				drawn = true
			}
			for _, u := range r.Updates {
				if !u.Drawn || told[u.Trainer] {
					continue
				}
				switch {
				case u.VerifiedBy != "":
					s.log.InfoContext(ctx, "update verified", "job", j.job.Name, "round", n, "trainer", abbrev(u.Trainer), "verifier", abbrev(u.VerifiedBy))
					evs = append(evs, UpdateVerdict{Round: n, Trainer: u.Trainer, Passed: true})
				case u.Rejected:
					s.log.WarnContext(ctx, "update rejected by a spot check", "job", j.job.Name, "round", n, "trainer", abbrev(u.Trainer),
						"by", abbrev(u.RejectedBy), "step", u.RejectStep, "reason", u.RejectReason)
					evs = append(evs, UpdateVerdict{Round: n, Trainer: u.Trainer, Reason: u.RejectReason})
				default:
					continue
				}
				told[u.Trainer] = true
			}
			if len(evs) > 0 {
				s.mu.Lock()
				if gen == s.gen && s.job == j {
					for _, ev := range evs {
						s.step(ev)
					}
				}
				s.mu.Unlock()
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-s.clock.After(verdictPoll):
		}
	}
}
