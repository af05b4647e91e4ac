package receipt

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"

	"github.com/fedtune/fedtune/internal/strictjson"
)

// Bundle is a receipt file: a receipt envelope with what a replay needs.
// Its JSON form is
//
//	{"receipt": {DSSE envelope}, "request": "<base64 request body>",
//	 "prompt_ids": [...], "completion_ids": [...], "response": "text"}
//
// The envelope may be reformatted (indented) inside the bundle: Check
// compacts it before verifying. The request body is base64 so that its
// bytes, which the receipt hashes, survive any reformatting of the file.
type Bundle struct {
	Receipt json.RawMessage `json:"receipt"`
	// Request is the request body exactly as the server received it.
	Request []byte `json:"request"`
	// PromptIDs is the token ids the model was fed.
	PromptIDs []int `json:"prompt_ids"`
	// CompletionIDs is the generated token ids; optional (their hash is in
	// the receipt either way).
	CompletionIDs []int `json:"completion_ids,omitempty"`
	// Response is the answer's text as the server sent it; optional.
	Response string `json:"response,omitempty"`
}

// NewBundle returns a bundle of a signed envelope (as Sign returns it) with
// its request body and token ids.
func NewBundle(envelope, request []byte, promptIDs, completionIDs []int, response string) *Bundle {
	return &Bundle{Receipt: json.RawMessage(envelope), Request: request, PromptIDs: promptIDs, CompletionIDs: completionIDs, Response: response}
}

// Encode returns the bundle's JSON, indented for people to read.
func (b *Bundle) Encode() ([]byte, error) {
	return json.MarshalIndent(b, "", "  ")
}

// DecodeBundle parses a bundle (strict JSON). It does not verify it: see
// Check.
func DecodeBundle(data []byte) (*Bundle, error) {
	var b Bundle
	if err := strictjson.Unmarshal(data, &b); err != nil {
		return nil, fmt.Errorf("%w: bundle: %v", ErrMalformed, err)
	}
	if len(b.Receipt) == 0 {
		return nil, fmt.Errorf("%w: bundle: no receipt", ErrMalformed)
	}
	return &b, nil
}

// IsEnvelope reports whether data looks like a receipt envelope (a JSON
// object whose first member is payloadType) rather than a bundle.
func IsEnvelope(data []byte) bool {
	d := json.NewDecoder(bytes.NewReader(data))
	if t, err := d.Token(); err != nil || t != json.Delim('{') {
		return false
	}
	t, err := d.Token()
	return err == nil && t == "payloadType"
}

// Parse reads a receipt file: a bundle, or a bare envelope (compact or
// indented JSON, or the base64 of it as the Fedtune-Receipt header carries
// it). It returns the envelope in canonical form and the bundle (nil for a
// bare envelope); it verifies nothing.
func Parse(data []byte) (envelope []byte, b *Bundle, err error) {
	data = bytes.TrimSpace(data)
	if len(data) > 0 && data[0] != '{' {
		raw, err := base64.StdEncoding.DecodeString(string(data))
		if err != nil {
			return nil, nil, fmt.Errorf("%w: neither JSON nor base64: %v", ErrMalformed, err)
		}
		data = raw
	}
	if IsEnvelope(data) {
		var buf bytes.Buffer
		if err := json.Compact(&buf, data); err != nil {
			return nil, nil, fmt.Errorf("%w: envelope: %v", ErrMalformed, err)
		}
		return buf.Bytes(), nil, nil
	}
	if b, err = DecodeBundle(data); err != nil {
		return nil, nil, err
	}
	if envelope, err = b.Envelope(); err != nil {
		return nil, nil, err
	}
	return envelope, b, nil
}

// Envelope returns the bundle's envelope in its canonical (compact) form.
func (b *Bundle) Envelope() ([]byte, error) {
	var buf bytes.Buffer
	if err := json.Compact(&buf, b.Receipt); err != nil {
		return nil, fmt.Errorf("%w: bundle: receipt: %v", ErrMalformed, err)
	}
	return buf.Bytes(), nil
}

// Check verifies the bundle's envelope (Verify) and that its request body,
// prompt ids and completion ids (when present) hash to what the receipt
// signed. The error names the part that does not match.
func (b *Bundle) Check() (*Receipt, error) {
	env, err := b.Envelope()
	if err != nil {
		return nil, err
	}
	r, err := Verify(env)
	if err != nil {
		return nil, err
	}
	if got := RequestHash(b.Request); got != r.RequestHash {
		return r, fmt.Errorf("%w: bundle: request body hashes to %s, the receipt signed request_hash %s", ErrMismatch, got, r.RequestHash)
	}
	if len(b.PromptIDs) != r.PromptTokens {
		return r, fmt.Errorf("%w: bundle: %d prompt_ids, the receipt signed prompt_tokens %d", ErrMismatch, len(b.PromptIDs), r.PromptTokens)
	}
	if got, err := TokensHash(b.PromptIDs); err != nil {
		return r, fmt.Errorf("%w: bundle: prompt_ids: %v", ErrMalformed, err)
	} else if got != r.PromptHash {
		return r, fmt.Errorf("%w: bundle: prompt_ids hash to %s, the receipt signed prompt_hash %s", ErrMismatch, got, r.PromptHash)
	}
	if b.CompletionIDs != nil {
		if len(b.CompletionIDs) != r.CompletionTokens {
			return r, fmt.Errorf("%w: bundle: %d completion_ids, the receipt signed completion_tokens %d", ErrMismatch, len(b.CompletionIDs), r.CompletionTokens)
		}
		if got, err := TokensHash(b.CompletionIDs); err != nil {
			return r, fmt.Errorf("%w: bundle: completion_ids: %v", ErrMalformed, err)
		} else if got != r.TokensHash {
			return r, fmt.Errorf("%w: bundle: completion_ids hash to %s, the receipt signed tokens_hash %s", ErrMismatch, got, r.TokensHash)
		}
	}
	return r, nil
}
