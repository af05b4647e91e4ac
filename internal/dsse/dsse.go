package dsse

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/fedtune/fedtune/internal/digest"
	"github.com/fedtune/fedtune/internal/strictjson"
)

// ErrMalformed is wrapped by Decode's and Verify's errors about the form of an envelope.
var ErrMalformed = errors.New("dsse: malformed envelope")

// ErrBadSignature is wrapped by Verify's errors about a signature that does not verify.
var ErrBadSignature = errors.New("dsse: bad signature")

// Envelope is a DSSE envelope: a payload, its type, and signatures over
// PAE(PayloadType, Payload).
type Envelope struct {
	PayloadType string
	Payload     []byte
	Signatures  []Signature
}

// Signature is one DSSE signature: the signer's key ID and the ed25519
// signature over PAE(payloadType, payload).
type Signature struct {
	KeyID string
	Sig   []byte
}

// envelopeJSON is the DSSE JSON form; field order here is the canonical order.
type envelopeJSON struct {
	PayloadType string          `json:"payloadType"`
	Payload     []byte          `json:"payload"`
	Signatures  []signatureJSON `json:"signatures"`
}

type signatureJSON struct {
	KeyID string `json:"keyid"`
	Sig   []byte `json:"sig"`
}

// KeyID returns the ID of an ed25519 public key: the lowercase hex SHA-256
// of its raw 32 bytes.
func KeyID(pub ed25519.PublicKey) string { return digest.Bytes(pub) }

// PAE is DSSE's pre-authentication encoding:
// "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body, where LEN is the byte
// length in ASCII decimal and SP is one space. Signatures cover these bytes.
func PAE(payloadType string, payload []byte) []byte {
	var b bytes.Buffer
	b.Grow(len(payloadType) + len(payload) + 32)
	b.WriteString("DSSEv1 ")
	b.WriteString(strconv.Itoa(len(payloadType)))
	b.WriteByte(' ')
	b.WriteString(payloadType)
	b.WriteByte(' ')
	b.WriteString(strconv.Itoa(len(payload)))
	b.WriteByte(' ')
	b.Write(payload)
	return b.Bytes()
}

// Encode returns the canonical JSON form of e: fields in the order
// payloadType, payload, signatures (keyid, sig), byte strings in standard
// padded base64, no whitespace.
func (e *Envelope) Encode() []byte {
	j := envelopeJSON{PayloadType: e.PayloadType, Payload: e.Payload, Signatures: make([]signatureJSON, len(e.Signatures))}
	if j.Payload == nil {
		j.Payload = []byte{}
	}
	for i, s := range e.Signatures {
		j.Signatures[i] = signatureJSON(s)
		if s.Sig == nil {
			j.Signatures[i].Sig = []byte{}
		}
	}
	out, err := json.Marshal(j)
	if err != nil {
		// Only strings and byte slices: Marshal cannot fail.
		panic("dsse: encode envelope: " + err.Error())
	}
	return out
}

// Decode parses an envelope in its canonical JSON form. Unknown fields,
// trailing data and any encoding other than the one Encode writes are
// rejected, so every envelope has exactly one byte form and hash. It does not
// check signatures.
func Decode(b []byte) (*Envelope, error) {
	var j envelopeJSON
	if err := strictjson.Unmarshal(b, &j); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	e := &Envelope{PayloadType: j.PayloadType, Payload: j.Payload, Signatures: make([]Signature, len(j.Signatures))}
	for i, s := range j.Signatures {
		e.Signatures[i] = Signature(s)
	}
	if !bytes.Equal(e.Encode(), b) {
		return nil, fmt.Errorf("%w: not in canonical form (no whitespace, fields payloadType, payload, signatures in that order, standard base64)", ErrMalformed)
	}
	return e, nil
}

// DecodeSigned decodes a signed document of one kind: data (at most
// maxBytes) is an envelope in canonical form (Decode) of type
// payloadType with exactly one signature, whose payload decodes strictly
// into v (unknown or repeated fields are errors) and is v's canonical JSON
// (json.Marshal(v), byte for byte). It does not check the signature: the
// caller knows whose key must have made it (Verify).
func DecodeSigned(data []byte, payloadType string, maxBytes int, v any) (*Envelope, error) {
	if len(data) > maxBytes {
		return nil, fmt.Errorf("%d bytes, limit %d", len(data), maxBytes)
	}
	env, err := Decode(data)
	if err != nil {
		return nil, fmt.Errorf("envelope: %w", err)
	}
	if env.PayloadType != payloadType {
		return nil, fmt.Errorf("payloadType %q, want %q", abbrev(env.PayloadType), payloadType)
	}
	if len(env.Signatures) != 1 {
		return nil, fmt.Errorf("%d signatures, want exactly 1", len(env.Signatures))
	}
	if err := strictjson.Unmarshal(env.Payload, v); err != nil {
		return nil, fmt.Errorf("payload: %v", err)
	}
	if canon, err := json.Marshal(v); err != nil || !bytes.Equal(canon, env.Payload) {
		return nil, errors.New("payload is not in canonical form (fields in the documented order, no whitespace)")
	}
	return env, nil
}

// Sign returns an envelope over payload signed by key.
func Sign(key ed25519.PrivateKey, payloadType string, payload []byte) *Envelope {
	pub := key.Public().(ed25519.PublicKey)
	return &Envelope{
		PayloadType: payloadType,
		Payload:     payload,
		Signatures:  []Signature{{KeyID: KeyID(pub), Sig: ed25519.Sign(key, PAE(payloadType, payload))}},
	}
}

// Verify checks that e carries exactly one signature, that its key ID is
// pub's ID and that it verifies over PAE(e.PayloadType, e.Payload).
func (e *Envelope) Verify(pub ed25519.PublicKey) error {
	if len(e.Signatures) != 1 {
		return fmt.Errorf("%w: %d signatures, want exactly 1", ErrMalformed, len(e.Signatures))
	}
	s := e.Signatures[0]
	if len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: public key is %d bytes, want %d", ErrBadSignature, len(pub), ed25519.PublicKeySize)
	}
	if want := KeyID(pub); s.KeyID != want {
		return fmt.Errorf("%w: signature keyid %q is not the signer's ID %s", ErrBadSignature, abbrev(s.KeyID), want)
	}
	if len(s.Sig) != ed25519.SignatureSize || !ed25519.Verify(pub, PAE(e.PayloadType, e.Payload), s.Sig) {
		return fmt.Errorf("%w: ed25519 signature by %s does not verify over PAE(payloadType, payload)", ErrBadSignature, s.KeyID)
	}
	return nil
}

// String describes the envelope without its contents.
func (e *Envelope) String() string {
	return fmt.Sprintf("Envelope{%s, %d bytes, %d sigs}", e.PayloadType, len(e.Payload), len(e.Signatures))
}

func abbrev(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
