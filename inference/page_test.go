package inference_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/chromedp/chromedp"

	"github.com/fedtune/fedtune/inference"
	"github.com/fedtune/fedtune/inference/receipt"
	"github.com/fedtune/fedtune/ledger"
)

// recorder signs receipts as Signer does and keeps the last one.
type recorder struct {
	inference.Signer
	mu   sync.Mutex
	last []byte
	text string
}

func (r *recorder) Receipt(ctx context.Context, q inference.ReceiptRequest) ([]byte, error) {
	env, err := r.Signer.Receipt(ctx, q)
	r.mu.Lock()
	r.last, r.text = env, q.Response
	r.mu.Unlock()
	return env, err
}

func (r *recorder) envelope() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last
}

// fixtureLineage is testdata/lineage.json: what a ledger-following node
// fills Model.Lineage with.
func fixtureLineage(t *testing.T) *inference.Lineage {
	t.Helper()
	b, err := os.ReadFile("testdata/lineage.json")
	if err != nil {
		t.Fatal(err)
	}
	var l inference.Lineage
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&l); err != nil {
		t.Fatal(err)
	}
	return &l
}

func getLineage(t *testing.T, url string) inference.Lineage {
	t.Helper()
	code, body := get(t, url+inference.LineagePath)
	if code != 200 {
		t.Fatalf("GET %s: %d %s", inference.LineagePath, code, body)
	}
	var l inference.Lineage
	if err := json.Unmarshal([]byte(body), &l); err != nil {
		t.Fatal(err)
	}
	return l
}

func TestLineageEndpoint(t *testing.T) {
	m, _ := tinyModel(t, 21)
	f := serve(t, m, inference.Config{})
	l := getLineage(t, f.url)
	if !l.Standalone || l.Model != m.Digest || len(l.Rounds) != 0 || l.Rounds == nil || l.Datasets == nil {
		t.Fatalf("standalone lineage: %+v", l)
	}
	m2, _ := tinyModel(t, 22)
	m2.Lineage = fixtureLineage(t)
	m2.Block = &receipt.Block{Height: 7, Hash: strings.Repeat("ab", 32)}
	<-f.srv.Swap(m2)
	l = getLineage(t, f.url)
	if l.Standalone || len(l.Rounds) != 3 || len(l.Datasets) != 3 || l.Rounds[2].EvalLoss == nil || *l.Rounds[2].EvalLoss != 3.187 {
		t.Fatalf("ledger lineage: %+v", l)
	}
	// A LineageFunc answers instead of Lineage (nil from it: Lineage).
	var live atomic.Pointer[inference.Lineage]
	m2.LineageFunc = live.Load
	if l = getLineage(t, f.url); len(l.Rounds) != 3 {
		t.Fatalf("LineageFunc answering nil: %+v", l)
	}
	upd := *fixtureLineage(t)
	upd.Rounds = upd.Rounds[:1]
	upd.EvalSource = "the coordinator"
	live.Store(&upd)
	if l = getLineage(t, f.url); len(l.Rounds) != 1 || l.EvalSource != "the coordinator" || l.Block == nil {
		t.Fatalf("LineageFunc's lineage: %+v", l)
	}
	code, body := get(t, f.url+"/")
	if code != 200 || !strings.Contains(body, `<script src="/page/page.js">`) {
		t.Fatalf("GET /: %d %.200s", code, body)
	}
	for _, p := range []string{"/page/page.js", "/page/page.css"} {
		if code, _ := get(t, f.url+p); code != 200 {
			t.Fatalf("GET %s: %d", p, code)
		}
	}
}

// chromium returns the path of Debian's chromium; the test skips without
// one unless FEDTUNE_REQUIRE_BROWSER is set.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("FEDTUNE_REQUIRE_BROWSER") != "" {
		t.Fatal("chromium not found and FEDTUNE_REQUIRE_BROWSER is set: install it (make test-deps)")
	}
	t.Skip("chromium not found (make test-deps installs it)")
	return ""
}

// browser starts headless chromium and returns a chromedp context on it.
func browser(t *testing.T) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium(t)),
		chromedp.NoSandbox, chromedp.DisableGPU, chromedp.WindowSize(1280, 900),
		chromedp.UserDataDir(t.TempDir()))
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancel)
	ctx, cancel2 := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	t.Cleanup(cancel2)
	ctx, cancel3 := context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(cancel3)
	return ctx
}

