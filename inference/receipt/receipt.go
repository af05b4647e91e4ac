package receipt

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"
	"unicode/utf8"

	"github.com/fedtune/fedtune/internal/digest"
	"github.com/fedtune/fedtune/internal/dsse"
	"github.com/fedtune/fedtune/internal/strictjson"
	"github.com/fedtune/fedtune/ledger"
)

// PayloadType is the DSSE payload type of a receipt.
const PayloadType = "application/vnd.fedtune.receipt+json"

// Limits on the sampling parameters a receipt may carry.
const (
	// MaxStop is the most stop strings a receipt records.
	MaxStop = 16
	// MaxStopLen is the longest stop string, in bytes.
	MaxStopLen = 256
	// MaxStopTokenIDs is the most stop token ids a receipt records.
	MaxStopTokenIDs = 64
)

var (
	// ErrMalformed is wrapped by the errors about a receipt's envelope or
	// payload that is not well formed; a *FieldError names the field.
	ErrMalformed = errors.New("receipt: malformed")
	// ErrBadSignature is wrapped when the envelope's signature does not
	// verify with the key the receipt names.
	ErrBadSignature = errors.New("receipt: bad signature")
	// ErrPayloadType is wrapped when the envelope is not a receipt.
	ErrPayloadType = errors.New("receipt: wrong payload type")
	// ErrMismatch is wrapped when what a receipt signed does not match
	// what it is checked against: a bundle's request or ids, a replay.
	ErrMismatch = errors.New("receipt: does not match")
)

// FieldError is a malformed field of a receipt; it wraps ErrMalformed.
type FieldError struct {
	Field  string // the JSON name, e.g. "sampling.top_p"
	Reason string
}

func (e *FieldError) Error() string {
	return fmt.Sprintf("%v: field %s: %s", ErrMalformed, e.Field, e.Reason)
}

// Unwrap returns ErrMalformed.
func (e *FieldError) Unwrap() error { return ErrMalformed }

func fieldErr(field, format string, args ...any) error {
	return &FieldError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// Receipt is what an inference node signs about one answer. Field order
// is the payload's canonical order.
type Receipt struct {
	// Model is the served model's weight digest (model.DigestPath).
	Model string `json:"model"`
	// Adapter is the applied LoRA adapter's weight digest; "" when none.
	Adapter string `json:"adapter,omitempty"`
	// Tokenizer is the tokenizer digest (model.TokenizerDigest) of the
	// folder whose tokenizer and chat template made the prompt ids from
	// the request; "" in a receipt of a node that recorded none (left
	// out of the payload), which then binds no tokenizer.
	Tokenizer string `json:"tokenizer,omitempty"`
	// Block is the ledger block that committed the served weights: the
	// ModelRegistered or RoundCommitted tx of Adapter when set, else of
	// Model; nil when the node serves standalone.
	Block *Block `json:"block,omitempty"`
	// RequestHash is RequestHash of the request body the server received.
	RequestHash string `json:"request_hash"`
	// PromptHash is TokensHash of the prompt token ids the model was fed
	// (after the chat template and any BOS token).
	PromptHash   string `json:"prompt_hash"`
	PromptTokens int    `json:"prompt_tokens"`
	// TokensHash is TokensHash of the generated token ids (a stop token
	// that ended generation is not one of them).
	TokensHash       string `json:"tokens_hash"`
	CompletionTokens int    `json:"completion_tokens"`
	// Sampling is how the tokens were drawn.
	Sampling Sampling `json:"sampling"`
	// Cut is CutTime when the node's time limit ended the answer before
	// max_tokens, a stop token or a stop string did: the tokens are then
	// the first CompletionTokens of what the model would have generated.
	// "" otherwise (left out of the payload).
	Cut string `json:"cut,omitempty"`
	// Signer is the node's ledger member ID: ledger.KeyID(PublicKey).
	Signer string `json:"signer"`
	// PublicKey is the node's ed25519 public key, 64 lowercase hex.
	PublicKey string `json:"public_key"`
	// Time is when the answer was finished, in UTC.
	Time time.Time `json:"time"`
}

// CutTime is Receipt.Cut of an answer the node's time limit cut short.
const CutTime = "time"

// Block names a ledger block.
type Block struct {
	Height uint64 `json:"height"`
	Hash   string `json:"hash"` // 64 lowercase hex of the header hash
}

// Sampling is the sampling parameters an answer was generated with, as
// model.GenerateConfig takes them, plus the request's stop strings.
type Sampling struct {
	Temperature float64 `json:"temperature"` // 0 = greedy
	TopP        float64 `json:"top_p"`       // 0 means 1
	MaxTokens   int     `json:"max_tokens"`
	// Stop is the request's stop strings: the text was cut at the first.
	Stop []string `json:"stop,omitempty"`
	// StopTokenIDs is the token ids that end generation (GenerateConfig.Stop).
	StopTokenIDs []int `json:"stop_token_ids,omitempty"`
	// Seed seeds the sampler; the server records the one it used.
	Seed uint64 `json:"seed"`
}

// RequestHash returns the lowercase hex SHA-256 of a request body, as the
// server received it (before any parsing).
func RequestHash(body []byte) string { return digest.Bytes(body) }

// TokensHash returns the lowercase hex SHA-256 of token ids encoded as
// consecutive little-endian uint32s (4 bytes an id, no length prefix). An
// id outside [0, 2^32) is an error.
func TokensHash(ids []int) (string, error) {
	b, err := EncodeTokens(ids)
	if err != nil {
		return "", err
	}
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:]), nil
}

