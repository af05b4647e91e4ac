package audit

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestReadExportRejects(t *testing.T) {
	c := newTestChain(t)
	good := EncodeExport(c.export(t))
	if _, err := ReadExport(bytes.NewReader(good)); err != nil {
		t.Fatal(err)
	}
	e := c.export(t)
	e.Blocks = e.Blocks[:0]
	noBlocks := EncodeExport(e)
	cases := []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "too short"},
		{"bad magic", append([]byte("FTEXPORX"), good[8:]...), "not a fedtune export"},
		{"bad version", append(append([]byte(ExportMagic), 9), good[9:]...), "export version 9"},
		{"truncated in a frame", good[:len(good)/2], "truncated"},
		{"no end frame", good[:len(good)-45], "without the end frame"},
		{"trailing data", append(append([]byte(nil), good...), 0), "data after the end frame"},
		{"block count", func() []byte {
			b := append([]byte(nil), good...)
			b[len(b)-33] ^= 1 // low byte of the end frame's count
			return b
		}(), "end frame counts"},
		{"no blocks", noBlocks, "no blocks"},
		{"unknown frame", append(append([]byte(ExportMagic), ExportVersion), 'X', 0, 0, 0, 0), "unknown kind"},
		{"huge frame", append(append([]byte(ExportMagic), ExportVersion), 'G', 0xff, 0xff, 0xff, 0xff), "limit"},
		{"block before genesis", append(append([]byte(ExportMagic), ExportVersion), 'B', 0, 0, 0, 0), "genesis frame comes first"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadExport(bytes.NewReader(tc.data))
			if !errors.Is(err, ErrExport) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want ErrExport containing %q", err, tc.want)
			}
		})
	}
}

func FuzzReadExport(f *testing.F) {
	c := newTestChain(f)
	good := EncodeExport(c.export(f))
	f.Add(good)
	f.Add(good[:200])
	short := c.export(f)
	short.Blocks = short.Blocks[:2]
	short.HeadHash = [32]byte{}
	f.Add(EncodeExport(short))
	f.Add([]byte(ExportMagic + "\x01G\x00\x00\x00\x00E\x00\x00\x00\x28"))
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := ReadExport(bytes.NewReader(data))
		if err != nil {
			if !errors.Is(err, ErrExport) {
				t.Fatalf("error does not wrap ErrExport: %v", err)
			}
			return
		}
		// What decodes re-encodes to the same bytes.
		if !bytes.Equal(EncodeExport(e), data) {
			t.Fatal("export does not round-trip")
		}
		if len(e.Blocks) == 0 {
			t.Fatal("decoded an export without blocks")
		}
	})
}
