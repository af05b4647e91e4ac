package fsm_test

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/fsm"
	"github.com/fedtune/fedtune/ledger/pebblestore"
)

// Example runs a one-member chain without raft: a genesis naming an admin
// and a coordinator, an FSM on an in-memory pebble store, one signed
// transaction applied as a proposal, and the queries that follow.
func Example() {
	seed := sha256.Sum256([]byte("example coordinator"))
	coord := ed25519.NewKeyFromSeed(seed[:])
	admin, _ := ledger.GenerateKey()
	g, err := ledger.ParseGenesis("genesis.yaml", []byte(fmt.Sprintf(`chain_id: example
members:
  - {name: admin, role: admin, public_key: %x}
  - {name: coordinator, role: coordinator, public_key: %x}
`, admin.Public(), coord.Public())))
	if err != nil {
		panic(err)
	}
	db, err := pebblestore.Open("data", pebblestore.Options{FS: vfs.NewMem()})
	if err != nil {
		panic(err)
	}
	defer db.Close()
	f, err := fsm.New(db.State(), g, fsm.Options{})
	if err != nil {
		panic(err)
	}

	sum := sha256.Sum256([]byte("weights"))
	model := hex.EncodeToString(sum[:])
	tx, err := ledger.SignTx(coord, g.ChainID, 1, ledger.ModelRegistered{Digest: model, Name: "tiny", Licence: "apache-2.0", Source: "hf://tiny"})
	if err != nil {
		panic(err)
	}
	nodeID := ledger.KeyID(coord.Public().(ed25519.PublicKey)) // any node ID
	res := f.ApplyProposal(ledger.Proposal{Proposer: nodeID, Time: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano(), Txs: [][]byte{tx}})
	fmt.Println("block", res.Block.Header.Height, "txs", len(res.Block.Txs), "rejected", res.Results[0].Err)

	m, _ := f.Model(model)
	fmt.Println("model", m.Name, m.Licence)
	rec, _ := f.Tx(ledger.TxHash(tx))
	fmt.Println("proof verifies:", ledger.VerifyInclusion(rec.Hash, rec.Index, rec.TreeSize, rec.Proof, res.Block.Header.TxRoot) == nil)

	// The same bytes again are a duplicate: no block, and the reason.
	res = f.ApplyProposal(ledger.Proposal{Proposer: nodeID, Txs: [][]byte{tx}})
	fmt.Println(res.Block == nil, res.Results[0].Err.(*ledger.TxError).Code)
	fmt.Println("verify:", fsm.VerifyChain(db.State(), g))
	// Output:
	// block 1 txs 1 rejected <nil>
	// model tiny apache-2.0
	// proof verifies: true
	// true duplicate
	// verify: <nil>
}
