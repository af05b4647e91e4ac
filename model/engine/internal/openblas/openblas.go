//go:build openblas

package openblas

/*
void openblas_set_num_threads(int num_threads);
int openblas_get_num_threads(void);
*/
import "C"

// SetThreads sets how many threads OpenBLAS runs each call on (process-wide).
func SetThreads(n int) { C.openblas_set_num_threads(C.int(n)) }

// Threads returns how many threads OpenBLAS runs each call on.
func Threads() int { return int(C.openblas_get_num_threads()) }
