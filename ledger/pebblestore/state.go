package pebblestore

import (
	"bytes"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
)

// State is the FSM's key range of a DB. Every key a caller passes or receives
// is relative to the range (the range prefix is added and removed here), and
// every iterator is bounded so that it never leaves the range.
type State struct {
	db *DB
}

var (
	stateLower = []byte{prefixState}
	stateUpper = []byte{prefixState + 1}
)

// stateBounds returns the absolute bounds of relative keys starting with
// prefix, starting at the larger of prefix and start.
func stateBounds(prefix, start []byte) (lower, upper []byte) {
	abs := rangeKey(prefixState, prefix)
	upper = prefixEnd(abs) // abs[0] = 0x03, so never nil
	lower = abs
	if bytes.Compare(start, prefix) > 0 {
		lower = rangeKey(prefixState, start)
	}
	return lower, upper
}

// iterable is what pebble reads through: the DB, a batch or a snapshot.
type iterable interface {
	NewIter(*pebble.IterOptions) (*pebble.Iterator, error)
}

// iterate calls fn with a copy of each key (made relative) and value in
// [lower, upper), ascending.
func iterate(r iterable, lower, upper []byte, fn func(key, val []byte) error) (err error) {
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return fmt.Errorf("pebblestore: state iterator: %w", err)
	}
	defer func() {
		if cerr := it.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("pebblestore: state iterator: %w", cerr)
		}
	}()
	for ok := it.First(); ok; ok = it.Next() {
		k := bytes.Clone(it.Key()[1:])
		v, verr := it.ValueAndErr()
		if verr != nil {
			return fmt.Errorf("pebblestore: state value of %q: %w", k, verr)
		}
		if err := fn(k, bytes.Clone(v)); err != nil {
			if errors.Is(err, ErrStopIter) {
				return nil
			}
			return err
		}
	}
	return nil
}

// getCopy reads key through get and returns a copy of its value.
func getCopy(get func([]byte) ([]byte, ioCloser, error), key []byte) ([]byte, bool, error) {
	v, closer, err := get(rangeKey(prefixState, key))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("pebblestore: state get %q: %w", key, err)
	}
	out := bytes.Clone(v)
	if out == nil {
		out = []byte{}
	}
	closer.Close()
	return out, true, nil
}

type ioCloser = interface{ Close() error }

func dbGet(db *pebble.DB) func([]byte) ([]byte, ioCloser, error) {
	return func(k []byte) ([]byte, ioCloser, error) { return db.Get(k) }
}

// Get returns a copy of the value under key and whether it exists.
func (s *State) Get(key []byte) (val []byte, ok bool, err error) {
	if err := s.db.enter(); err != nil {
		return nil, false, err
	}
	defer s.db.exit()
	return getCopy(dbGet(s.db.pdb), key)
}

// Iter calls fn for each key starting with prefix, in ascending key order,
// with copies of the key and value that fn may keep. An error from fn ends
// the iteration and is returned, except ErrStopIter, which ends it with nil.
func (s *State) Iter(prefix []byte, fn func(key, val []byte) error) error {
	return s.IterFrom(prefix, nil, fn)
}

// IterFrom is Iter over the keys starting with prefix that are >= start.
func (s *State) IterFrom(prefix, start []byte, fn func(key, val []byte) error) error {
	if err := s.db.enter(); err != nil {
		return err
	}
	defer s.db.exit()
	lower, upper := stateBounds(prefix, start)
	return iterate(s.db.pdb, lower, upper, fn)
}

// NewBatch returns an indexed batch of state writes: its Get and Iter see its
// own writes over the committed state. Nothing is visible to others until
// Commit, which applies all writes atomically. A Batch is not safe for
// concurrent use; Close it when done (Close after Commit is a no-op).
func (s *State) NewBatch() *Batch {
	return &Batch{db: s.db, b: s.db.pdb.NewIndexedBatch()}
}

// Batch is an atomic set of state writes; see State.NewBatch.
type Batch struct {
	db   *DB
	b    *pebble.Batch
	done bool
}

// Get returns a copy of the value under key as the batch sees it: its own
// writes over the committed state.
func (b *Batch) Get(key []byte) ([]byte, bool, error) {
	if b.done {
		return nil, false, ErrBatchDone
	}
	if err := b.db.enter(); err != nil {
		return nil, false, err
	}
	defer b.db.exit()
	return getCopy(func(k []byte) ([]byte, ioCloser, error) { return b.b.Get(k) }, key)
}

// Iter is State.Iter as the batch sees the state.
func (b *Batch) Iter(prefix []byte, fn func(key, val []byte) error) error {
	return b.IterFrom(prefix, nil, fn)
}

// IterFrom is State.IterFrom as the batch sees the state. fn must not write
// to the batch.
func (b *Batch) IterFrom(prefix, start []byte, fn func(key, val []byte) error) error {
	if b.done {
		return ErrBatchDone
	}
	if err := b.db.enter(); err != nil {
		return err
	}
	defer b.db.exit()
	lower, upper := stateBounds(prefix, start)
	return iterate(b.b, lower, upper, fn)
}

// Set stages key = val.
func (b *Batch) Set(key, val []byte) error {
	if b.done {
		return ErrBatchDone
	}
	if err := b.b.Set(rangeKey(prefixState, key), val, nil); err != nil {
		return fmt.Errorf("pebblestore: batch set %q: %w", key, err)
	}
	return nil
}

