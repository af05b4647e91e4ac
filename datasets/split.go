package datasets

import (
	"crypto/sha256"
	"encoding/binary"
	"math"
)

// Split divides d into a train and an eval dataset. Each sample goes to eval
// when a keyed hash of its ID, SHA-256(seed as 8 little-endian bytes ‖ ID),
// read as a fraction of 2^64, is below evalFrac; so the split depends only on
// the seed and each sample's own ID, and adding samples never moves the
// others. Sample order is kept within each part.
//
// evalFrac is clamped to [0, 1]. When d has two or more samples neither part
// is left empty: if the hash sends every sample to one side, the sample with
// the smallest hash (for an empty eval) or the largest (for an empty train)
// is moved across. The parts are named "<name>/train" and "<name>/eval".
func (d *Dataset) Split(evalFrac float64, seed uint64) (train, eval *Dataset) {
	if math.IsNaN(evalFrac) || evalFrac < 0 {
		evalFrac = 0
	}
	if evalFrac > 1 {
		evalFrac = 1
	}
	// Threshold as a uint64; evalFrac == 1 means every hash.
	var limit uint64
	all := evalFrac >= 1
	if !all {
		limit = uint64(evalFrac * (1 << 64))
	}
	n := len(d.Samples)
	hashes := make([]uint64, n)
	inEval := make([]bool, n)
	nEval := 0
	for i, s := range d.Samples {
		hashes[i] = SampleHash(seed, s.ID)
		inEval[i] = all || hashes[i] < limit
		if inEval[i] {
			nEval++
		}
	}
	if n >= 2 && (nEval == 0 || nEval == n) {
		pick := 0
		for i := range hashes {
			if (nEval == 0 && hashes[i] < hashes[pick]) || (nEval == n && hashes[i] > hashes[pick]) {
				pick = i
			}
		}
		inEval[pick] = !inEval[pick]
	}
	train = &Dataset{Name: d.Name + "/train"}
	eval = &Dataset{Name: d.Name + "/eval"}
	for i, s := range d.Samples {
		if inEval[i] {
			eval.Samples = append(eval.Samples, s)
		} else {
			train.Samples = append(train.Samples, s)
		}
	}
	return train, eval
}

// SampleHash is the keyed hash Split uses: the first 8 bytes, big-endian, of
// SHA-256(seed as 8 little-endian bytes ‖ id).
func SampleHash(seed uint64, id string) uint64 {
	h := sha256.New()
	var k [8]byte
	binary.LittleEndian.PutUint64(k[:], seed)
	h.Write(k[:])
	h.Write([]byte(id))
	var sum [sha256.Size]byte
	return binary.BigEndian.Uint64(h.Sum(sum[:0]))
}
