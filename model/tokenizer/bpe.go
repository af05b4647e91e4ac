package tokenizer

import (
	"container/heap"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"unicode/utf8"
)

// ErrUnsupported is returned for a tokenizer.json that uses a feature this
// package does not implement (a normalizer, another model type, dropout, …).
var ErrUnsupported = errors.New("tokenizer: unsupported tokenizer.json feature")

// ErrBadTokenizer wraps every error about a malformed tokenizer.json.
var ErrBadTokenizer = errors.New("tokenizer: bad tokenizer.json")

// maxID bounds the ids a tokenizer.json may use, so that a hostile file
// cannot make Decode tables of absurd size.
const maxID = 1 << 24

// BPE is a Hugging Face byte-level BPE tokenizer (GPT-2 and LLaMA 3 style).
//
// Encode splits the text at added tokens (exact, leftmost-longest match;
// each becomes its own id), splits the rest into pre-tokens with the GPT-2 or
// LLaMA 3 pattern, maps each pre-token's bytes to the byte-level alphabet
// (GPT-2's bytes_to_unicode table) and applies the merges, lowest rank
// first. No BOS or EOS is added (the post_processor is ignored). Decode maps
// the tokens' characters back to bytes, so Decode(Encode(s)) == s for any
// byte string s when the vocabulary holds all 256 byte characters.
type BPE struct {
	vocab        map[string]int
	tokens       []string // id → byte-level token, "" when unused
	ranks        map[pair]int
	added        []addedToken // longest content first
	addedByID    map[int]string
	size         int
	unk          int // -1 when there is no unk_token
	ignoreMerges bool
	prefixSpace  bool
	splitFirst   bool // a Split pre-tokenizer runs before ByteLevel
	split        func(string) []string
}

type pair struct{ a, b string }

type addedToken struct {
	id      int
	content string
}

var _ Tokenizer = (*BPE)(nil)

// The JSON shape of tokenizer.json, as far as it is read.
type fileJSON struct {
	AddedTokens   []addedJSON       `json:"added_tokens"`
	Normalizer    json.RawMessage   `json:"normalizer"`
	PreTokenizer  *preTokenizerJSON `json:"pre_tokenizer"`
	Decoder       *decoderJSON      `json:"decoder"`
	Model         *modelJSON        `json:"model"`
	PostProcessor json.RawMessage   `json:"post_processor"`
}

type addedJSON struct {
	ID         *int   `json:"id"`
	Content    string `json:"content"`
	SingleWord bool   `json:"single_word"`
	LStrip     bool   `json:"lstrip"`
	RStrip     bool   `json:"rstrip"`
}

type preTokenizerJSON struct {
	Type           string              `json:"type"`
	AddPrefixSpace bool                `json:"add_prefix_space"`
	UseRegex       *bool               `json:"use_regex"`
	Pretokenizers  []*preTokenizerJSON `json:"pretokenizers"`
	Pattern        *struct {
		Regex  *string `json:"Regex"`
		String *string `json:"String"`
	} `json:"pattern"`
	Behavior string `json:"behavior"`
	Invert   bool   `json:"invert"`
}

type decoderJSON struct {
	Type string `json:"type"`
}

type modelJSON struct {
	Type                    string            `json:"type"`
	Dropout                 *float64          `json:"dropout"`
	UnkToken                *string           `json:"unk_token"`
	ContinuingSubwordPrefix *string           `json:"continuing_subword_prefix"`
	EndOfWordSuffix         *string           `json:"end_of_word_suffix"`
	ByteFallback            bool              `json:"byte_fallback"`
	IgnoreMerges            bool              `json:"ignore_merges"`
	Vocab                   map[string]int    `json:"vocab"`
	Merges                  []json.RawMessage `json:"merges"`
}

