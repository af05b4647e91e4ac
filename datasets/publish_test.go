package datasets

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/internal/dspub"
)

func publishFixture(t *testing.T, n, per int) (*Publication, ed25519.PrivateKey) {
	t.Helper()
	seed := make([]byte, ed25519.SeedSize)
	seed[0] = 7
	key := ed25519.NewKeyFromSeed(seed)
	d := &Dataset{Name: "fixture"}
	for i := range n {
		d.Samples = append(d.Samples, Sample{ID: fmt.Sprint(i), Text: fmt.Sprintf("sample %d: \"quoted\"\nsecond line <%d>", i, i*i)})
	}
	d.Samples = append(d.Samples, d.Samples[0]) // a duplicate is kept
	p, err := Publish(d, PublishOptions{Name: "fixture", Format: dspub.FormatText, Licence: "CC-BY-4.0", Owner: KeyID(key.Public().(ed25519.PublicKey)), ShardSamples: per})
	if err != nil {
		t.Fatal(err)
	}
	return p, key
}

func TestPublishRoundTrip(t *testing.T) {
	p, key := publishFixture(t, 25, 7)
	m := &p.Manifest
	if m.Samples != 26 || len(m.Shards) != 4 || len(p.Shards) != 4 {
		t.Fatalf("samples %d, shards %d/%d; want 26 samples in 4 shards", m.Samples, len(m.Shards), len(p.Shards))
	}
	// The root is the one the private-data manifest of the same samples has.
	hs := make([][32]byte, 0, m.Samples)
	for k := range p.Shards {
		texts, err := dspub.DecodeShard(p.Shards[k])
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range texts {
			hs = append(hs, SampleDigest(s))
		}
	}
	if r := NewTree(hs).Root(); fmt.Sprintf("%x", r) != m.Root {
		t.Fatalf("root of the shards' samples %x, manifest %s", r, m.Root)
	}
	sm, err := dspub.Sign(key, m)
	if err != nil {
		t.Fatal(err)
	}
	got, err := dspub.Decode(sm.Envelope, key.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	if got.Digest != sm.Digest || got.Root != m.Root {
		t.Fatalf("decoded %s root %s; signed %s root %s", got.Digest, got.Root, sm.Digest, m.Root)
	}
	tree, err := VerifyLeaves(&got.Manifest, p.Leaves)
	if err != nil {
		t.Fatal(err)
	}
	for k := range p.Shards {
		if _, err := dspub.CheckShard(&got.Manifest, k, p.Shards[k], tree.Leaves()); err != nil {
			t.Fatalf("shard %d: %v", k, err)
		}
	}
}

func TestCheckShardNamesTheBadSample(t *testing.T) {
	p, _ := publishFixture(t, 25, 7)
	m := &p.Manifest
	tree, err := VerifyLeaves(m, p.Leaves)
	if err != nil {
		t.Fatal(err)
	}
	texts, _ := dspub.DecodeShard(p.Shards[2])
	for _, tc := range []struct {
		name       string
		shard      []byte
		sample     uint64
		hasSample  bool
		wantReason string
	}{
		{"changed text", dspub.EncodeShard(append(append(append([]string{}, texts[:3]...), texts[3]+"!"), texts[4:]...)), 14 + 3, true, "is not the published leaf"},
		{"dropped last", dspub.EncodeShard(texts[:len(texts)-1]), 14 + 6, true, "missing"},
		{"extra sample", dspub.EncodeShard(append(append([]string{}, texts...), "more")), 0, false, "8 samples"},
		{"truncated line", p.Shards[2][:len(p.Shards[2])-3], 14 + 6, true, "line 7"},
		{"not canonical", []byte(strings.Replace(string(p.Shards[2]), `\u003c`, `\u003C`, 1)), 14, true, "canonical"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := dspub.CheckShard(m, 2, tc.shard, tree.Leaves())
			var se *dspub.ShardError
			if !errors.As(err, &se) {
				t.Fatalf("error %v is not a *ShardError", err)
			}
			if se.Shard != 2 || se.Digest != m.Shards[2].Digest || se.HasSample != tc.hasSample || (tc.hasSample && se.Sample != tc.sample) {
				t.Fatalf("%v: shard %d sample %d (%v); want shard 2 sample %d (%v)", err, se.Shard, se.Sample, se.HasSample, tc.sample, tc.hasSample)
			}
			if !strings.Contains(err.Error(), tc.wantReason) || !strings.Contains(err.Error(), "shard 2") {
				t.Fatalf("error %q does not say %q and name shard 2", err, tc.wantReason)
			}
		})
	}
	// Leaves that do not give the root are refused.
	bad := append([]byte{}, p.Leaves...)
	bad[40] ^= 1
	if _, err := VerifyLeaves(m, bad); !errors.Is(err, dspub.ErrLeaves) {
		t.Fatalf("tampered leaves: %v", err)
	}
	forged := *m
	forged.Leaves = fmt.Sprintf("%x", SampleDigest(string(bad)))
	if _, err := VerifyLeaves(&forged, bad); err == nil || !strings.Contains(err.Error(), "root") {
		t.Fatalf("leaves that do not give the root: %v", err)
	}
}

func TestPublishLimits(t *testing.T) {
	d := &Dataset{Name: "big"}
	for i := range dspub.MaxShards + 1 {
		d.Samples = append(d.Samples, Sample{Text: fmt.Sprint(i)})
	}
	if _, err := Publish(d, PublishOptions{Name: "big", Format: dspub.FormatText, Licence: "MIT", Owner: strings.Repeat("a", 64), ShardSamples: 1}); err == nil {
		t.Fatal("too many shards accepted")
	}
	if _, err := Publish(d, PublishOptions{Name: "big", Format: dspub.FormatText, Licence: "Bogus-1.0", Owner: strings.Repeat("a", 64)}); !errors.Is(err, dspub.ErrManifest) {
		t.Fatalf("bad licence: %v", err)
	}
	if _, err := Publish(&Dataset{Name: "empty"}, PublishOptions{}); !errors.Is(err, ErrEmpty) {
		t.Fatalf("empty: %v", err)
	}
}
