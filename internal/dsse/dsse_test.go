package dsse

import (
	"crypto/ed25519"
	"errors"
	"testing"
)

func TestPAE(t *testing.T) {
	// The example from the DSSE specification.
	got := string(PAE("http://example.com/HelloWorld", []byte("hello world")))
	want := "DSSEv1 29 http://example.com/HelloWorld 11 hello world"
	if got != want {
		t.Fatalf("PAE = %q, want %q", got, want)
	}
}

func TestSignDecodeVerify(t *testing.T) {
	pub, key, _ := ed25519.GenerateKey(nil)
	other, _, _ := ed25519.GenerateKey(nil)
	env := Sign(key, "text/plain", []byte("payload"))
	b := env.Encode()
	got, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := got.Verify(pub); err != nil {
		t.Fatal(err)
	}
	if err := got.Verify(other); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("verify with another key: %v", err)
	}
	got.Payload = []byte("payloae")
	if err := got.Verify(pub); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("verify of a changed payload: %v", err)
	}
	for _, bad := range []string{
		string(b) + " ",
		`{"payload":"","payloadType":"x","signatures":[]}`,
		`{"payloadType":"x","payload":"","signatures":[],"extra":1}`,
		`{"payloadType":"x","payload":"YQ","signatures":[]}`,
		`not json`,
	} {
		if _, err := Decode([]byte(bad)); !errors.Is(err, ErrMalformed) {
			t.Errorf("Decode(%q) = %v, want ErrMalformed", bad, err)
		}
	}
	two := &Envelope{PayloadType: "x", Payload: []byte("p"), Signatures: []Signature{{}, {}}}
	if err := two.Verify(pub); !errors.Is(err, ErrMalformed) {
		t.Fatalf("two signatures: %v", err)
	}
}

func FuzzDecode(f *testing.F) {
	_, key, _ := ed25519.GenerateKey(nil)
	f.Add(Sign(key, "t", []byte("p")).Encode())
	f.Add([]byte(`{"payloadType":"","payload":"","signatures":[]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := Decode(b)
		if err != nil {
			return
		}
		if string(e.Encode()) != string(b) {
			t.Fatalf("decoded envelope re-encodes differently")
		}
	})
}
