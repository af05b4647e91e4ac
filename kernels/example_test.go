package kernels_test

import (
	"fmt"

	"github.com/fedtune/fedtune/kernels"
)

// FedAvg of three updates weighted by their sample counts: accumulate in
// float64, then store scaled by 1/Σw as float32.
func ExampleBackend_weightedSum() {
	be := kernels.Default()
	xs := [][]float32{{1, 2}, {3, 4}, {5, 6}}
	w := []float64{100, 200, 700}
	acc := make([]float64, 2)
	be.WeightedSum(acc, w, xs)
	out := make([]float32, 2)
	be.Store(out, acc, 1.0/1000)
	fmt.Println(out)
	// Output: [4.2 5.2]
}
