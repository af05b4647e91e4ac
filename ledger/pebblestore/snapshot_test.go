package pebblestore_test

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"slices"
	"testing"
	"testing/iotest"

	"github.com/fedtune/fedtune/ledger/pebblestore"
)

// dump returns every "k=v" of the state.
func dump(t testing.TB, s *pebblestore.State) []string {
	t.Helper()
	return collect(t, func(fn func(k, v []byte) error) error { return s.Iter(nil, fn) })
}

// fillRandom writes n keys with values of up to maxVal bytes.
func fillRandom(t testing.TB, s *pebblestore.State, seed uint64, n, maxVal int) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 1))
	b := s.NewBatch()
	defer b.Close()
	for i := range n {
		v := make([]byte, rng.IntN(maxVal+1))
		for j := range v {
			v[j] = byte(rng.Uint32())
		}
		must(t, b.Set([]byte(fmt.Sprintf("key/%06d/%d", i, rng.IntN(1000))), v))
	}
	must(t, b.Commit())
}

func snapshotBytes(t testing.TB, s *pebblestore.State) []byte {
	t.Helper()
	sn := s.Snapshot()
	defer sn.Close()
	var buf bytes.Buffer
	n, err := sn.WriteTo(&buf)
	must(t, err)
	if n != int64(buf.Len()) {
		t.Fatalf("WriteTo returned %d, wrote %d", n, buf.Len())
	}
	return buf.Bytes()
}

func TestSnapshotRestoreRoundTrip(t *testing.T) {
	tests := []struct {
		name   string
		n, max int
	}{
		{"empty", 0, 0},
		{"one", 1, 10},
		{"many small", 5000, 40},
		{"frames", 300, 8 << 10}, // ~1.2 MiB: several 256 KiB frames
		{"big values", 3, 1 << 20},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := openMem(t).State()
			fillRandom(t, src, 1, tc.n, tc.max)
			want := dump(t, src)
			stream := snapshotBytes(t, src)

			dst := openMem(t).State()
			commit(t, dst, "stale", "gone after restore", "key/000000/0", "old")
			must(t, dst.Restore(bytes.NewReader(stream)))
			if got := dump(t, dst); !slices.Equal(got, want) {
				t.Fatalf("restored state has %d keys, want %d (or contents differ)", len(got), len(want))
			}
			// And the stream of the restored state is the same bytes.
			if again := snapshotBytes(t, dst); !bytes.Equal(again, stream) {
				t.Fatal("snapshot of the restored state differs from the stream restored")
			}
			// ReadStream sees the same records.
			n, err := pebblestore.ReadStream(bytes.NewReader(stream), func(k, v []byte) error { return nil })
			if err != nil || n != uint64(len(want)) {
				t.Fatalf("ReadStream = %d, %v; want %d records", n, err, len(want))
			}
		})
	}
}

func TestSnapshotIsPointInTime(t *testing.T) {
	s := openMem(t).State()
	commit(t, s, "a", "1", "b", "2")
	sn := s.Snapshot()
	defer sn.Close()
	commit(t, s, "a", "changed", "c", "3")
	b := s.NewBatch()
	must(t, b.Delete([]byte("b")))
	must(t, b.Commit())

	if v, ok, err := sn.Get([]byte("a")); err != nil || !ok || string(v) != "1" {
		t.Fatalf("snapshot Get(a) = %q, %v, %v; want 1", v, ok, err)
	}
	if _, ok, _ := sn.Get([]byte("c")); ok {
		t.Fatal("snapshot sees a key written after it")
	}
	got := collect(t, func(fn func(k, v []byte) error) error { return sn.Iter(nil, fn) })
	if want := []string{"a=1", "b=2"}; !slices.Equal(got, want) {
		t.Fatalf("snapshot Iter = %q, want %q", got, want)
	}
	var buf bytes.Buffer
	_, err := sn.WriteTo(&buf)
	must(t, err)
	dst := openMem(t).State()
	must(t, dst.Restore(&buf))
	if got := dump(t, dst); !slices.Equal(got, []string{"a=1", "b=2"}) {
		t.Fatalf("restored from snapshot: %q", got)
	}
	must(t, sn.Close())
	if _, _, err := sn.Get([]byte("a")); !errors.Is(err, pebblestore.ErrSnapshotClosed) {
		t.Fatalf("Get after Close: %v", err)
	}
}

func TestStreamGolden(t *testing.T) {
	s := openMem(t).State()
	commit(t, s, "a", "1", "b/\x00", "", "zz", "last")
	checkGolden(t, "state_v1.golden", []byte(hex.Dump(snapshotBytes(t, s))))
}

