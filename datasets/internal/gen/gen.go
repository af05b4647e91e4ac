package gen

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
)

// Sizes of the generated files.
const (
	TrainRecords = 3000
	EvalRecords  = 500
	ShardRecords = 600
	// CanaryLine is the 1-based line of each shard that holds its canary.
	CanaryLine = 101
)

// Canaries are the secret strings planted in the trainer shards, one each,
// drawn at random once (openssl rand -hex 8) and fixed here. A privacy test
// checks that none ever leaves its trainer.
var Canaries = [3]string{
	"CANARY-3968f53a22016d91",
	"CANARY-7ceeb8742f3f2b46",
	"CANARY-8c6c76fffb79ff2d",
}

// Families are the task kinds, in the order their names appear in prompts.
var Families = []string{"reverse", "add", "upper", "repeat"}

// Record is one JSONL line.
type Record struct {
	Prompt   string `json:"prompt,omitempty"`
	Response string `json:"response,omitempty"`
	Text     string `json:"text,omitempty"`
}

func word(r *rand.Rand) string {
	n := 3 + r.IntN(4)
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('a' + r.IntN(26))
	}
	return string(b)
}

func reverse(s string) string {
	b := []byte(s)
	for i, j := 0, len(b)-1; i < j; i, j = i+1, j-1 {
		b[i], b[j] = b[j], b[i]
	}
	return string(b)
}

// task draws one record of the given family.
func task(r *rand.Rand, family string) Record {
	var q, a string
	switch family {
	case "reverse":
		w := word(r)
		q, a = "reverse "+w, reverse(w)
	case "add":
		x, y := r.IntN(100), r.IntN(100)
		q, a = fmt.Sprintf("%d+%d=", x, y), fmt.Sprint(x+y)
	case "upper":
		w := word(r)
		q, a = "upper "+w, strings.ToUpper(w)
	case "repeat":
		w := word(r)
		q, a = "repeat "+w, w+" "+w
	default:
		panic("gen: unknown family " + family)
	}
	return Record{Prompt: "Q: " + q, Response: "A: " + a}
}

// draw returns n records not yet in seen (and adds them), the family of
// each chosen by pick.
func draw(r *rand.Rand, n int, seen map[string]bool, pick func() string) []Record {
	out := make([]Record, 0, n)
	for len(out) < n {
		rec := task(r, pick())
		if seen[rec.Prompt] {
			continue
		}
		seen[rec.Prompt] = true
		out = append(out, rec)
	}
	return out
}

// Files returns the generated files, keyed by slash path relative to
// datasets/testdata.
func Files() map[string][]byte {
	r := rand.New(rand.NewPCG(20261125, 5))
	seen := map[string]bool{}
	uniform := func() string { return Families[r.IntN(len(Families))] }
	files := map[string][]byte{
		"tasks/train.jsonl": encode(draw(r, TrainRecords, seen, uniform)),
		"tasks/eval.jsonl":  encode(draw(r, EvalRecords, seen, uniform)),
	}
	// Shards are skewed (non-IID), as real trainers' data would be: half of
	// shard k's records are of family k-1, the rest uniform.
	for k := range 3 {
		home := Families[k]
		skewed := func() string {
			if r.IntN(2) == 0 {
				return home
			}
			return uniform()
		}
		recs := draw(r, ShardRecords, seen, skewed)
		canary := Record{Text: fmt.Sprintf("Note for trainer-%d only: the access code is %s.", k+1, Canaries[k])}
		recs = append(recs[:CanaryLine-1], append([]Record{canary}, recs[CanaryLine-1:]...)...)
		files[fmt.Sprintf("shards/trainer-%d.jsonl", k+1)] = encode(recs)
	}
	return files
}

func encode(recs []Record) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	for _, rec := range recs {
		if err := enc.Encode(rec); err != nil {
			panic(err) // strings always encode
		}
	}
	return b.Bytes()
}
