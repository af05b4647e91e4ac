package client

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/proto"

	ledgerv1 "github.com/fedtune/fedtune/api/ledger/v1"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

// fixedKey is a deterministic test key.
func fixedKey(seed byte) ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
}

// TestCheckpointGolden pins the checkpoint signing bytes and signature: a
// change breaks every checkpoint ever signed.
func TestCheckpointGolden(t *testing.T) {
	var hash [32]byte
	for i := range hash {
		hash[i] = byte(i)
	}
	cp := SignCheckpoint(fixedKey(7), "fedtune-devnet", 42, hash)
	got := hex.EncodeToString(checkpointMessage(cp.ChainID, cp.Height, cp.BlockHash)) + "\n" +
		cp.NodeID + "\n" + hex.EncodeToString(cp.Signature) + "\n"
	path := filepath.Join("testdata", "checkpoint.golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create)", err)
	}
	if got != string(want) {
		t.Fatalf("checkpoint encoding changed:\ngot  %s\nwant %s", got, want)
	}
}

func TestCheckpointVerify(t *testing.T) {
	var hash, other [32]byte
	hash[0], other[0] = 1, 2
	k1, k2 := fixedKey(1), fixedKey(2)
	good := SignCheckpoint(k1, "c", 5, hash)
	if err := good.VerifyFor("c", 5, hash); err != nil {
		t.Fatal(err)
	}
	mut := func(f func(*Checkpoint)) *Checkpoint {
		c := good
		c.Signature = bytes.Clone(good.Signature)
		c.PublicKey = bytes.Clone(good.PublicKey)
		f(&c)
		return &c
	}
	tests := []struct {
		name string
		cp   *Checkpoint
	}{
		{"other height", mut(func(c *Checkpoint) { c.Height = 6 })},
		{"other hash", mut(func(c *Checkpoint) { c.BlockHash = other })},
		{"other chain", mut(func(c *Checkpoint) { c.ChainID = "d" })},
		{"flipped signature", mut(func(c *Checkpoint) { c.Signature[0] ^= 1 })},
		{"short signature", mut(func(c *Checkpoint) { c.Signature = c.Signature[:10] })},
		{"other key", mut(func(c *Checkpoint) {
			c.PublicKey = k2.Public().(ed25519.PublicKey)
			c.NodeID = nodeIDOf(c.PublicKey)
		})},
		{"wrong node ID", mut(func(c *Checkpoint) { c.NodeID = nodeIDOf(k2.Public().(ed25519.PublicKey)) })},
		{"short key", mut(func(c *Checkpoint) { c.PublicKey = c.PublicKey[:5] })},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.cp.VerifyFor("c", 5, hash); !errors.Is(err, ErrBadCheckpoint) {
				t.Fatalf("got %v, want ErrBadCheckpoint", err)
			}
		})
	}
}

func TestVerifyFork(t *testing.T) {
	var h1, h2 [32]byte
	h1[0], h2[0] = 1, 2
	k1, k2 := fixedKey(1), fixedKey(2)
	a := SignCheckpoint(k1, "c", 5, h1)
	forged := SignCheckpoint(k2, "c", 5, h2)
	forged.Signature[3] ^= 0x40
	tests := []struct {
		name string
		a, b Checkpoint
		want error // nil: a fork is proven
	}{
		{"same node, two hashes", a, SignCheckpoint(k1, "c", 5, h2), nil},
		{"two nodes, two hashes", a, SignCheckpoint(k2, "c", 5, h2), nil},
		{"agree", a, SignCheckpoint(k2, "c", 5, h1), ErrNoFork},
		{"other height", a, SignCheckpoint(k2, "c", 6, h2), ErrNoFork},
		{"other chain", a, SignCheckpoint(k2, "d", 5, h2), ErrNoFork},
		{"forged", a, forged, ErrBadCheckpoint},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := VerifyFork(&tc.a, &tc.b)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestCheckpointProtoRoundTrip(t *testing.T) {
	var h [32]byte
	h[31] = 9
	cp := SignCheckpoint(fixedKey(3), "c", 77, h)
	back, err := CheckpointFromProto(CheckpointToProto(&cp))
	if err != nil {
		t.Fatal(err)
	}
	if err := back.VerifyFor("c", 77, h); err != nil {
		t.Fatal(err)
	}
	if _, err := CheckpointFromProto(&ledgerv1.Checkpoint{BlockHash: []byte{1}}); !errors.Is(err, ErrBadCheckpoint) {
		t.Fatalf("short hash: %v", err)
	}
	if _, err := CheckpointFromProto(nil); !errors.Is(err, ErrBadCheckpoint) {
		t.Fatalf("nil: %v", err)
	}
}

// FuzzCheckpoint decodes wire checkpoints from outside bytes: no panic, and
// any that verifies re-encodes to one that still verifies.
func FuzzCheckpoint(f *testing.F) {
	var h [32]byte
	cp := SignCheckpoint(fixedKey(4), "c", 1, h)
	seed, _ := proto.Marshal(CheckpointToProto(&cp))
	f.Add(seed)
	f.Add([]byte{})
	f.Add([]byte{0x1a, 0x01, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		var p ledgerv1.Checkpoint
		if err := proto.Unmarshal(data, &p); err != nil {
			return
		}
		c, err := CheckpointFromProto(&p)
		if err != nil {
			return
		}
		if c.Verify() != nil {
			return
		}
		back, err := CheckpointFromProto(CheckpointToProto(c))
		if err != nil || back.Verify() != nil {
			t.Fatalf("verified checkpoint does not round-trip: %v", err)
		}
	})
}
