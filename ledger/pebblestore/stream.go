package pebblestore

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/cockroachdb/pebble/v2"
)

// State stream format (Snapshot.WriteTo, State.Restore):
//
//	8 bytes  magic "FTSTATE\x01" (the last byte is the format version)
//	frames, each:
//	  byte     kind: 'D' data or 'E' end
//	  4 bytes  payload length, big-endian
//	  4 bytes  CRC-32C of kind ‖ length ‖ payload, big-endian
//	  payload
//
// A data payload is a run of records, each uvarint len(key), key,
// uvarint len(val), val; keys are relative to the state range and strictly
// ascending across the whole stream. The end payload is uvarint record
// count, uvarint total data payload bytes, and 4 bytes CRC-32C of all data
// payloads in order, so a dropped, repeated or reordered frame is caught.
// Nothing may follow the end frame.
const (
	streamMagic     = "FTSTATE\x01"
	frameData       = 'D'
	frameEnd        = 'E'
	frameHeaderSize = 9
	// frameTarget is the payload size at which WriteTo closes a frame.
	frameTarget = 256 << 10
	// MaxFrame bounds a frame's payload, and so a single key plus value in a
	// stream; a longer length is taken as corruption.
	MaxFrame = 64 << 20
)

// WriteTo streams every key and value of the state as of the snapshot in
// the framed, checksummed format State.Restore reads. It returns the bytes
// written.
func (sn *Snapshot) WriteTo(w io.Writer) (int64, error) {
	if err := sn.enter(); err != nil {
		return 0, err
	}
	defer sn.db.exit()
	sw := &streamWriter{w: w}
	sw.write([]byte(streamMagic))
	it, err := sn.snap.NewIter(&pebble.IterOptions{LowerBound: stateLower, UpperBound: stateUpper})
	if err != nil {
		return sw.n, fmt.Errorf("pebblestore: snapshot iterator: %w", err)
	}
	for ok := it.First(); ok && sw.err == nil; ok = it.Next() {
		k := it.Key()[1:]
		v, verr := it.ValueAndErr()
		if verr != nil {
			_ = it.Close()
			return sw.n, fmt.Errorf("pebblestore: snapshot value of %q: %w", k, verr)
		}
		if rec := recordSize(k, v); rec > MaxFrame {
			_ = it.Close()
			return sw.n, fmt.Errorf("pebblestore: snapshot: key %q with %d-byte value exceeds the %d-byte frame limit", k, len(v), MaxFrame)
		} else if len(sw.payload)+rec > frameTarget && len(sw.payload) > 0 {
			sw.flushData()
		}
		sw.payload = binary.AppendUvarint(sw.payload, uint64(len(k)))
		sw.payload = append(sw.payload, k...)
		sw.payload = binary.AppendUvarint(sw.payload, uint64(len(v)))
		sw.payload = append(sw.payload, v...)
		sw.count++
	}
	if err := it.Close(); err != nil {
		return sw.n, fmt.Errorf("pebblestore: snapshot iterator: %w", err)
	}
	if len(sw.payload) > 0 {
		sw.flushData()
	}
	end := binary.AppendUvarint(nil, sw.count)
	end = binary.AppendUvarint(end, sw.dataBytes)
	end = binary.BigEndian.AppendUint32(end, sw.dataCRC)
	sw.frame(frameEnd, end)
	if sw.err != nil {
		return sw.n, fmt.Errorf("pebblestore: snapshot write: %w", sw.err)
	}
	return sw.n, nil
}

func recordSize(k, v []byte) int {
	return 2*binary.MaxVarintLen64 + len(k) + len(v)
}

type streamWriter struct {
	w         io.Writer
	n         int64
	err       error
	payload   []byte
	count     uint64
	dataBytes uint64
	dataCRC   uint32
}

func (sw *streamWriter) write(b []byte) {
	if sw.err != nil {
		return
	}
	n, err := sw.w.Write(b)
	sw.n += int64(n)
	sw.err = err
}

func (sw *streamWriter) flushData() {
	sw.dataBytes += uint64(len(sw.payload))
	sw.dataCRC = crc32.Update(sw.dataCRC, castagnoli, sw.payload)
	sw.frame(frameData, sw.payload)
	sw.payload = sw.payload[:0]
}

func (sw *streamWriter) frame(kind byte, payload []byte) {
	var h [frameHeaderSize]byte
	h[0] = kind
	binary.BigEndian.PutUint32(h[1:5], uint32(len(payload)))
	crc := crc32.Update(crc32.Checksum(h[:5], castagnoli), castagnoli, payload)
	binary.BigEndian.PutUint32(h[5:9], crc)
	sw.write(h[:])
	sw.write(payload)
}

// Restore replaces the whole state range with the contents of a stream
// written by Snapshot.WriteTo, atomically: the stream is read and checked to
// its end frame before anything is committed, so a truncated or corrupt
// stream returns an error wrapping ErrCorrupt (or the reader's error) and
// leaves the state as it was. The new state is staged in memory first, so
// Restore needs memory about the size of the stream.
func (s *State) Restore(r io.Reader) (err error) {
	if err := s.db.enter(); err != nil {
		return err
	}
	defer s.db.exit()
	defer s.db.recoverFatal(&err)
	b := s.db.pdb.NewBatch()
	defer b.Close()
	if err := b.DeleteRange(stateLower, stateUpper, nil); err != nil {
		return fmt.Errorf("pebblestore: restore: %w", err)
	}
	count, err := readStream(r, func(k, v []byte) error {
		return b.Set(rangeKey(prefixState, k), v, nil)
	})
	if err != nil {
		return fmt.Errorf("pebblestore: restore: %w", err)
	}
	if err := b.Commit(s.db.wo); err != nil {
		return fmt.Errorf("pebblestore: restore %d keys: %w", count, err)
	}
	s.db.logger.Info("state restored", "keys", count)
	return nil
}

