package adversarial

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	ledgerv1 "github.com/fedtune/fedtune/api/ledger/v1"
	"github.com/fedtune/fedtune/datasets"
	"github.com/fedtune/fedtune/internal/devnet"
	"github.com/fedtune/fedtune/internal/dspub"
	"github.com/fedtune/fedtune/internal/freeport"
	"github.com/fedtune/fedtune/internal/tlsid"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
)

// TestAttackQueryFlood: strangers (fresh TLS keys, no member) flood a
// ledger node's read RPCs (Query, GetBlock, GetTx, Status, StreamBlocks in
// turn). They are answered ResourceExhausted naming the
// non-members' shared read limit (or their host's own read rate: a
// stranger is named by its host, whatever key it shows), while an honest member querying at its
// own pace is served every time. A member flooding past its own read rate
// is refused naming limits.query_rate, and another member is still
// served; through the ledger client (which waits out a refusal) the same
// member's queries all get answered, paced. The node's metrics count both.
func TestAttackQueryFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three ledger nodes")
	}
	ctx := testContext(t, 3*time.Minute)
	n := prepareNet(t, ctx, devnet.Options{})
	metricsAddr := ""
	for i := 1; i <= 3; i++ {
		m, err := freeport.Addr()
		if err != nil {
			t.Fatal(err)
		}
		if i == 1 {
			metricsAddr = m
		}
		p := filepath.Join(n.Dir, fmt.Sprintf("node-%d.yaml", i))
		f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		_, err = fmt.Fprintf(f, "metrics_address: %s\nlimits:\n  query_rate: 40\n  query_burst: 40\n  non_member_query_rate: 10\n  non_member_query_burst: 20\n", m)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	nw, err := n.StartLedgers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nw.Stop)
	waitSettled(t, ctx, n)
	adminID := n.ID("admin")
	member, err := n.Ledger(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer member.Close()

	// The flood: 4 strangers, each with its own fresh key, as fast as
	// they can for 3 seconds.
	const flood = 3 * time.Second
	var refusedBy [5]atomic.Bool
	var served, refused atomic.Int64
	var refusal atomic.Value // the last refusal naming the shared limit
	fctx, stop := context.WithTimeout(ctx, flood)
	defer stop()
	var wg sync.WaitGroup
	for range 4 {
		key, err := ledger.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		c := raftDialGRPC(t, n.LedgerGRPC[0], key)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; fctx.Err() == nil; i++ {
				// Every read RPC in turn: Query, GetBlock, GetTx, Status,
				// StreamBlocks (refused on its first receive).
				var err error
				switch rpc := i % 5; rpc {
				case 0:
					_, err = c.Query(fctx, &ledgerv1.QueryRequest{Kind: ledgerv1.QueryKind_QUERY_KIND_MEMBER, Key: adminID})
				case 1:
					_, err = c.GetBlock(fctx, &ledgerv1.GetBlockRequest{Height: 0})
				case 2:
					_, err = c.GetTx(fctx, &ledgerv1.GetTxRequest{Hash: make([]byte, 32)})
					if status.Code(err) == codes.NotFound {
						err = nil // admitted, and answered
					}
				case 3:
					_, err = c.Status(fctx, &ledgerv1.StatusRequest{})
				case 4:
					var st ledgerv1.Ledger_StreamBlocksClient
					if st, err = c.StreamBlocks(fctx, &ledgerv1.StreamBlocksRequest{FromHeight: 0}); err == nil {
						_, err = st.Recv()
					}
				}
				if rpc := i % 5; status.Code(err) == codes.ResourceExhausted {
					refusedBy[rpc].Store(true)
				}
				switch {
				case err == nil:
					served.Add(1)
				case status.Code(err) == codes.ResourceExhausted:
					refused.Add(1)
					if strings.Contains(err.Error(), "non_member_query_rate") {
						refusal.Store(err.Error())
					} else if !strings.Contains(err.Error(), "is over its read rate") {
						t.Errorf("stranger refused with %v", err)
					}
				case fctx.Err() != nil || status.Code(err) == codes.DeadlineExceeded: // the flood's end
				default:
					t.Errorf("stranger query: %v", err)
					return
				}
			}
		}()
	}
	// Meanwhile an honest member queries ten times a second: every query
	// is answered.
	var honest int
	for fctx.Err() == nil {
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := member.Query(qctx, ledgerv1.QueryKind_QUERY_KIND_MEMBER, adminID, 0)
		cancel()
		if err != nil {
			t.Fatalf("honest member's query %d during the flood: %v", honest+1, err)
		}
		honest++
		time.Sleep(100 * time.Millisecond)
	}
	wg.Wait()
	msg, _ := refusal.Load().(string)
	t.Logf("strangers: %d served, %d refused; honest member: %d served; refusal: %s", served.Load(), refused.Load(), honest, msg)
	if refused.Load() == 0 || !strings.Contains(msg, "not members of the chain") || !strings.Contains(msg, "limits.non_member_query_rate") {
		t.Fatalf("strangers' flood: %d refused, message %q; want ResourceExhausted naming limits.non_member_query_rate", refused.Load(), msg)
	}
	// The shared budget: a burst of 20, then 10 a second (slack for a
	// slow machine).
	if max := int64(20 + 10*flood.Seconds() + 15); served.Load() > max {
		t.Errorf("strangers were served %d queries in %v; the shared budget allows about %d", served.Load(), flood, max)
	}
	for rpc, name := range []string{"Query", "GetBlock", "GetTx", "Status", "StreamBlocks"} {
		if !refusedBy[rpc].Load() {
			t.Errorf("no stranger's %s was refused", name)
		}
	}
	if honest < 10 {
		t.Errorf("the honest member got only %d queries in", honest)
	}

	// A member over its own read rate is refused, naming it; another
	// member is still served.
	coord := raftDialGRPC(t, n.LedgerGRPC[0], n.Keys["coordinator"])
	var memberRefusal error
	for range 200 {
		if _, err := coord.Query(ctx, &ledgerv1.QueryRequest{Kind: ledgerv1.QueryKind_QUERY_KIND_MEMBER, Key: adminID}); err != nil {
			memberRefusal = err
			break
		}
	}
	if status.Code(memberRefusal) != codes.ResourceExhausted || !strings.Contains(memberRefusal.Error(), "is over its read rate of 40 requests/s") ||
		!strings.Contains(memberRefusal.Error(), "limits.query_rate") {
		t.Fatalf("a member's 200 queries at once: %v; want ResourceExhausted naming limits.query_rate", memberRefusal)
	}
	if _, err := member.Query(ctx, ledgerv1.QueryKind_QUERY_KIND_MEMBER, adminID, 0); err != nil {
		t.Fatalf("another member after one flooded: %v", err)
	}
	// The ledger client waits out the limit instead of failing: the same
	// member, through it, gets 80 queries in a row answered (paced).
	cc, err := client.Dial(ctx, n.LedgerGRPC[0], n.Keys["coordinator"], tlsid.AllowIDs(n.ID("node-1"), n.ID("node-2"), n.ID("node-3")))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	start := time.Now()
	for i := range 80 {
		if _, err := cc.Query(ctx, ledgerv1.QueryKind_QUERY_KIND_MEMBER, adminID, 0); err != nil {
			t.Fatalf("paced query %d: %v", i, err)
		}
	}
	t.Logf("80 queries through the client over the limit took %v", time.Since(start))

	// The metrics count the refusals and the reads served.
	res, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	for _, re := range []string{
		`fedtune_ledger_refused_total\{reason="read_rate_limited_non_members"\} (\d+)`,
		`fedtune_ledger_refused_total\{reason="read_rate_limited"\} (\d+)`,
		`fedtune_ledger_reads_total\{caller="member",rpc="query"\} (\d+)`,
		`fedtune_ledger_reads_total\{caller="non_member",rpc="query"\} (\d+)`,
	} {
		m := regexp.MustCompile(re).FindSubmatch(body)
		if m == nil {
			t.Errorf("metrics lack %s", re)
			continue
		}
		if v, _ := strconv.Atoi(string(m[1])); v == 0 {
			t.Errorf("metric %s is 0", re)
		}
	}
}

