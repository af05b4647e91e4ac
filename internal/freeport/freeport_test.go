package freeport

import (
	"net"
	"strconv"
	"testing"
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
