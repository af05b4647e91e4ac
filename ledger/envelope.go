package ledger

import (
	"crypto/ed25519"
	"errors"

	"github.com/fedtune/fedtune/internal/dsse"
)

// PayloadType is the DSSE payloadType of every fedtune ledger transaction.
const PayloadType = "application/vnd.fedtune.tx+json"

// MaxEnvelopeBytes bounds what DecodeEnvelope accepts, whatever the genesis
// policy says (the policy's MaxTxBytes may only be lower).
const MaxEnvelopeBytes = 1 << 20

// Envelope is a DSSE envelope: a payload, its type, and signatures over
// PAE(PayloadType, Payload). Its canonical JSON form (Encode) is the
// transaction's one byte form; see package internal/dsse.
type Envelope = dsse.Envelope

// Signature is one DSSE signature: the signer's key ID and the ed25519
// signature over PAE(payloadType, payload).
type Signature = dsse.Signature

// PAE is DSSE's pre-authentication encoding:
// "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body. Signatures cover these bytes.
func PAE(payloadType string, payload []byte) []byte { return dsse.PAE(payloadType, payload) }

// DecodeEnvelope parses a DSSE envelope in its canonical JSON form. Unknown
// fields, trailing data and any encoding other than the one Encode writes are
// rejected (*TxError with CodeMalformed), so every transaction has exactly one
// byte form and hash. It does not check signatures.
func DecodeEnvelope(b []byte) (*Envelope, error) {
	if len(b) > MaxEnvelopeBytes {
		return nil, txErr(CodeTooLarge, "envelope is %d bytes, limit %d", len(b), MaxEnvelopeBytes)
	}
	e, err := dsse.Decode(b)
	if err != nil {
		return nil, txErr(CodeMalformed, "envelope: %v", err)
	}
	return e, nil
}

// SignEnvelope returns an envelope over payload signed by key.
func SignEnvelope(key ed25519.PrivateKey, payloadType string, payload []byte) *Envelope {
	return dsse.Sign(key, payloadType, payload)
}

// verifyEnvelope checks e's single signature against pub, as a *TxError.
func verifyEnvelope(e *Envelope, pub ed25519.PublicKey) error {
	err := e.Verify(pub)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, dsse.ErrBadSignature):
		return txErr(CodeBadSignature, "%v", err)
	default:
		return txErr(CodeMalformed, "%v", err)
	}
}
