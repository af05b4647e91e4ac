// Command ledgerbench is the Go half of scripts/bench-ledger.sh on the
// fedtune side.
//
//	ledgerbench freeports N
//	ledgerbench certs DIR
//	ledgerbench raft [-conc 1,16,256] [-duration 10s] [-size 512] [-dir D] [-cpuprofile F]
//	ledgerbench grpc -addrs A,B,C -keys DIR [-conc ...] [-duration 10s]
//
// freeports prints N free loopback TCP ports. certs writes a CA and a
// certificate for etcd's members and its client (certs.go). raft runs three hashicorp/raft
// nodes in this process over raft's TCP transport on loopback, each on its
// own synced pebblestore in D, and has concurrent clients submit
// ed25519-signed transactions of the given size, which every node's FSM
// verifies before applying. grpc drives a running fedtune ledger cluster
// through its gRPC Submit (see grpc.go).
//
// Each concurrency level prints one line on stdout:
//
//	RESULT system=fedtune-raft conc=16 ops=N secs=S tps=T p50_ms=A p99_ms=B
//
// and a "BREAKDOWN ..." line saying where the time went. Progress goes to
// stderr.
package main

import (
	"fmt"
	"net"
	"os"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: ledgerbench freeports N | certs DIR | raft [flags] | grpc [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "freeports":
		err = freePorts(os.Args[2:])
	case "certs":
		err = writeCerts(os.Args[2:])
	case "raft":
		err = runRaft(os.Args[2:])
	case "grpc":
		err = runGRPC(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "ledgerbench:", err)
		os.Exit(1)
	}
}

func freePorts(args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("freeports takes one argument, the number of ports")
	}
	n, err := strconv.Atoi(args[0])
	if err != nil || n < 1 {
		return fmt.Errorf("freeports: bad count %q", args[0])
	}
	ports, err := listenPorts(n)
	if err != nil {
		return err
	}
	var s []string
	for _, p := range ports {
		s = append(s, strconv.Itoa(p))
	}
	fmt.Println(strings.Join(s, " "))
	return nil
}

// listenPorts returns n distinct loopback TCP ports that were free a moment
// ago (all held open at once, so no two are the same).
func listenPorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func parseLevels(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("bad concurrency level %q", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// result prints a RESULT line for the sorted latencies of one level.
func result(system string, conc int, lats []time.Duration, elapsed time.Duration) {
	slices.Sort(lats)
	fmt.Printf("RESULT system=%s conc=%d ops=%d secs=%.2f tps=%.1f p50_ms=%.3f p99_ms=%.3f\n",
		system, conc, len(lats), elapsed.Seconds(), float64(len(lats))/elapsed.Seconds(),
		ms(pct(lats, 50)), ms(pct(lats, 99)))
}

func pct(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := (len(sorted)*p + 99) / 100
	return sorted[min(max(i-1, 0), len(sorted)-1)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "ledgerbench: "+format+"\n", args...)
}

// startCPUProfile writes a CPU profile to path ("" for none) until stop is
// called.
func startCPUProfile(path string) (stop func(), err error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}
