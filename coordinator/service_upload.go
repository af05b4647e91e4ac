package coordinator

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/fedtune/fedtune/internal/dspub"
	"github.com/fedtune/fedtune/internal/tlsid"
	"github.com/fedtune/fedtune/ledger"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// mayUpload decides who may store blobs in the coordinator's artifact
// store (artifact.ServerConfig.AuthorizeUpload): without TLS anyone; over
// TLS the coordinator's own key, or any active ledger member (trainers
// upload their updates, the remote aggregator the global models, admins
// base models and job configs). A key the ledger does not know is
// refused, so a stranger who reaches the port cannot fill the disk.
func (s *Service) mayUpload(ctx context.Context) error {
	if s.cfg.Insecure {
		return nil
	}
	peer, err := tlsid.PeerID(ctx)
	if err != nil {
		return status.Errorf(codes.Unauthenticated, "upload: no TLS peer identity: %v", err)
	}
	if peer == s.id {
		return nil
	}
	m, err := s.cfg.Ledger.Member(ctx, peer)
	switch {
	case errors.Is(err, ledger.ErrRecordNotFound) || (err == nil && !m.Active):
		return status.Errorf(codes.PermissionDenied, "upload: %s is not an active ledger member; only members may store artifacts here", abbrev(peer))
	case err != nil:
		return status.Errorf(codes.Unavailable, "upload: cannot read the caller's membership: %v", err)
	}
	return nil
}

// mayDownload decides who may download a blob from the coordinator's
// artifact store (artifact.ServerConfig.AuthorizeDownload): without TLS
// anyone; over TLS the coordinator's own key, or an active ledger member
// as DownloadAllowed rules for the blob (an update goes only to those who
// need it; anything else to every member).
func (s *Service) mayDownload(ctx context.Context, digest string) error {
	if s.cfg.Insecure {
		return nil
	}
	peer, err := tlsid.PeerID(ctx)
	if err != nil {
		return status.Errorf(codes.Unauthenticated, "download %s: no TLS peer identity: %v", digest, err)
	}
	if peer == s.id {
		return nil
	}
	m, err := s.cfg.Ledger.Member(ctx, peer)
	if errors.Is(err, ledger.ErrRecordNotFound) {
		m, err = nil, nil
	}
	if err != nil {
		return status.Errorf(codes.Unavailable, "download %s: cannot read the caller's membership: %v", digest, err)
	}
	author, err := s.updateAuthor(ctx, digest)
	if err != nil {
		return status.Errorf(codes.Unavailable, "download %s: cannot read the ledger's updates: %v", digest, err)
	}
	var pending []string
	if author == nil {
		if pending, author, err = s.pendingUpload(ctx, digest); err != nil {
			return status.Errorf(codes.Unavailable, "download %s: %v", digest, err)
		}
	}
	if pending != nil {
		if err := PendingAllowed(peer, m, digest, pending); err != nil {
			return status.Error(codes.PermissionDenied, err.Error())
		}
		return nil
	}
	if author != nil {
		// A committed model can have an update's bytes (a round of one
		// contributor under FedAvg): as a model every member needs it.
		// Only that model frees the update, though: any other model record
		// of its digest (registered by some coordinator, or committed by
		// another job's aggregator) would publish a trainer's update on
		// the word of a party that has no say over it.
		mod, err := s.cfg.Ledger.Model(ctx, digest)
		switch {
		case err == nil:
			if ModelFreesUpdate(mod, author) {
				author = nil
			}
		case !errors.Is(err, ledger.ErrRecordNotFound):
			return status.Errorf(codes.Unavailable, "download %s: cannot read the ledger's models: %v", digest, err)
		}
	}
	var aggregators []string
	if author != nil && m != nil && (m.Role == ledger.RoleAggregator || m.Role == ledger.RoleVerifier) {
		job, err := s.cfg.Ledger.Job(ctx, author.JobID)
		switch {
		case err == nil && m.Role == ledger.RoleAggregator:
			aggregators = job.Recipe.Aggregators
		case err == nil && job.Recipe.Verify != nil:
			aggregators = job.Recipe.Verify.By
		case !errors.Is(err, ledger.ErrRecordNotFound):
			return status.Errorf(codes.Unavailable, "download %s: cannot read job %s's recipe: %v", digest, author.JobID, err)
		}
	}
	if err := DownloadAllowed(peer, m, digest, author, aggregators); err != nil {
		return status.Error(codes.PermissionDenied, err.Error())
	}
	return nil
}

