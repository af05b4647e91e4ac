package ledger

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

func goldenHeader() *Header {
	fill := func(b byte) (h [32]byte) {
		for i := range h {
			h[i] = b + byte(i)
		}
		return h
	}
	return &Header{
		Height:    42,
		PrevHash:  fill(0x10),
		TxRoot:    fill(0x40),
		StateHash: fill(0x80),
		Time:      1767225600123456789,
		NumTxs:    3,
		Proposer:  newActor("node-1", "").id,
	}
}

// TestHeaderGolden pins the header encoding and block hash: a change to
// either breaks every existing chain, so it must be deliberate (-update).
func TestHeaderGolden(t *testing.T) {
	h := goldenHeader()
	enc := EncodeHeader(h)
	hash := h.Hash()
	got := "header " + hex.EncodeToString(enc) + "\nhash " + hex.EncodeToString(hash[:]) + "\n"
	path := filepath.Join("testdata", "header.golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run TestHeaderGolden -update)", err)
	}
	if got != string(want) {
		t.Fatalf("header encoding changed:\ngot  %s\nwant %s", got, want)
	}
	if sha256.Sum256(enc) != hash {
		t.Fatal("hash is not SHA-256 of the encoding")
	}
	back, err := DecodeHeader(enc)
	if err != nil || *back != *h {
		t.Fatalf("round trip: %+v %v", back, err)
	}
}

func TestBlockRoundTrip(t *testing.T) {
	b := &Block{Header: *goldenHeader(), Txs: [][]byte{[]byte("a"), {}, bytes.Repeat([]byte("x"), 300)}}
	enc := EncodeBlock(b)
	back, err := DecodeBlock(enc)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(EncodeBlock(back), enc) || back.Hash() != b.Hash() {
		t.Fatal("round trip differs")
	}
	bad := map[string][]byte{
		"empty":          {},
		"version":        append([]byte{9}, enc[1:]...),
		"trailing":       append(append([]byte(nil), enc...), 0),
		"truncated":      enc[:len(enc)-1],
		"count":          func() []byte { c := *b; c.Txs = c.Txs[:2]; return EncodeBlock(&c) }(),
		"bad proposer":   func() []byte { c := *b; c.Header.Proposer = "nope"; return EncodeBlock(&c) }(),
		"long uvarint":   append(append([]byte{blockVersion}, EncodeHeader(goldenHeader())...), 0x83, 0x00),
		"header only":    append([]byte{blockVersion}, EncodeHeader(goldenHeader())...),
		"header bad ver": append([]byte{blockVersion, 7}, EncodeHeader(goldenHeader())[1:]...),
	}
	for name, data := range bad {
		if _, err := DecodeBlock(data); !errors.Is(err, ErrBadEncoding) {
			t.Errorf("%s: got %v, want ErrBadEncoding", name, err)
		}
	}
}

func TestProposalRoundTrip(t *testing.T) {
	p := Proposal{Proposer: newActor("n", "").id, Time: -5, Txs: [][]byte{[]byte("one"), []byte("two")}}
	enc := EncodeProposal(p)
	if enc[0] != LogTypeProposal {
		t.Fatal("no leading type byte")
	}
	back, err := DecodeProposal(enc)
	if err != nil || back.Proposer != p.Proposer || back.Time != p.Time || len(back.Txs) != 2 || !bytes.Equal(back.Txs[1], p.Txs[1]) {
		t.Fatalf("%+v %v", back, err)
	}
	signed := EncodeProposal(SignProposal(newActor("n", "").key, testChain, p))
	if signed[0] != LogTypeSignedProposal {
		t.Fatal("signed proposal: wrong type byte")
	}
	sp, err := DecodeProposal(signed)
	if err != nil || sp.Proposer != p.Proposer || len(sp.Key) != 32 || len(sp.Sig) != 64 || !bytes.Equal(EncodeProposal(*sp), signed) {
		t.Fatalf("signed round trip: %+v %v", sp, err)
	}
	if _, err := VerifyProposal(testChain, *sp); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{
		"signed short sig": signed[:len(signed)-1],
		"signed no sig":    append([]byte{LogTypeSignedProposal}, enc[1:]...),
		"type":             append([]byte{0x7f}, enc[1:]...),
		"trailing":         append(enc, 1),
		"short":            enc[:10],
		"no proposer":      EncodeProposal(Proposal{Txs: p.Txs}),
	} {
		if _, err := DecodeProposal(data); !errors.Is(err, ErrBadEncoding) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestProposalGolden pins the raft entry formats: the unsigned proposal
// (LogTypeProposal, the first format), the proposal digest a proposer
// signs and the signed proposal (LogTypeSignedProposal). Nodes of one
// cluster must agree on them byte for byte; change them deliberately
// (-update).
func TestProposalGolden(t *testing.T) {
	p := Proposal{Proposer: newActor("node-1", "").id, Time: 1767225600123456789, Txs: [][]byte{[]byte("tx one"), []byte("tx two")}}
	d := ProposalDigest(testChain, p)
	signed := SignProposal(newActor("node-1", "").key, testChain, p)
	got := "unsigned " + hex.EncodeToString(EncodeProposal(p)) + "\ndigest " + hex.EncodeToString(d[:]) +
		"\nsigned " + hex.EncodeToString(EncodeProposal(signed)) + "\n"
	path := filepath.Join("testdata", "proposal.golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run TestProposalGolden -update)", err)
	}
	if got != string(want) {
		t.Fatalf("proposal encoding changed:\ngot  %s\nwant %s", got, want)
	}
}
