package engine

import "github.com/fedtune/fedtune/model"

// uploadChunk is how many values uploadWeight widens at a time.
const uploadChunk = 1 << 16

// uploadWeight puts the weight tn on dev, allocating with alloc. A frozen
// weight held as bfloat16 (model.LoadBF16) stays so on a BF16Device
// (WrapBF16: on the Host no copy at all); otherwise the buffer is float32,
// and bfloat16 values are widened a chunk at a time on their way, so that
// no float32 copy of the whole tensor exists outside the device.
func uploadWeight(dev Device, tn *model.Tensor, frozen bool, alloc func(int) Buffer) Buffer {
	if tn.Data == nil && tn.BF16 != nil {
		if bd, ok := dev.(BF16Device); ok && frozen {
			return bd.WrapBF16(tn.BF16)
		}
		w := alloc(len(tn.BF16))
		buf := make([]float32, min(uploadChunk, len(tn.BF16)))
		for off := 0; off < len(tn.BF16); off += uploadChunk {
			part := tn.BF16[off:min(off+uploadChunk, len(tn.BF16))]
			for i, v := range part {
				buf[i] = bf16f(v)
			}
			dev.Write(w, off, buf[:len(part)])
		}
		return w
	}
	w := alloc(len(tn.Data))
	dev.Write(w, 0, tn.Data)
	return w
}
