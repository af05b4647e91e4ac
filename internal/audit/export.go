package audit

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/fedtune/fedtune/internal/atomicfile"
	"github.com/fedtune/fedtune/ledger"
)

// ExportMagic starts every export file; ExportVersion follows it.
const (
	ExportMagic   = "FTEXPORT"
	ExportVersion = 1
)

// Frame kinds of the export format.
const (
	frameGenesis byte = 'G'
	frameBlock   byte = 'B'
	frameEnd     byte = 'E'
)

// Limits the decoder enforces before reading a frame's payload.
const (
	MaxGenesisBytes = 1 << 20
	MaxBlockBytes   = 64 << 20
	// MaxExportBlocks bounds the number of blocks one export may hold.
	MaxExportBlocks = 1 << 32
)

// ErrExport is wrapped by ReadExport for a file that is not a well-formed
// export; the message says where (frame number, byte offset).
var ErrExport = errors.New("audit: bad export")

// Export is a decoded export file: the genesis file and the encoded blocks,
// Blocks[h] being height h. Nothing in it is verified; see Verify.
type Export struct {
	Genesis []byte
	Blocks  [][]byte
	// HeadHash is what the end frame says the last block hashes to.
	HeadHash [32]byte
}

// ExportWriter writes an export file frame by frame.
type ExportWriter struct {
	w      *bufio.Writer
	n      uint64
	last   [32]byte
	closed bool
}

// NewExportWriter writes the file header and the genesis frame.
func NewExportWriter(w io.Writer, genesis []byte) (*ExportWriter, error) {
	if len(genesis) == 0 || len(genesis) > MaxGenesisBytes {
		return nil, fmt.Errorf("audit: export: genesis file is %d bytes, want 1 to %d", len(genesis), MaxGenesisBytes)
	}
	ew := &ExportWriter{w: bufio.NewWriterSize(w, 1<<16)}
	ew.w.WriteString(ExportMagic)
	ew.w.WriteByte(ExportVersion)
	if err := ew.frame(frameGenesis, genesis); err != nil {
		return nil, err
	}
	return ew, nil
}

func (ew *ExportWriter) frame(kind byte, payload []byte) error {
	var hdr [5]byte
	hdr[0] = kind
	binary.BigEndian.PutUint32(hdr[1:], uint32(len(payload)))
	ew.w.Write(hdr[:])
	_, err := ew.w.Write(payload)
	if err != nil {
		return fmt.Errorf("audit: export: %w", err)
	}
	return nil
}

// WriteBlock appends the next block (height = number written so far).
func (ew *ExportWriter) WriteBlock(b *ledger.Block) error {
	if ew.closed {
		return errors.New("audit: export: WriteBlock after Close")
	}
	if b.Header.Height != ew.n {
		return fmt.Errorf("audit: export: block at height %d written as block %d", b.Header.Height, ew.n)
	}
	raw := ledger.EncodeBlock(b)
	if len(raw) > MaxBlockBytes {
		return fmt.Errorf("audit: export: block %d is %d bytes, limit %d", ew.n, len(raw), MaxBlockBytes)
	}
	if err := ew.frame(frameBlock, raw); err != nil {
		return err
	}
	ew.n++
	ew.last = b.Hash()
	return nil
}

// Blocks returns how many blocks were written.
func (ew *ExportWriter) Blocks() uint64 { return ew.n }

// Close writes the end frame and flushes. It does not close the writer
// underneath.
func (ew *ExportWriter) Close() error {
	if ew.closed {
		return nil
	}
	if ew.n == 0 {
		return errors.New("audit: export: no blocks written (the genesis block is required)")
	}
	ew.closed = true
	p := binary.BigEndian.AppendUint64(nil, ew.n)
	p = append(p, ew.last[:]...)
	if err := ew.frame(frameEnd, p); err != nil {
		return err
	}
	if err := ew.w.Flush(); err != nil {
		return fmt.Errorf("audit: export: %w", err)
	}
	return nil
}

// WriteFileAtomic replaces path with what write writes, through
// atomicfile.WriteFunc: a failure leaves path as it was.
func WriteFileAtomic(path string, mode os.FileMode, write func(io.Writer) error) error {
	return atomicfile.WriteFunc(path, mode, func(f *os.File) error { return write(f) })
}

