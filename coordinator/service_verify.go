package coordinator

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/fedtune/fedtune/internal/digest"
	"github.com/fedtune/fedtune/ledger"
)

// verdictPoll is how often the service reads a verifying round from the
// ledger for its draw and verdicts.
const verdictPoll = 200 * time.Millisecond

// watchVerdicts follows round n of job j, whose SubmissionsClosed the
// ledger committed at height h, while the machine verifies it: it reads
// the round from the ledger and steps the machine with what a
// verdictReader makes of it, until the machine moves on, the generation
// changes or ctx ends.
func (s *Service) watchVerdicts(ctx context.Context, gen uint64, j *runningJob, n, h uint64) {
	vr := &verdictReader{job: j.job.Name, round: n, log: s.log, met: s.cfg.Metrics}
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
		} else if evs := vr.events(ctx, r); len(evs) > 0 {
			s.mu.Lock()
			if gen == s.gen && s.job == j {
				for _, ev := range evs {
					// A rejection suspends its trainer when the job's
					// verify policy does: count it.
					if v, ok := ev.(UpdateVerdict); ok && !v.Passed {
						if rule := j.m.Recipe().Verify; rule != nil && rule.SuspendedUntil(n) > n {
							s.cfg.Metrics.Suspensions.Inc()
						}
					}
					s.step(ev)
				}
			}
			s.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return
		case <-s.clock.After(verdictPoll):
		}
	}
}

// readSuspensions reads job j's suspensions from the ledger, at least at
// height h, for round n, which the machine is about to open, and steps
// the machine with them (SuspensionsRead); a failed read is tried again
// until it succeeds, the generation changes or ctx ends.
func (s *Service) readSuspensions(ctx context.Context, gen uint64, j *runningJob, n, h uint64) {
	for {
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		ss, err := s.cfg.Ledger.Suspensions(qctx, j.job.Name, h)
		cancel()
		for i, x := range ss {
			if err == nil && !digest.Valid(x.Trainer) {
				// A reply the machine would refuse: ask again rather
				// than never open the round.
				err = fmt.Errorf("the ledger's reply names suspended[%d] %q, not a member ID", i, abbrev(x.Trainer))
			}
		}
		if err == nil {
			s.mu.Lock()
			defer s.mu.Unlock()
			if gen == s.gen && s.job == j {
				var now []string
				for _, x := range ss {
					if x.Suspended(n) {
						now = append(now, abbrev(x.Trainer))
					}
				}
				if len(now) > 0 {
					s.log.InfoContext(ctx, "trainers suspended by the ledger", "job", j.job.Name, "round", n, "trainers", now)
				}
				s.step(SuspensionsRead{Round: n, Suspended: ss})
			}
			return
		}
		s.log.WarnContext(ctx, "cannot read the job's suspensions; retrying", "job", j.job.Name, "round", n, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-s.clock.After(time.Second):
		}
		if !s.current(gen) {
			return
		}
	}
}

// verdictReader turns a verifying round, as the ledger shows it, into the
// machine's spot-check events, each once: the draw (DrawFixed) once the
// ledger shows its seed, then each drawn update's verdict (UpdateVerdict)
// once a verifier gave one. It logs them and counts them in met.
type verdictReader struct {
	job   string
	round uint64
	log   *slog.Logger
	met   *Metrics

	drawn bool            // DrawFixed made
	told  map[string]bool // trainers whose verdict was made
}

// events returns the events r holds that were not returned before.
func (v *verdictReader) events(ctx context.Context, r *ledger.Round) []Event {
	if r.DrawSeed == "" {
		return nil
	}
	var evs []Event
	if !v.drawn {
		var ids []string
		for _, u := range r.Updates {
			if u.Drawn {
				ids = append(ids, u.Trainer)
			}
		}
		v.log.InfoContext(ctx, "spot-check draw fixed", "job", v.job, "round", v.round, "seed", r.DrawSeed, "drawn", len(ids), "of", len(r.Updates))
		evs = append(evs, DrawFixed{Round: v.round, Drawn: ids})
		v.met.Drawn.Add(float64(len(ids)))
		v.drawn = true
	}
	for _, u := range r.Updates {
		if !u.Drawn || v.told[u.Trainer] {
			continue
		}
		switch {
		case u.VerifiedBy != "":
			v.log.InfoContext(ctx, "update verified", "job", v.job, "round", v.round, "trainer", abbrev(u.Trainer), "verifier", abbrev(u.VerifiedBy))
			evs = append(evs, UpdateVerdict{Round: v.round, Trainer: u.Trainer, Passed: true})
			v.met.Verdicts.WithLabelValues(VerdictPass).Inc()
		case u.Rejected:
			v.log.WarnContext(ctx, "update rejected by a spot check", "job", v.job, "round", v.round, "trainer", abbrev(u.Trainer),
				"by", abbrev(u.RejectedBy), "step", u.RejectStep, "reason", u.RejectReason)
			evs = append(evs, UpdateVerdict{Round: v.round, Trainer: u.Trainer, Reason: u.RejectReason})
			v.met.Verdicts.WithLabelValues(VerdictReject).Inc()
		default:
			continue
		}
		if v.told == nil {
			v.told = map[string]bool{}
		}
		v.told[u.Trainer] = true
	}
	return evs
}
