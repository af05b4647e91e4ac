// Package gen generates the instruction set shipped in
// datasets/testdata/instruct: short arithmetic, unit-conversion and word
// tasks as chat conversations ({"messages": …} JSONL), split into train and
// held-out with no user prompt in both.
//
// Everything is drawn from a fixed-seed PCG generator, so the output is the
// same bytes on every run; datasets/instruct's tests compare the shipped
// files with it and rewrite them with -update.
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
	TrainRecords   = 400
	HeldoutRecords = 100
)

// System is the system prompt a third of the records carry.
const System = "You are a helpful assistant. Answer briefly."

// Families are the task kinds.
var Families = []string{"add", "sub", "mul", "convert", "reverse", "upper", "count", "first"}

// words are everyday English nouns the word tasks draw from.
var words = []string{
	"apple", "river", "garden", "window", "pencil", "orange", "bridge", "candle",
	"forest", "planet", "rocket", "tiger", "violin", "yellow", "island", "ladder",
	"mirror", "needle", "pillow", "rabbit", "saddle", "tomato", "valley", "wallet",
	"anchor", "basket", "castle", "desert", "engine", "falcon", "guitar", "hammer",
	"jacket", "kettle", "lemon", "magnet", "napkin", "oyster", "parrot", "quartz",
	"ribbon", "silver", "tunnel", "umbrella", "velvet", "walnut", "zebra", "lamp",
	"cloud", "stone", "bread", "chair", "horse", "music", "paper", "storm",
	"train", "water", "clock", "field",
}

type unit struct {
	from, to string
	factor   int
}

var units = []unit{
	{"km", "m", 1000}, {"m", "cm", 100}, {"kg", "g", 1000},
	{"h", "min", 60}, {"min", "s", 60}, {"L", "mL", 1000}, {"cm", "mm", 10},
}

// Message is one turn.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// Record is one JSONL line.
type Record struct {
	Messages []Message `json:"messages"`
}

func reverse(s string) string {
	b := []byte(s)
	for i, j := 0, len(b)-1; i < j; i, j = i+1, j-1 {
		b[i], b[j] = b[j], b[i]
	}
	return string(b)
}

// task returns a user prompt and its answer; for arithmetic also the value,
// so a follow-up turn can build on it.
func task(r *rand.Rand, family string) (q, a string, value int, numeric bool) {
	w := words[r.IntN(len(words))]
	switch family {
	case "add":
		x, y := r.IntN(90)+10, r.IntN(90)+10
		return fmt.Sprintf("What is %d + %d?", x, y), fmt.Sprint(x + y), x + y, true
	case "sub":
		x, y := r.IntN(90)+10, r.IntN(90)+10
		if x < y {
			x, y = y, x
		}
		return fmt.Sprintf("What is %d - %d?", x, y), fmt.Sprint(x - y), x - y, true
	case "mul":
		x, y := r.IntN(11)+2, r.IntN(11)+2
		return fmt.Sprintf("What is %d times %d?", x, y), fmt.Sprint(x * y), x * y, true
	case "convert":
		u := units[r.IntN(len(units))]
		n := r.IntN(20) + 1
		return fmt.Sprintf("Convert %d %s to %s.", n, u.from, u.to), fmt.Sprintf("%d %s", n*u.factor, u.to), 0, false
	case "reverse":
		return fmt.Sprintf("Reverse the word %q.", w), reverse(w), 0, false
	case "upper":
		return fmt.Sprintf("Write %q in capital letters.", w), strings.ToUpper(w), 0, false
	case "count":
		return fmt.Sprintf("How many letters are in %q?", w), fmt.Sprint(len(w)), 0, false
	case "first":
		return fmt.Sprintf("What is the first letter of %q?", w), w[:1], 0, false
	}
	panic("gen: unknown family " + family)
}

// record draws one conversation: an optional system prompt, a task, and
// for arithmetic sometimes a follow-up turn.
func record(r *rand.Rand) Record {
	var msgs []Message
	if r.IntN(3) == 0 {
		msgs = append(msgs, Message{"system", System})
	}
	q, a, v, numeric := task(r, Families[r.IntN(len(Families))])
	msgs = append(msgs, Message{"user", q}, Message{"assistant", a})
	if numeric && r.IntN(3) == 0 {
		k := r.IntN(9) + 1
		if r.IntN(2) == 0 {
			msgs = append(msgs, Message{"user", fmt.Sprintf("Now add %d.", k)}, Message{"assistant", fmt.Sprint(v + k)})
		} else {
			msgs = append(msgs, Message{"user", "Now double it."}, Message{"assistant", fmt.Sprint(2 * v)})
		}
	}
	return Record{Messages: msgs}
}

// key is what must not repeat across records: the user turns.
func key(rec Record) string {
	var b strings.Builder
	for _, m := range rec.Messages {
		if m.Role == "user" {
			b.WriteString(m.Content)
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// firstPrompt is the first user turn, which no held-out record shares with
// a train record.
func firstPrompt(rec Record) string {
	for _, m := range rec.Messages {
		if m.Role == "user" {
			return m.Content
		}
	}
	return ""
}

// Files returns the generated files, keyed by slash path relative to
// datasets/testdata.
func Files() map[string][]byte {
	r := rand.New(rand.NewPCG(20261206, 13))
	seenKey := map[string]bool{}
	seenPrompt := map[string]bool{}
	draw := func(n int, heldout bool) []Record {
		out := make([]Record, 0, n)
		for len(out) < n {
			rec := record(r)
			k, p := key(rec), firstPrompt(rec)
			if seenKey[k] || (heldout && seenPrompt[p]) {
				continue
			}
			seenKey[k] = true
			if !heldout {
				seenPrompt[p] = true
			}
			out = append(out, rec)
		}
		return out
	}
	train := draw(TrainRecords, false)
	heldout := draw(HeldoutRecords, true)
	return map[string][]byte{
		"instruct/train.jsonl":   encode(train),
		"instruct/heldout.jsonl": encode(heldout),
	}
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
