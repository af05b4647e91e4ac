package freeport

import (
	"errors"
	"io/fs"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"
)

// Range is the span of ports Addr draws from: [Low, Low+Span).
const (
	Low  = 20000
	Span = 12000
)

// Hold is how long a port Addr returned stays reserved for other
// processes: long enough for the caller to start the process that binds it.
const Hold = 2 * time.Minute

var (
	mu   sync.Mutex
	used = map[int]bool{}
	// dir holds one reservation file per port returned recently, shared
	// by every process on the machine ("" when it cannot be made).
	dir = sync.OnceValue(func() string {
		d := filepath.Join(os.TempDir(), "fedtune-freeport")
		if err := os.MkdirAll(d, 0o777); err != nil {
			return ""
		}
		return d
	})
)

// Addr returns "127.0.0.1:PORT" for a port nobody listened on a moment
// ago, that this process has not returned before, and that no other
// process on the machine took from Addr within Hold. When 200 draws from
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
		if !reserve(port, time.Now()) {
			continue
		}
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

// reserve claims port for this process among all of the machine's: it
// creates the port's file in dir, or takes over one older than Hold. It
// says false when another process holds the port. Without a shared folder
// every port is free to claim.
func reserve(port int, now time.Time) bool {
	d := dir()
	if d == "" {
		return true
	}
	name := filepath.Join(d, strconv.Itoa(port))
	for range 2 {
		f, err := os.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o666)
		if err == nil {
			f.Close()
			return true
		}
		if !errors.Is(err, fs.ErrExist) {
			return true // no reservations here: fall back to this process's own
		}
		st, err := os.Stat(name)
		if err != nil || now.Sub(st.ModTime()) < Hold {
			return false
		}
		os.Remove(name) // stale: the port's holder has long bound it or given up
	}
	return false
}
