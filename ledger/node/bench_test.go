package node_test

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fedtune/fedtune/ledger"
)

// BenchmarkClusterSubmit measures committed txs per second through a real
// three-node cluster (loopback TCP, pebble on disk with synced writes):
// N trainers submit DatasetRegistered txs concurrently to a follower, each
// waiting for its tx to commit before sending the next. Larger N means
// larger blocks: each block costs a synced raft append on a quorum (the
// FSM's block batch is not synced on its own: it shares the raft log's WAL),
// so throughput grows with the batch size.
func BenchmarkClusterSubmit(b *testing.B) {
	c := newBenchCluster(b)
	defer c.stopAll()
	leader := c.leader(c.nodes...)
	via := c.nodes[0]
	if via == leader {
		via = c.nodes[1]
	}
	const workers = 128
	keys := make([]ed25519.PrivateKey, workers)
	var adds [][]byte
	for i := range keys {
		k, err := ledger.GenerateKey()
		if err != nil {
			b.Fatal(err)
		}
		keys[i] = k
		c.nonce++
		env, err := ledger.SignTx(c.admin, c.chainID, c.nonce, ledger.MemberAdded{PublicKey: hex.EncodeToString(k.Public().(ed25519.PublicKey)), Role: ledger.RoleTrainer})
		if err != nil {
			b.Fatal(err)
		}
		adds = append(adds, env)
	}
	c.submit(via, adds...)

	nonces := make([]uint64, workers)
	for _, clients := range []int{1, 8, 32, 128} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			benchSubmit(b, c, via, keys[:clients], nonces)
		})
	}
}

// benchSubmit commits b.N txs through via from len(keys) concurrent
// submitters; nonces holds each key's last nonce.
func benchSubmit(b *testing.B, c *cluster, via *tnode, keys []ed25519.PrivateKey, nonces []uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for w := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					return
				}
				nonces[w]++
				nonce := nonces[w]
				d := sha256.Sum256(fmt.Appendf(nil, "dataset-%d-%d", w, nonce))
				env, err := ledger.SignTx(keys[w], c.chainID, nonce, ledger.DatasetRegistered{
					Digest: hex.EncodeToString(d[:]), Name: "d", Licence: "CC0-1.0", Source: "bench", Samples: 1, Root: hex.EncodeToString(d[:]),
				})
				if err != nil {
					b.Error(err)
					return
				}
				if _, err := via.client.SubmitWait(ctx, env); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "tx/s")
}

// newBenchCluster starts a three-node in-process cluster for a benchmark.
func newBenchCluster(b *testing.B) *cluster {
	c := newCluster(b, 3)
	for _, nd := range c.nodes {
		nd.start(nd.config(3, ""))
	}
	return c
}
