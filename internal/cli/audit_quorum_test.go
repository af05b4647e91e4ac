package cli

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/fedtune/fedtune/internal/audit"
	"github.com/fedtune/fedtune/ledger"
)

// quorumCluster is a three-node ledger run by "fedtune ledger start" in
// this process, on loopback sockets, with a genesis file that lists the
// three node keys.
type quorumCluster struct {
	dir, genesis string
	addrs        []string          // gRPC addresses, node-1 first
	leader       string            // the leader's gRPC address
	keys, ids    map[string]string // member name → key file, member ID
}

func startQuorumCluster(t *testing.T, members map[string]string) *quorumCluster {
	t.Helper()
	q := &quorumCluster{dir: t.TempDir(), keys: map[string]string{}, ids: map[string]string{}}
	keygen := func(name string) (pub string) {
		q.keys[name], q.ids[name], pub = testKey(t, q.dir, name)
		return pub
	}
	var g strings.Builder
	g.WriteString("chain_id: quorum-cli\nmembers:\n")
	for _, name := range []string{"admin", "coord", "agg", "t1", "t2"} {
		fmt.Fprintf(&g, "  - name: %s\n    role: %s\n    public_key: %s\n", name, members[name], keygen(name))
	}
	g.WriteString("nodes:\n")
	nodes := []string{"node-1", "node-2", "node-3"}
	var peers strings.Builder
	raft := map[string]string{}
	for _, name := range nodes {
		fmt.Fprintf(&g, "  - name: %s\n    public_key: %s\n", name, keygen(name))
		grpcAddr, raftAddr := freeAddr(t), freeAddr(t)
		q.addrs, raft[name] = append(q.addrs, grpcAddr), raftAddr
		fmt.Fprintf(&peers, "  - id: %s\n    raft_address: %s\n    grpc_address: %s\n", q.ids[name], raftAddr, grpcAddr)
	}
	g.WriteString("policy:\n  block_interval: 5ms\n")
	q.genesis = filepath.Join(q.dir, "genesis.yaml")
	if err := os.WriteFile(q.genesis, []byte(g.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	for i, name := range nodes {
		mustRun(t, "ledger", "init", "--genesis", q.genesis, "--data", filepath.Join(q.dir, name), "--key", q.keys[name])
		cfg := fmt.Sprintf("data_dir: %s\nkey_file: %s.key\nraft_address: %s\ngrpc_address: %s\nbootstrap: true\npeers:\n%sraft:\n  heartbeat_timeout: 500ms\n  election_timeout: 500ms\n  leader_lease_timeout: 250ms\n",
			name, name, raft[name], q.addrs[i], peers.String())
		cfgPath := filepath.Join(q.dir, name+".yaml")
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		var logs syncBuffer
		done := make(chan error, 1)
		go func() { done <- RunWith(ctx, []string{"ledger", "start", "--config", cfgPath}, &syncBuffer{}, &logs) }()
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("%s: ledger start returned %v", name, err)
			}
			if t.Failed() {
				t.Logf("%s log:\n%s", name, logs.String())
			}
		})
	}
	leader := regexp.MustCompile(`leader:  [0-9a-f]{64} (\S+)`)
	for _, addr := range q.addrs {
		for deadline := time.Now().Add(30 * time.Second); ; {
			out, err := run(t, "ledger", "status", "--addr", addr)
			if m := leader.FindStringSubmatch(out); err == nil && m != nil {
				q.leader = m[1]
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("node %s sees no leader: %v\n%s", addr, err, out)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return q
}

// TestAuditLineageQuorum records one committed round (two datasets, two
// updates, one of them rejected) on a three-node ledger and reads its
// lineage with --quorum: anchored in blocks cosigned by the three nodes;
// a quorum above the nodes, or a genesis whose nodes did not cosign,
// fails without printing a lineage.
func TestAuditLineageQuorum(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three ledger nodes")
	}
	q := startQuorumCluster(t, map[string]string{"admin": "admin", "coord": "coordinator", "agg": "aggregator", "t1": "trainer", "t2": "trainer"})
	addr := q.addrs[0]
	submit := func(k, typ, body string) {
		t.Helper()
		// Through the leader: tx submit reads the signer's nonce from the
		// node it is given, and a follower may not have applied the last tx.
		if out := mustRun(t, "tx", "submit", typ, "--key", q.keys[k], "--addr", q.leader, "--body", body); !strings.Contains(out, "committed") {
			t.Fatalf("tx submit %s printed %q", typ, out)
		}
	}
	dg := func(s string) string { return hex.EncodeToString(ledgerDigest(s)) }
	base, model := dg("base"), dg("model")
	submit("coord", "ModelRegistered", fmt.Sprintf(`{"digest":%q,"name":"tiny","licence":"Apache-2.0","source":"test"}`, base))
	for _, tr := range []string{"t1", "t2"} {
		submit(tr, "DatasetRegistered", fmt.Sprintf(`{"digest":%q,"name":"%s-data","licence":"CC0-1.0","source":"test","samples":10,"root":%q,"bytes":100}`,
			dg("data "+tr), tr, dg("root "+tr)))
	}
	submit("coord", "JobRegistered", fmt.Sprintf(`{"job_id":"job","recipe":{"strategy":"fedavg","compression":"none","min_trainers":1,"aggregators":[%q]}}`, q.ids["agg"]))
	submit("coord", "RoundOpened", fmt.Sprintf(`{"job_id":"job","round":1,"config_digest":%q,"base_model":%q,"strategy":"fedavg","trainers":[%q,%q],"deadline":%q}`,
		dg("config"), base, q.ids["t1"], q.ids["t2"], time.Now().Add(time.Hour).UTC().Format(time.RFC3339)))
	for _, tr := range []string{"t1", "t2"} {
		submit(tr, "UpdateSubmitted", fmt.Sprintf(`{"job_id":"job","round":1,"update_digest":%q,"dataset_digest":%q,"samples":10}`, dg("update "+tr), dg("data "+tr)))
	}
	submit("agg", "UpdateRejected", fmt.Sprintf(`{"job_id":"job","round":1,"update_digest":%q,"reason":"norm too large"}`, dg("update t2")))
	submit("agg", "RoundCommitted", fmt.Sprintf(`{"job_id":"job","round":1,"model_digest":%q,"strategy":"fedavg","contributors":[{"trainer":%q,"update_digest":%q,"weight":1}]}`,
		model, q.ids["t1"], dg("update t1")))
	// Every node has applied the commit once each answers the lineage.
	for _, a := range q.addrs {
		waitOutput(t, "round 1 of job job", "audit", "lineage", model, "--addr", a)
	}

	// Base model, t1's dataset (the one a contributor cites), RoundOpened,
	// two updates, the rejection and the commit (which is also the
	// model's record).
	anchored := regexp.MustCompile(`(?m)^anchored: 7 records in \d+ blocks of chain "quorum-cli", each cosigned by >= [23] (of 3 nodes \(quorum 2\)|nodes \(quorum 2; 3 distinct cosigners, node keys not pinned to a genesis file\))$`)
	out := mustRun(t, "audit", "lineage", model, "--addr", addr, "--quorum", "2", "--genesis", q.genesis)
	if !anchored.MatchString(out) || !strings.Contains(out, "of 3 nodes") || !strings.Contains(out, "round 1 of job job") || !strings.Contains(out, "rejected ") {
		t.Fatalf("lineage --quorum 2 --genesis printed:\n%s", out)
	}
	out = mustRun(t, "audit", "lineage", model, "--addr", q.addrs[2], "--quorum", "2")
	if !anchored.MatchString(out) || !strings.Contains(out, "not pinned") {
		t.Fatalf("lineage --quorum 2 printed:\n%s", out)
	}
	out = mustRun(t, "audit", "lineage", model, "--addr", addr, "--quorum", "3", "--genesis", q.genesis, "--format", "json")
	var g audit.Graph
	if err := json.Unmarshal([]byte(out), &g); err != nil {
		t.Fatalf("json: %v\n%s", err, out)
	}
	if g.Anchored == nil || g.Anchored.Quorum != 3 || g.Anchored.Records != 7 || g.Anchored.MinCosignatures != 3 || g.Anchored.Nodes != 3 ||
		len(g.Anchored.Cosigners) != 3 || g.Model.Digest != model || len(g.Rounds) != 1 || len(g.Rounds[0].Rejected) != 1 {
		t.Fatalf("lineage --quorum 3 json:\n%s", out)
	}
	// Without --quorum nothing changes.
	if out := mustRun(t, "audit", "lineage", model, "--addr", addr, "--format", "json"); strings.Contains(out, "anchored") {
		t.Fatalf("lineage without --quorum:\n%s", out)
	}

	// Too many cosignatures asked for: the node cannot gather them ...
	out, err := run(t, "audit", "lineage", model, "--addr", addr, "--quorum", "4")
	if err == nil || out != "" || !strings.Contains(err.Error(), "not enough cosignatures") || !strings.Contains(err.Error(), "has 3 of 4 required") {
		t.Fatalf("--quorum 4: %v\n%s", err, out)
	}
	// ... and the genesis lists only three nodes.
	out, err = run(t, "audit", "lineage", model, "--addr", addr, "--quorum", "4", "--genesis", q.genesis)
	if err == nil || out != "" || !strings.Contains(err.Error(), "quorum 4 exceeds the 3 nodes that may cosign") {
		t.Fatalf("--quorum 4 --genesis: %v\n%s", err, out)
	}
	// A genesis naming other nodes (here: the members' keys): the node
	// proves none of their keys, so the client refuses it at the TLS
	// handshake.
	other := filepath.Join(q.dir, "other-genesis.yaml")
	gb, err := os.ReadFile(q.genesis)
	if err != nil {
		t.Fatal(err)
	}
	head, _, _ := strings.Cut(string(gb), "nodes:\n")
	var nb strings.Builder
	nb.WriteString(head + "nodes:\n")
	for _, m := range []string{"admin", "coord", "agg"} {
		pub, err := ledger.LoadPublicKey(filepath.Join(q.dir, m+".pub"))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&nb, "  - name: %s\n    public_key: %s\n", m, hex.EncodeToString(pub))
	}
	if err := os.WriteFile(other, []byte(nb.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err = run(t, "audit", "lineage", model, "--addr", addr, "--quorum", "2", "--genesis", other)
	if err == nil || out != "" || !strings.Contains(err.Error(), pinRefused) {
		t.Fatalf("--genesis of other nodes: %v\n%s", err, out)
	}
	// A genesis that lists no nodes cannot pin anything: refused, not
	// taken as "any key counts".
	nonodes := filepath.Join(q.dir, "no-nodes-genesis.yaml")
	if err := os.WriteFile(nonodes, []byte(head), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err = run(t, "audit", "lineage", model, "--addr", addr, "--quorum", "2", "--genesis", nonodes)
	if err == nil || out != "" || !strings.Contains(err.Error(), "lists no nodes") {
		t.Fatalf("--genesis without nodes: %v\n%s", err, out)
	}
	if _, err := run(t, "ledger", "blocks", "--addr", addr, "--quorum", "1", "--genesis", nonodes); err == nil || !strings.Contains(err.Error(), "lists no nodes") {
		t.Fatalf("ledger blocks --genesis without nodes: %v", err)
	}
	// ledger blocks pins the cosigners the same way.
	if out := mustRun(t, "ledger", "blocks", "--addr", addr, "--from", "1", "--quorum", "2", "--genesis", q.genesis); !strings.Contains(out, "cosigs=") {
		t.Fatalf("ledger blocks --quorum 2 --genesis printed:\n%s", out)
	}
	if _, err := run(t, "ledger", "blocks", "--addr", addr, "--from", "1", "--quorum", "2", "--genesis", other); err == nil ||
		!strings.Contains(err.Error(), pinRefused) {
		t.Fatalf("ledger blocks --genesis of other nodes: %v", err)
	}
	// --genesis without --quorum pins the node (and so no warning).
	if out, err := run(t, "audit", "lineage", model, "--addr", addr, "--genesis", q.genesis); err != nil || !strings.Contains(out, model[:12]) {
		t.Fatalf("--genesis without --quorum: %v\n%s", err, out)
	}
	// Flags that do not go together.
	if _, err := run(t, "audit", "lineage", model, "--export", other, "--quorum", "2"); err == nil || !strings.Contains(err.Error(), "--quorum reads from a node") {
		t.Fatalf("--export with --quorum: %v", err)
	}

	// audit contains anchors the lineage before it asks anyone: with the
	// other genesis it stops there, with the right one it gets as far as
	// the (absent) coordinator.
	sample := filepath.Join(q.dir, "sample.txt")
	if err := os.WriteFile(sample, []byte("a sample\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	contains := []string{"audit", "contains", "--model", model, "--sample", sample, "--ledger", addr, "--coordinator", freeAddr(t), "--insecure", "--timeout", "1s", "--quorum", "2"}
	if _, err := run(t, append(contains, "--genesis", other)...); err == nil || !strings.Contains(err.Error(), pinRefused) {
		t.Fatalf("contains with the other genesis: %v", err)
	}
	if _, err := run(t, append(contains, "--genesis", q.genesis)...); err == nil || errors.Is(err, audit.ErrNotAnchored) || !strings.Contains(err.Error(), "ask the coordinator") {
		t.Fatalf("contains with the chain's genesis: %v", err)
	}
}

// pinRefused is in the error of a client pinned by a genesis file whose
// nodes the server is not.
const pinRefused = "is not one of the 3 ledger nodes pinned by genesis"
