package pebblestore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/hashicorp/raft"
)

var (
	_ raft.LogStore          = (*LogStore)(nil)
	_ raft.MonotonicLogStore = (*LogStore)(nil)
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// LogStore is raft's log kept in the log key range of a DB. Keys are
// 0x01 ‖ big-endian index, so key order is index order.
type LogStore struct {
	db *DB
}

var (
	logLower = []byte{prefixLog}
	logUpper = []byte{prefixLog + 1}
)

// logKey returns the key of log index i.
func logKey(i uint64) []byte {
	var k [9]byte
	k[0] = prefixLog
	binary.BigEndian.PutUint64(k[1:], i)
	return k[:]
}

// FirstIndex returns the lowest index in the log, or 0 when it is empty.
func (s *LogStore) FirstIndex() (uint64, error) { return s.edgeIndex(true) }

// LastIndex returns the highest index in the log, or 0 when it is empty.
func (s *LogStore) LastIndex() (uint64, error) { return s.edgeIndex(false) }

// edgeIndex positions an iterator bounded to the log range at its first or
// last key. The bounds are what keep it from reading a stable or state key:
// a pebble raft log store once lost data by asking for the "last" log key
// and landing on a key of another range.
func (s *LogStore) edgeIndex(first bool) (uint64, error) {
	if err := s.db.enter(); err != nil {
		return 0, err
	}
	defer s.db.exit()
	it, err := s.db.pdb.NewIter(&pebble.IterOptions{LowerBound: logLower, UpperBound: logUpper})
	if err != nil {
		return 0, fmt.Errorf("pebblestore: log iterator: %w", err)
	}
	var ok bool
	if first {
		ok = it.First()
	} else {
		ok = it.Last()
	}
	var idx uint64
	if ok {
		k := it.Key()
		if len(k) != 9 || k[0] != prefixLog {
			_ = it.Close()
			return 0, fmt.Errorf("%w: log key %x", ErrCorrupt, k)
		}
		idx = binary.BigEndian.Uint64(k[1:])
	}
	if err := it.Close(); err != nil {
		return 0, fmt.Errorf("pebblestore: log iterator: %w", err)
	}
	return idx, nil
}

// GetLog reads the entry at index into log. A missing entry is
// raft.ErrLogNotFound.
func (s *LogStore) GetLog(index uint64, log *raft.Log) error {
	if err := s.db.enter(); err != nil {
		return err
	}
	defer s.db.exit()
	v, closer, err := s.db.pdb.Get(logKey(index))
	if errors.Is(err, pebble.ErrNotFound) {
		return raft.ErrLogNotFound
	}
	if err != nil {
		return fmt.Errorf("pebblestore: get log %d: %w", index, err)
	}
	defer closer.Close()
	if err := DecodeLog(v, log); err != nil {
		return fmt.Errorf("pebblestore: get log %d: %w", index, err)
	}
	if log.Index != index {
		return fmt.Errorf("pebblestore: get log %d: %w: entry holds index %d", index, ErrCorrupt, log.Index)
	}
	return nil
}

// StoreLog stores one entry, synced.
func (s *LogStore) StoreLog(log *raft.Log) error {
	return s.StoreLogs([]*raft.Log{log})
}

// StoreLogs stores entries in one synced batch: all are durable when it
// returns nil, none are written when the batch fails to commit.
func (s *LogStore) StoreLogs(logs []*raft.Log) (err error) {
	if err := s.db.enter(); err != nil {
		return err
	}
	defer s.db.exit()
	defer s.db.recoverFatal(&err)
	b := s.db.pdb.NewBatch()
	defer b.Close()
	var buf []byte
	for _, l := range logs {
		buf = AppendLog(buf[:0], l)
		if err := b.Set(logKey(l.Index), buf, nil); err != nil {
			return fmt.Errorf("pebblestore: store log %d: %w", l.Index, err)
		}
	}
	if err := b.Commit(s.db.wo); err != nil {
		return fmt.Errorf("pebblestore: store %d logs: %w", len(logs), err)
	}
	return nil
}

// DeleteRange deletes entries min through max inclusive with one range
// deletion, synced.
func (s *LogStore) DeleteRange(min, max uint64) (err error) {
	if min > max {
		return nil
	}
	if err := s.db.enter(); err != nil {
		return err
	}
	defer s.db.exit()
	defer s.db.recoverFatal(&err)
	end := logUpper
	if max != math.MaxUint64 {
		end = logKey(max + 1)
	}
	b := s.db.pdb.NewBatch()
	defer b.Close()
	if err := b.DeleteRange(logKey(min), end, nil); err != nil {
		return fmt.Errorf("pebblestore: delete logs [%d, %d]: %w", min, max, err)
	}
	if err := b.Commit(s.db.wo); err != nil {
		return fmt.Errorf("pebblestore: delete logs [%d, %d]: %w", min, max, err)
	}
	return nil
}

// IsMonotonic reports true: deleting the whole log is one cheap range
// deletion, so raft may clear the log after restoring a user snapshot rather
// than rely on index gaps.
func (s *LogStore) IsMonotonic() bool { return true }

// Log entry encoding, version 1:
//
//	byte     version (1)
//	uvarint  index
//	uvarint  term
//	byte     type
//	uvarint  len(data)+1, then data      (0 = nil)
//	uvarint  len(extensions)+1, then ext (0 = nil)
//	byte     appendedAt kind: 0 zero time, 1 set
//	varint   appendedAt seconds since the Unix epoch (kind 1 only)
//	uvarint  appendedAt nanoseconds within the second (kind 1 only)
//	4 bytes  CRC-32C (Castagnoli) of everything before, big-endian
//
// nil and empty slices are kept apart so that an entry round-trips exactly.
// AppendedAt round-trips as an instant (time.Time.Equal), decoded in UTC;
// its location and monotonic clock reading are not kept.
const logEncodingVersion = 1

// AppendLog appends the encoding of l to dst and returns the result.
func AppendLog(dst []byte, l *raft.Log) []byte {
	start := len(dst)
	dst = append(dst, logEncodingVersion)
	dst = binary.AppendUvarint(dst, l.Index)
	dst = binary.AppendUvarint(dst, l.Term)
	dst = append(dst, byte(l.Type))
	dst = appendOptBytes(dst, l.Data)
	dst = appendOptBytes(dst, l.Extensions)
	if l.AppendedAt.IsZero() {
		dst = append(dst, 0)
	} else {
		dst = append(dst, 1)
		dst = binary.AppendVarint(dst, l.AppendedAt.Unix())
		dst = binary.AppendUvarint(dst, uint64(l.AppendedAt.Nanosecond()))
	}
	return binary.BigEndian.AppendUint32(dst, crc32.Checksum(dst[start:], castagnoli))
}

func appendOptBytes(dst, b []byte) []byte {
	if b == nil {
		return append(dst, 0)
	}
	dst = binary.AppendUvarint(dst, uint64(len(b))+1)
	return append(dst, b...)
}

// DecodeLog decodes an AppendLog encoding into l. Data and Extensions are
// copied, so buf may be reused. Any malformed input is an error wrapping
// ErrCorrupt.
func DecodeLog(buf []byte, l *raft.Log) error {
	if len(buf) < 5 {
		return fmt.Errorf("%w: log entry of %d bytes", ErrCorrupt, len(buf))
	}
	body, sum := buf[:len(buf)-4], binary.BigEndian.Uint32(buf[len(buf)-4:])
	if got := crc32.Checksum(body, castagnoli); got != sum {
		return fmt.Errorf("%w: log entry checksum %08x, want %08x", ErrCorrupt, got, sum)
	}
	d := decoder{buf: body}
	if v := d.byte("version"); d.err == nil && v != logEncodingVersion {
		return fmt.Errorf("%w: log entry version %d", ErrCorrupt, v)
	}
	var out raft.Log
	out.Index = d.uvarint("index")
	out.Term = d.uvarint("term")
	out.Type = raft.LogType(d.byte("type"))
	out.Data = d.optBytes("data")
	out.Extensions = d.optBytes("extensions")
	switch kind := d.byte("appendedAt kind"); {
	case d.err != nil:
	case kind == 0:
	case kind == 1:
		sec := d.varint("appendedAt seconds")
		nsec := d.uvarint("appendedAt nanoseconds")
		if d.err == nil && nsec >= 1e9 {
			d.fail("appendedAt nanoseconds %d out of range", nsec)
		}
		out.AppendedAt = time.Unix(sec, int64(nsec)).UTC()
	default:
		d.fail("appendedAt kind %d", kind)
	}
	if d.err == nil && len(d.buf) != 0 {
		d.fail("%d trailing bytes", len(d.buf))
	}
	if d.err != nil {
		return d.err
	}
	*l = out
	return nil
}

// decoder reads fields from buf, keeping the first error.
type decoder struct {
	buf []byte
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: log entry: %s", ErrCorrupt, fmt.Sprintf(format, args...))
	}
}

func (d *decoder) byte(field string) byte {
	if d.err != nil {
		return 0
	}
	if len(d.buf) == 0 {
		d.fail("truncated at %s", field)
		return 0
	}
	b := d.buf[0]
	d.buf = d.buf[1:]
	return b
}

func (d *decoder) uvarint(field string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.buf)
	if n <= 0 {
		d.fail("bad varint at %s", field)
		return 0
	}
	d.buf = d.buf[n:]
	return v
}

func (d *decoder) varint(field string) int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.buf)
	if n <= 0 {
		d.fail("bad varint at %s", field)
		return 0
	}
	d.buf = d.buf[n:]
	return v
}

func (d *decoder) optBytes(field string) []byte {
	n := d.uvarint(field + " length")
	if d.err != nil || n == 0 {
		return nil
	}
	n--
	if n > uint64(len(d.buf)) {
		d.fail("%s length %d exceeds the %d bytes left", field, n, len(d.buf))
		return nil
	}
	b := make([]byte, n)
	copy(b, d.buf)
	d.buf = d.buf[n:]
	return b
}
