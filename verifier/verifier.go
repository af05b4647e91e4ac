package verifier

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
)

// Check is one drawn update to replay: the job's record, the round as the
// ledger shows it and the update.
type Check struct {
	Job    *ledger.JobRecord
	Round  *ledger.Round
	Update ledger.Update
	// Seed is the round's draw seed (the closing block's hash).
	Seed [32]byte
}

// Result is a replay's outcome: Passed when the update and its training
// commitment match the replay bit for bit; otherwise Step is the first
// step whose state differs (or, when the evidence cannot pin it, the last
// step of the range it lies in; at least 1) and Reason says what differs.
type Result struct {
	Passed bool
	Step   uint64
	Reason string
}

// Replayer replays a drawn update's local training. An error means the
// replay could not be run (no verdict is signed; the node tries again at
// its next pass); a Result is a verdict.
type Replayer interface {
	Replay(ctx context.Context, c Check) (Result, error)
}

// ReplayFunc adapts a function to Replayer.
type ReplayFunc func(ctx context.Context, c Check) (Result, error)

// Replay implements Replayer.
func (f ReplayFunc) Replay(ctx context.Context, c Check) (Result, error) { return f(ctx, c) }

// Config configures a Node.
type Config struct {
	// Ledger reads the chain and submits the verdicts.
	Ledger *client.Client
	// Key is the verifier's ledger key (a member with role verifier).
	Key ed25519.PrivateKey
	// Replayer replays the drawn updates.
	Replayer Replayer
	// From is the first height followed (0: 1). A node started late
	// still judges the open rounds it finds.
	From uint64
	// Retry is how long the node waits before trying a check again
	// after an error (0: 2 s).
	Retry time.Duration
	// Logger receives the node's logs; nil discards.
	Logger *slog.Logger
}

// Node is a verifier node.
type Node struct {
	cfg    Config
	id     string
	signer *client.Signer
	log    *slog.Logger
	met    *metrics
	work   chan pending
}

// pending is a closed round to judge.
type pending struct {
	job   *ledger.JobRecord
	round uint64
	seed  [32]byte
}

// New checks cfg and returns a node.
func New(cfg Config) (*Node, error) {
	switch {
	case cfg.Ledger == nil:
		return nil, errors.New("verifier: no ledger client")
	case len(cfg.Key) != ed25519.PrivateKeySize:
		return nil, errors.New("verifier: no ed25519 key")
	case cfg.Replayer == nil:
		return nil, errors.New("verifier: no replayer")
	}
	if cfg.From == 0 {
		cfg.From = 1
	}
	if cfg.Retry <= 0 {
		cfg.Retry = 2 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	id := ledger.KeyID(cfg.Key.Public().(ed25519.PublicKey))
	return &Node{cfg: cfg, id: id, signer: client.NewSigner(cfg.Ledger, cfg.Key), log: log.With("verifier", abbrev(id)),
		met: newMetrics(), work: make(chan pending, 1024)}, nil
}

// ID returns the verifier's member ID.
func (n *Node) ID() string { return n.id }

// Registry returns the node's Prometheus registry.
func (n *Node) Registry() *prometheus.Registry { return n.met.reg }

// Run follows the chain from Config.From and judges the drawn updates of
// every round whose job names this verifier, until ctx ends (then it
// returns nil). A key the ledger does not know yet is waited for (every
// Config.Retry); Run fails only when the key is a member but not an active
// verifier.
func (n *Node) Run(ctx context.Context) error {
	// A key not admitted yet (the admin's MemberAdded still on its way,
	// or not applied on the node this verifier reads) is waited for.
	m, err := n.cfg.Ledger.Member(ctx, n.id)
	for errors.Is(err, ledger.ErrRecordNotFound) {
		n.log.InfoContext(ctx, "verifier not admitted yet; waiting for its MemberAdded", "retry", n.cfg.Retry)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(n.cfg.Retry):
		}
		m, err = n.cfg.Ledger.Member(ctx, n.id)
	}
	if ctx.Err() != nil {
		return nil // stopped before it started
	}
	if err != nil {
		return fmt.Errorf("verifier: own membership: %w", err)
	}
	if !m.Active || m.Role != ledger.RoleVerifier {
		return fmt.Errorf("verifier: %s is a %s member (active %v), not an active verifier", n.id, m.Role, m.Active)
	}
	n.log.InfoContext(ctx, "verifier started", "from", n.cfg.From)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		n.judge(ctx)
	}()
	// Follow the chain; a broken stream (a node restarting, a query
	// that failed) is reopened after the last block handled.
	next := n.cfg.From
	for ctx.Err() == nil {
		err = n.cfg.Ledger.Blocks(ctx, next, true, func(vb *client.VerifiedBlock) error {
			if err := n.block(ctx, vb); err != nil {
				return err
			}
			next = vb.Block.Header.Height + 1
			n.met.height.Set(float64(vb.Block.Header.Height))
			return nil
		})
		if ctx.Err() != nil {
			break
		}
		n.met.errors.Inc()
		n.log.WarnContext(ctx, "block stream ended; reopening", "from", next, "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(n.cfg.Retry):
		}
	}
	cancel()
	<-done
	return nil
}

