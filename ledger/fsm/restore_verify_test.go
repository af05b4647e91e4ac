package fsm

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/ledger"
)

// A snapshot whose chain does not verify from genesis (here: a leader that
// rewrote a tx of block 3 and re-linked nothing) stops the FSM instead of
// becoming a state the node would cosign; an honest one restores.
func TestRestoreVerifiesTheChain(t *testing.T) {
	for _, tc := range []struct {
		name   string
		tamper func(t *testing.T, ch *chain)
		want   string // "" = restores
	}{
		{"honest", func(*testing.T, *chain) {}, ""},
		{"a tx rewritten", func(t *testing.T, ch *chain) {
			raw := storedBlock(t, ch, 3)
			raw[len(raw)-20] ^= 1
			setKey(t, ch, blockKey(3), raw)
		}, "tx_root"},
		{"a dataset's licence rewritten in the state", func(t *testing.T, ch *chain) {
			var key []byte
			if err := ch.db.State().Iter([]byte(prefixDataset), func(k, _ []byte) error {
				if key == nil {
					key = append([]byte(nil), k...)
				}
				return nil
			}); err != nil || key == nil {
				t.Fatalf("no dataset record to tamper with (%v)", err)
			}
			v, _, _ := ch.db.State().Get(key)
			forged := bytes.Replace(v, []byte(`"licence":"`), []byte(`"licence":"forged `), 1)
			if bytes.Equal(forged, v) {
				t.Fatalf("no licence field in %s", v)
			}
			setKey(t, ch, key, forged)
		}, "differs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, a := tamperChain(t)
			tc.tamper(t, a)
			snap := snapshotBytes(t, a.fsm)
			b := newChain(t, a.fsm.Genesis(), c.node.id)
			err := restoreBytes(b.fsm, snap)
			if tc.want == "" {
				if err != nil || b.fsm.Err() != nil {
					t.Fatalf("honest snapshot: %v / %v", err, b.fsm.Err())
				}
				return
			}
			if !errors.Is(err, ErrFSMBroken) || !strings.Contains(err.Error(), tc.want) || !errors.Is(b.fsm.Err(), ErrFSMBroken) {
				t.Fatalf("restore of a forged chain: %v (FSM: %v), want ErrFSMBroken naming %q", err, b.fsm.Err(), tc.want)
			}
			tx := c.coord.sign(t, ledger.ModelRegistered{Digest: digest("after a forged snapshot"), Name: "x", Licence: "l", Source: "s"})
			if res := b.fsm.ApplyProposal(ledger.Proposal{Proposer: c.node.id, Time: 1 << 62, Txs: [][]byte{tx}}); !errors.Is(res.Err, ErrFSMBroken) {
				t.Fatalf("apply after a refused snapshot: %+v, want ErrFSMBroken", res)
			}
		})
	}
}
