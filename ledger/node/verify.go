package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"

	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/fsm"
	"github.com/fedtune/fedtune/ledger/pebblestore"
)

// VerifyDataDir re-derives the chain stored in a stopped node's data
// directory from its genesis (fsm.VerifyChainContext) and returns the
// height verified. A broken chain gives an error wrapping a
// *ledger.VerifyError that names the first bad height and what broke. log
// (nil: discard) gets a progress line every few seconds.
func VerifyDataDir(ctx context.Context, dataDir string, log *slog.Logger) (uint64, error) {
	g, err := ledger.LoadGenesis(filepath.Join(dataDir, genesisName))
	if err != nil {
		return 0, err
	}
	dbDir := filepath.Join(dataDir, "pebble")
	if _, err := os.Stat(dbDir); err != nil {
		return 0, fmt.Errorf("%w: %s: %w", ErrNotInitialized, dataDir, err)
	}
	db, err := pebblestore.Open(dbDir, pebblestore.Options{})
	if errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EWOULDBLOCK) {
		return 0, fmt.Errorf("%s is locked by another process: is its ledger node still running? Stop it first (a running chain is checked with fedtune audit verify --ledger): %w", dbDir, err)
	}
	if err != nil {
		return 0, err
	}
	defer db.Close()
	f, err := fsm.New(db.State(), g, fsm.Options{})
	if err != nil {
		return 0, err
	}
	head := f.Height()
	if err := fsm.VerifyChainContext(ctx, db.State(), g, fsm.VerifyOptions{Logger: log}); err != nil {
		return 0, err
	}
	return head, nil
}
