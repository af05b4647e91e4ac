//go:build openblas

package openblas

/*
void openblas_set_num_threads(int num_threads);
int openblas_get_num_threads(void);
int openblas_get_parallel(void);
*/
import "C"

// SetThreads sets how many threads OpenBLAS runs each call on (process-wide
// for its pthreads build; see Parallel).
func SetThreads(n int) { C.openblas_set_num_threads(C.int(n)) }

// Threads returns how many threads OpenBLAS runs each call on.
func Threads() int { return int(C.openblas_get_num_threads()) }

// The threading models Parallel reports.
const (
	Sequential = 0 // no threads of its own
	Pthreads   = 1 // its own thread pool: SetThreads holds for every caller
	OpenMP     = 2 // OpenMP: SetThreads holds only for the calling thread
)

// Parallel returns the threading model OpenBLAS was built with.
func Parallel() int { return int(C.openblas_get_parallel()) }
