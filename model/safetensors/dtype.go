package safetensors

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/x448/float16"
)

// DType names a safetensors element type, spelled as in the header.
type DType string

// The element types fedtune reads and writes.
const (
	F64  DType = "F64"
	F32  DType = "F32"
	F16  DType = "F16"
	BF16 DType = "BF16"
	I64  DType = "I64"
	I32  DType = "I32"
	I16  DType = "I16"
	I8   DType = "I8"
	U8   DType = "U8"
	Bool DType = "BOOL"
)

// Size returns the size of one element in bytes, or 0 for an unknown dtype.
func (d DType) Size() int {
	switch d {
	case F64, I64:
		return 8
	case F32, I32:
		return 4
	case F16, BF16, I16:
		return 2
	case I8, U8, Bool:
		return 1
	}
	return 0
}

// IsFloat reports whether d is a floating-point type that converts to float32.
func (d DType) IsFloat() bool {
	switch d {
	case F64, F32, F16, BF16:
		return true
	}
	return false
}

// ParseDType returns the DType spelled s, or an error for an unknown one.
func ParseDType(s string) (DType, error) {
	d := DType(s)
	if d.Size() == 0 {
		return "", fmt.Errorf("unknown dtype %q", s)
	}
	return d, nil
}

// DecodeFloat32 converts len(dst) little-endian elements of type d from src
// into dst. src must hold len(dst)*d.Size() bytes and d must be a float type.
func DecodeFloat32(d DType, dst []float32, src []byte) error {
	n := len(dst)
	if len(src) != n*d.Size() {
		return fmt.Errorf("decode %s: %d bytes for %d elements", d, len(src), n)
	}
	switch d {
	case F32:
		if hostLittleEndian {
			copy(float32Bytes(dst), src)
			break
		}
		for i := range dst {
			dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
		}
	case F16:
		src = src[:2*n]
		for i := range dst {
			dst[i] = float16.Frombits(uint16(src[2*i]) | uint16(src[2*i+1])<<8).Float32()
		}
	case BF16:
		src = src[:2*n]
		for i := range dst {
			dst[i] = math.Float32frombits((uint32(src[2*i]) | uint32(src[2*i+1])<<8) << 16)
		}
	case F64:
		for i := range dst {
			dst[i] = float32(math.Float64frombits(binary.LittleEndian.Uint64(src[8*i:])))
		}
	default:
		return fmt.Errorf("decode %s as float32: not a float dtype", d)
	}
	return nil
}

// EncodeFloat32 converts src to little-endian elements of float type d,
// appending them to dst. F16 and BF16 round to nearest even.
func EncodeFloat32(d DType, dst []byte, src []float32) ([]byte, error) {
	switch d {
	case F32:
		if hostLittleEndian {
			dst = append(dst, float32Bytes(src)...)
			break
		}
		for _, v := range src {
			dst = binary.LittleEndian.AppendUint32(dst, math.Float32bits(v))
		}
	case F16:
		for _, v := range src {
			dst = binary.LittleEndian.AppendUint16(dst, float16.Fromfloat32(v).Bits())
		}
	case BF16:
		for _, v := range src {
			dst = binary.LittleEndian.AppendUint16(dst, Float32ToBF16(v))
		}
	case F64:
		for _, v := range src {
			dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(float64(v)))
		}
	default:
		return dst, fmt.Errorf("encode float32 as %s: not a float dtype", d)
	}
	return dst, nil
}

// Float32ToBF16 rounds v to bfloat16 (nearest, ties to even), keeping NaN a NaN.
func Float32ToBF16(v float32) uint16 {
	b := math.Float32bits(v)
	if v != v { // NaN: keep it quiet and non-zero in the top half
		return uint16(b>>16) | 0x40
	}
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}

// BF16ToFloat32 widens the bfloat16 value b to float32, exactly.
func BF16ToFloat32(b uint16) float32 { return math.Float32frombits(uint32(b) << 16) }
