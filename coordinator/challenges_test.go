package coordinator

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	coordinatorv1 "github.com/fedtune/fedtune/api/coordinator/v1"
	"github.com/fedtune/fedtune/ledger/client"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// One caller holds at most perCaller unanswered, unexpired challenges;
// answering or expiry frees its slots; at the global limit expired
// challenges go first, then the oldest, and no caller is refused for
// others' challenges.
func TestChallengeTable(t *testing.T) {
	const ttl = time.Minute
	t0 := time.Unix(1000, 0)
	tb := &challengeTable{max: 5, perCaller: 3}
	issue := func(c, caller string, at time.Time) (int, error) { return tb.issue(c, caller, at, ttl) }
	for i := range 3 {
		if _, err := issue(fmt.Sprint("a", i), "host 10.0.0.1", t0); err != nil {
			t.Fatal(err)
		}
	}
	_, err := issue("a3", "host 10.0.0.1", t0)
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "host 10.0.0.1 already holds 3 unanswered join challenges, the most one caller may hold") {
		t.Fatalf("a 4th challenge for one caller: %v; want ResourceExhausted naming the caller and the limit", err)
	}
	if _, err := issue("b0", "key bbbb", t0); err != nil {
		t.Fatalf("another caller: %v", err)
	}
	// Answering frees a slot; an answered challenge cannot be used twice.
	if !tb.take("a0", t0.Add(time.Second)) || tb.take("a0", t0.Add(time.Second)) {
		t.Fatal("take a0: want true once, then false")
	}
	if _, err := issue("a3", "host 10.0.0.1", t0.Add(time.Second)); err != nil {
		t.Fatalf("after answering one: %v", err)
	}
	// The table is full (a1 a2 b0 a3 and one more): the next drops the oldest, a1.
	if _, err := issue("c0", "key cccc", t0.Add(2*time.Second)); err != nil {
		t.Fatal(err)
	}
	if n, err := issue("c1", "key cccc", t0.Add(2*time.Second)); err != nil || n != 1 {
		t.Fatalf("issue at the global limit: dropped %d, %v; want 1 dropped", n, err)
	}
	if tb.take("a1", t0.Add(3*time.Second)) {
		t.Fatal("a1, the oldest, should have been dropped")
	}
	// Expired challenges go before live ones, and do not count.
	later := t0.Add(ttl + 500*time.Millisecond) // a2 b0 expired; a3 c0 c1 live
	if n, err := issue("d0", "key dddd", later); err != nil || n != 0 {
		t.Fatalf("issue after expiry: dropped %d live, %v; want none", n, err)
	}
	if tb.len() != 4 || !tb.take("a3", later) || tb.take("b0", later) {
		t.Fatalf("after expiry: %d challenges; want a3 c0 c1 d0", tb.len())
	}
	// An expired challenge is refused even when still held.
	if _, err := issue("e0", "key eeee", later); err != nil {
		t.Fatal(err)
	}
	if tb.take("e0", later.Add(ttl+time.Second)) {
		t.Fatal("an expired challenge was accepted")
	}
}

// The service's Challenge counts callers by host without TLS (any port),
// and Join consumes the challenge it answers.
func TestChallengePerHost(t *testing.T) {
	s, err := newTestService(t, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	from := func(addr string) context.Context {
		a, err := net.ResolveTCPAddr("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		return peer.NewContext(context.Background(), &peer.Peer{Addr: a})
	}
	var got [][]byte
	for i := range MaxChallengesPerCaller {
		r, err := s.Challenge(from(fmt.Sprintf("10.1.2.3:%d", 4000+i)), &coordinatorv1.ChallengeRequest{})
		if err != nil {
			t.Fatalf("challenge %d: %v", i, err)
		}
		got = append(got, r.Challenge)
	}
	_, err = s.Challenge(from("10.1.2.3:5999"), &coordinatorv1.ChallengeRequest{})
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "host 10.1.2.3 already holds") {
		t.Fatalf("one more from the same host: %v; want ResourceExhausted naming the host", err)
	}
	if _, err := s.Challenge(from("10.9.9.9:4000"), &coordinatorv1.ChallengeRequest{}); err != nil {
		t.Fatalf("another host: %v", err)
	}
	// A Join, even a bad one, uses up its challenge and frees the slot.
	pub, _, _ := ed25519.GenerateKey(nil)
	_, other, _ := ed25519.GenerateKey(nil)
	_, err = s.Join(context.Background(), &coordinatorv1.JoinRequest{PublicKey: pub, Challenge: got[0], Signature: client.SignChallenge(other, got[0])})
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("join with a bad signature: %v; want Unauthenticated", err)
	}
	if _, err := s.Challenge(from("10.1.2.3:6000"), &coordinatorv1.ChallengeRequest{}); err != nil {
		t.Fatalf("after a join used one: %v", err)
	}
}
