package freeport

import (
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
)

// Range is the span of ports Addr draws from: [Low, Low+Span).
const (
	Low  = 20000
	Span = 12000
)

var (
	mu   sync.Mutex
	used = map[int]bool{}
)

// Addr returns "127.0.0.1:PORT" for a port nobody listened on a moment
// ago and that this process has not returned before. When 200 draws from
// the range all fail it falls back to a kernel-chosen port.
func Addr() (string, error) {
	mu.Lock()
	defer mu.Unlock()
	for range 200 {
		port := Low + rand.IntN(Span)
		if used[port] {
			continue
		}
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue
		}
		ln.Close()
		used[port] = true
		return ln.Addr().String(), nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}