// Delete stages the deletion of key (a no-op if it does not exist).
func (b *Batch) Delete(key []byte) error {
	if b.done {
		return ErrBatchDone
	}
	if err := b.b.Delete(rangeKey(prefixState, key), nil); err != nil {
		return fmt.Errorf("pebblestore: batch delete %q: %w", key, err)
	}
	return nil
}

// DeletePrefix stages the deletion of every key starting with prefix (the
// whole state for an empty prefix), as one range deletion.
func (b *Batch) DeletePrefix(prefix []byte) error {
	if b.done {
		return ErrBatchDone
	}
	lower, upper := stateBounds(prefix, nil)
	if err := b.b.DeleteRange(lower, upper, nil); err != nil {
		return fmt.Errorf("pebblestore: batch delete prefix %q: %w", prefix, err)
	}
	return nil
}

// Len reports the number of writes staged.
func (b *Batch) Len() int {
	if b.done {
		return 0
	}
	return int(b.b.Count())
}

// Commit applies the batch atomically, synced (unless Options.NoSync). The
// batch is finished afterwards whatever the outcome; on error nothing of it
// was applied.
func (b *Batch) Commit() error { return b.commit(b.db.wo) }

// CommitNoSync applies the batch atomically like Commit but returns without
// waiting for an fsync. It suits an FSM whose state can be rebuilt from the
// raft log: the batch reaches the disk with the next synced write to the DB
// (the log, the stable store and the state share one WAL, written in order),
// and a crash before that loses only writes that raft replays from its log,
// provided the FSM stores its applied index in the same batch and skips
// entries at or below it.
func (b *Batch) CommitNoSync() error { return b.commit(pebble.NoSync) }

func (b *Batch) commit(wo *pebble.WriteOptions) (err error) {
	if b.done {
		return ErrBatchDone
	}
	if err := b.db.enter(); err != nil {
		return err
	}
	defer b.db.exit()
	defer b.db.recoverFatal(&err)
	b.done = true
	if err := b.b.Commit(wo); err != nil {
		_ = b.b.Close()
		return fmt.Errorf("pebblestore: batch commit: %w", err)
	}
	cerr := b.b.Close()
	if cerr != nil {
		return fmt.Errorf("pebblestore: batch close: %w", cerr)
	}
	return nil
}

// Close discards an uncommitted batch. It is a no-op after Commit or Close.
func (b *Batch) Close() error {
	if b.done {
		return nil
	}
	b.done = true
	if err := b.b.Close(); err != nil {
		return fmt.Errorf("pebblestore: batch close: %w", err)
	}
	return nil
}

// Snapshot is a consistent, point-in-time view of the state range; writes
// made after it was taken are not seen. Close it when done; DB.Close closes
// the snapshots left open. Its methods may be called concurrently with each
// other but not with Close.
type Snapshot struct {
	db     *DB
	snap   *pebble.Snapshot
	closed atomic.Bool
}

// Snapshot takes a consistent view of the state. It returns nil if the DB is
// closed; every method of a nil Snapshot returns ErrClosed.
func (s *State) Snapshot() *Snapshot {
	if err := s.db.enter(); err != nil {
		return nil
	}
	defer s.db.exit()
	sn := &Snapshot{db: s.db, snap: s.db.pdb.NewSnapshot()}
	s.db.mu.Lock()
	s.db.snaps[sn] = struct{}{}
	s.db.mu.Unlock()
	return sn
}

func (sn *Snapshot) enter() error {
	if sn == nil {
		return ErrClosed
	}
	if err := sn.db.enter(); err != nil {
		return err // ErrClosed also for snapshots DB.Close released
	}
	if sn.closed.Load() {
		sn.db.exit()
		return ErrSnapshotClosed
	}
	return nil
}

// Get returns a copy of the value under key as of the snapshot.
func (sn *Snapshot) Get(key []byte) ([]byte, bool, error) {
	if err := sn.enter(); err != nil {
		return nil, false, err
	}
	defer sn.db.exit()
	return getCopy(func(k []byte) ([]byte, ioCloser, error) { return sn.snap.Get(k) }, key)
}

// Iter is State.Iter as of the snapshot.
func (sn *Snapshot) Iter(prefix []byte, fn func(key, val []byte) error) error {
	if err := sn.enter(); err != nil {
		return err
	}
	defer sn.db.exit()
	lower, upper := stateBounds(prefix, nil)
	return iterate(sn.snap, lower, upper, fn)
}

// IterFrom is State.IterFrom as of the snapshot.
func (sn *Snapshot) IterFrom(prefix, start []byte, fn func(key, val []byte) error) error {
	if err := sn.enter(); err != nil {
		return err
	}
	defer sn.db.exit()
	lower, upper := stateBounds(prefix, start)
	return iterate(sn.snap, lower, upper, fn)
}

// Close releases the snapshot. It is idempotent.
func (sn *Snapshot) Close() error {
	if sn == nil || sn.closed.Swap(true) {
		return nil
	}
	// The pebble snapshot is closed under db.mu: DB.Close takes db.mu before
	// it closes pebble, so it never finds this snapshot half closed (pebble
	// reports a snapshot still open at its Close as leaked).
	sn.db.mu.Lock()
	defer sn.db.mu.Unlock()
	if _, open := sn.db.snaps[sn]; !open { // DB.Close already released it
		return nil
	}
	delete(sn.db.snaps, sn)
	if err := sn.snap.Close(); err != nil {
		return fmt.Errorf("pebblestore: snapshot close: %w", err)
	}
	return nil
}

// release closes the pebble snapshot on DB.Close; db.mu is held.
func (sn *Snapshot) release() {
	sn.closed.Store(true)
	_ = sn.snap.Close()
}