// EncodeTokens returns the byte encoding TokensHash hashes.
func EncodeTokens(ids []int) ([]byte, error) {
	b := make([]byte, 4*len(ids))
	for i, id := range ids {
		if id < 0 || uint64(id) > math.MaxUint32 {
			return nil, fmt.Errorf("receipt: token id %d at %d is not a uint32", id, i)
		}
		binary.LittleEndian.PutUint32(b[4*i:], uint32(id))
	}
	return b, nil
}

// Encode returns r's canonical payload: its JSON in field order, no
// whitespace. It checks r first (Check).
func (r *Receipt) Encode() ([]byte, error) {
	if err := r.Check(); err != nil {
		return nil, err
	}
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return b, nil
}

// Decode parses a canonical receipt payload: strict JSON (unknown fields and
// duplicate names refused) that re-encodes to the same bytes, with every
// field checked.
func Decode(payload []byte) (*Receipt, error) {
	var r Receipt
	if err := strictjson.Unmarshal(payload, &r); err != nil {
		return nil, fmt.Errorf("%w: payload: %v", ErrMalformed, err)
	}
	if err := r.Check(); err != nil {
		return nil, err
	}
	again, err := json.Marshal(&r)
	if err != nil || !bytes.Equal(again, payload) {
		return nil, fmt.Errorf("%w: payload is not in canonical form (fields in order, no whitespace, as encoding/json writes them)", ErrMalformed)
	}
	return &r, nil
}

// Check checks every field of r; the error is a *FieldError.
func (r *Receipt) Check() error {
	if err := checkDigest("model", r.Model); err != nil {
		return err
	}
	if r.Adapter != "" {
		if err := checkDigest("adapter", r.Adapter); err != nil {
			return err
		}
	}
	if r.Tokenizer != "" {
		if err := checkDigest("tokenizer", r.Tokenizer); err != nil {
			return err
		}
	}
	if r.Block != nil {
		if err := checkDigest("block.hash", r.Block.Hash); err != nil {
			return err
		}
	}
	for _, f := range []struct{ name, v string }{
		{"request_hash", r.RequestHash}, {"prompt_hash", r.PromptHash}, {"tokens_hash", r.TokensHash},
	} {
		if err := checkDigest(f.name, f.v); err != nil {
			return err
		}
	}
	if r.PromptTokens < 1 {
		return fieldErr("prompt_tokens", "%d, want at least 1", r.PromptTokens)
	}
	if r.CompletionTokens < 0 {
		return fieldErr("completion_tokens", "%d is negative", r.CompletionTokens)
	}
	if err := r.Sampling.check(); err != nil {
		return err
	}
	if r.Cut != "" && r.Cut != CutTime {
		return fieldErr("cut", "%q, want %q or none", abbrev(r.Cut), CutTime)
	}
	if r.CompletionTokens > r.Sampling.MaxTokens {
		return fieldErr("completion_tokens", "%d is more than sampling.max_tokens %d", r.CompletionTokens, r.Sampling.MaxTokens)
	}
	if err := checkDigest("signer", r.Signer); err != nil {
		return err
	}
	pub, err := r.Key()
	if err != nil {
		return err
	}
	if id := ledger.KeyID(pub); id != r.Signer {
		return fieldErr("signer", "%s is not the ID of public_key (%s)", r.Signer, id)
	}
	if r.Time.IsZero() {
		return fieldErr("time", "missing")
	}
	if r.Time.Location() != time.UTC {
		return fieldErr("time", "%s is not in UTC", r.Time.Format(time.RFC3339Nano))
	}
	if y := r.Time.Year(); y < 2000 || y > 9999 {
		return fieldErr("time", "year %d is out of range", y)
	}
	return nil
}

