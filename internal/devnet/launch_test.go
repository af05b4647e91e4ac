package devnet

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestLaunchGivesUp: a coordinator that stays unavailable ends Launch
// with what was tried and where the logs are, instead of a wait without
// end.
func TestLaunchGivesUp(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n := prepare(t, ctx, Options{Trainers: 1, MinTrainers: 1, PretrainSteps: 1})
	defer func(w time.Duration) { launchWait = w }(launchWait)
	launchWait = time.Second
	n.Coordinator = "127.0.0.1:1" // nothing listens there
	_, err := n.Launch(ctx)
	if err == nil || ctx.Err() != nil || !strings.Contains(err.Error(), "was unavailable for 1s") || strings.Contains(err.Error(), "rpc error") {
		t.Fatalf("Launch against no coordinator: %v (ctx %v)", err, ctx.Err())
	}
}