// TestAttackPublishedListing: a stranger asks the published-datasets
// listing for four billion entries after names no dataset holds:
// the node answers one page bounded by limits.max_range (and a byte
// bound), in name order, with where to go on; nothing changes.
func TestAttackPublishedListing(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three ledger nodes")
	}
	ctx := testContext(t, 3*time.Minute)
	nw := startLedgersWithLimits(t, ctx, "max_range: 2")
	n := nw.Net
	c, err := n.Ledger(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i, name := range []string{"c-set", "a-set", "b-set"} {
		publishTiny(t, ctx, n, c, fmt.Sprintf("trainer-%d", i%2+1), name)
	}
	before := waitSettled(t, ctx, n)
	key, err := ledger.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	stranger := raftDialGRPC(t, n.LedgerGRPC[1], key)
	for _, after := range []string{"", "\x00", "a-set~", strings.Repeat("z", 1<<16)} {
		resp, err := stranger.Query(ctx, &ledgerv1.QueryRequest{Kind: ledgerv1.QueryKind_QUERY_KIND_PUBLISHED_DATASETS, After: after, Limit: 1<<32 - 1, Key: "../../etc"})
		if err != nil {
			t.Fatalf("after %.10q: %v", after, err)
		}
		var p ledger.PublishedPage
		if err := json.Unmarshal(resp.Json, &p); err != nil {
			t.Fatal(err)
		}
		if len(p.Datasets) > 2 {
			t.Fatalf("after %.10q: a page of %d, over max_range 2", after, len(p.Datasets))
		}
		if after == "" && (len(p.Datasets) != 2 || p.Datasets[0].Name != "a-set" || p.Next != "b-set") {
			t.Fatalf("first page: %+v", p)
		}
	}
	all, err := c.PublishedDatasets(ctx)
	if err != nil || len(all) != 3 || all[0].Name != "c-set" || all[2].Name != "b-set" {
		t.Fatalf("the client's listing in publication order: %+v, %v", all, err)
	}
	requireUnchanged(t, ctx, n, before)
}

