package pebblestore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// Key-range prefixes. Each range is [prefix, prefix+1).
const (
	prefixMeta   byte = 0x00
	prefixLog    byte = 0x01
	prefixStable byte = 0x02
	prefixState  byte = 0x03
)

// layoutVersion is the on-disk layout written under the meta key. Open
// refuses a database written with another layout.
const layoutVersion = 1

var metaLayoutKey = []byte{prefixMeta, 'l', 'a', 'y', 'o', 'u', 't'}

// Errors returned by this package. Callers test them with errors.Is.
var (
	// ErrClosed is returned by every method called after DB.Close.
	ErrClosed = errors.New("pebblestore: closed")
	// ErrLayout is returned by Open for a database written with a layout this
	// version does not read.
	ErrLayout = errors.New("pebblestore: unsupported on-disk layout")
	// ErrCorrupt is returned when stored or streamed bytes fail to decode or
	// fail their checksum.
	ErrCorrupt = errors.New("pebblestore: corrupt data")
	// ErrKeyNotFound is returned by StableStore.Get and GetUint64 for a key
	// never set. Its text is "not found" because hashicorp/raft compares
	// err.Error() with that string (as raft's InmemStore and raft-boltdb
	// return it).
	ErrKeyNotFound = errors.New("not found")
	// ErrBatchDone is returned by Batch methods after Commit or Close.
	ErrBatchDone = errors.New("pebblestore: batch already committed or closed")
	// ErrSnapshotClosed is returned by Snapshot methods after Close.
	ErrSnapshotClosed = errors.New("pebblestore: snapshot closed")
	// ErrFatal is returned once pebble has hit an error it cannot recover
	// from, such as a failed WAL write or fsync: the write that met it failed,
	// and every later call fails too. Whether that write reached the disk is
	// unknown. The process should stop using the DB and restart, reopening
	// it (retrying an fsync after it failed is not safe).
	ErrFatal = errors.New("pebblestore: fatal storage error")
	// ErrStopIter may be returned by an iteration callback to end the
	// iteration early; the iteration then returns nil.
	ErrStopIter = errors.New("pebblestore: stop iteration")
)

// Options configure Open. The zero value is a synced store on the real disk.
type Options struct {
	// FS is the filesystem the database lives on; nil means vfs.Default.
	// Tests pass vfs.NewMem(), fedtest.NewCrashFS() or an errorfs wrapper.
	FS vfs.FS
	// Logger receives pebble's log lines; nil discards them.
	Logger *slog.Logger
	// NoSync makes writes return before they reach stable storage. Only for
	// benchmarks and throwaway test clusters: a crash may lose acknowledged
	// writes, which raft does not tolerate.
	NoSync bool
	// CacheSize is pebble's block cache in bytes; 0 means 32 MiB.
	CacheSize int64
}

// DB is one node's pebble database holding the raft log, raft's stable store
// and the FSM state in disjoint key ranges. It is safe for concurrent use.
type DB struct {
	pdb    *pebble.DB
	wo     *pebble.WriteOptions
	logger *slog.Logger

	// active counts calls in flight; closing is set by Close, which then
	// waits for active to drain before closing pebble. A call that finds
	// closing set returns ErrClosed instead of reaching a closed pebble DB
	// (which would panic).
	active  atomic.Int64
	closing atomic.Bool
	// fatal holds the ErrFatal-wrapping error once pebble gave up.
	fatal atomic.Pointer[error]

	mu    sync.Mutex
	snaps map[*Snapshot]struct{} // open snapshots, released by Close

	log    LogStore
	stable StableStore
	state  State
}

// Open opens (creating if needed) the database in dir.
func Open(dir string, opts Options) (*DB, error) {
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("component", "pebblestore", "dir", dir)
	cacheSize := opts.CacheSize
	if cacheSize <= 0 {
		cacheSize = 32 << 20
	}
	cache := pebble.NewCache(cacheSize)
	defer cache.Unref()
	po := &pebble.Options{
		FS:                 opts.FS,
		Cache:              cache,
		Logger:             pebbleLogger{l: logger},
		FormatMajorVersion: pebble.FormatNewest,
		// Fewer, larger flushes than the 4 MiB default under a steady
		// stream of log entries.
		MemTableSize: 16 << 20,
	}
	// Bloom filters let point reads of absent keys (the FSM's dedup and
	// existence checks, stable-store misses) skip sstables.
	for i := range po.Levels {
		po.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
	}
	pdb, err := pebble.Open(dir, po)
	if err != nil {
		return nil, fmt.Errorf("pebblestore: open %s: %w", dir, err)
	}
	db := &DB{
		pdb:    pdb,
		wo:     pebble.Sync,
		logger: logger,
		snaps:  make(map[*Snapshot]struct{}),
	}
	if opts.NoSync {
		db.wo = pebble.NoSync
	}
	db.log.db = db
	db.stable.db = db
	db.state.db = db
	if err := db.checkLayout(); err != nil {
		if errors.Is(err, ErrFatal) {
			return nil, fmt.Errorf("pebblestore: open %s: %w", dir, err)
		}
		_ = pdb.Close()
		return nil, fmt.Errorf("pebblestore: open %s: %w", dir, err)
	}
	return db, nil
}

