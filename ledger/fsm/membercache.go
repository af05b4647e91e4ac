package fsm

import (
	"strings"
	"sync"

	"github.com/fedtune/fedtune/ledger"
)

// memberCache holds decoded member records of the committed state, so that
// Apply does not read and decode the signer's record from pebble for every
// transaction (twice: in precheck and in execution). Only Apply uses it,
// under the FSM's applyMu; precheck's workers read and fill it
// concurrently. After a block commits, the entries of the members it wrote
// are dropped (forget); Restore drops them all (reset). An entry is only
// ever filled from the committed state, never from a block's pending
// writes.
type memberCache struct {
	mu sync.RWMutex
	m  map[string]ledger.Member
}

func (mc *memberCache) get(id string) (ledger.Member, bool) {
	mc.mu.RLock()
	defer mc.mu.RUnlock()
	m, ok := mc.m[id]
	return m, ok
}

func (mc *memberCache) put(m ledger.Member) {
	mc.mu.Lock()
	defer mc.mu.Unlock()
	if mc.m == nil {
		mc.m = map[string]ledger.Member{}
	}
	mc.m[m.ID] = m
}

// forget drops the members that ws writes.
func (mc *memberCache) forget(ws writeSet) {
	mc.mu.Lock()
	defer mc.mu.Unlock()
	for k := range ws {
		if id, ok := strings.CutPrefix(k, prefixMember); ok {
			delete(mc.m, id)
		}
	}
}

func (mc *memberCache) reset() {
	mc.mu.Lock()
	defer mc.mu.Unlock()
	mc.m = nil
}

// committedMember returns the member id of the committed state, through
// the cache. ok is false if there is no such member.
func (f *FSM) committedMember(id string) (m ledger.Member, ok bool, err error) {
	if m, ok := f.members.get(id); ok {
		return m, true, nil
	}
	ok, err = getJSON(f.st, memberKey(id), &m)
	if err != nil || !ok {
		return ledger.Member{}, false, err
	}
	if m.ID == id {
		f.members.put(m)
	}
	return m, true, nil
}
