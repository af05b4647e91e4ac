package dspub

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/internal/digest"
	"github.com/fedtune/fedtune/internal/dsse"
)

var update = flag.Bool("update", false, "rewrite golden files")

func testKey(b byte) ed25519.PrivateKey {
	seed := make([]byte, ed25519.SeedSize)
	seed[0] = b
	return ed25519.NewKeyFromSeed(seed)
}

// fixture returns a valid manifest of two shards over texts and its leaves.
func fixture(key ed25519.PrivateKey) (*Manifest, [][]byte, [][32]byte) {
	texts := []string{"a", "b\nc", "d", "e <f>", "g"}
	type s struct {
		h [32]byte
		t string
	}
	var ss []s
	for _, t := range texts {
		ss = append(ss, s{sha256.Sum256([]byte(t)), t})
	}
	for i := range ss { // insertion sort by hash
		for j := i; j > 0 && bytes.Compare(ss[j-1].h[:], ss[j].h[:]) > 0; j-- {
			ss[j-1], ss[j] = ss[j], ss[j-1]
		}
	}
	var leaves [][32]byte
	var sorted []string
	for _, x := range ss {
		leaves = append(leaves, x.h)
		sorted = append(sorted, x.t)
	}
	sh := [][]byte{EncodeShard(sorted[:3]), EncodeShard(sorted[3:])}
	bytesOf := func(ts []string) (n uint64) {
		for _, t := range ts {
			n += uint64(len(t))
		}
		return n
	}
	m := &Manifest{Version: Version, Name: "tiny-set", Format: FormatText, Licence: "CC-BY-SA-4.0", Owner: dsse.KeyID(key.Public().(ed25519.PublicKey)),
		Samples: 5, Bytes: bytesOf(sorted), Root: strings.Repeat("ab", 32), Leaves: digest.Bytes(EncodeLeaves(leaves)),
		Shards: []Shard{{Digest: digest.Bytes(sh[0]), First: 0, Samples: 3, Bytes: bytesOf(sorted[:3])}, {Digest: digest.Bytes(sh[1]), First: 3, Samples: 2, Bytes: bytesOf(sorted[3:])}}}
	return m, sh, leaves
}

func TestValidate(t *testing.T) {
	key := testKey(1)
	for _, tc := range []struct {
		name, want string
		edit       func(m *Manifest)
	}{
		{"ok", "", func(*Manifest) {}},
		{"version", "version", func(m *Manifest) { m.Version = 2 }},
		{"empty name", "name", func(m *Manifest) { m.Name = "" }},
		{"name with space", "name", func(m *Manifest) { m.Name = "a b" }},
		{"format", "format", func(m *Manifest) { m.Format = "dir" }},
		{"licence", "licence", func(m *Manifest) { m.Licence = "cc-by-4.0" }},
		{"card", "card", func(m *Manifest) { m.Card = "xyz" }},
		{"owner", "owner", func(m *Manifest) { m.Owner = "ABC" }},
		{"root", "root", func(m *Manifest) { m.Root = "" }},
		{"leaves", "leaves", func(m *Manifest) { m.Leaves = "00" }},
		{"no samples", "samples", func(m *Manifest) { m.Samples = 0 }},
		{"no shards", "shards", func(m *Manifest) { m.Shards = nil }},
		{"gap", "shards[1].first", func(m *Manifest) { m.Shards[1].First = 4 }},
		{"overlap", "shards[1].first", func(m *Manifest) { m.Shards[1].First = 2 }},
		{"past the end", "shards[1].samples", func(m *Manifest) { m.Shards[1].Samples = 3 }},
		{"short", "cover 4", func(m *Manifest) { m.Shards[1].Samples = 1 }},
		{"bytes", "bytes", func(m *Manifest) { m.Bytes++ }},
		{"empty shard", "shards[1].samples", func(m *Manifest) { m.Shards[1].Samples = 0 }},
		{"shard digest", "shards[0].digest", func(m *Manifest) { m.Shards[0].Digest = "x" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, _, _ := fixture(key)
			tc.edit(m)
			err := m.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrManifest) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate = %v; want ErrManifest naming %q", err, tc.want)
			}
		})
	}
}

