package pebblestore_test

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"hash/crc32"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/fedtune/fedtune/ledger/pebblestore"
	"github.com/hashicorp/raft"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// goldenLogs are the entries whose encodings testdata/log_v1.golden pins.
var goldenLogs = []struct {
	name string
	log  raft.Log
}{
	{"bare", raft.Log{Index: 1, Term: 1}},
	{"command", raft.Log{Index: 42, Term: 7, Type: raft.LogCommand, Data: []byte("hello")}},
	{"empty slices", raft.Log{Index: 43, Term: 7, Type: raft.LogNoop, Data: []byte{}, Extensions: []byte{}}},
	{"all fields", raft.Log{
		Index: 1 << 40, Term: 300, Type: raft.LogConfiguration,
		Data: []byte{0, 1, 2, 0xff}, Extensions: []byte("ext"),
		AppendedAt: time.Date(2026, 11, 25, 12, 0, 0, 123456789, time.UTC),
	}},
	{"before epoch", raft.Log{Index: math.MaxUint64, Term: math.MaxUint64, Type: raft.LogBarrier,
		AppendedAt: time.Date(1960, 1, 1, 0, 0, 0, 1, time.UTC)}},
}

func TestLogEncodingGolden(t *testing.T) {
	var sb strings.Builder
	for _, g := range goldenLogs {
		fmt.Fprintf(&sb, "%s: %s\n", g.name, hex.EncodeToString(pebblestore.AppendLog(nil, &g.log)))
	}
	checkGolden(t, "log_v1.golden", []byte(sb.String()))
}

func TestLogEncodingRoundTrip(t *testing.T) {
	for _, g := range goldenLogs {
		t.Run(g.name, func(t *testing.T) {
			enc := pebblestore.AppendLog([]byte("prefix"), &g.log)
			if !bytes.HasPrefix(enc, []byte("prefix")) {
				t.Fatal("AppendLog clobbered dst")
			}
			var got raft.Log
			if err := pebblestore.DecodeLog(enc[len("prefix"):], &got); err != nil {
				t.Fatalf("DecodeLog: %v", err)
			}
			// Exact, nil versus empty included; times are kept in UTC.
			if !reflect.DeepEqual(got, g.log) {
				t.Fatalf("round trip:\n got %#v\nwant %#v", got, g.log)
			}
		})
	}
	// A local time with a monotonic reading comes back as the same instant.
	now := time.Now()
	var got raft.Log
	if err := pebblestore.DecodeLog(pebblestore.AppendLog(nil, &raft.Log{AppendedAt: now}), &got); err != nil {
		t.Fatal(err)
	}
	if !got.AppendedAt.Equal(now) {
		t.Fatalf("AppendedAt %v, want %v", got.AppendedAt, now)
	}
}

func TestDecodeLogRejects(t *testing.T) {
	valid := pebblestore.AppendLog(nil, &goldenLogs[3].log)
	withCRC := func(body []byte) []byte {
		return binary.BigEndian.AppendUint32(body, crc32.Checksum(body, crc32.MakeTable(crc32.Castagnoli)))
	}
	body := valid[:len(valid)-4]
	tests := []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, "0 bytes"},
		{"short", []byte{1, 2, 3}, "3 bytes"},
		{"bad checksum", append(bytes.Clone(body), 0, 0, 0, 0), "checksum"},
		{"flipped bit", func() []byte { b := bytes.Clone(valid); b[5] ^= 0x10; return b }(), "checksum"},
		{"version 2", withCRC(append([]byte{2}, body[1:]...)), "version 2"},
		{"truncated body", withCRC(body[:len(body)-3]), "log entry"},
		{"trailing bytes", withCRC(append(bytes.Clone(body), 0)), "trailing"},
		{"data longer than entry", withCRC([]byte{1, 1, 1, 0, 0x7f}), "exceeds"},
		{"bad time kind", withCRC([]byte{1, 1, 1, 0, 0, 0, 9}), "kind 9"},
		{"nanoseconds out of range", withCRC([]byte{1, 1, 1, 0, 0, 0, 1, 0, 0x80, 0x94, 0xeb, 0xdc, 0x03}), "out of range"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := raft.Log{Index: 99}
			err := pebblestore.DecodeLog(tc.in, &l)
			if !errors.Is(err, pebblestore.ErrCorrupt) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("DecodeLog: %v; want ErrCorrupt mentioning %q", err, tc.want)
			}
			if l.Index != 99 {
				t.Fatal("DecodeLog changed its output on error")
			}
		})
	}
}

// FuzzDecodeLog feeds DecodeLog arbitrary bytes, both as given and with a
// valid checksum appended (so the fuzzer reaches the field parser). Nothing
// may panic, and what decodes must re-encode to bytes that decode the same.
func FuzzDecodeLog(f *testing.F) {
	for _, g := range goldenLogs {
		enc := pebblestore.AppendLog(nil, &g.log)
		f.Add(enc)
		f.Add(enc[:len(enc)-4])
	}
	tab := crc32.MakeTable(crc32.Castagnoli)
	f.Fuzz(func(t *testing.T, in []byte) {
		for _, b := range [][]byte{in, binary.BigEndian.AppendUint32(bytes.Clone(in), crc32.Checksum(in, tab))} {
			var l raft.Log
			if err := pebblestore.DecodeLog(b, &l); err != nil {
				if !errors.Is(err, pebblestore.ErrCorrupt) {
					t.Fatalf("error not ErrCorrupt: %v", err)
				}
				continue
			}
			var again raft.Log
			if err := pebblestore.DecodeLog(pebblestore.AppendLog(nil, &l), &again); err != nil {
				t.Fatalf("re-encoding of a decoded entry fails: %v", err)
			}
			if !reflect.DeepEqual(l, again) {
				t.Fatalf("re-encoded entry differs:\n%#v\n%#v", l, again)
			}
		}
	})
}

func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		must(t, os.MkdirAll("testdata", 0o755))
		must(t, os.WriteFile(path, got, 0o644))
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s differs from the encoding now (a format change needs a new version):\n got %s\nwant %s", path, got, want)
	}
}