// Key returns the signer's public key from PublicKey.
func (r *Receipt) Key() (ed25519.PublicKey, error) {
	raw, err := hex.DecodeString(r.PublicKey)
	if err != nil || len(raw) != ed25519.PublicKeySize || hex.EncodeToString(raw) != r.PublicKey {
		return nil, fieldErr("public_key", "want the ed25519 public key as %d lowercase hex characters", 2*ed25519.PublicKeySize)
	}
	return ed25519.PublicKey(raw), nil
}

func (s *Sampling) check() error {
	if math.IsNaN(s.Temperature) || math.IsInf(s.Temperature, 0) || s.Temperature < 0 {
		return fieldErr("sampling.temperature", "%v, want a finite number >= 0", s.Temperature)
	}
	if math.IsNaN(s.TopP) || s.TopP < 0 || s.TopP > 1 {
		return fieldErr("sampling.top_p", "%v, want a number in [0, 1]", s.TopP)
	}
	if s.MaxTokens < 1 {
		return fieldErr("sampling.max_tokens", "%d, want at least 1", s.MaxTokens)
	}
	if len(s.Stop) > MaxStop {
		return fieldErr("sampling.stop", "%d strings, at most %d", len(s.Stop), MaxStop)
	}
	for i, st := range s.Stop {
		if st == "" || len(st) > MaxStopLen || !utf8.ValidString(st) {
			return fieldErr(fmt.Sprintf("sampling.stop[%d]", i), "want non-empty UTF-8 of at most %d bytes", MaxStopLen)
		}
	}
	if len(s.StopTokenIDs) > MaxStopTokenIDs {
		return fieldErr("sampling.stop_token_ids", "%d ids, at most %d", len(s.StopTokenIDs), MaxStopTokenIDs)
	}
	for i, id := range s.StopTokenIDs {
		if id < 0 || uint64(id) > math.MaxUint32 {
			return fieldErr(fmt.Sprintf("sampling.stop_token_ids[%d]", i), "%d is not a uint32", id)
		}
	}
	return nil
}

func checkDigest(field, s string) error {
	if !digest.Valid(s) {
		return fieldErr(field, "%q is not a SHA-256 digest (64 lowercase hex)", abbrev(s))
	}
	return nil
}

// Sign returns the canonical DSSE envelope (JSON) of r signed by key. It
// fills Signer and PublicKey from key (a receipt naming another key is an
// error) and Time with the current time when zero; Time is kept in UTC.
func Sign(key ed25519.PrivateKey, r Receipt) ([]byte, error) {
	if len(key) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("receipt: sign: private key is %d bytes, want %d", len(key), ed25519.PrivateKeySize)
	}
	pub := key.Public().(ed25519.PublicKey)
	id, pubHex := ledger.KeyID(pub), hex.EncodeToString(pub)
	if (r.Signer != "" && r.Signer != id) || (r.PublicKey != "" && r.PublicKey != pubHex) {
		return nil, fmt.Errorf("receipt: sign: the receipt names signer %s, the key is %s", abbrev(r.Signer), id)
	}
	r.Signer, r.PublicKey = id, pubHex
	if r.Time.IsZero() {
		r.Time = time.Now()
	}
	r.Time = r.Time.UTC()
	payload, err := r.Encode()
	if err != nil {
		return nil, fmt.Errorf("receipt: sign: %w", err)
	}
	return dsse.Sign(key, PayloadType, payload).Encode(), nil
}