// publishTiny publishes a five-sample dataset named name as member who
// (no artifacts: the ledger records the manifest only).
func publishTiny(t *testing.T, ctx context.Context, n *devnet.Net, c *client.Client, who, name string) {
	t.Helper()
	key := n.Keys[who]
	d := &datasets.Dataset{Name: name}
	for i := range 5 {
		d.Samples = append(d.Samples, datasets.Sample{ID: fmt.Sprint(i), Text: fmt.Sprintf("%s sample %d", name, i)})
	}
	p, err := datasets.Publish(d, datasets.PublishOptions{Name: name, Format: dspub.FormatText, Licence: "CC0-1.0", ShardSamples: 2,
		Owner: ledger.KeyID(key.Public().(ed25519.PublicKey))})
	if err != nil {
		t.Fatal(err)
	}
	sm, err := dspub.Sign(key, &p.Manifest)
	if err != nil {
		t.Fatal(err)
	}
	nonce, err := c.Nonce(ctx, n.ID(who))
	if err != nil {
		t.Fatal(err)
	}
	tx, err := ledger.SignTx(key, n.ChainID, nonce+1, ledger.DatasetPublished{Manifest: string(sm.Envelope)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.SubmitWait(ctx, tx); err != nil {
		t.Fatalf("publish %s: %v", name, err)
	}
}
