package freeport

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

func TestAddrDistinctBindableOutsideEphemeral(t *testing.T) {
	seen := map[string]bool{}
	for range 50 {
		a, err := Addr()
		if err != nil {
			t.Fatal(err)
		}
		if seen[a] {
			t.Fatalf("Addr returned %s twice", a)
		}
		seen[a] = true
		_, p, _ := net.SplitHostPort(a)
		port, _ := strconv.Atoi(p)
		if port < Low || port >= Low+Span {
			t.Errorf("port %d outside [%d, %d)", port, Low, Low+Span)
		}
		ln, err := net.Listen("tcp", a)
		if err != nil {
			t.Fatalf("returned address %s cannot be bound: %v", a, err)
		}
		ln.Close()
	}
}

func TestAddrSkipsTakenPort(t *testing.T) {
	// Hold every port but a few of the range is impractical; hold one we
	// were given and check it is never handed out again.
	a, err := Addr()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", a)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for range 200 {
		b, err := Addr()
		if err != nil {
			t.Fatal(err)
		}
		if b == a {
			t.Fatalf("Addr returned the held address %s", a)
		}
	}
}

func TestReserveAcrossProcesses(t *testing.T) {
	// Another process's reservation is a file in the shared folder: a
	// fresh one keeps the port from Addr, a stale one does not.
	d := dir()
	if d == "" {
		t.Skip("no shared reservation folder")
	}
	port := Low + Span - 1
	name := filepath.Join(d, strconv.Itoa(port))
	os.Remove(name)
	t.Cleanup(func() { os.Remove(name) })
	now := time.Now()
	if !reserve(port, now) {
		t.Fatal("first reservation refused")
	}
	if reserve(port, now.Add(Hold/2)) {
		t.Fatal("a port reserved a moment ago was reserved again")
	}
	if !reserve(port, now.Add(Hold+time.Second)) {
		t.Fatal("a stale reservation was not taken over")
	}
}