// ModelFreesUpdate reports whether model record m, of the same digest as
// the update first submitted as author, makes that update's bytes a model
// every member may download: only when m is the model that the update's
// own round committed (a round whose one contributor's update is the new
// global model). A model registered by a coordinator, or committed by any
// other round, of a digest that a trainer submitted does not: the FSM
// refuses the first (ModelRegistered of a submitted update), and the second
// is some aggregator's claim about bytes it had no business publishing.
func ModelFreesUpdate(m *ledger.Model, author *ledger.UpdateSubmission) bool {
	return m != nil && author != nil && m.JobID != "" && m.JobID == author.JobID && m.Round == author.Round
}

// pendingUpload looks at a blob the ledger's (possibly cached) answer
// says is no update: if members uploaded it and the ledger knows it
// neither as an update (asked afresh, not from the cache) nor as a model,
// it returns its uploaders: an update is uploaded before its
// UpdateSubmitted is on the chain, and must not be public in between. A
// blob the coordinator stored or uploaded itself, or that is a model on
// the ledger, has no pending uploaders. If the fresh answer finds an
// update, it is returned as author.
func (s *Service) pendingUpload(ctx context.Context, digest string) ([]string, *ledger.UpdateSubmission, error) {
	if s.cfg.Store == nil {
		return nil, nil, nil
	}
	ups, err := s.cfg.Store.Uploaders(digest)
	if err != nil || len(ups) == 0 || slices.Contains(ups, s.id) {
		return nil, nil, err
	}
	subs, err := s.cfg.Ledger.UpdatesByDigest(ctx, digest)
	switch {
	case err == nil:
		s.authors.put(digest, &subs[0], s.clock.Now())
		return nil, &subs[0], nil
	case !errors.Is(err, ledger.ErrRecordNotFound):
		return nil, nil, fmt.Errorf("cannot read the ledger's updates: %w", err)
	}
	switch _, err := s.cfg.Ledger.Model(ctx, digest); {
	case err == nil:
		return nil, nil, nil
	case !errors.Is(err, ledger.ErrRecordNotFound):
		return nil, nil, fmt.Errorf("cannot read the ledger's models: %w", err)
	}
	// A shard, the leaves or the card of a published dataset: every
	// member may read it (the ledger answers a blob of one with the
	// dataset's record).
	switch d, err := s.cfg.Ledger.Dataset(ctx, digest); {
	case err == nil && d.Published && PublishedBlob(d, digest):
		return nil, nil, nil
	case err != nil && !errors.Is(err, ledger.ErrRecordNotFound):
		return nil, nil, fmt.Errorf("cannot read the ledger's datasets: %w", err)
	}
	return ups, nil, nil
}

// PublishedBlob reports whether blob is a shard, the leaves or the card
// of published dataset d.
func PublishedBlob(d *ledger.Dataset, blob string) bool {
	if blob == d.Leaves || (d.Card != "" && blob == d.Card) {
		return true
	}
	return slices.ContainsFunc(d.Shards, func(s dspub.Shard) bool { return s.Digest == blob })
}

// PendingAllowed is the download policy for a blob members uploaded that
// the ledger does not know yet (neither an update nor a model): only its
// uploaders, auditors and admins may download it.
func PendingAllowed(peer string, m *ledger.Member, digest string, uploaders []string) error {
	switch {
	case m == nil:
		return fmt.Errorf("download %s: %s is not a ledger member; only members may download artifacts here", digest, abbrev(peer))
	case !m.Active:
		return fmt.Errorf("download %s: %s was removed from the ledger; only active members may download artifacts here", digest, abbrev(peer))
	case m.Role == ledger.RoleAdmin, m.Role == ledger.RoleAuditor, slices.Contains(uploaders, peer):
		return nil
	}
	return fmt.Errorf("download %s: it was uploaded by %s and the ledger does not record it yet (an update before its UpdateSubmitted); only its uploader, auditors and admins may download it, not %s (role %s)",
		digest, abbrev(uploaders[0]), abbrev(peer), m.Role)
}

