package coordinator

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
)

// ErrNotMember is returned by Pool.Join for an ID that is not a current
// trainer member of the ledger.
var ErrNotMember = errors.New("coordinator: not a trainer member")

// Pool is the coordinator's trainer registry: the ledger's current members
// with role trainer, and among them those that joined (answered the signed
// challenge, see client.VerifyChallenge) with the datasets they registered. It is
// pure bookkeeping; the Machine owns one.
type Pool struct {
	members map[string]bool
	joined  map[string][]string // trainer ID → registered dataset digests
}

// NewPool returns an empty pool: no members, nobody joined.
func NewPool() *Pool {
	return &Pool{members: map[string]bool{}, joined: map[string][]string{}}
}

// SetMembers replaces the member list (the ledger's active members with
// role trainer). Joined trainers that are no longer members are dropped
// and returned, sorted.
func (p *Pool) SetMembers(ids []string) (dropped []string) {
	p.members = make(map[string]bool, len(ids))
	for _, id := range ids {
		p.members[id] = true
	}
	for id := range p.joined {
		if !p.members[id] {
			delete(p.joined, id)
			dropped = append(dropped, id)
		}
	}
	slices.Sort(dropped)
	return dropped
}

// IsMember reports whether id is a current trainer member.
func (p *Pool) IsMember(id string) bool { return p.members[id] }

// Join records that trainer id is connected, with the digests of the
// datasets it registered on the ledger (joining again replaces them).
func (p *Pool) Join(id string, datasets []string) error {
	if !p.members[id] {
		return fmt.Errorf("join %s: %w", abbrev(id), ErrNotMember)
	}
	p.joined[id] = slices.Clone(datasets)
	return nil
}

// Leave records that trainer id disconnected; it reports whether it was joined.
func (p *Pool) Leave(id string) bool {
	_, ok := p.joined[id]
	delete(p.joined, id)
	return ok
}

// Joined reports whether id is joined.
func (p *Pool) Joined(id string) bool {
	_, ok := p.joined[id]
	return ok
}

// All returns the joined trainers, sorted, whatever data they hold: a job
// on published data may select a trainer with none of its own.
func (p *Pool) All() []string {
	out := make([]string, 0, len(p.joined))
	for id := range p.joined {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

// Eligible returns, sorted, the joined trainers holding a dataset the job
// admits: one of manifests, or, with manifests empty, any registered one.
func (p *Pool) Eligible(manifests []string) []string {
	var out []string
	for id, ds := range p.joined {
		if len(ds) == 0 {
			continue
		}
		if len(manifests) > 0 && !slices.ContainsFunc(ds, func(d string) bool { return slices.Contains(manifests, d) }) {
			continue
		}
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

// SelectCount is how many of available eligible trainers a round selects:
// max(⌊fraction·available⌋, min), capped by max (when not 0) and by
// available. It is 0 when fewer than min are available.
func SelectCount(spec TrainerSpec, available int) int {
	if available < spec.Min || available <= 0 {
		return 0
	}
	n := int(spec.Fraction * float64(available))
	if n < spec.Min {
		n = spec.Min
	}
	if spec.Max > 0 && n > spec.Max {
		n = spec.Max
	}
	if n > available {
		n = available
	}
	return n
}

// Select picks SelectCount(spec, len(eligible)) trainers from eligible,
// deterministically from (seed, round): a partial Fisher–Yates shuffle of
// the sorted IDs driven by ChaCha8 keyed with
// SHA-256("fedtune/select/v1" ‖ seed ‖ round) (big-endian u64s), with
// unbiased bounded draws by rejection. The result is sorted ascending, as
// RoundOpened lists it; nil when too few are eligible.
func Select(seed, round uint64, spec TrainerSpec, eligible []string) []string {
	ids := slices.Clone(eligible)
	slices.Sort(ids)
	ids = slices.Compact(ids)
	n := SelectCount(spec, len(ids))
	if n == 0 {
		return nil
	}
	var key [32]byte
	h := sha256.New()
	h.Write([]byte("fedtune/select/v1"))
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], seed)
	binary.BigEndian.PutUint64(b[8:], round)
	h.Write(b[:])
	h.Sum(key[:0])
	rng := rand.NewChaCha8(key)
	for i := 0; i < n; i++ {
		j := i + int(uniform(rng, uint64(len(ids)-i)))
		ids[i], ids[j] = ids[j], ids[i]
	}
	sel := ids[:n:n]
	slices.Sort(sel)
	return sel
}

// uniform returns a uniform draw in [0, bound) from src by rejection.
func uniform(src *rand.ChaCha8, bound uint64) uint64 {
	threshold := -bound % bound // (2^64 − bound) mod bound
	for {
		if x := src.Uint64(); x >= threshold {
			return x % bound
		}
	}
}

func abbrev(id string) string {
	if len(id) > 16 {
		return id[:16] + "…"
	}
	return id
}
