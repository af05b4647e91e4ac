package fsm

import (
	"bytes"
	"sync"

	"github.com/fedtune/fedtune/ledger"
)

// maxDecodedCache bounds the txs a decodedCache holds; when it is full the
// oldest generation is dropped.
const maxDecodedCache = 1 << 13

// decodedCache holds decoded txs by hash, put by the node that decoded them
// before proposing them and taken out when a block applies them (see
// FSM.NoteDecoded). It keeps two generations so that it stays bounded even
// for txs that never reach a block: when the current one fills up, it
// becomes the old one and the previous old one is dropped.
type decodedCache struct {
	mu       sync.Mutex
	cur, old map[[32]byte]*ledger.Tx
}

func (dc *decodedCache) put(tx *ledger.Tx) {
	if tx == nil {
		return
	}
	dc.mu.Lock()
	defer dc.mu.Unlock()
	if len(dc.cur) >= maxDecodedCache/2 {
		dc.old, dc.cur = dc.cur, nil
	}
	if dc.cur == nil {
		dc.cur = make(map[[32]byte]*ledger.Tx)
	}
	dc.cur[tx.Hash] = tx
}

// take removes and returns the cached decoding of raw, or nil. It checks
// the bytes, not only the hash.
func (dc *decodedCache) take(raw []byte) *ledger.Tx {
	dc.mu.Lock()
	if len(dc.cur) == 0 && len(dc.old) == 0 {
		dc.mu.Unlock()
		return nil
	}
	h := ledger.TxHash(raw)
	tx, ok := dc.cur[h]
	if ok {
		delete(dc.cur, h)
	} else if tx, ok = dc.old[h]; ok {
		delete(dc.old, h)
	}
	dc.mu.Unlock()
	if !ok || !bytes.Equal(tx.Raw, raw) {
		return nil
	}
	return tx
}