// DownloadAllowed is the coordinator's download policy, in one place: may
// the ledger member m (nil: not a member) with key ID peer download blob
// digest, which is the update first submitted as author (nil: the blob is
// no update the ledger knows, or is the model its own round committed, see
// ModelFreesUpdate), of
// a job whose recipe designates aggregators (for a verifier member: the
// verifiers the job's verify rule names)?
//
//   - Strangers and removed members get nothing.
//   - Anything that is not an update goes to every active member: trainers
//     need the base model and the global weights, aggregators the global
//     weights, auditors all of it.
//   - An update goes to its trainer (its first submitter: a later
//     UpdateSubmitted of the same digest is a copy of a digest read on the
//     chain, and earns nothing), to the aggregators its job's recipe
//     designates (ledger.RoundRecipe.Aggregators), to the verifiers its
//     verify rule names (ledger.VerifyRule.By), to auditors and admins.
func DownloadAllowed(peer string, m *ledger.Member, digest string, author *ledger.UpdateSubmission, aggregators []string) error {
	switch {
	case m == nil:
		return fmt.Errorf("download %s: %s is not a ledger member; only members may download artifacts here", digest, abbrev(peer))
	case !m.Active:
		return fmt.Errorf("download %s: %s was removed from the ledger; only active members may download artifacts here", digest, abbrev(peer))
	case author == nil:
		return nil
	}
	switch m.Role {
	case ledger.RoleAdmin, ledger.RoleAuditor:
		return nil
	case ledger.RoleAggregator, ledger.RoleVerifier:
		if slices.Contains(aggregators, peer) {
			return nil
		}
	}
	if author.Trainer == peer {
		return nil
	}
	return fmt.Errorf("download %s: it is the update of trainer %s in job %s round %d; only that trainer, the aggregators job %[3]s designates, the verifiers its verify rule names, auditors and admins may download it, not %[5]s (role %[6]s)",
		digest, abbrev(author.Trainer), author.JobID, author.Round, abbrev(peer), m.Role)
}

// maxAuthorCache bounds the update authors mayDownload remembers, and
// the misses.
const maxAuthorCache = 4096

// authorMissTTL is how long mayDownload remembers that a digest is no
// update on the ledger. Most downloads are of such blobs (base models,
// global adapters, every trainer fetching the same ones each round), and
// each would otherwise cost a ledger query. A miss is the permissive
// answer (the blob goes to every member), so it is kept briefly: an
// update's digest is known only to its trainer until its UpdateSubmitted
// is on the chain, and a miss cached before that (by a caller that
// already knew the digest, and got the blob then) outlives the
// submission by at most this long.
const authorMissTTL = 2 * time.Second

// authorCache remembers update authors read from the ledger (a digest's
// first submission never changes once it is on the chain) and, for
// authorMissTTL, digests the ledger knows no update of.
type authorCache struct {
	mu   sync.Mutex
	m    map[string]ledger.UpdateSubmission
	miss map[string]time.Time // digest → when the cached miss expires
}

// get returns the cached author of digest (nil: a cached miss); known is
// false when the ledger must be asked.
func (c *authorCache) get(digest string, now time.Time) (author *ledger.UpdateSubmission, known bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if a, ok := c.m[digest]; ok {
		return &a, true
	}
	if exp, ok := c.miss[digest]; ok {
		if now.Before(exp) {
			return nil, true
		}
		delete(c.miss, digest)
	}
	return nil, false
}

// put remembers the ledger's answer for digest: its author, or (nil) that
// it has none, until now + authorMissTTL.
func (c *authorCache) put(digest string, author *ledger.UpdateSubmission, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if author != nil {
		if c.m == nil || len(c.m) >= maxAuthorCache {
			c.m = map[string]ledger.UpdateSubmission{}
		}
		c.m[digest] = *author
		delete(c.miss, digest)
		return
	}
	if len(c.miss) >= maxAuthorCache {
		maps.DeleteFunc(c.miss, func(_ string, exp time.Time) bool { return !now.Before(exp) })
	}
	if c.miss == nil || len(c.miss) >= maxAuthorCache {
		c.miss = map[string]time.Time{}
	}
	c.miss[digest] = now.Add(authorMissTTL)
}

// updateAuthor returns the first submission of update digest, or nil when
// the ledger has none.
func (s *Service) updateAuthor(ctx context.Context, digest string) (*ledger.UpdateSubmission, error) {
	if a, ok := s.authors.get(digest, s.clock.Now()); ok {
		return a, nil
	}
	subs, err := s.cfg.Ledger.UpdatesByDigest(ctx, digest)
	if errors.Is(err, ledger.ErrRecordNotFound) {
		s.authors.put(digest, nil, s.clock.Now())
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	s.authors.put(digest, &subs[0], s.clock.Now())
	return &subs[0], nil
}
