package dsse

import (
	"crypto/ed25519"
	"errors"
	"strings"
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

// DecodeSigned takes one kind of signed document and refuses every other
// form of it, saying what was wrong.
func TestDecodeSigned(t *testing.T) {
	_, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	type doc struct {
		A string `json:"a"`
		B int    `json:"b"`
	}
	const typ = "application/vnd.test+json"
	good := Sign(key, typ, []byte(`{"a":"x","b":1}`)).Encode()
	twoSigs := Sign(key, typ, []byte(`{"a":"x","b":1}`))
	twoSigs.Signatures = append(twoSigs.Signatures, twoSigs.Signatures[0])
	for _, tc := range []struct {
		name string
		data []byte
		max  int
		want string // "" = accepted
	}{
		{"good", good, 1 << 10, ""},
		{"too large", good, 10, "bytes, limit 10"},
		{"not an envelope", []byte(`{}`), 1 << 10, "envelope:"},
		{"other type", Sign(key, "text/plain", []byte(`{"a":"x","b":1}`)).Encode(), 1 << 10, `payloadType "text/plain"`},
		{"two signatures", twoSigs.Encode(), 1 << 10, "2 signatures, want exactly 1"},
		{"unknown field", Sign(key, typ, []byte(`{"a":"x","b":1,"c":2}`)).Encode(), 1 << 10, "payload:"},
		{"repeated field", Sign(key, typ, []byte(`{"a":"x","a":"y","b":1}`)).Encode(), 1 << 10, "payload:"},
		{"other order", Sign(key, typ, []byte(`{"b":1,"a":"x"}`)).Encode(), 1 << 10, "canonical form"},
		{"whitespace", Sign(key, typ, []byte(`{"a": "x","b":1}`)).Encode(), 1 << 10, "canonical form"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var d doc
			env, err := DecodeSigned(tc.data, typ, tc.max, &d)
			if tc.want == "" {
				if err != nil || d != (doc{"x", 1}) || env.Verify(key.Public().(ed25519.PublicKey)) != nil {
					t.Fatalf("DecodeSigned = %+v, %v", d, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("DecodeSigned error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// FuzzDecodeSigned: any bytes give a document whose payload is its
// canonical JSON, or an error; never a panic.
func FuzzDecodeSigned(f *testing.F) {
	_, key, _ := ed25519.GenerateKey(nil)
	f.Add(Sign(key, "t", []byte(`{"a":"x"}`)).Encode())
	f.Add([]byte(`{"payloadType":"t","payload":"e30=","signatures":[]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var v struct {
			A string `json:"a"`
		}
		env, err := DecodeSigned(data, "t", 1<<16, &v)
		if err != nil {
			return
		}
		if len(env.Signatures) != 1 || env.PayloadType != "t" {
			t.Fatalf("accepted %v", env)
		}
	})
}