// block queues the rounds a block closes for this verifier.
func (n *Node) block(ctx context.Context, vb *client.VerifiedBlock) error {
	for _, raw := range vb.Block.Txs {
		tx, err := ledger.DecodeTx(raw)
		if err != nil {
			continue // the chain holds only valid txs; nothing of ours
		}
		sc, ok := tx.Body.(ledger.SubmissionsClosed)
		if !ok {
			continue
		}
		job, err := n.cfg.Ledger.Job(ctx, sc.JobID)
		if err != nil {
			return fmt.Errorf("job %q: %w", sc.JobID, err)
		}
		if job.Recipe.Verify == nil || !job.Recipe.Verify.Names(n.id) {
			continue
		}
		n.met.rounds.Inc()
		n.log.InfoContext(ctx, "round closed; judging its drawn updates", "job", sc.JobID, "round", sc.Round,
			"height", vb.Block.Header.Height, "seed", fmt.Sprintf("%x", vb.Hash))
		select {
		case n.work <- pending{job: job, round: sc.Round, seed: vb.Hash}:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// judge takes closed rounds off the queue and judges them one at a time.
func (n *Node) judge(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case p := <-n.work:
			for {
				err := n.judgeRound(ctx, p)
				if err == nil || ctx.Err() != nil {
					break
				}
				n.log.WarnContext(ctx, "cannot judge the round yet; trying again", "job", p.job.JobID, "round", p.round, "err", err)
				select {
				case <-ctx.Done():
					return
				case <-time.After(n.cfg.Retry):
				}
			}
		}
	}
}

// judgeRound replays every drawn update of the round that has no verdict
// and signs each verdict. It returns an error when a check must be tried
// again.
func (n *Node) judgeRound(ctx context.Context, p pending) error {
	r, err := n.cfg.Ledger.Round(ctx, p.job.JobID, p.round)
	if err != nil {
		return err
	}
	// A round that failed or committed after its submissions closed is
	// still judged until its verdict window ends: its draw stands, and a
	// late rejection suspends the trainer as a timely one does.
	if r.Status != ledger.StatusOpen && r.VerdictsUntil != 0 && time.Now().UnixNano() > r.VerdictsUntil {
		n.log.InfoContext(ctx, "round closed and its verdict window over", "job", r.JobID, "round", r.Round, "status", r.Status,
			"verdicts_until", time.Unix(0, r.VerdictsUntil).UTC().Format(time.RFC3339))
		return nil
	}
	var retry error
	for _, u := range r.Updates {
		if !p.job.Recipe.DrawnUpdate(p.seed, r.JobID, r.Round, &u) {
			continue
		}
		if u.VerifiedBy != "" || u.RejectStep != 0 {
			// Settled by the job's quorum of verifiers. An update the
			// aggregator rejected (no step) is still judged: a verifier's
			// rejection of it suspends its trainer.
			continue
		}
		if _, ok := u.VerdictOf(n.id); ok {
			continue // our verdict is on the chain; the others' are awaited
		}
		n.met.drawn.Inc()
		if err := n.check(ctx, Check{Job: p.job, Round: r, Update: u, Seed: p.seed}); err != nil {
			retry = errors.Join(retry, err)
		}
	}
	return retry
}

// check replays one update and submits the verdict.
func (n *Node) check(ctx context.Context, c Check) error {
	log := n.log.With("job", c.Round.JobID, "round", c.Round.Round, "trainer", abbrev(c.Update.Trainer), "update", abbrev(c.Update.UpdateDigest))
	log.InfoContext(ctx, "replaying a drawn update")
	start := time.Now()
	res, err := n.cfg.Replayer.Replay(ctx, c)
	n.met.replaySeconds.Observe(time.Since(start).Seconds())
	if err != nil {
		n.met.errors.Inc()
		n.met.replays.WithLabelValues("error").Inc()
		return fmt.Errorf("replay of update %s of trainer %s: %w", c.Update.UpdateDigest, c.Update.Trainer, err)
	}
	if res.Passed {
		n.met.replays.WithLabelValues("match").Inc()
	} else {
		n.met.replays.WithLabelValues("mismatch").Inc()
		n.met.mismatches.Inc()
	}
	var body ledger.TxBody
	if res.Passed {
		body = ledger.UpdateVerified{JobID: c.Round.JobID, Round: c.Round.Round, UpdateDigest: c.Update.UpdateDigest}
	} else {
		if res.Step == 0 {
			res.Step = 1
		}
		if cm := c.Update.Commitment; cm != nil && res.Step > cm.Steps {
			res.Step = cm.Steps
		}
		body = ledger.UpdateRejected{JobID: c.Round.JobID, Round: c.Round.Round, UpdateDigest: c.Update.UpdateDigest,
			Reason: ledger.TruncateReason("spot check: replay differs: " + res.Reason), Step: res.Step}
	}
	h, err := n.signer.Submit(ctx, body)
	switch {
	case errors.Is(err, ledger.ErrAlreadyExists), errors.Is(err, ledger.ErrRoundNotOpen):
		log.InfoContext(ctx, "verdict not needed any more", "err", err)
		return nil
	case err != nil:
		n.met.errors.Inc()
		return fmt.Errorf("submit %s: %w", body.TxType(), err)
	}
	if res.Passed {
		n.met.verdicts.WithLabelValues("pass").Inc()
		log.InfoContext(ctx, "update verified", "height", h, "took", time.Since(start).Round(time.Millisecond))
	} else {
		n.met.verdicts.WithLabelValues("reject").Inc()
		log.WarnContext(ctx, "update rejected", "height", h, "step", res.Step, "reason", res.Reason)
	}
	return nil
}

func abbrev(id string) string {
	if len(id) > 16 {
		return id[:16]
	}
	return id
}