func TestSignDecode(t *testing.T) {
	key, other := testKey(1), testKey(2)
	m, _, _ := fixture(key)
	sm, err := Sign(key, m)
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "manifest.golden")
	if *update {
		if err := os.WriteFile(golden, sm.Envelope, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sm.Envelope, want) {
		t.Fatalf("manifest encoding changed (run with -update if on purpose):\n%s\nwant\n%s", sm.Envelope, want)
	}
	pub := key.Public().(ed25519.PublicKey)
	if _, err := Decode(sm.Envelope, pub); err != nil {
		t.Fatal(err)
	}
	if _, err := Decode(sm.Envelope, other.Public().(ed25519.PublicKey)); !errors.Is(err, ErrManifest) {
		t.Fatalf("verified with another key: %v", err)
	}
	if _, err := Sign(other, m); err == nil {
		t.Fatal("signed by a key that is not the owner's")
	}
	// The owner's name on a manifest the other key signed: the keyid gives it away.
	forged := dsse.Sign(other, PayloadType, mustDecodePayload(t, sm.Envelope)).Encode()
	if _, err := Decode(forged, nil); !errors.Is(err, ErrManifest) || !strings.Contains(err.Error(), "keyid") {
		t.Fatalf("forged signer: %v", err)
	}
	for name, payload := range map[string][]byte{
		"whitespace":  append(append([]byte{}, mustDecodePayload(t, sm.Envelope)...), ' '),
		"extra field": bytes.Replace(mustDecodePayload(t, sm.Envelope), []byte(`{"version":1,`), []byte(`{"version":1,"x":1,`), 1),
		"dup field":   bytes.Replace(mustDecodePayload(t, sm.Envelope), []byte(`{"version":1,`), []byte(`{"version":1,"version":1,`), 1),
		"case":        bytes.Replace(mustDecodePayload(t, sm.Envelope), []byte(`"name"`), []byte(`"Name"`), 1),
	} {
		t.Run(name, func(t *testing.T) {
			env := dsse.Sign(key, PayloadType, payload).Encode()
			if _, err := Decode(env, pub); !errors.Is(err, ErrManifest) {
				t.Fatalf("Decode = %v, want ErrManifest", err)
			}
		})
	}
	if _, err := Decode(dsse.Sign(key, "other/type", mustDecodePayload(t, sm.Envelope)).Encode(), pub); !errors.Is(err, ErrManifest) {
		t.Fatalf("other payload type: %v", err)
	}
}

func mustDecodePayload(t *testing.T, env []byte) []byte {
	t.Helper()
	e, err := dsse.Decode(env)
	if err != nil {
		t.Fatal(err)
	}
	return e.Payload
}

func TestShardAndLeaves(t *testing.T) {
	m, sh, leaves := fixture(testKey(1))
	for k := range sh {
		if _, err := CheckShard(m, k, sh[k], leaves); err != nil {
			t.Fatalf("shard %d: %v", k, err)
		}
	}
	if _, err := CheckShard(m, 1, sh[0], leaves); err == nil || !strings.Contains(err.Error(), "shard 1") {
		t.Fatalf("shard 0's bytes as shard 1: %v", err)
	}
	if _, err := CheckShard(m, 2, sh[0], leaves); err == nil {
		t.Fatal("shard 2 of 2 accepted")
	}
	got, err := DecodeLeaves(m, EncodeLeaves(leaves))
	if err != nil || len(got) != 5 {
		t.Fatalf("DecodeLeaves = %d, %v", len(got), err)
	}
	if _, err := DecodeLeaves(m, EncodeLeaves(leaves[:4])); !errors.Is(err, ErrLeaves) {
		t.Fatalf("short leaves: %v", err)
	}
	for _, bad := range []string{"\"a\"", "a\n", "\"\\u0041\"\n", "\"\xff\"\n"} {
		if _, err := DecodeShard([]byte(bad)); err == nil {
			t.Errorf("DecodeShard(%q) accepted", bad)
		}
	}
	if m.ShardOf(0) != 0 || m.ShardOf(2) != 0 || m.ShardOf(3) != 1 || m.ShardOf(4) != 1 || m.ShardOf(5) != 2 {
		t.Fatal("ShardOf is wrong")
	}
}

