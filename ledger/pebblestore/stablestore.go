package pebblestore

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"github.com/hashicorp/raft"
)

var _ raft.StableStore = (*StableStore)(nil)

// StableStore is raft's stable store (current term, last vote, ...) kept in
// the stable key range of a DB. Writes are synced.
//
// Missing keys behave as in raft-boltdb: Get and GetUint64 return
// ErrKeyNotFound, whose text "not found" is what raft checks for.
type StableStore struct {
	db *DB
}

// Set stores val under key, synced.
func (s *StableStore) Set(key, val []byte) (err error) {
	if err := s.db.enter(); err != nil {
		return err
	}
	defer s.db.exit()
	defer s.db.recoverFatal(&err)
	if err := s.db.pdb.Set(rangeKey(prefixStable, key), val, s.db.wo); err != nil {
		return fmt.Errorf("pebblestore: stable set %q: %w", key, err)
	}
	return nil
}

// Get returns a copy of the value under key, or ErrKeyNotFound.
func (s *StableStore) Get(key []byte) ([]byte, error) {
	if err := s.db.enter(); err != nil {
		return nil, err
	}
	defer s.db.exit()
	v, closer, err := s.db.pdb.Get(rangeKey(prefixStable, key))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, ErrKeyNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("pebblestore: stable get %q: %w", key, err)
	}
	out := make([]byte, len(v))
	copy(out, v)
	closer.Close()
	return out, nil
}

// SetUint64 stores val as 8 big-endian bytes under key, synced.
func (s *StableStore) SetUint64(key []byte, val uint64) error {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], val)
	return s.Set(key, b[:])
}

// GetUint64 returns the value stored by SetUint64, or 0 and ErrKeyNotFound.
// A value of another length is an error wrapping ErrCorrupt.
func (s *StableStore) GetUint64(key []byte) (uint64, error) {
	v, err := s.Get(key)
	if err != nil {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("pebblestore: stable get %q: %w: %d-byte value, want 8", key, ErrCorrupt, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}