// Every truncation and a sample of bit flips of a stream must fail with
// ErrCorrupt and leave the state exactly as it was.
func TestRestoreCorruptLeavesStateIntact(t *testing.T) {
	src := openMem(t).State()
	fillRandom(t, src, 2, 200, 3000) // ~300 KiB: two data frames
	stream := snapshotBytes(t, src)

	dst := openMem(t).State()
	fillRandom(t, dst, 3, 50, 100)
	before := dump(t, dst)
	check := func(name string, r io.Reader, wantCorrupt bool) {
		t.Helper()
		err := dst.Restore(r)
		if err == nil {
			t.Fatalf("%s: Restore succeeded", name)
		}
		if wantCorrupt && !errors.Is(err, pebblestore.ErrCorrupt) {
			t.Fatalf("%s: %v, want ErrCorrupt", name, err)
		}
		if got := dump(t, dst); !slices.Equal(got, before) {
			t.Fatalf("%s: state changed by a failed Restore", name)
		}
	}

	rng := rand.New(rand.NewPCG(4, 5))
	cuts := []int{0, 1, 7, 8, 9, 16, 17, len(stream) - 1, len(stream) - 5}
	for range 40 {
		cuts = append(cuts, rng.IntN(len(stream)))
	}
	for _, n := range cuts {
		check(fmt.Sprintf("truncated to %d of %d bytes", n, len(stream)), bytes.NewReader(stream[:n]), true)
	}
	for i := range 60 {
		off := rng.IntN(len(stream))
		if i < 8 {
			off = i // the magic
		}
		b := bytes.Clone(stream)
		b[off] ^= 1 << rng.IntN(8)
		check(fmt.Sprintf("bit flip at %d", off), bytes.NewReader(b), true)
	}
	check("trailing byte", bytes.NewReader(append(bytes.Clone(stream), 0)), true)
	check("two streams", io.MultiReader(bytes.NewReader(stream), bytes.NewReader(stream)), true)
	check("reader error", iotest.TimeoutReader(bytes.NewReader(stream)), false)

	// After all that, a good stream still restores.
	must(t, dst.Restore(bytes.NewReader(stream)))
	if got, want := dump(t, dst), dump(t, src); !slices.Equal(got, want) {
		t.Fatal("good stream after failures restored wrong state")
	}
}

// A frame whose records are out of order, with valid checksums, is refused.
func TestRestoreRejectsUnorderedKeys(t *testing.T) {
	s := openMem(t).State()
	commit(t, s, "b", "1", "a", "2")
	stream := snapshotBytes(t, s)
	// buildStream writes the format from its description, independently of
	// WriteTo; it must agree with WriteTo on ordered input.
	bad := buildStream([][2]string{{"b", "1"}, {"a", "2"}})
	good := buildStream([][2]string{{"a", "2"}, {"b", "1"}})
	if !bytes.Equal(good, stream) {
		t.Fatalf("buildStream disagrees with WriteTo:\n%x\n%x", good, stream)
	}
	err := openMem(t).State().Restore(bytes.NewReader(bad))
	if !errors.Is(err, pebblestore.ErrCorrupt) {
		t.Fatalf("Restore of unordered keys: %v", err)
	}
	dup := buildStream([][2]string{{"a", "2"}, {"a", "3"}})
	if err := openMem(t).State().Restore(bytes.NewReader(dup)); !errors.Is(err, pebblestore.ErrCorrupt) {
		t.Fatalf("Restore of duplicate keys: %v", err)
	}
}

// FuzzReadStream feeds the stream reader arbitrary bytes: no panic, and an
// error is ErrCorrupt (the reader never fails).
func FuzzReadStream(f *testing.F) {
	f.Add([]byte(nil))
	f.Add(buildStream(nil))
	f.Add(buildStream([][2]string{{"a", "2"}, {"b", "1"}}))
	f.Add(buildStream([][2]string{{"k", string(make([]byte, 300))}}))
	f.Fuzz(func(t *testing.T, in []byte) {
		var prev []byte
		_, err := pebblestore.ReadStream(bytes.NewReader(in), func(k, v []byte) error {
			if prev != nil && bytes.Compare(k, prev) <= 0 {
				t.Fatalf("keys out of order: %q after %q", k, prev)
			}
			prev = bytes.Clone(k)
			return nil
		})
		if err != nil && !errors.Is(err, pebblestore.ErrCorrupt) {
			t.Fatalf("error not ErrCorrupt: %v", err)
		}
	})
}

// buildStream writes records as one data frame (none if empty) and the end
// frame, following the format comment in stream.go.
func buildStream(recs [][2]string) []byte {
	tab := crc32.MakeTable(crc32.Castagnoli)
	frame := func(out []byte, kind byte, payload []byte) []byte {
		h := []byte{kind}
		h = binary.BigEndian.AppendUint32(h, uint32(len(payload)))
		crc := crc32.Update(crc32.Checksum(h, tab), tab, payload)
		out = append(out, h...)
		out = binary.BigEndian.AppendUint32(out, crc)
		return append(out, payload...)
	}
	out := []byte("FTSTATE\x01")
	var data []byte
	for _, r := range recs {
		data = binary.AppendUvarint(data, uint64(len(r[0])))
		data = append(data, r[0]...)
		data = binary.AppendUvarint(data, uint64(len(r[1])))
		data = append(data, r[1]...)
	}
	if len(data) > 0 {
		out = frame(out, 'D', data)
	}
	end := binary.AppendUvarint(nil, uint64(len(recs)))
	end = binary.AppendUvarint(end, uint64(len(data)))
	end = binary.BigEndian.AppendUint32(end, crc32.Checksum(data, tab))
	return frame(out, 'E', end)
}
