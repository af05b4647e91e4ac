package node_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sync"
	"testing"
	"time"

	ledgerv1 "github.com/fedtune/fedtune/api/ledger/v1"
	"github.com/fedtune/fedtune/ledger"
)

// TestForwardConcurrent: many concurrent Submit calls to a follower, which
// coalesces them into fewer forwards to the leader, each get the results
// of their own txs, in order: committed ones with their hashes, rejected
// ones (malformed, bad nonce) with theirs.
func TestForwardConcurrent(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	c := newCluster(t, 3)
	for _, nd := range c.nodes {
		nd.start(nd.config(3, ""))
	}
	leader := c.leader(c.nodes...)
	fnode := c.nodes[0]
	if fnode == leader {
		fnode = c.nodes[1]
	}

	const clients = 24
	var adds [][]byte
	trainers := make([]ed25519.PrivateKey, 0, clients)
	for range clients {
		tx, k := c.adminTx()
		adds = append(adds, tx)
		trainers = append(trainers, k)
	}
	c.submit(fnode, adds...)

	type want struct {
		hash   [32]byte
		status ledgerv1.TxStatus
	}
	calls := make([][][]byte, clients)
	wants := make([][]want, clients)
	for i := range clients {
		key := trainers[i]
		for n := uint64(1); n <= 2; n++ {
			d := sha256.Sum256([]byte(fmt.Sprint(i, "/", n)))
			tx, err := ledger.SignTx(key, c.chainID, n, ledger.DatasetRegistered{
				Digest: hex.EncodeToString(d[:]), Name: fmt.Sprintf("ds-%d-%d", i, n), Licence: "CC-BY-4.0",
				Source: "https://example.org", Samples: 1, Root: hex.EncodeToString(d[:]),
			})
			if err != nil {
				t.Fatal(err)
			}
			calls[i] = append(calls[i], tx)
			wants[i] = append(wants[i], want{ledger.TxHash(tx), ledgerv1.TxStatus_TX_STATUS_COMMITTED})
		}
		switch i % 3 {
		case 1: // a malformed tx between the good ones
			bad := []byte(fmt.Sprintf("not a tx %d", i))
			calls[i] = append([][]byte{bad}, calls[i]...)
			wants[i] = append([]want{{ledger.TxHash(bad), ledgerv1.TxStatus_TX_STATUS_REJECTED}}, wants[i]...)
		case 2: // a replayed nonce, after the first tx
			d := sha256.Sum256([]byte(fmt.Sprint(i, "/replay")))
			tx, err := ledger.SignTx(key, c.chainID, 1, ledger.DatasetRegistered{
				Digest: hex.EncodeToString(d[:]), Name: "replay", Licence: "CC-BY-4.0",
				Source: "https://example.org", Samples: 1, Root: hex.EncodeToString(d[:]),
			})
			if err != nil {
				t.Fatal(err)
			}
			calls[i] = append(calls[i], tx)
			wants[i] = append(wants[i], want{ledger.TxHash(tx), ledgerv1.TxStatus_TX_STATUS_REJECTED})
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, clients)
	for i := range clients {
		wg.Go(func() {
			rs, err := fnode.client.Submit(ctx, calls[i]...)
			if err != nil {
				errs[i] = err
				return
			}
			if len(rs) != len(wants[i]) {
				errs[i] = fmt.Errorf("%d results for %d txs", len(rs), len(wants[i]))
				return
			}
			for j, r := range rs {
				if !bytes.Equal(r.Hash, wants[i][j].hash[:]) || r.Status != wants[i][j].status {
					errs[i] = fmt.Errorf("tx %d: hash %x status %v (%s), want %x %v", j, r.Hash[:4], r.Status, r.Reason, wants[i][j].hash[:4], wants[i][j].status)
					return
				}
			}
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("client %d: %v", i, err)
		}
	}
}
