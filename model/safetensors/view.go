package safetensors

import (
	"encoding/binary"
	"unsafe"
)

// hostLittleEndian is true where float32 values lie in memory as F32 lies
// in a file, so the two can be viewed as each other without conversion.
var hostLittleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// float32Bytes views x's memory as bytes (host order).
func float32Bytes(x []float32) []byte {
	if len(x) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(x))), 4*len(x))
}

// AsFloat32 views b, little-endian F32 data, as float32 values without
// copying: the result shares b's memory. ok is false when the host is not
// little-endian, len(b) is not a multiple of 4 or b is not 4-byte aligned;
// then decode with DecodeFloat32.
func AsFloat32(b []byte) (x []float32, ok bool) {
	if !hostLittleEndian || len(b)%4 != 0 {
		return nil, false
	}
	if len(b) == 0 {
		return []float32{}, true
	}
	p := unsafe.Pointer(unsafe.SliceData(b))
	if uintptr(p)%4 != 0 {
		return nil, false
	}
	return unsafe.Slice((*float32)(p), len(b)/4), true
}

// Float32Bytes views x as its little-endian F32 encoding without copying:
// the result shares x's memory. ok is false on a big-endian host; then
// encode with EncodeFloat32.
func Float32Bytes(x []float32) (b []byte, ok bool) {
	if !hostLittleEndian {
		return nil, false
	}
	return float32Bytes(x), true
}