// The pre-tokenizer split patterns this package implements by hand.
const (
	gpt2Pattern   = `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
	llama3Pattern = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
)

func bad(format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), ErrBadTokenizer)
}

func unsupported(format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), ErrUnsupported)
}

// DecodeBPE decodes the bytes of a tokenizer.json file.
func DecodeBPE(data []byte) (*BPE, error) {
	var f fileJSON
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, bad("%v", err)
	}
	if len(f.Normalizer) > 0 && string(f.Normalizer) != "null" {
		return nil, unsupported("normalizer %s", truncate(f.Normalizer))
	}
	m := f.Model
	if m == nil {
		return nil, bad("no model")
	}
	if m.Type != "BPE" {
		return nil, unsupported("model.type %q (want \"BPE\")", m.Type)
	}
	if m.Dropout != nil && *m.Dropout != 0 {
		return nil, unsupported("model.dropout %v", *m.Dropout)
	}
	if m.ContinuingSubwordPrefix != nil && *m.ContinuingSubwordPrefix != "" {
		return nil, unsupported("model.continuing_subword_prefix")
	}
	if m.EndOfWordSuffix != nil && *m.EndOfWordSuffix != "" {
		return nil, unsupported("model.end_of_word_suffix")
	}
	if m.ByteFallback {
		return nil, unsupported("model.byte_fallback (not a byte-level BPE)")
	}
	if f.Decoder == nil || f.Decoder.Type != "ByteLevel" {
		return nil, unsupported("decoder (want type \"ByteLevel\")")
	}
	t := &BPE{
		vocab:        make(map[string]int, len(m.Vocab)),
		ranks:        make(map[pair]int, len(m.Merges)),
		addedByID:    make(map[int]string),
		unk:          -1,
		ignoreMerges: m.IgnoreMerges,
	}
	if err := t.setPreTokenizer(f.PreTokenizer); err != nil {
		return nil, err
	}

	// Added tokens first: their contents may sit in the vocab outside the
	// byte-level alphabet.
	maxSeen := -1
	for i, a := range f.AddedTokens {
		if a.ID == nil {
			return nil, bad("added_tokens[%d]: no id", i)
		}
		id := *a.ID
		if id < 0 || id >= maxID {
			return nil, bad("added_tokens[%d]: id %d out of range [0, %d)", i, id, maxID)
		}
		if a.Content == "" {
			return nil, bad("added_tokens[%d]: empty content", i)
		}
		if a.SingleWord || a.LStrip || a.RStrip {
			return nil, unsupported("added_tokens[%d] %q: single_word/lstrip/rstrip", i, a.Content)
		}
		if prev, ok := t.addedByID[id]; ok && prev != a.Content {
			return nil, bad("added_tokens[%d]: id %d used by %q and %q", i, id, prev, a.Content)
		}
		t.addedByID[id] = a.Content
		t.added = append(t.added, addedToken{id: id, content: a.Content})
		maxSeen = max(maxSeen, id)
	}
	sort.SliceStable(t.added, func(i, j int) bool { return len(t.added[i].content) > len(t.added[j].content) })

	// Vocabulary, in id order so errors are deterministic.
	type entry struct {
		tok string
		id  int
	}
	entries := make([]entry, 0, len(m.Vocab))
	for tok, id := range m.Vocab {
		entries = append(entries, entry{tok, id})
	}
	sort.Slice(entries, func(i, j int) bool {
		if entries[i].id != entries[j].id {
			return entries[i].id < entries[j].id
		}
		return entries[i].tok < entries[j].tok
	})
	for _, e := range entries {
		if e.id < 0 || e.id >= maxID {
			return nil, bad("vocab %q: id %d out of range [0, %d)", e.tok, e.id, maxID)
		}
		if e.tok == "" {
			return nil, bad("vocab: empty token (id %d)", e.id)
		}
		maxSeen = max(maxSeen, e.id)
	}
	t.tokens = make([]string, maxSeen+1)
	for _, e := range entries {
		if content, ok := t.addedByID[e.id]; ok {
			if content != e.tok {
				return nil, bad("vocab %q: id %d is also added token %q", e.tok, e.id, content)
			}
			t.vocab[e.tok] = e.id
			continue
		}
		if t.tokens[e.id] != "" {
			return nil, bad("vocab: id %d used by %q and %q", e.id, t.tokens[e.id], e.tok)
		}
		if !isByteLevel(e.tok) {
			return nil, bad("vocab %q (id %d): not in the byte-level alphabet", e.tok, e.id)
		}
		t.tokens[e.id] = e.tok
		t.vocab[e.tok] = e.id
	}
	t.size = maxSeen + 1
	if t.size == 0 {
		return nil, bad("empty vocab")
	}
	if m.UnkToken != nil {
		id, ok := t.vocab[*m.UnkToken]
		if !ok {
			return nil, bad("model.unk_token %q not in vocab", *m.UnkToken)
		}
		t.unk = id
	}

	for i, raw := range m.Merges {
		a, b, err := decodeMerge(raw)
		if err != nil {
			return nil, bad("merges[%d]: %v", i, err)
		}
		for _, tok := range []string{a, b, a + b} {
			if _, ok := t.vocab[tok]; !ok {
				return nil, bad("merges[%d] %q %q: %q not in vocab", i, a, b, tok)
			}
		}
		if _, dup := t.ranks[pair{a, b}]; !dup {
			t.ranks[pair{a, b}] = i
		}
	}
	return t, nil
}

func truncate(b []byte) string {
	if len(b) > 60 {
		return string(b[:60]) + "…"
	}
	return string(b)
}

// decodeMerge reads a merge written as "a b" or as ["a", "b"].
func decodeMerge(raw json.RawMessage) (a, b string, err error) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		a, b, ok := strings.Cut(s, " ")
		if !ok || a == "" || b == "" || strings.Contains(b, " ") {
			return "", "", fmt.Errorf("%q is not two tokens separated by one space", s)
		}
		return a, b, nil
	}
	var p []string
	if err := json.Unmarshal(raw, &p); err != nil || len(p) != 2 || p[0] == "" || p[1] == "" {
		return "", "", fmt.Errorf("%s is not \"a b\" or [\"a\", \"b\"]", truncate(raw))
	}
	return p[0], p[1], nil
}

func (t *BPE) setPreTokenizer(p *preTokenizerJSON) error {
	if p == nil {
		return unsupported("no pre_tokenizer (want ByteLevel)")
	}
	switch p.Type {
	case "ByteLevel":
		t.prefixSpace = p.AddPrefixSpace
		if p.UseRegex == nil || *p.UseRegex {
			t.split = splitGPT2
		}
		return nil
	case "Sequence":
		if len(p.Pretokenizers) != 2 || p.Pretokenizers[0] == nil || p.Pretokenizers[1] == nil {
			return unsupported("pre_tokenizer Sequence (want [Split, ByteLevel])")
		}
		s, bl := p.Pretokenizers[0], p.Pretokenizers[1]
		if s.Type != "Split" || bl.Type != "ByteLevel" || (bl.UseRegex != nil && *bl.UseRegex) {
			return unsupported("pre_tokenizer Sequence of %q, %q (want Split, ByteLevel without regex)", s.Type, bl.Type)
		}
		if s.Invert || (s.Behavior != "Isolated" && s.Behavior != "") || s.Pattern == nil || s.Pattern.Regex == nil {
			return unsupported("pre_tokenizer Split: want an isolated Regex pattern")
		}
		switch *s.Pattern.Regex {
		case gpt2Pattern:
			t.split = splitGPT2
		case llama3Pattern:
			t.split = splitLlama3
		default:
			return unsupported("pre_tokenizer Split pattern %q (only the GPT-2 and LLaMA 3 patterns are implemented)", *s.Pattern.Regex)
		}
		t.prefixSpace, t.splitFirst = bl.AddPrefixSpace, true
		return nil
	default:
		return unsupported("pre_tokenizer type %q", p.Type)
	}
}

// VocabSize returns one more than the largest id in the vocabulary or the
// added tokens.
func (t *BPE) VocabSize() int { return t.size }

// CoversBytes reports whether every byte has a single-character token, so
// that any byte string can be encoded without loss.
func (t *BPE) CoversBytes() bool {
	for b := 0; b < 256; b++ {
		if _, ok := t.vocab[string(byteRune[b])]; !ok {
			return false
		}
	}
	return true
}

// Encode returns the ids of s. Bytes with no token (only possible when the
// vocabulary lacks some byte characters) become unk_token, or are dropped
// when there is none.
func (t *BPE) Encode(s string) []int {
	var ids []int
	for len(s) > 0 {
		at, tok := t.nextAdded(s)
		if tok == nil {
			return t.encodeText(ids, s)
		}
		ids = t.encodeText(ids, s[:at])
		ids = append(ids, tok.id)
		s = s[at+len(tok.content):]
	}
	return ids
}

// nextAdded finds the leftmost (then longest) added token in s.
func (t *BPE) nextAdded(s string) (int, *addedToken) {
	if len(t.added) == 0 {
		return 0, nil
	}
	for i := 0; i < len(s); i++ {
		for k := range t.added {
			if strings.HasPrefix(s[i:], t.added[k].content) {
				return i, &t.added[k]
			}
		}
	}
	return 0, nil
}

// encodeText encodes a stretch of text between added tokens. As in Hugging
// Face tokenizers, add_prefix_space puts a space before each stretch (a lone
// ByteLevel pre-tokenizer) or before each piece of the Split (a Sequence),
// unless it already starts with one.
func (t *BPE) encodeText(ids []int, s string) []int {
	if s == "" {
		return ids
	}
	if t.prefixSpace && !t.splitFirst && s[0] != ' ' {
		s = " " + s
	}
	words := []string{s}
	if t.split != nil {
		words = t.split(s)
	}
	for _, w := range words {
		if t.prefixSpace && t.splitFirst && w[0] != ' ' {
			w = " " + w
		}
		ids = t.encodeWord(ids, w)
	}
	return ids
}

func (t *BPE) encodeWord(ids []int, w string) []int {
	syms := make([]string, len(w))
	for i := 0; i < len(w); i++ {
		syms[i] = string(byteRune[w[i]])
	}
	if t.ignoreMerges {
		if id, ok := t.vocab[strings.Join(syms, "")]; ok {
			return append(ids, id)
		}
	}
	syms = t.merge(syms)
	for _, s := range syms {
		if id, ok := t.vocab[s]; ok {
			ids = append(ids, id)
		} else if t.unk >= 0 {
			ids = append(ids, t.unk)
		}
	}
	return ids
}

// merge applies the merges to syms as Hugging Face's BPE does: repeatedly
// the pair of lowest rank, leftmost first, until no pair has a rank. A heap
// keeps it O(n log n) even for a pre-token as long as the whole text.
func (t *BPE) merge(syms []string) []string {
	if len(syms) < 2 {
		return syms
	}
	next := make([]int, len(syms)) // -1 at the end
	prev := make([]int, len(syms)) // -1 at the start
	for i := range syms {
		next[i], prev[i] = i+1, i-1
	}
	next[len(syms)-1] = -1
	h := &mergeHeap{}
	push := func(i int) {
		if i < 0 || next[i] < 0 {
			return
		}
		if r, ok := t.ranks[pair{syms[i], syms[next[i]]}]; ok {
			heap.Push(h, mergeAt{rank: r, pos: i, right: next[i]})
		}
	}
	for i := range syms {
		push(i)
	}
	for h.Len() > 0 {
		m := heap.Pop(h).(mergeAt)
		if syms[m.pos] == "" || next[m.pos] != m.right {
			continue // stale: a neighbour was merged since
		}
		if r, ok := t.ranks[pair{syms[m.pos], syms[m.right]}]; !ok || r != m.rank {
			continue
		}
		syms[m.pos] += syms[m.right]
		syms[m.right] = ""
		next[m.pos] = next[m.right]
		if n := next[m.pos]; n >= 0 {
			prev[n] = m.pos
		}
		push(prev[m.pos])
		push(m.pos)
	}
	out := syms[:0]
	for i := 0; i >= 0; i = next[i] {
		out = append(out, syms[i])
	}
	return out
}

// mergeAt is a candidate merge of the symbol at pos with its right
// neighbour right.
type mergeAt struct{ rank, pos, right int }

type mergeHeap []mergeAt

func (h mergeHeap) Len() int { return len(h) }
func (h mergeHeap) Less(i, j int) bool {
	return h[i].rank < h[j].rank || (h[i].rank == h[j].rank && h[i].pos < h[j].pos)
}
func (h mergeHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *mergeHeap) Push(x any)   { *h = append(*h, x.(mergeAt)) }
func (h *mergeHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// Decode returns the text of ids: added tokens as their content, other
// tokens through the inverse byte-level table. Unknown ids are skipped.
func (t *BPE) Decode(ids []int) string {
	var b []byte
	for _, id := range ids {
		if c, ok := t.addedByID[id]; ok {
			b = append(b, c...)
			continue
		}
		if id < 0 || id >= len(t.tokens) {
			continue
		}
		for _, r := range t.tokens[id] {
			b = append(b, runeByte[r])
		}
	}
	return string(b)
}

// byteRune is GPT-2's bytes_to_unicode table: printable Latin-1 bytes map to
// themselves, the other 68 bytes to U+0100 upwards in byte order.
var byteRune [256]rune

// runeByte inverts byteRune.
var runeByte = map[rune]byte{}

func init() {
	n := 0
	for b := 0; b < 256; b++ {
		if (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF) {
			byteRune[b] = rune(b)
		} else {
			byteRune[b] = rune(256 + n)
			n++
		}
		runeByte[byteRune[b]] = byte(b)
	}
}

func isByteLevel(tok string) bool {
	if !utf8.ValidString(tok) {
		return false
	}
	for _, r := range tok {
		if _, ok := runeByte[r]; !ok {
			return false
		}
	}
	return true
}
