package verifier

import (
	"context"
	"strings"
	"testing"

	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
)

// The node runs end to end in internal/devnet's TestNetworkSpotCheck (a
// real ledger, coordinator, trainers and replays); here, its
// configuration is checked.
func TestNewRefusesBadConfig(t *testing.T) {
	key, err := ledger.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	replay := ReplayFunc(func(context.Context, Check) (Result, error) { return Result{Passed: true}, nil })
	lc := &client.Client{}
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no ledger", Config{Key: key, Replayer: replay}, "no ledger client"},
		{"no key", Config{Ledger: lc, Replayer: replay}, "no ed25519 key"},
		{"no replayer", Config{Ledger: lc, Key: key}, "no replayer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
	n, err := New(Config{Ledger: lc, Key: key, Replayer: replay})
	if err != nil {
		t.Fatal(err)
	}
	if n.cfg.From != 1 || n.cfg.Retry <= 0 || len(n.ID()) != 64 || n.Registry() == nil {
		t.Fatalf("defaults: %+v", n.cfg)
	}
}