// ReadStream checks a stream written by Snapshot.WriteTo and calls fn for
// each key and value in order (the slices are valid only during the call).
// It returns the number of records. A malformed stream is an error wrapping
// ErrCorrupt; fn may already have been called for records before the fault.
func ReadStream(r io.Reader, fn func(key, val []byte) error) (uint64, error) {
	return readStream(r, fn)
}

func readStream(r io.Reader, fn func(key, val []byte) error) (uint64, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	var magic [len(streamMagic)]byte
	if _, err := io.ReadFull(br, magic[:]); err != nil {
		return 0, corruptRead("magic", err)
	}
	if string(magic[:]) != streamMagic {
		return 0, fmt.Errorf("%w: stream magic %q, want %q", ErrCorrupt, magic[:], streamMagic)
	}
	var (
		count, dataBytes uint64
		dataCRC          uint32
		prev             []byte
		havePrev         bool
		frame            bytes.Buffer
		offset           int64 = int64(len(streamMagic))
	)
	for frameNo := 0; ; frameNo++ {
		var h [frameHeaderSize]byte
		if _, err := io.ReadFull(br, h[:]); err != nil {
			return count, corruptRead(fmt.Sprintf("frame %d header at offset %d", frameNo, offset), err)
		}
		kind, n := h[0], binary.BigEndian.Uint32(h[1:5])
		if kind != frameData && kind != frameEnd {
			return count, fmt.Errorf("%w: frame %d at offset %d: kind %#x", ErrCorrupt, frameNo, offset, kind)
		}
		if n > MaxFrame {
			return count, fmt.Errorf("%w: frame %d at offset %d: length %d exceeds %d", ErrCorrupt, frameNo, offset, n, MaxFrame)
		}
		// Grow the buffer as bytes arrive rather than trusting the length
		// before the checksum is checked.
		frame.Reset()
		if got, err := io.CopyN(&frame, br, int64(n)); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return count, corruptRead(fmt.Sprintf("frame %d payload at offset %d (%d of %d bytes)", frameNo, offset, got, n), err)
		}
		payload := frame.Bytes()
		crc := crc32.Update(crc32.Checksum(h[:5], castagnoli), castagnoli, payload)
		if want := binary.BigEndian.Uint32(h[5:9]); crc != want {
			return count, fmt.Errorf("%w: frame %d at offset %d: checksum %08x, want %08x", ErrCorrupt, frameNo, offset, crc, want)
		}
		offset += frameHeaderSize + int64(n)
		if kind == frameEnd {
			d := decoder{buf: payload}
			wantCount := d.uvarint("count")
			wantBytes := d.uvarint("data bytes")
			if d.err != nil || len(d.buf) != 4 {
				return count, fmt.Errorf("%w: malformed end frame", ErrCorrupt)
			}
			wantCRC := binary.BigEndian.Uint32(d.buf)
			if wantCount != count || wantBytes != dataBytes || wantCRC != dataCRC {
				return count, fmt.Errorf("%w: end frame says %d records in %d bytes (crc %08x), stream had %d in %d (crc %08x)",
					ErrCorrupt, wantCount, wantBytes, wantCRC, count, dataBytes, dataCRC)
			}
			if _, err := br.ReadByte(); err != io.EOF {
				if err == nil {
					return count, fmt.Errorf("%w: bytes after the end frame at offset %d", ErrCorrupt, offset)
				}
				return count, fmt.Errorf("pebblestore: stream read after end frame: %w", err)
			}
			return count, nil
		}
		dataBytes += uint64(n)
		dataCRC = crc32.Update(dataCRC, castagnoli, payload)
		rest := payload
		for len(rest) > 0 {
			k, v, tail, err := splitRecord(rest)
			if err != nil {
				return count, fmt.Errorf("%w: frame %d record %d: %v", ErrCorrupt, frameNo, count, err)
			}
			rest = tail
			if havePrev && bytes.Compare(k, prev) <= 0 {
				return count, fmt.Errorf("%w: frame %d: key %q not after %q", ErrCorrupt, frameNo, k, prev)
			}
			prev = append(prev[:0], k...)
			havePrev = true
			if err := fn(k, v); err != nil {
				return count, err
			}
			count++
		}
	}
}

func splitRecord(b []byte) (k, v, rest []byte, err error) {
	kn, n := binary.Uvarint(b)
	if n <= 0 || kn > uint64(len(b)-n) {
		return nil, nil, nil, errors.New("bad key length")
	}
	b = b[n:]
	k, b = b[:kn], b[kn:]
	vn, n := binary.Uvarint(b)
	if n <= 0 || vn > uint64(len(b)-n) {
		return nil, nil, nil, errors.New("bad value length")
	}
	b = b[n:]
	return k, b[:vn], b[vn:], nil
}

// corruptRead turns an early EOF into ErrCorrupt (the stream is truncated)
// and wraps any other reader error as it is.
func corruptRead(what string, err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: stream truncated in %s", ErrCorrupt, what)
	}
	return fmt.Errorf("pebblestore: stream read %s: %w", what, err)
}
