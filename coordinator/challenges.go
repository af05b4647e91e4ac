package coordinator

import (
	"container/list"
	"context"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/fedtune/fedtune/internal/tlsid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Limits on outstanding join challenges. Challenge answers anyone, before
// any identity is checked, so each caller may hold only a few unanswered
// challenges, and all callers together a bounded number.
const (
	// MaxChallenges bounds the unanswered challenges the coordinator keeps
	// in all. When it is reached, expired ones go first, then the oldest:
	// a flood can only age out challenges older than itself, never refuse
	// a trainer's fresh one.
	MaxChallenges = 10000
	// MaxChallengesPerCaller bounds the unanswered, unexpired challenges of
	// one caller (its TLS key, or its host without TLS); one more is
	// refused with ResourceExhausted. A trainer needs one per Join.
	MaxChallengesPerCaller = 8
)

// challengeEntry is one unanswered challenge.
type challengeEntry struct {
	challenge string
	caller    string
	expires   time.Time
}

// challengeTable holds the unanswered join challenges, oldest first (all
// live challengeTTL, so that is also the order they expire in), and how
// many each caller holds.
type challengeTable struct {
	mu        sync.Mutex
	max       int // 0: MaxChallenges
	perCaller int // 0: MaxChallengesPerCaller
	byKey     map[string]*list.Element
	order     list.List // of *challengeEntry, oldest first
	count     map[string]int
}

// issue records challenge c for caller until now+ttl. It refuses (a
// ResourceExhausted status) a caller that holds its limit of unexpired
// challenges; at the global limit it first drops expired challenges, then
// the oldest. It reports how many live challenges of others it dropped.
func (t *challengeTable) issue(c, caller string, now time.Time, ttl time.Duration) (evicted int, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.byKey == nil {
		t.byKey, t.count = map[string]*list.Element{}, map[string]int{}
	}
	t.expire(now)
	per := t.perCaller
	if per <= 0 {
		per = MaxChallengesPerCaller
	}
	if t.count[caller] >= per {
		return 0, status.Errorf(codes.ResourceExhausted, "challenge: %s already holds %d unanswered join challenges, the most one caller may hold; answer one with Join, or wait up to %s for them to expire",
			showCaller(caller), t.count[caller], ttl)
	}
	limit := t.max
	if limit <= 0 {
		limit = MaxChallenges
	}
	for t.order.Len() >= limit {
		t.remove(t.order.Front())
		evicted++
	}
	t.byKey[c] = t.order.PushBack(&challengeEntry{challenge: c, caller: caller, expires: now.Add(ttl)})
	t.count[caller]++
	return evicted, nil
}

// take removes challenge c and reports whether it was outstanding and
// unexpired at now.
func (t *challengeTable) take(c string, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	el, ok := t.byKey[c]
	if !ok {
		return false
	}
	e := el.Value.(*challengeEntry)
	t.remove(el)
	return !now.After(e.expires)
}

// expire drops the expired challenges at the front.
func (t *challengeTable) expire(now time.Time) {
	for el := t.order.Front(); el != nil && now.After(el.Value.(*challengeEntry).expires); el = t.order.Front() {
		t.remove(el)
	}
}

func (t *challengeTable) remove(el *list.Element) {
	e := t.order.Remove(el).(*challengeEntry)
	delete(t.byKey, e.challenge)
	if t.count[e.caller]--; t.count[e.caller] <= 0 {
		delete(t.count, e.caller)
	}
}

// len returns how many challenges the table holds.
func (t *challengeTable) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.order.Len()
}

// challengeCaller names the caller of ctx for the per-caller challenge
// limit: its TLS key ID when it has one, else its host (every port of a
// host is one caller).
func challengeCaller(ctx context.Context) string {
	if id, err := tlsid.PeerID(ctx); err == nil {
		return "key " + id
	}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		a := p.Addr.String()
		if h, _, err := net.SplitHostPort(a); err == nil {
			return "host " + h
		}
		return "host " + a
	}
	return "an unknown caller"
}

// showCaller shortens a caller's key ID for a message.
func showCaller(caller string) string {
	if id, ok := strings.CutPrefix(caller, "key "); ok {
		return "key " + abbrev(id)
	}
	return caller
}
