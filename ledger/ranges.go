package ledger

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"slices"
)

// PublishedRef names a published dataset a job trains on, with its sample
// count (the FSM checks it against the dataset's record when the job is
// registered), so that a round's ranges follow from the recipe alone.
type PublishedRef struct {
	Digest  string `json:"digest"`
	Samples uint64 `json:"samples"`
}

// SampleRange is the samples [First, End) of a published dataset (indices
// of its leaves, see internal/dspub).
type SampleRange struct {
	Dataset string `json:"dataset"`
	First   uint64 `json:"first"`
	End     uint64 `json:"end"`
}

// TrainerRange is a SampleRange assigned to a trainer for one round.
type TrainerRange struct {
	Trainer string `json:"trainer"`
	Dataset string `json:"dataset"`
	First   uint64 `json:"first"`
	End     uint64 `json:"end"`
}

// Range returns the range without its trainer.
func (t TrainerRange) Range() SampleRange {
	return SampleRange{Dataset: t.Dataset, First: t.First, End: t.End}
}

// Size is the number of samples in the range.
func (r SampleRange) Size() uint64 { return r.End - r.First }

// MaxPublished bounds RoundRecipe.Published.
const MaxPublished = 16

// AssignRanges gives each trainer (in the order given) one range of
// every published dataset of a job, for round round: the dataset's samples
// are cut into chunks of k = min(per, ⌊n/len(trainers)⌋) samples and
// each trainer gets a different chunk, drawn by a SHA-256 stream of
// (seed, round, dataset) without replacement. Ranges of one round never
// overlap; the same inputs always give the same ranges. A dataset with
// fewer samples than trainers is an error.
func AssignRanges(seed, round uint64, refs []PublishedRef, per uint64, trainers []string) ([]TrainerRange, error) {
	if len(refs) == 0 {
		return nil, nil
	}
	if per == 0 {
		return nil, fmt.Errorf("range_samples must be at least 1")
	}
	t := uint64(len(trainers))
	var out []TrainerRange
	for _, ref := range refs {
		if ref.Samples < t {
			return nil, fmt.Errorf("published dataset %s has %d samples, fewer than the %d trainers of the round", ref.Digest, ref.Samples, t)
		}
		k := min(per, ref.Samples/t)
		chunks := ref.Samples / k
		// Sparse Fisher–Yates: swapped[i] is what position i holds.
		swapped := map[uint64]uint64{}
		at := func(i uint64) uint64 {
			if v, ok := swapped[i]; ok {
				return v
			}
			return i
		}
		for i, tr := range trainers {
			h := sha256.New()
			h.Write([]byte("fedtune/sample-ranges/v1\x00"))
			h.Write(binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, seed), round))
			h.Write([]byte(ref.Digest))
			h.Write(binary.BigEndian.AppendUint64(nil, uint64(i)))
			sum := h.Sum(nil)
			j := uint64(i) + binary.BigEndian.Uint64(sum)%(chunks-uint64(i))
			vi, vj := at(uint64(i)), at(j)
			swapped[uint64(i)], swapped[j] = vj, vi
			c := vj
			out = append(out, TrainerRange{Trainer: tr, Dataset: ref.Digest, First: c * k, End: (c + 1) * k})
		}
	}
	return out, nil
}

// RangesOf returns the ranges of trainer among rs, in order.
func RangesOf(rs []TrainerRange, trainer string) []SampleRange {
	var out []SampleRange
	for _, r := range rs {
		if r.Trainer == trainer {
			out = append(out, r.Range())
		}
	}
	return out
}

// checkPublishedRefs validates a recipe's published datasets.
func checkPublishedRefs(refs []PublishedRef, per uint64) error {
	if len(refs) > MaxPublished {
		return fmt.Errorf("recipe.published: %d listed, limit %d", len(refs), MaxPublished)
	}
	for i, r := range refs {
		if err := checkDigest(fmt.Sprintf("recipe.published[%d].digest", i), r.Digest); err != nil {
			return err
		}
		if r.Samples == 0 {
			return fmt.Errorf("recipe.published[%d].samples must be at least 1", i)
		}
		if slices.ContainsFunc(refs[:i], func(o PublishedRef) bool { return o.Digest == r.Digest }) {
			return fmt.Errorf("recipe.published[%d] %s is listed twice", i, r.Digest)
		}
	}
	if len(refs) > 0 && per == 0 {
		return fmt.Errorf("recipe.range_samples must be at least 1 when the job trains on published data")
	}
	return nil
}

// checkRanges validates ranges without state: well-formed, non-empty,
// at most max of them.
func checkRanges(field string, rs []SampleRange, max int) error {
	if len(rs) > max {
		return fmt.Errorf("%s: %d ranges, limit %d", field, len(rs), max)
	}
	for i, r := range rs {
		if err := checkDigest(fmt.Sprintf("%s[%d].dataset", field, i), r.Dataset); err != nil {
			return err
		}
		if r.First >= r.End {
			return fmt.Errorf("%s[%d]: first %d must be below end %d", field, i, r.First, r.End)
		}
	}
	return nil
}