// EncodeExport returns the export file for e (genesis, blocks, end frame
// with e.HeadHash as given).
func EncodeExport(e *Export) []byte {
	var b bytes.Buffer
	b.WriteString(ExportMagic)
	b.WriteByte(ExportVersion)
	put := func(kind byte, p []byte) {
		b.WriteByte(kind)
		b.Write(binary.BigEndian.AppendUint32(nil, uint32(len(p))))
		b.Write(p)
	}
	put(frameGenesis, e.Genesis)
	for _, raw := range e.Blocks {
		put(frameBlock, raw)
	}
	end := binary.BigEndian.AppendUint64(nil, uint64(len(e.Blocks)))
	put(frameEnd, append(end, e.HeadHash[:]...))
	return b.Bytes()
}

// ReadExport decodes an export file's framing. It reads payloads only up
// to the bytes actually present, so a lying length cannot make it allocate
// more than the input holds. Errors wrap ErrExport.
func ReadExport(r io.Reader) (*Export, error) {
	br := bufio.NewReaderSize(r, 1<<16)
	var off int64
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: at byte %d: %s", ErrExport, off, fmt.Sprintf(format, args...))
	}
	head := make([]byte, len(ExportMagic)+1)
	if _, err := io.ReadFull(br, head); err != nil {
		return nil, bad("file too short for the header (%v)", err)
	}
	if string(head[:len(ExportMagic)]) != ExportMagic {
		return nil, bad("not a fedtune export (magic %q, want %q)", head[:len(ExportMagic)], ExportMagic)
	}
	if v := head[len(ExportMagic)]; v != ExportVersion {
		return nil, bad("export version %d, this build reads %d", v, ExportVersion)
	}
	off = int64(len(head))
	e := &Export{}
	frames := 0
	for {
		var hdr [5]byte
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			if errors.Is(err, io.EOF) {
				return nil, bad("file ends after %d frames without the end frame (truncated?)", frames)
			}
			return nil, bad("frame %d header: %v", frames, err)
		}
		kind, n := hdr[0], binary.BigEndian.Uint32(hdr[1:])
		limit := uint32(MaxBlockBytes)
		switch kind {
		case frameGenesis:
			if frames != 0 {
				return nil, bad("frame %d: a second genesis frame", frames)
			}
			limit = MaxGenesisBytes
		case frameBlock:
			if frames == 0 {
				return nil, bad("frame 0 is a block; the genesis frame comes first")
			}
		case frameEnd:
			if frames == 0 {
				return nil, bad("frame 0 is the end frame; the genesis frame comes first")
			}
			limit = 40
		default:
			return nil, bad("frame %d has unknown kind %#x", frames, kind)
		}
		if n > limit {
			return nil, bad("frame %d (%c) is %d bytes, limit %d", frames, kind, n, limit)
		}
		var buf bytes.Buffer
		if m, err := io.CopyN(&buf, br, int64(n)); err != nil {
			return nil, bad("frame %d (%c) announces %d bytes, the file holds %d (truncated?)", frames, kind, n, m)
		}
		off += 5
		p := buf.Bytes()
		switch kind {
		case frameGenesis:
			e.Genesis = p
		case frameBlock:
			if uint64(len(e.Blocks)) >= MaxExportBlocks {
				return nil, bad("more than %d blocks", uint64(MaxExportBlocks))
			}
			e.Blocks = append(e.Blocks, p)
		case frameEnd:
			if n != 40 {
				return nil, bad("end frame is %d bytes, want 40", n)
			}
			if c := binary.BigEndian.Uint64(p); c != uint64(len(e.Blocks)) {
				return nil, bad("end frame counts %d blocks, the file holds %d (blocks dropped or added?)", c, len(e.Blocks))
			}
			if len(e.Blocks) == 0 {
				return nil, bad("no blocks: the genesis block is required")
			}
			copy(e.HeadHash[:], p[8:])
			off += int64(n)
			if _, err := br.ReadByte(); err != io.EOF {
				return nil, bad("data after the end frame")
			}
			return e, nil
		}
		off += int64(n)
		frames++
	}
}
