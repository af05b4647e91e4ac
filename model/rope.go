package model

import "math"

// RopeCosSin returns the [T, hd] rotary tables in Hugging Face's
// rotate-half convention: angle(t, j) = t / theta^(2(j mod hd/2)/hd), the
// frequency computed as transformers computes it. Every forward pass
// (model/engine's, model/gorgoniaref's) takes its tables from here.
func RopeCosSin(theta float64, hd, T int) (cos, sin []float64) {
	half := hd / 2
	cos, sin = make([]float64, T*hd), make([]float64, T*hd)
	for t := 0; t < T; t++ {
		for j := 0; j < hd; j++ {
			// As transformers computes it: inv_freq in float32 from an
			// int64 arange, then float32 products.
			invFreq := float32(1 / math.Pow(theta, float64(2*(j%half))/float64(hd)))
			ang := float64(float32(t) * invFreq)
			cos[t*hd+j], sin[t*hd+j] = math.Cos(ang), math.Sin(ang)
		}
	}
	return cos, sin
}