// checkLayout writes the layout version into a new database and checks it in
// an existing one.
func (db *DB) checkLayout() (err error) {
	defer db.recoverFatal(&err)
	v, closer, err := db.pdb.Get(metaLayoutKey)
	switch {
	case errors.Is(err, pebble.ErrNotFound):
		if err := db.pdb.Set(metaLayoutKey, []byte{layoutVersion}, pebble.Sync); err != nil {
			return fmt.Errorf("write layout version: %w", err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("read layout version: %w", err)
	}
	defer closer.Close()
	if len(v) != 1 || v[0] != layoutVersion {
		return fmt.Errorf("%w: layout %x, want %d", ErrLayout, v, layoutVersion)
	}
	return nil
}

// Close releases open snapshots, waits for calls in flight and closes the
// database. Calls made after Close return ErrClosed. Close is idempotent.
//
// After ErrFatal, Close does not close pebble (its commit pipeline is broken
// and closing could hang); it returns the fatal error, and the process
// should exit.
func (db *DB) Close() error {
	if db.closing.Swap(true) {
		return nil
	}
	for db.active.Load() > 0 {
		time.Sleep(100 * time.Microsecond)
	}
	if err := db.Err(); err != nil {
		return err
	}
	db.mu.Lock()
	for sn := range db.snaps {
		sn.release()
	}
	db.snaps = nil
	db.mu.Unlock()
	if err := db.pdb.Close(); err != nil {
		return fmt.Errorf("pebblestore: close: %w", err)
	}
	return nil
}

// enter registers a call in flight; it fails once Close has begun.
// Every successful enter is paired with exit.
func (db *DB) enter() error {
	db.active.Add(1)
	if db.closing.Load() {
		db.active.Add(-1)
		return ErrClosed
	}
	if err := db.Err(); err != nil {
		db.active.Add(-1)
		return err
	}
	return nil
}

func (db *DB) exit() { db.active.Add(-1) }

// Err returns the error (wrapping ErrFatal) that made the DB unusable, or
// nil while it is healthy.
func (db *DB) Err() error {
	if p := db.fatal.Load(); p != nil {
		return *p
	}
	return nil
}

// recoverFatal, deferred by every write path, turns pebble's fatal panic
// (raised by pebbleLogger.Fatalf in the calling goroutine, e.g. on a failed
// WAL write or sync) into an error wrapping ErrFatal and marks the DB
// failed. Other panics go on.
func (db *DB) recoverFatal(err *error) {
	r := recover()
	if r == nil {
		return
	}
	fp, ok := r.(fatalPanic)
	if !ok {
		panic(r)
	}
	e := fmt.Errorf("%w: %s", ErrFatal, fp.msg)
	db.fatal.CompareAndSwap(nil, &e)
	db.logger.Error("pebble failed; the store is unusable until reopened", "err", e)
	*err = db.Err()
}

// LogStore returns the raft log store kept in the log key range.
func (db *DB) LogStore() *LogStore { return &db.log }

// StableStore returns raft's stable store kept in the stable key range.
func (db *DB) StableStore() *StableStore { return &db.stable }

// State returns the FSM's key range.
func (db *DB) State() *State { return &db.state }

// Flush forces the memtable to disk as sstables. Tests and tools use it to
// exercise reads from sstables; normal operation never needs it.
func (db *DB) Flush() (err error) {
	if err := db.enter(); err != nil {
		return err
	}
	defer db.exit()
	defer db.recoverFatal(&err)
	return db.pdb.Flush()
}

// Metrics returns pebble's metrics for this database.
func (db *DB) Metrics() (*pebble.Metrics, error) {
	if err := db.enter(); err != nil {
		return nil, err
	}
	defer db.exit()
	return db.pdb.Metrics(), nil
}

// rangeKey returns prefix ‖ suffix in a new slice.
func rangeKey(prefix byte, suffix []byte) []byte {
	k := make([]byte, 1+len(suffix))
	k[0] = prefix
	copy(k[1:], suffix)
	return k
}

// prefixEnd returns the smallest key greater than every key starting with p,
// or nil when there is none (p is all 0xff), meaning "no upper bound".
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] != 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

// pebbleLogger adapts slog to pebble's Logger.
type pebbleLogger struct{ l *slog.Logger }

// Infof logs pebble's informational lines at debug level.
func (p pebbleLogger) Infof(format string, args ...any) {
	p.l.Log(context.Background(), slog.LevelDebug, fmt.Sprintf(format, args...))
}

// Errorf logs pebble's errors.
func (p pebbleLogger) Errorf(format string, args ...any) {
	p.l.Error(fmt.Sprintf(format, args...))
}

// fatalPanic is the value pebbleLogger.Fatalf panics with.
type fatalPanic struct{ msg string }

// Fatalf logs and panics: pebble calls it on an unrecoverable state and
// expects it not to return. Where pebble calls it in our caller's goroutine
// (a failed commit), recoverFatal turns the panic into ErrFatal; where it
// calls it in a background goroutine (a failed MANIFEST write) the process
// dies, as pebble intends.
func (p pebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	p.l.Error("pebble fatal: " + msg)
	panic(fatalPanic{msg: msg})
}
