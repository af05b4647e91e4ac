package client

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
)

// ChallengeSize is the length of a join challenge in bytes.
const ChallengeSize = 32

// ChallengeDomain prefixes every signed join challenge, so a signature made
// for joining can never pass as any other fedtune signature (a DSSE
// transaction signs PAE bytes, which start "DSSEv1 ").
const ChallengeDomain = "fedtune/trainer-join/v1\x00"

// ErrBadChallenge is returned by VerifyChallenge for a malformed challenge
// or key, or a signature that does not verify.
var ErrBadChallenge = errors.New("coordinator: bad join challenge response")

// NewChallenge draws a fresh ChallengeSize-byte challenge from rand
// (crypto/rand.Reader in production).
func NewChallenge(rand io.Reader) ([]byte, error) {
	c := make([]byte, ChallengeSize)
	if _, err := io.ReadFull(rand, c); err != nil {
		return nil, fmt.Errorf("coordinator: draw challenge: %w", err)
	}
	return c, nil
}

// ChallengeMessage is what a trainer signs to answer challenge:
// ChallengeDomain ‖ challenge.
func ChallengeMessage(challenge []byte) []byte {
	return append([]byte(ChallengeDomain), challenge...)
}

// SignChallenge answers a challenge with the trainer's key.
func SignChallenge(key ed25519.PrivateKey, challenge []byte) []byte {
	return ed25519.Sign(key, ChallengeMessage(challenge))
}

// VerifyChallenge checks a trainer's answer to challenge against its public
// key; the caller then checks that the key's ID is a trainer member.
func VerifyChallenge(pub ed25519.PublicKey, challenge, sig []byte) error {
	switch {
	case len(pub) != ed25519.PublicKeySize:
		return fmt.Errorf("%w: public key is %d bytes, want %d", ErrBadChallenge, len(pub), ed25519.PublicKeySize)
	case len(challenge) != ChallengeSize:
		return fmt.Errorf("%w: challenge is %d bytes, want %d", ErrBadChallenge, len(challenge), ChallengeSize)
	case len(sig) != ed25519.SignatureSize:
		return fmt.Errorf("%w: signature is %d bytes, want %d", ErrBadChallenge, len(sig), ed25519.SignatureSize)
	case !ed25519.Verify(pub, ChallengeMessage(challenge), sig):
		return fmt.Errorf("%w: signature does not verify", ErrBadChallenge)
	}
	return nil
}