// Verify decodes a receipt envelope (canonical DSSE JSON), checks its
// payload type, its payload (Decode) and that its one signature is by the
// key the receipt names. It does not say whether that key may sign
// receipts: check r.Signer against the ledger for that.
func Verify(envelope []byte) (*Receipt, error) {
	env, err := dsse.Decode(envelope)
	if err != nil {
		return nil, fmt.Errorf("%w: envelope: %v", ErrMalformed, err)
	}
	if env.PayloadType != PayloadType {
		return nil, fmt.Errorf("%w: %q, want %q", ErrPayloadType, abbrev(env.PayloadType), PayloadType)
	}
	r, err := Decode(env.Payload)
	if err != nil {
		return nil, err
	}
	pub, _ := r.Key() // checked by Decode
	if err := env.Verify(pub); err != nil {
		if errors.Is(err, dsse.ErrMalformed) {
			return nil, fmt.Errorf("%w: envelope: %v", ErrMalformed, err)
		}
		return nil, fmt.Errorf("%w: %v", ErrBadSignature, err)
	}
	return r, nil
}

func abbrev(s string) string {
	if len(s) > 72 {
		return s[:69] + "..."
	}
	return s
}

// Answer is what a server knows of one answer when it is finished; New
// makes the receipt for it.
type Answer struct {
	Model   string // weight digest of the served model
	Adapter string // weight digest of the applied adapter; "" when none
	// Tokenizer is the tokenizer digest of the served folder; "" for none.
	Tokenizer string
	Block     *Block // the block that committed the served weights; nil standalone
	// Request is the request body exactly as received; RequestHash is its
	// hash (RequestHash), used when Request is nil (the bundle then has no
	// request, and cannot be replayed).
	Request     []byte
	RequestHash string
	// PromptIDs is the token ids the model was fed; CompletionIDs the ids it
	// generated (without the stop token that ended generation).
	PromptIDs, CompletionIDs []int
	Sampling                 Sampling
	// Cut is CutTime when the node's time limit ended the answer.
	Cut string
	// Time is when the answer was finished (zero: Sign sets the time).
	Time time.Time
}

// New returns the receipt of answer a, unsigned (Signer, PublicKey and,
// when a.Time is zero, Time are filled by Sign).
func New(a Answer) (Receipt, error) {
	ph, err := TokensHash(a.PromptIDs)
	if err != nil {
		return Receipt{}, fmt.Errorf("receipt: prompt: %w", err)
	}
	th, err := TokensHash(a.CompletionIDs)
	if err != nil {
		return Receipt{}, fmt.Errorf("receipt: completion: %w", err)
	}
	rh := a.RequestHash
	if a.Request != nil {
		rh = RequestHash(a.Request)
	}
	return Receipt{
		Model: a.Model, Adapter: a.Adapter, Tokenizer: a.Tokenizer, Block: a.Block,
		RequestHash: rh,
		PromptHash:  ph, PromptTokens: len(a.PromptIDs),
		TokensHash: th, CompletionTokens: len(a.CompletionIDs),
		Sampling: a.Sampling, Cut: a.Cut, Time: a.Time,
	}, nil
}

// SignAnswer makes, signs and bundles the receipt of a: it returns the
// envelope (for a response header or body) and the bundle with the
// request, the ids and response text (for a receipt file to audit).
func SignAnswer(key ed25519.PrivateKey, a Answer, response string) ([]byte, *Bundle, error) {
	r, err := New(a)
	if err != nil {
		return nil, nil, err
	}
	env, err := Sign(key, r)
	if err != nil {
		return nil, nil, err
	}
	return env, NewBundle(env, a.Request, a.PromptIDs, a.CompletionIDs, response), nil
}