func FuzzDecode(f *testing.F) {
	key := testKey(1)
	m, _, _ := fixture(key)
	sm, err := Sign(key, m)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(sm.Envelope)
	f.Add([]byte(`{"payloadType":"x","payload":"","signatures":[]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Decode(data, nil)
		if err != nil {
			if !errors.Is(err, ErrManifest) {
				t.Fatalf("error %v does not wrap ErrManifest", err)
			}
			return
		}
		if err := s.Validate(); err != nil {
			t.Fatalf("decoded manifest does not validate: %v", err)
		}
		if !bytes.Equal(s.Envelope, data) || s.Digest != digest.Bytes(data) {
			t.Fatal("envelope or digest differs from the input")
		}
	})
}

func FuzzDecodeShard(f *testing.F) {
	f.Add(EncodeShard([]string{"a", "b\nc", "<&>"}))
	f.Add([]byte("\"x\"\n\"y\""))
	f.Fuzz(func(t *testing.T, data []byte) {
		texts, err := DecodeShard(data)
		if err != nil {
			return
		}
		if !bytes.Equal(EncodeShard(texts), data) {
			t.Fatalf("shard %q decodes to %q, which encodes differently", data, texts)
		}
	})
}

func FuzzDecodeLeaves(f *testing.F) {
	m, _, leaves := fixture(testKey(1))
	f.Add(EncodeLeaves(leaves))
	f.Add([]byte("short"))
	f.Fuzz(func(t *testing.T, data []byte) {
		mm := *m
		mm.Leaves = digest.Bytes(data)
		mm.Samples = uint64(len(data) / 32)
		if mm.Samples == 0 {
			mm.Samples = 1
		}
		got, err := DecodeLeaves(&mm, data)
		if err != nil {
			return
		}
		if !bytes.Equal(EncodeLeaves(got), data) {
			t.Fatal("leaves do not round-trip")
		}
		for i := 1; i < len(got); i++ {
			if bytes.Compare(got[i-1][:], got[i][:]) > 0 {
				t.Fatal("unsorted leaves accepted")
			}
		}
	})
}

// FuzzShardChecker feeds shard bytes (from an artifact store anyone may
// run) to the streaming checker in chunks of every size: it must agree
// with a whole-shard check, emit exactly the texts of a good shard, and
// never emit a sample that is not its leaf.
func FuzzShardChecker(f *testing.F) {
	m, sh, leaves := fixture(testKey(1))
	f.Add(sh[0], uint8(1))
	f.Add(sh[0], uint8(7))
	f.Add(append(append([]byte{}, sh[0]...), '"', 'x'), uint8(3))
	f.Add([]byte("\"a\"\n\"b\\nc\"\n\"d"), uint8(2))
	f.Fuzz(func(t *testing.T, data []byte, chunk uint8) {
		step := int(chunk%16) + 1
		var got []string
		c, err := NewShardChecker(m, 0, leaves, func(s string) error {
			got = append(got, s)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		var serr error
		for p := data; len(p) > 0 && serr == nil; {
			n := min(step, len(p))
			_, serr = c.Write(p[:n])
			p = p[n:]
		}
		if serr == nil {
			serr = c.Close()
		}
		want, werr := DecodeShard(data)
		if (serr == nil) != (werr == nil && bytes.Equal(data, sh[0])) {
			t.Fatalf("streamed check: %v; the shard is %s", serr, map[bool]string{true: "shard 0", false: "not shard 0"}[bytes.Equal(data, sh[0])])
		}
		if serr == nil && !slices.Equal(got, want) {
			t.Fatalf("emitted %q, want %q", got, want)
		}
		for i, s := range got {
			if sha256.Sum256([]byte(s)) != leaves[m.Shards[0].First+uint64(i)] {
				t.Fatalf("emitted sample %d that is not its leaf", i)
			}
		}
		var se *ShardError
		if serr != nil && !errors.As(serr, &se) {
			t.Fatalf("error %v is not a *ShardError", serr)
		}
	})
}
