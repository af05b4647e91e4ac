package coordinator

import (
	"slices"
	"testing"

	coordinatorv1 "github.com/fedtune/fedtune/api/coordinator/v1"
)

// A newer streaming session of a trainer replaces its older ones; tasks
// and proofs go to the streaming one; a trainer dropped by the ledger loses
// its sessions and its place among the members.
func TestSessionTable(t *testing.T) {
	var st sessionTable
	yes := func(string) bool { return true }
	s1, err := st.open("t1", []string{"d1"}, t0)
	if err != nil {
		t.Fatal(err)
	}
	if found, _ := st.sendProof("t1", &coordinatorv1.Task{}); found {
		t.Fatal("a proof went to a session that does not stream")
	}
	a := st.activate(s1, yes)
	if a == nil || st.activate(s1, yes) != nil {
		t.Fatal("activate: a session streams once")
	}
	s2, err := st.open("t1", []string{"d1"}, t0)
	if err != nil {
		t.Fatal(err)
	}
	if st.activate(s2, func(string) bool { return false }) != nil {
		t.Fatal("activate ignored the peer check")
	}
	b := st.activate(s2, yes)
	select {
	case <-a.done:
	default:
		t.Fatal("the older session was not closed")
	}
	if st.leave(a) || st.trainerOf(s1) != "" {
		t.Fatal("the replaced session is still in the table")
	}
	if found, sent := st.sendTask("t1", &coordinatorv1.Task{JobId: "j"}); !found || !sent || len(b.tasks) != 1 {
		t.Fatalf("task: found %v sent %v queued %d", found, sent, len(b.tasks))
	}
	if got := st.joined(); !slices.Equal(got, []string{"t1"}) {
		t.Fatalf("joined %v", got)
	}
	if got := st.streaming(); len(got) != 1 || got[0].Trainer != "t1" || !slices.Equal(got[0].Datasets, []string{"d1"}) {
		t.Fatalf("streaming %+v", got)
	}
	st.drop("t1")
	select {
	case <-b.done:
	default:
		t.Fatal("drop left the session open")
	}
	if len(st.memberList()) != 0 || len(st.joined()) != 0 {
		t.Fatalf("after drop: members %v joined %v", st.memberList(), st.joined())
	}
}
