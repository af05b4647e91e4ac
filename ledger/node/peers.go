package node

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"

	ledgerv1 "github.com/fedtune/fedtune/api/ledger/v1"
)

// peerDir maps node IDs to their raft and gRPC addresses. It is kept in
// memory and saved to peers.json in the data directory on every change.
type peerDir struct {
	path string

	mu    sync.Mutex
	peers map[string]PeerConfig
}

// loadPeerDir reads path if it exists and merges seeds into it.
func loadPeerDir(path string, seeds []PeerConfig) (*peerDir, error) {
	d := &peerDir{path: path, peers: map[string]PeerConfig{}}
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		var list []PeerConfig
		if err := json.Unmarshal(data, &list); err != nil {
			return nil, fmt.Errorf("peer directory %s: %w", path, err)
		}
		for _, p := range list {
			d.peers[p.ID] = p
		}
	case !os.IsNotExist(err):
		return nil, fmt.Errorf("peer directory: %w", err)
	}
	for _, p := range seeds {
		d.peers[p.ID] = p
	}
	return d, d.save()
}

// get returns the entry for id.
func (d *peerDir) get(id string) (PeerConfig, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	p, ok := d.peers[id]
	return p, ok
}

// put adds or replaces entries, saving the directory if it changed.
func (d *peerDir) put(ps ...PeerConfig) error {
	d.mu.Lock()
	changed := false
	for _, p := range ps {
		if p.ID == "" || p.GRPCAddress == "" {
			continue
		}
		if old, ok := d.peers[p.ID]; !ok || old != p {
			d.peers[p.ID] = p
			changed = true
		}
	}
	d.mu.Unlock()
	if !changed {
		return nil
	}
	return d.save()
}

// list returns all entries sorted by ID.
func (d *peerDir) list() []PeerConfig {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]PeerConfig, 0, len(d.peers))
	for _, p := range d.peers {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// save writes the directory atomically (temp file, fsync, rename).
func (d *peerDir) save() error {
	data, err := json.MarshalIndent(d.list(), "", "  ")
	if err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return writeFileAtomic(d.path, data, 0o644)
}

// writeFileAtomic writes data to path through a synced temp file and a
// rename, so readers see the old or the new content, never a mix.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp, mode)
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if dir, err := os.Open(filepath.Dir(path)); err == nil {
		_ = dir.Sync()
		dir.Close()
	}
	return nil
}

func peerToProto(p PeerConfig, suffrage string) *ledgerv1.Peer {
	return &ledgerv1.Peer{NodeId: p.ID, RaftAddress: p.RaftAddress, GrpcAddress: p.GRPCAddress, Suffrage: suffrage}
}

func peerFromProto(p *ledgerv1.Peer) PeerConfig {
	if p == nil {
		return PeerConfig{}
	}
	return PeerConfig{ID: p.NodeId, RaftAddress: p.RaftAddress, GRPCAddress: p.GrpcAddress}
}
