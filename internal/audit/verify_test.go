package audit

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/ledger"
)

func TestVerifyExportOK(t *testing.T) {
	c := newTestChain(t)
	var buf bytes.Buffer
	ew, err := NewExportWriter(&buf, c.genesis)
	if err != nil {
		t.Fatal(err)
	}
	for h := uint64(0); h <= c.fsm.Height(); h++ {
		b, _ := c.fsm.Block(h)
		if err := ew.WriteBlock(b); err != nil {
			t.Fatal(err)
		}
	}
	if err := ew.Close(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), EncodeExport(c.export(t))) {
		t.Fatal("ExportWriter and EncodeExport disagree")
	}
	e, err := ReadExport(&buf)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := Verify(context.Background(), e, VerifyOptions{Artifacts: c.artifacts})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Height != c.fsm.Height() || rep.Rounds != 2 || rep.Reaggregated != 2 || rep.Manifests != 3 || rep.Artifacts != 9 {
		t.Fatalf("report %+v", rep)
	}
	// Without artifacts only the chain is checked.
	if rep, err := Verify(context.Background(), e, VerifyOptions{}); err != nil || rep.Reaggregated != 0 {
		t.Fatalf("%+v %v", rep, err)
	}
}

// Each tampering is caught, and the error names where.
func TestVerifyTampered(t *testing.T) {
	c := newTestChain(t)
	// Heights: 1 registrations, 2 round 1 opened, 3 updates, 4 committed,
	// 5 round 2 opened, 6 updates, 7 rejected + committed.
	block := func(e *Export, h int) *ledger.Block {
		b, err := ledger.DecodeBlock(e.Blocks[h])
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	cases := []struct {
		name   string
		tamper func(t *testing.T, e *Export, artifacts string)
		want   string
	}{
		{"flipped state hash byte in a block", func(t *testing.T, e *Export, _ string) {
			e.Blocks[3][1+1+8+32+32+5] ^= 0x01 // inside the header's state hash
		}, "height 3: state_hash: header has"},
		{"flipped byte in a tx", func(t *testing.T, e *Export, _ string) {
			raw := e.Blocks[3]
			i := bytes.LastIndex(raw, []byte(`"sig":"`)) + 10
			raw[i] ^= 0x01
		}, "signature: the ledger rules reject it"},
		{"dropped tx", func(t *testing.T, e *Export, _ string) {
			b := block(e, 3)
			b.Txs = b.Txs[:2]
			b.Header.NumTxs = 2
			e.Blocks[3] = ledger.EncodeBlock(b)
		}, "height 3: tx_root: header has"},
		{"tx re-signed by a non-member", func(t *testing.T, e *Export, _ string) {
			b := block(e, 6)
			tx, err := ledger.DecodeTx(b.Txs[1])
			if err != nil {
				t.Fatal(err)
			}
			c.outsider.nonce = tx.Nonce - 1
			b.Txs[1] = c.outsider.sign(t, tx.Body)
			e.Blocks[6] = ledger.EncodeBlock(b)
		}, "height 6: tx[1] b6474832cd05: signer: the ledger rules reject it: ledger: tx rejected (unknown_signer)"},
		{"block dropped from the file", func(t *testing.T, e *Export, _ string) {
			e.Blocks = append(e.Blocks[:4], e.Blocks[5:]...)
		}, "height 4: height: the block's header says height 5"},
		{"wrong head in end frame", func(t *testing.T, e *Export, _ string) {
			e.HeadHash[0] ^= 1
		}, "height 7: head"},
		{"swapped update artifact", func(t *testing.T, e *Export, dir string) {
			a, _ := ArtifactPath(dir, c.updates[1][0])
			b, _ := ArtifactPath(dir, c.updates[1][1])
			da, _ := os.ReadFile(a)
			db, _ := os.ReadFile(b)
			os.WriteFile(a, db, 0o644)
			os.WriteFile(b, da, 0o644)
		}, "height 6: tx[0]"},
		{"missing update artifact", func(t *testing.T, e *Export, dir string) {
			a, _ := ArtifactPath(dir, c.updates[0][2])
			os.Remove(a)
		}, "height 3: tx[2]"},
		{"changed aggregate file", func(t *testing.T, e *Export, dir string) {
			p, _ := ArtifactPath(dir, c.models[0])
			data, _ := os.ReadFile(p)
			data[len(data)-1] ^= 0x40
			os.WriteFile(p, data, 0o644)
		}, "height 4: tx[0]"},
		{"changed genesis", func(t *testing.T, e *Export, _ string) {
			e.Genesis = bytes.Replace(e.Genesis, []byte("name: trainer-3"), []byte("name: trainer-x"), 1)
		}, "height 0: state_hash"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := c.export(t)
			dir := copyDir(t, c.artifacts)
			tc.tamper(t, e, dir)
			e2, err := ReadExport(bytes.NewReader(EncodeExport(e)))
			if err != nil {
				t.Fatal(err)
			}
			_, err = Verify(context.Background(), e2, VerifyOptions{Artifacts: dir})
			var m *Mismatch
			if !errors.As(err, &m) || !errors.Is(err, ErrMismatch) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want a *Mismatch containing %q", err, tc.want)
			}
			t.Logf("%v", err)
		})
	}
}

// A committed digest that is not what aggregating the stored updates
// gives: an aggregator that lied, with a chain that is otherwise valid.
func TestVerifyChangedAggregate(t *testing.T) {
	c := newTestChain(t)
	e := c.export(t)
	// Store a different model under its own digest and rebuild the chain
	// with the aggregator committing it instead: every signature and hash
	// is valid, only re-running the aggregation tells.
	c2 := newTestChainWith(t, func(round uint64, digest string, dir string) string {
		if round != 2 {
			return digest
		}
		return put(t, dir, weights(t, 99), true)
	})
	_ = e
	_, err := Verify(context.Background(), c2.export(t), VerifyOptions{Artifacts: c2.artifacts})
	if !errors.Is(err, ErrMismatch) || !strings.Contains(err.Error(), "height 7: tx[1]") || !strings.Contains(err.Error(), `model_digest: job "job-1" round 2: re-running fedavg from the recipe on the 2 submitted updates gives`) {
		t.Fatalf("got %v", err)
	}
	t.Log(err)
}

func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	err := filepath.Walk(src, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if info.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), data, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}
