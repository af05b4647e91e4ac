package datasets

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/internal/dsse"
)

// ownerKey is a fixed test key, so the golden manifests are stable.
func ownerKey(name string) ed25519.PrivateKey {
	seed := sha256.Sum256([]byte("fedtune datasets test key " + name))
	return ed25519.NewKeyFromSeed(seed[:])
}

func keyID(k ed25519.PrivateKey) string { return dsse.KeyID(k.Public().(ed25519.PublicKey)) }

// shipped are the datasets the repository ships, with the manifest golden
// file of each.
var shipped = []struct{ path, golden, licence string }{
	{"testdata/english/train.txt", "english-train.manifest.json", "CC-BY-SA-4.0"},
	{"testdata/shards/trainer-1.jsonl", "trainer-1.manifest.json", "LicenseRef-fedtune-synthetic"},
	{"testdata/tasks/eval.jsonl", "tasks-eval.manifest.json", "LicenseRef-fedtune-synthetic"},
}

func signShipped(t *testing.T, path, licence string) (*SignedManifest, *Tree, *Dataset) {
	t.Helper()
	d, err := Load(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	format, err := DetectFormat(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	k := ownerKey("owner")
	m, tree, err := BuildManifest(d, ManifestOptions{Format: format, Licence: licence, Source: "fedtune repository, datasets/" + path, Owner: keyID(k)})
	if err != nil {
		t.Fatal(err)
	}
	sm, err := SignManifest(k, m)
	if err != nil {
		t.Fatal(err)
	}
	return sm, tree, d
}

func TestManifestGolden(t *testing.T) {
	for _, tc := range shipped {
		t.Run(tc.golden, func(t *testing.T) {
			sm, tree, d := signShipped(t, tc.path, tc.licence)
			golden := filepath.Join("testdata", "manifests", tc.golden)
			if *update {
				if err := os.WriteFile(golden, sm.Envelope, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(sm.Envelope, want) {
				t.Fatalf("manifest of %s differs from %s (run with -update if the change is intended)", tc.path, golden)
			}
			got, err := DecodeManifest(want, ownerKey("owner").Public().(ed25519.PublicKey))
			if err != nil {
				t.Fatal(err)
			}
			if got.Digest != sm.Digest || got.Samples != uint64(len(d.Samples)) || got.Samples != tree.Size() {
				t.Fatalf("decoded %+v", got)
			}
			sum := sha256.Sum256(want)
			if got.Digest != string(hexOf(sum[:])) {
				t.Fatal("digest is not sha256 of the file")
			}
			if err := VerifyManifest(&got.Manifest, d); err != nil {
				t.Fatal(err)
			}
			// The manifest envelope is the ledger's DSSE form: the ledger's
			// decoder accepts it and its signature verifies there too.
			env, err := dsse.Decode(want)
			if err != nil {
				t.Fatalf("ledger.DecodeEnvelope: %v", err)
			}
			if err := env.Verify(ownerKey("owner").Public().(ed25519.PublicKey)); err != nil {
				t.Fatal(err)
			}
			if got.Owner != dsse.KeyID(ownerKey("owner").Public().(ed25519.PublicKey)) {
				t.Fatal("KeyID differs from the ledger's")
			}
		})
	}
}

func hexOf(b []byte) []byte {
	const digits = "0123456789abcdef"
	out := make([]byte, 2*len(b))
	for i, c := range b {
		out[2*i], out[2*i+1] = digits[c>>4], digits[c&15]
	}
	return out
}

// A manifest whose root does not match its samples is caught, with the
// field named: a changed sample, an added one, a removed one.
func TestVerifyManifestDetectsMismatch(t *testing.T) {
	sm, _, d := signShipped(t, "testdata/english/train.txt", "CC-BY-SA-4.0")
	clone := func() *Dataset {
		c := &Dataset{Name: d.Name, Samples: append([]Sample(nil), d.Samples...)}
		return c
	}
	changed := clone()
	changed.Samples[3].Text += "!"
	added := clone()
	added.Samples = append(added.Samples, Sample{ID: "x", Text: "an extra sample"})
	removed := clone()
	removed.Samples = removed.Samples[1:]
	bytesOnly := sm.Manifest
	bytesOnly.Bytes++
	cases := []struct {
		name string
		m    *Manifest
		d    *Dataset
		want string
	}{
		{"changed sample", &sm.Manifest, changed, "root: the 154 samples"},
		{"added sample", &sm.Manifest, added, "root: the 155 samples"},
		{"removed sample", &sm.Manifest, removed, "root: the 153 samples"},
		{"wrong byte count", &bytesOnly, d, "bytes: train.txt has"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := VerifyManifest(tc.m, tc.d)
			if !errors.Is(err, ErrRootMismatch) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want ErrRootMismatch with %q", err, tc.want)
			}
		})
	}
	// Reordering samples does not change the root: the leaves are sorted.
	rev := clone()
	for i, j := 0, len(rev.Samples)-1; i < j; i, j = i+1, j-1 {
		rev.Samples[i], rev.Samples[j] = rev.Samples[j], rev.Samples[i]
	}
	if err := VerifyManifest(&sm.Manifest, rev); err != nil {
		t.Fatalf("reordered samples: %v", err)
	}
}

func TestDecodeManifestRejects(t *testing.T) {
	sm, _, _ := signShipped(t, "testdata/english/train.txt", "CC-BY-SA-4.0")
	k := ownerKey("owner")
	pub := k.Public().(ed25519.PublicKey)
	other := ownerKey("mallory")
	resign := func(edit func(m *Manifest)) []byte {
		m := sm.Manifest
		edit(&m)
		payload := mustMarshal(t, &m)
		return dsse.Sign(k, ManifestPayloadType, payload).Encode()
	}
	forged := append([]byte(nil), sm.Envelope...)
	// Change one character of the base64 payload: the signature breaks.
	i := bytes.Index(forged, []byte(`"payload":"`)) + 20
	forged[i] ^= 1
	byOther := func() []byte {
		m := sm.Manifest
		return dsse.Sign(other, ManifestPayloadType, mustMarshal(t, &m)).Encode()
	}()
	cases := []struct {
		name string
		data []byte
		pub  ed25519.PublicKey
		want string
	}{
		{"not json", []byte("hello"), pub, "envelope"},
		{"whitespace", append(append([]byte(nil), sm.Envelope...), '\n'), pub, "canonical"},
		{"wrong payload type", dsse.Sign(k, "text/plain", mustMarshal(t, &sm.Manifest)).Encode(), pub, "payloadType"},
		{"flipped payload byte", forged, pub, ""},
		{"signed by another key", byOther, pub, "is not the owner"},
		{"bad licence", resign(func(m *Manifest) { m.Licence = "apache" }), pub, "not a known SPDX"},
		{"bad root", resign(func(m *Manifest) { m.Root = "xyz" }), pub, "root"},
		{"bad version", resign(func(m *Manifest) { m.Version = 2 }), pub, "version"},
		{"no source", resign(func(m *Manifest) { m.Source = "" }), pub, "source: is required"},
		{"unknown field", dsse.Sign(k, ManifestPayloadType, []byte(`{"version":1,"extra":1}`)).Encode(), pub, "unknown field"},
		{"name and NAME", dsse.Sign(k, ManifestPayloadType, bytes.Replace(mustMarshal(t, &sm.Manifest), []byte(`"name":`), []byte(`"NAME":"evil-data","name":`), 1)).Encode(),
			pub, `unknown field "NAME" at the top level (field names are case-sensitive: did you mean "name"?)`},
		{"duplicate name", dsse.Sign(k, ManifestPayloadType, bytes.Replace(mustMarshal(t, &sm.Manifest), []byte(`"name":`), []byte(`"name":"evil-data","name":`), 1)).Encode(),
			pub, `duplicate field "name"`},
		{"bidi override in name", resign(func(m *Manifest) { m.Name = "evil\u202Eatad" }), pub, "name: \"evil\\u202eatad\": bidi control U+202E at character 5 (byte 4)"},
		{"zero-width in description", resign(func(m *Manifest) { m.Description = "a\u200Db" }), pub, "description: \"a\\u200db\": zero-width character U+200D at character 2"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeManifest(tc.data, tc.pub)
			if !errors.Is(err, ErrManifest) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want ErrManifest containing %q", err, tc.want)
			}
		})
	}
	if _, err := DecodeManifest(sm.Envelope, other.Public().(ed25519.PublicKey)); err == nil {
		t.Fatal("verified with the wrong public key")
	}
	if _, err := SignManifest(other, &sm.Manifest); err == nil || !strings.Contains(err.Error(), "not the manifest's owner") {
		t.Fatalf("signing with a non-owner key: %v", err)
	}
}

