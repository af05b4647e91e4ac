package client

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"slices"
	"testing"
)

func TestChallenge(t *testing.T) {
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := NewChallenge(rand.Reader)
	if err != nil || len(ch) != ChallengeSize {
		t.Fatalf("NewChallenge: %v %d", err, len(ch))
	}
	ch2, _ := NewChallenge(rand.Reader)
	if bytes.Equal(ch, ch2) {
		t.Fatal("two challenges are equal")
	}
	sig := SignChallenge(key, ch)
	if err := VerifyChallenge(pub, ch, sig); err != nil {
		t.Fatalf("valid answer: %v", err)
	}
	otherPub, _, _ := ed25519.GenerateKey(rand.Reader)
	bad := slices.Clone(sig)
	bad[0] ^= 1
	for name, tc := range map[string]struct {
		pub     ed25519.PublicKey
		ch, sig []byte
	}{
		"other challenge": {pub, ch2, sig},
		"other key":       {otherPub, ch, sig},
		"flipped bit":     {pub, ch, bad},
		"no domain":       {pub, ch, ed25519.Sign(key, ch)},
		"short challenge": {pub, ch[:16], sig},
		"short key":       {pub[:31], ch, sig},
		"short sig":       {pub, ch, sig[:63]},
	} {
		if err := VerifyChallenge(tc.pub, tc.ch, tc.sig); !errors.Is(err, ErrBadChallenge) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := NewChallenge(bytes.NewReader(make([]byte, 5))); err == nil {
		t.Error("short random source accepted")
	}
}