// TestPageInBrowser opens the page in headless chromium, chats through it
// and checks the receipt and lineage it shows.
func TestPageInBrowser(t *testing.T) {
	ctx := browser(t)
	m, _ := tinyModel(t, 23)
	m.Lineage = fixtureLineage(t)
	_, key, _ := ed25519.GenerateKey(nil)
	rec := &recorder{Signer: inference.Signer{Key: key}}
	f := serve(t, m, inference.Config{Receipter: rec})

	if err := chromedp.Do(ctx,
		chromedp.Navigate(f.url+"/"),
		chromedp.WaitVisible(`#lineage[data-loaded="true"] #plot svg`),
	); err != nil {
		t.Fatal(err)
	}
	status := run(t, ctx, chromedp.Text(`#lineage-status`))
	rounds := run(t, ctx, chromedp.Evaluate[int](`document.querySelectorAll("#rounds tbody tr.round").length`))
	points := run(t, ctx, chromedp.Evaluate[int](`document.querySelectorAll("#plot svg circle.pt").length`))
	datasetRows := run(t, ctx, chromedp.Evaluate[int](`document.querySelectorAll("#datasets tbody tr.dataset").length`))
	licences := run(t, ctx, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll("#datasets td.licence")).map(e => e.textContent)`))
	if err := chromedp.Do(ctx,
		chromedp.SetValue(`#max-tokens`, "16"),
		chromedp.SendKeys(`#msg`, "Hello, model"),
		chromedp.Click(`#send`),
		chromedp.WaitVisible(`.turn.assistant[data-done="true"] .receipt dd[data-field="tokens_hash"]`),
	); err != nil {
		t.Fatal(err)
	}
	tokensHash := run(t, ctx, chromedp.Text(`.receipt dd[data-field="tokens_hash"]`))
	signer := run(t, ctx, chromedp.Text(`.receipt dd[data-field="signer"]`))
	model := run(t, ctx, chromedp.Text(`.receipt dd[data-field="model"]`))
	block := run(t, ctx, chromedp.Text(`.receipt dd[data-field="block"]`))
	envText := run(t, ctx, chromedp.TextContent(`.receipt pre.envelope`))
	answer := run(t, ctx, chromedp.Evaluate[string](`document.querySelector(".turn.assistant .answer").textContent`))
	shot := filepath.Join(t.TempDir(), "page.png")
	if dir := os.Getenv("FEDTUNE_SCREENSHOT_DIR"); dir != "" {
		shot = filepath.Join(dir, "page.png")
	}
	png := run(t, ctx, chromedp.FullScreenshot(100))
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", shot)

	l := m.Lineage
	if want := "3 committed rounds, 3 datasets"; status != want {
		t.Errorf("lineage status %q, want %q", status, want)
	}
	if rounds != len(l.Rounds) || points != len(l.Rounds) {
		t.Errorf("page shows %d rounds and %d plot points, want %d each", rounds, points, len(l.Rounds))
	}
	if datasetRows != len(l.Datasets) || strings.Join(licences, ",") != "LicenseRef-fedtune-synthetic,CC-BY-4.0,CC-BY-SA-4.0" {
		t.Errorf("datasets: %d rows, licences %q", datasetRows, licences)
	}

	env := rec.envelope()
	r, err := receipt.Verify(env)
	if err != nil {
		t.Fatalf("the server's receipt: %v", err)
	}
	var shown, signed any
	if err := json.Unmarshal([]byte(envText), &shown); err != nil {
		t.Fatalf("envelope shown: %v: %q", err, envText)
	}
	json.Unmarshal(env, &signed)
	if a, b := mustJSON(t, shown), mustJSON(t, signed); a != b {
		t.Errorf("envelope shown %s\nwant the signed %s", a, b)
	}
	if tokensHash != r.TokensHash || signer != r.Signer || model != r.Model || model != m.Digest {
		t.Errorf("receipt shown: tokens %s signer %s model %s; signed: tokens %s signer %s model %s",
			tokensHash, signer, model, r.TokensHash, r.Signer, r.Model)
	}
	if block != "standalone (no block)" {
		t.Errorf("block shown %q", block)
	}
	if r.CompletionTokens > 0 && answer == "" {
		t.Errorf("no answer shown for %d generated tokens", r.CompletionTokens)
	}
	rec.mu.Lock()
	text := rec.text
	rec.mu.Unlock()
	if utf8.ValidString(text) && answer != text {
		t.Errorf("answer shown %q, the server answered %q", answer, text)
	}
}

