package tokenizer

import (
	"container/heap"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
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

// BPE is a Hugging Face tokenizer.json tokenizer with a BPE model: the
// byte-level kind of GPT-2, LLaMA 3 and SmolLM, and the SentencePiece kind
// of Llama 2, TinyLlama and Mistral (byte_fallback, unk_token, a Metaspace
// or Prepend/Replace normalizer).
//
// Encode runs Hugging Face's pipeline: the text is split at added tokens
// (leftmost-longest; lstrip, rstrip and single_word honoured), every other
// stretch is normalized, split again at normalized added tokens,
// pre-tokenized, and each pre-token is turned into ids by the BPE model
// (lowest merge rank first, leftmost first). Encode adds nothing; EncodeSpecial
// also applies the post-processor (BOS and the like). Decode runs the
// decoder.
type BPE struct {
	vocab        map[string]int // the model's vocabulary
	tokens       []string       // id → model token, "" when unused
	ranks        map[pair]int
	added        []addedToken
	raw, normed  addedSet // added tokens matched before / after normalizing
	addedByID    map[int]string
	size         int
	unk          int // -1 when there is no unk_token
	unkToken     string
	fuseUnk      bool
	byteFallback bool
	ignoreMerges bool
	byteLevel    bool // the pre-tokenizer holds a ByteLevel
	norm         normalizer
	pre          preTokenizer
	post         postProcessor
	dec          decoder
	bos          int // -1 when unknown
	eos          []int
	cache        wordCache
}

// wordCache remembers the ids of short pre-tokens (as Hugging Face's BPE
// does): natural text repeats its words, and merging is the costly part.
type wordCache struct {
	mu sync.Mutex
	m  map[string][]int
}

const (
	cacheWordLen = 256     // longer pre-tokens are not cached
	cacheEntries = 1 << 16 // the cache is emptied when it reaches this
)

func (c *wordCache) get(w string) ([]int, bool) {
	c.mu.Lock()
	ids, ok := c.m[w]
	c.mu.Unlock()
	return ids, ok
}

func (c *wordCache) put(w string, ids []int) {
	c.mu.Lock()
	if c.m == nil || len(c.m) >= cacheEntries {
		c.m = make(map[string][]int)
	}
	c.m[w] = ids
	c.mu.Unlock()
}

type pair struct{ a, b string }

type addedToken struct {
	id                                          int
	content                                     string
	special, lstrip, rstrip, normalized, single bool
}

var _ Tokenizer = (*BPE)(nil)

// The JSON shape of tokenizer.json, as far as it is read.
type fileJSON struct {
	AddedTokens   []addedJSON     `json:"added_tokens"`
	Normalizer    json.RawMessage `json:"normalizer"`
	PreTokenizer  json.RawMessage `json:"pre_tokenizer"`
	Decoder       json.RawMessage `json:"decoder"`
	Model         *modelJSON      `json:"model"`
	PostProcessor json.RawMessage `json:"post_processor"`
	Truncation    json.RawMessage `json:"truncation"`
	Padding       json.RawMessage `json:"padding"`
}

type addedJSON struct {
	ID         *int   `json:"id"`
	Content    string `json:"content"`
	SingleWord bool   `json:"single_word"`
	LStrip     bool   `json:"lstrip"`
	RStrip     bool   `json:"rstrip"`
	Normalized *bool  `json:"normalized"`
	Special    bool   `json:"special"`
}

type modelJSON struct {
	Type                    string            `json:"type"`
	Dropout                 *float64          `json:"dropout"`
	UnkToken                *string           `json:"unk_token"`
	ContinuingSubwordPrefix *string           `json:"continuing_subword_prefix"`
	EndOfWordSuffix         *string           `json:"end_of_word_suffix"`
	FuseUnk                 bool              `json:"fuse_unk"`
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

func isNull(raw json.RawMessage) bool {
	return len(raw) == 0 || string(raw) == "null"
}

func indexPath(path string, i int) string { return fmt.Sprintf("%s[%d]", path, i) }

// DecodeBPE decodes the bytes of a tokenizer.json file. A feature it does
// not implement is refused with ErrUnsupported and the JSON path of the
// feature; a malformed file with ErrBadTokenizer.
func DecodeBPE(data []byte) (*BPE, error) {
	var f fileJSON
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, bad("%v", err)
	}
	if !isNull(f.Truncation) {
		return nil, unsupported("truncation")
	}
	if !isNull(f.Padding) {
		return nil, unsupported("padding")
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
	t := &BPE{
		vocab:        make(map[string]int, len(m.Vocab)),
		ranks:        make(map[pair]int, len(m.Merges)),
		addedByID:    make(map[int]string),
		unk:          -1,
		bos:          -1,
		fuseUnk:      m.FuseUnk,
		byteFallback: m.ByteFallback,
		ignoreMerges: m.IgnoreMerges,
	}
	var err error
	if t.norm, err = decodeNormalizer(f.Normalizer, "normalizer"); err != nil {
		return nil, err
	}
	if t.pre, err = decodePreTokenizer(f.PreTokenizer, "pre_tokenizer", &t.byteLevel); err != nil {
		return nil, err
	}
	if t.post, err = decodePostProcessor(f.PostProcessor, "post_processor"); err != nil {
		return nil, err
	}
	if t.dec, err = decodeDecoder(f.Decoder, "decoder"); err != nil {
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
		if prev, ok := t.addedByID[id]; ok && prev != a.Content {
			return nil, bad("added_tokens[%d]: id %d used by %q and %q", i, id, prev, a.Content)
		}
		normalized := !a.Special // Hugging Face's default
		if a.Normalized != nil {
			normalized = *a.Normalized
		}
		t.addedByID[id] = a.Content
		t.added = append(t.added, addedToken{id: id, content: a.Content, special: a.Special,
			lstrip: a.LStrip, rstrip: a.RStrip, normalized: normalized, single: a.SingleWord})
		maxSeen = max(maxSeen, id)
	}
	// Hugging Face's tokenizers gives an added token the id of its content
	// in the model's vocabulary, else the next id after the vocabulary and
	// the added tokens before it; a file saying otherwise is refused.
	next := len(m.Vocab)
	seen := map[string]int{}
	for i, a := range t.added {
		want, ok := seen[a.content]
		if !ok {
			want, ok = m.Vocab[a.content]
		}
		if !ok {
			want = next
		}
		if a.id != want {
			return nil, bad("added_tokens[%d] %q: id %d, but Hugging Face's tokenizers gives it id %d", i, a.content, a.id, want)
		}
		seen[a.content] = a.id
		if a.id >= len(m.Vocab) {
			next = a.id + 1
		}
	}
	for i := range t.added {
		a := &t.added[i]
		if a.normalized && t.norm != nil {
			if c, _ := t.norm(a.content); c != "" {
				t.normed.add(a, c)
			}
		} else {
			t.raw.add(a, a.content)
		}
	}

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
			return nil, bad("model.vocab %q: id %d out of range [0, %d)", e.tok, e.id, maxID)
		}
		if e.tok == "" {
			return nil, bad("model.vocab: empty token (id %d)", e.id)
		}
		maxSeen = max(maxSeen, e.id)
	}
	if ids, ok := t.post.(interface{ specialIDs() []int }); ok {
		for _, id := range ids.specialIDs() {
			maxSeen = max(maxSeen, id)
		}
	}
	t.tokens = make([]string, maxSeen+1)
	for _, e := range entries {
		if content, ok := t.addedByID[e.id]; ok {
			if content != e.tok {
				return nil, bad("model.vocab %q: id %d is also added token %q", e.tok, e.id, content)
			}
			t.vocab[e.tok] = e.id
			t.tokens[e.id] = e.tok
			continue
		}
		if t.tokens[e.id] != "" {
			return nil, bad("model.vocab: id %d used by %q and %q", e.id, t.tokens[e.id], e.tok)
		}
		if t.byteLevel && !isByteLevel(e.tok) {
			return nil, bad("model.vocab %q (id %d): not in the byte-level alphabet", e.tok, e.id)
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
		t.unk, t.unkToken = id, *m.UnkToken
	}

	for i, raw := range m.Merges {
		a, b, err := decodeMerge(raw)
		if err != nil {
			return nil, bad("model.merges[%d]: %v", i, err)
		}
		for _, tok := range []string{a, b, a + b} {
			if _, ok := t.vocab[tok]; !ok {
				return nil, bad("model.merges[%d] %q %q: %q not in vocab", i, a, b, tok)
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

// VocabSize returns one more than the largest id in the vocabulary, the
// added tokens or the post-processor's special tokens.
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

// BOS returns the beginning-of-sequence id, from tokenizer_config.json or
// generation_config.json when the tokenizer was loaded from a model folder.
func (t *BPE) BOS() (int, bool) { return t.bos, t.bos >= 0 }

// EOS returns the end-of-sequence ids (generation_config.json may list
// several; tokenizer_config.json names one), or nil when unknown.
func (t *BPE) EOS() []int { return append([]int(nil), t.eos...) }

// Encode returns the ids of s without the special tokens the post-processor
// adds. Characters with no token become unk_token (or bytes, with
// byte_fallback), or are dropped when there is neither.
func (t *BPE) Encode(s string) []int {
	var ids []int
	for _, sg := range t.raw.split(s) {
		if sg.tok != nil {
			ids = append(ids, sg.tok.id)
			continue
		}
		text, lost := sg.text, false
		if t.norm != nil {
			text, lost = t.norm(text)
		}
		for _, sg2 := range t.normed.split(text) {
			if sg2.tok != nil {
				ids = append(ids, sg2.tok.id)
				continue
			}
			ids = t.encodeSection(ids, piece{s: sg2.text, start: sg.at == 0 && !lost && sg2.at == 0})
		}
	}
	return ids
}

// EncodeSpecial returns the ids of s with what the post-processor adds
// (BOS for Llama 2 style tokenizers), as Hugging Face's
// encode(s, add_special_tokens=True).
func (t *BPE) EncodeSpecial(s string) []int {
	ids := t.Encode(s)
	if t.post != nil {
		ids = t.post.post(ids)
	}
	return ids
}

// encodeSection encodes a stretch of normalized text between added tokens.
func (t *BPE) encodeSection(ids []int, p piece) []int {
	if p.s == "" {
		return ids
	}
	ps := []piece{p}
	if t.pre != nil {
		ps = t.pre.pre(ps)
	}
	for _, w := range ps {
		if w.s != "" {
			ids = t.encodeWord(ids, w.s)
		}
	}
	return ids
}

// encodeWord runs the BPE model on one pre-token.
func (t *BPE) encodeWord(ids []int, w string) []int {
	if len(w) >= cacheWordLen {
		return t.bpeWord(ids, w)
	}
	if cached, ok := t.cache.get(w); ok {
		return append(ids, cached...)
	}
	n := len(ids)
	ids = t.bpeWord(ids, w)
	t.cache.put(w, append([]int(nil), ids[n:]...))
	return ids
}

// bpeWord is encodeWord without the cache.
func (t *BPE) bpeWord(ids []int, w string) []int {
	if t.ignoreMerges {
		if id, ok := t.vocab[w]; ok {
			return append(ids, id)
		}
	}
	syms := make([]string, 0, len(w))
	lastUnk := false
	for i := 0; i < len(w); {
		_, n := utf8.DecodeRuneInString(w[i:])
		c := w[i : i+n]
		i += n
		if _, ok := t.vocab[c]; ok {
			syms = append(syms, c)
			lastUnk = false
			continue
		}
		if t.byteFallback {
			start := len(syms)
			ok := true
			for k := 0; k < len(c); k++ {
				bt := byteTokens[c[k]]
				if _, in := t.vocab[bt]; !in {
					ok = false
					break
				}
				syms = append(syms, bt)
			}
			if ok {
				lastUnk = false
				continue
			}
			syms = syms[:start]
		}
		if t.unk >= 0 && !(t.fuseUnk && lastUnk) {
			syms = append(syms, t.unkToken)
		}
		lastUnk = t.unk >= 0
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

// byteTokens holds the byte_fallback token of each byte, "<0x00>" to "<0xFF>".
var byteTokens [256]string

func init() {
	for b := range byteTokens {
		byteTokens[b] = fmt.Sprintf("<0x%02X>", b)
	}
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

// Decode returns the text of ids, special tokens included, through the
// decoder. Ids outside the vocabulary are skipped. With a ByteLevel decoder
// the result is the exact bytes encoded, which may be invalid UTF-8
// (ValidUTF8 gives the text Hugging Face shows).
func (t *BPE) Decode(ids []int) string {
	toks := make([]string, 0, len(ids))
	for _, id := range ids {
		if c, ok := t.addedByID[id]; ok {
			toks = append(toks, c)
			continue
		}
		if id < 0 || id >= len(t.tokens) || t.tokens[id] == "" {
			continue
		}
		toks = append(toks, t.tokens[id])
	}
	if t.dec == nil {
		return strings.Join(toks, " ")
	}
	return strings.Join(t.dec.decode(toks), "")
}