func mustMarshal(t *testing.T, m *Manifest) []byte {
	t.Helper()
	sm, err := SignManifest(ownerKey("owner"), m)
	if err == nil {
		env, _ := dsse.Decode(sm.Envelope)
		return env.Payload
	}
	// An invalid manifest: marshal it directly.
	return []byte(must(jsonMarshal(m)))
}

func TestValidateLicence(t *testing.T) {
	for _, ok := range []string{"MIT", "Apache-2.0", "CC-BY-4.0 OR MIT", "GPL-2.0-only AND LicenseRef-internal-1", "LicenseRef-x.y", "GPL-2.0-or-later"} {
		if err := ValidateLicence(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "mit", "Apache 2.0", "MIT OR", "MIT XOR BSD-3-Clause", "LicenseRef-", "LicenseRef-a b", "(MIT)"} {
		if err := ValidateLicence(bad); !errors.Is(err, ErrLicence) {
			t.Errorf("%q: got %v, want ErrLicence", bad, err)
		}
	}
}

func FuzzDecodeManifest(f *testing.F) {
	for _, tc := range shipped {
		data, err := os.ReadFile(filepath.Join("testdata", "manifests", tc.golden))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(`{"payloadType":"x","payload":"","signatures":[]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		sm, err := DecodeManifest(data, nil)
		if err != nil {
			if !errors.Is(err, ErrManifest) && !errors.Is(err, ErrLicence) {
				t.Fatalf("error does not wrap ErrManifest: %v", err)
			}
			return
		}
		// Whatever decodes is canonical: it re-encodes to the same bytes.
		if !bytes.Equal(sm.Envelope, data) || sm.Validate() != nil {
			t.Fatal("decoded manifest is not canonical or not valid")
		}
	})
}

func jsonMarshal(m *Manifest) ([]byte, error) { return json.Marshal(m) }

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}
