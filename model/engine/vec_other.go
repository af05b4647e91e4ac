//go:build !amd64 || purego

package engine

// Without the assembly loops every …Vec function does nothing and returns
// 0: the caller's pure-Go loop does all the work.

func maxVec(x []float32) (int, float32) { return 0, 0 }

func scaleVec(x []float32, s float32) int { return 0 }

func mulScaleVec(y, x, w []float32, s float32) int { return 0 }

func dotF64Vec(a, b []float32) (int, float64) { return 0, 0 }

func dot3F64Vec(a, b, c []float32) (int, float64) { return 0, 0 }

func rmsBackRowVec(dx, dy, w, x []float32, s, k float64) int { return 0 }

func softmaxBackRowVec(ds, p, dp []float32, dot float64) int { return 0 }

func dotVec(a, b []float32) (int, float32) { return 0, 0 }

func axpyVec(y, x []float32, a float32) int { return 0 }