// TestPageFollowsLineage: the page redraws the lineage when the node
// answers another one (a round committed, an eval loss reported): the
// plot keeps one point per round with an eval loss, the table one row per
// round.
func TestPageFollowsLineage(t *testing.T) {
	ctx := browser(t)
	m, _ := tinyModel(t, 25)
	full := fixtureLineage(t)
	first := *full
	first.Rounds = full.Rounds[:1]
	var live atomic.Pointer[inference.Lineage]
	live.Store(&first)
	m.LineageFunc = live.Load
	f := serve(t, m, inference.Config{})
	if err := chromedp.Do(ctx, chromedp.Navigate(f.url+"/"), chromedp.WaitVisible(`#lineage[data-loaded="true"] #plot svg`)); err != nil {
		t.Fatal(err)
	}
	withEval := func(l *inference.Lineage) int {
		n := 0
		for _, r := range l.Rounds {
			if r.EvalLoss != nil {
				n++
			}
		}
		return n
	}
	shown := func() (points, rows int) {
		points = run(t, ctx, chromedp.Evaluate[int](`document.querySelectorAll("#plot svg circle.pt").length`))
		rows = run(t, ctx, chromedp.Evaluate[int](`document.querySelectorAll("#rounds tbody tr.round").length`))
		return points, rows
	}
	if p, r := shown(); p != withEval(&first) || r != 1 {
		t.Fatalf("first lineage: %d points, %d rows; want %d, 1", p, r, withEval(&first))
	}
	live.Store(full)
	for deadline := time.Now().Add(30 * time.Second); ; {
		p, r := shown()
		if p == withEval(full) && r == len(full.Rounds) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the lineage grew the page shows %d points, %d rows; want %d, %d", p, r, withEval(full), len(full.Rounds))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// TestPageStandalone checks the page of a node without ledger lineage.
func TestPageStandalone(t *testing.T) {
	ctx := browser(t)
	m, _ := tinyModel(t, 24)
	f := serve(t, m, inference.Config{})
	if err := chromedp.Do(ctx,
		chromedp.Navigate(f.url+"/"),
		chromedp.WaitVisible(`#lineage[data-loaded="true"] #lineage-summary dd`),
	); err != nil {
		t.Fatal(err)
	}
	status := run(t, ctx, chromedp.Text(`#lineage-status`))
	model := run(t, ctx, chromedp.Text(`#lineage-summary dd`))
	if status != "standalone: no ledger lineage" || model != m.Digest {
		t.Errorf("standalone page: status %q model %q", status, model)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// run runs one chromedp action and returns its value.
func run[T any](t *testing.T, ctx context.Context, a chromedp.Action[T]) T {
	t.Helper()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestLedgerLineage(t *testing.T) {
	d := func(c byte) string { return strings.Repeat(string(c), 64) }
	l := inference.LedgerLineage(&ledger.Lineage{
		Model: ledger.Model{Digest: d('c'), JobID: "job-1", Height: 9},
		Base:  ledger.Model{Digest: d('0')},
		Rounds: []ledger.LineageRound{ // newest first
			{JobID: "job-1", Round: 2, ModelDigest: d('c'), CommittedHeight: 9,
				Contributors: []ledger.LineageContribution{{Trainer: d('t'), DatasetDigest: d('d'), Weight: 1}}},
			{JobID: "job-1", Round: 1, ModelDigest: d('b'), CommittedHeight: 5},
		},
		Datasets: []ledger.Dataset{{Digest: d('d'), Name: "shard.jsonl", Licence: "CC-BY-4.0"}},
	}, map[uint64]float64{2: 2.5})
	if l.Standalone || l.Model != d('c') || l.Job != "job-1" || l.Base != d('0') || len(l.Rounds) != 2 ||
		l.Rounds[0].Round != 1 || l.Rounds[0].EvalLoss != nil || l.Rounds[1].Height != 9 ||
		l.Rounds[1].EvalLoss == nil || *l.Rounds[1].EvalLoss != 2.5 || l.Rounds[0].Contributors == nil ||
		len(l.Rounds[1].Contributors) != 1 || l.Rounds[1].Contributors[0].Dataset != d('d') ||
		len(l.Datasets) != 1 || l.Datasets[0].Licence != "CC-BY-4.0" {
		t.Fatalf("%+v", l)
	}
	if l.Rounds[1].EvalSource != inference.EvalFromCoordinator || l.EvalSource != inference.EvalSourceCoordinator {
		t.Fatalf("a coordinator-only loss: round source %q, lineage source %q", l.Rounds[1].EvalSource, l.EvalSource)
	}

	// A RoundEvaluated on the ledger wins over the coordinator's report,
	// carries the contributors' scores, and says so; the coordinator's
	// stands in for the round without one, marked as such.
	l = inference.LedgerLineage(&ledger.Lineage{
		Model: ledger.Model{Digest: d('c'), JobID: "job-1", Height: 9},
		Base:  ledger.Model{Digest: d('0')},
		Rounds: []ledger.LineageRound{
			{JobID: "job-1", Round: 2, ModelDigest: d('c'), CommittedHeight: 9,
				Contributors: []ledger.LineageContribution{{Trainer: d('t'), DatasetDigest: d('d'), Weight: 0.5}, {Trainer: d('u'), Weight: 0.5}},
				Eval:         &ledger.Evaluation{MeanNLL: 2.25, Tokens: 10, Scores: []ledger.ContributionScore{{Trainer: d('t'), LossRemoved: 0.125}}}},
			{JobID: "job-1", Round: 1, ModelDigest: d('b'), CommittedHeight: 5},
		},
	}, map[uint64]float64{1: 3, 2: 9})
	r1, r2 := l.Rounds[0], l.Rounds[1]
	if r2.EvalLoss == nil || *r2.EvalLoss != 2.25 || r2.EvalSource != inference.EvalFromLedger ||
		r2.Contributors[0].LossRemoved == nil || *r2.Contributors[0].LossRemoved != 0.125 || r2.Contributors[1].LossRemoved != nil ||
		r1.EvalLoss == nil || *r1.EvalLoss != 3 || r1.EvalSource != inference.EvalFromCoordinator ||
		!strings.Contains(l.EvalSource, "RoundEvaluated") || !strings.Contains(l.EvalSource, "not recorded on the ledger") {
		t.Fatalf("mixed sources: %+v", l)
	}
}

// TestPageEvalSources: the page tells a round's loss recorded on the
// ledger (RoundEvaluated) from one only the coordinator reports: the
// latter's point is hollow and its table cell says "(coordinator)".
func TestPageEvalSources(t *testing.T) {
	ctx := browser(t)
	m, _ := tinyModel(t, 26)
	l := fixtureLineage(t)
	sources := []string{inference.EvalFromLedger, inference.EvalFromCoordinator, inference.EvalFromLedger}
	for i := range l.Rounds {
		v := 3.5 - float64(i)/4
		l.Rounds[i].EvalLoss, l.Rounds[i].EvalSource = &v, sources[i]
	}
	l.EvalSource = inference.EvalSourceLedger + "; rounds marked \"coordinator\" have no RoundEvaluated yet: " + inference.EvalSourceCoordinator
	m.Lineage = l
	f := serve(t, m, inference.Config{})
	if err := chromedp.Do(ctx, chromedp.Navigate(f.url+"/"), chromedp.WaitVisible(`#lineage[data-loaded="true"] #plot svg`)); err != nil {
		t.Fatal(err)
	}
	pts := run(t, ctx, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll("#plot svg circle.pt")).map(c => c.getAttribute("class") + "/" + c.dataset.source)`))
	cells := run(t, ctx, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll("#rounds tbody tr.round td.eval")).map(c => c.textContent)`))
	if want := []string{"pt/ledger", "pt coord/coordinator", "pt/ledger"}; fmt.Sprint(pts) != fmt.Sprint(want) {
		t.Errorf("plot points %v, want %v", pts, want)
	}
	if len(cells) != 3 || strings.Contains(cells[0], "coordinator") || !strings.HasSuffix(cells[1], "(coordinator)") || strings.Contains(cells[2], "coordinator") {
		t.Errorf("eval cells %q: want only round 2's marked (coordinator)", cells)
	}
	if src := run(t, ctx, chromedp.Text(`#eval-source`)); !strings.Contains(src, "RoundEvaluated") || !strings.Contains(src, "not recorded on the ledger") {
		t.Errorf("eval source %q", src)
	}
}

// TestAttackPageMarkup: names a trainer or dataset publisher chose (here
// from a lying ledger node: the ledger itself refuses such text) reach the
// page as text: markup is not run, a bidi override is shown written out,
// and nothing leaves the page's own origin.
func TestAttackPageMarkup(t *testing.T) {
	ctx := browser(t)
	m, _ := tinyModel(t, 26)
	l := fixtureLineage(t)
	l.Job = `<script>window.pwned="job"</script>`
	l.Datasets[0].Name = `<img src=x onerror="window.pwned='name'">`
	l.Datasets[0].Licence = "javascript:window.pwned='licence'"
	l.Datasets[1].Name = "\u202egnp.exe"
	m.Lineage = l
	f := serve(t, m, inference.Config{})
	if err := chromedp.Do(ctx, chromedp.Navigate(f.url+"/"), chromedp.WaitVisible(`#lineage[data-loaded="true"] #plot svg`)); err != nil {
		t.Fatal(err)
	}
	pwned := run(t, ctx, chromedp.Evaluate[string](`String(window.pwned)`))
	injected := run(t, ctx, chromedp.Evaluate[int](`document.querySelectorAll("#lineage img, #lineage script, #lineage a").length`))
	names := run(t, ctx, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll("#datasets tbody tr.dataset td:first-child")).map(e => e.textContent)`))
	licence := run(t, ctx, chromedp.Evaluate[string](`document.querySelector("#datasets td.licence").textContent`))
	if pwned != "undefined" || injected != 0 {
		t.Errorf("markup ran: window.pwned %q, %d injected elements", pwned, injected)
	}
	if len(names) < 2 || names[0] != l.Datasets[0].Name || names[1] != `\u202Egnp.exe` || licence != l.Datasets[0].Licence {
		t.Errorf("names shown %q, licence %q", names, licence)
	}
}
