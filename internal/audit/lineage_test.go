package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// fixedGraph is the lineage of the test chain's final model, with the
// manifests' roots.
func fixedGraph(t *testing.T) (*Graph, *testChain) {
	t.Helper()
	c := newTestChain(t)
	l, err := c.fsm.Lineage(c.models[1])
	if err != nil {
		t.Fatal(err)
	}
	// Through JSON, as the node's lineage query returns it.
	raw, err := json.Marshal(l)
	if err != nil {
		t.Fatal(err)
	}
	l2, err := DecodeLineage(raw)
	if err != nil {
		t.Fatal(err)
	}
	roots := map[string]string{}
	for _, m := range c.manifests {
		roots[m.Digest] = m.Root
	}
	return NewGraph(l2, roots), c
}

func TestLineageGolden(t *testing.T) {
	g, c := fixedGraph(t)
	if len(g.Rounds) != 2 || g.Base.Digest != c.base || g.Model.Digest != c.models[1] || len(g.Rounds[1].Rejected) != 1 || len(g.Rounds[0].Contributors) != 3 {
		t.Fatalf("graph %+v", g)
	}
	for _, format := range Formats {
		t.Run(format, func(t *testing.T) {
			var b bytes.Buffer
			if err := Render(&b, g, format); err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("testdata", "lineage."+format)
			if *update {
				if err := os.WriteFile(golden, b.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update)", err)
			}
			if !bytes.Equal(b.Bytes(), want) {
				t.Fatalf("%s output differs from %s (run with -update if intended):\n%s", format, golden, b.String())
			}
		})
	}
	if err := Render(&bytes.Buffer{}, g, "svg"); err == nil || !strings.Contains(err.Error(), "unknown lineage format") {
		t.Fatalf("unknown format: %v", err)
	}
	for _, s := range []string{"<link", "src=", "http://", "https://", "@import", "url("} {
		html, _ := os.ReadFile(filepath.Join("testdata", "lineage.html"))
		if bytes.Contains(html, []byte(s)) && !(s == "http://" && bytes.Count(html, []byte(s)) == bytes.Count(html, []byte("http://www.w3.org/2000/svg"))) {
			t.Errorf("the HTML page refers to something outside it: %q", s)
		}
	}
}

// The DOT output renders with Graphviz.
func TestLineageDOTRenders(t *testing.T) {
	dot, err := exec.LookPath("dot")
	if err != nil {
		t.Skip("Graphviz `dot` is not installed (Debian package graphviz); skipping the DOT rendering check")
	}
	g, _ := fixedGraph(t)
	var b bytes.Buffer
	if err := Render(&b, g, "dot"); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "lineage.png")
	cmd := exec.Command(dot, "-Tpng", "-o", out)
	cmd.Stdin = &b
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("dot -Tpng: %v\n%s", err, stderr.String())
	}
	png, err := os.ReadFile(out)
	if err != nil || len(png) < 1000 || !bytes.HasPrefix(png, []byte("\x89PNG")) {
		t.Fatalf("dot wrote %d bytes, err %v", len(png), err)
	}
	if stderr.Len() > 0 {
		t.Fatalf("dot warned: %s", stderr.String())
	}
}

// The HTML page's script runs in headless Chromium and draws every node.
func TestLineageHTMLInChromium(t *testing.T) {
	var browser string
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			browser = p
			break
		}
	}
	if browser == "" {
		t.Skip("no headless Chromium (Debian package chromium); skipping the HTML rendering check")
	}
	if testing.Short() {
		t.Skip("starts a browser; skipped under -short")
	}
	g, _ := fixedGraph(t)
	dir := t.TempDir()
	page := filepath.Join(dir, "lineage.html")
	var b bytes.Buffer
	if err := Render(&b, g, "html"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(page, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	runs := 0
	dump := func(url string) string {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		runs++
		cmd := exec.CommandContext(ctx, browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
			"--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
			"--user-data-dir="+filepath.Join(dir, fmt.Sprintf("profile%d", runs)), "--dump-dom", url)
		// Chromium starts helper processes that inherit its output pipes: on
		// a timeout, kill the whole process group, and stop waiting for the
		// pipes soon after.
		killGroup(cmd)
		cmd.WaitDelay = 5 * time.Second
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("chromium: %v\n%s", err, stderr.String())
		}
		return stdout.String()
	}
	dom := dump("file://" + page)
	nodes, _ := layout(g)
	if !strings.Contains(dom, `data-rendered="`+itoa(len(nodes))+`"`) {
		t.Fatalf("the page's script did not finish drawing (no data-rendered=%d):\n%s", len(nodes), dom)
	}
	// Read the drawn labels back: one <title> per node, with its label.
	re := regexp.MustCompile(`<g class="node (\w+)" data-id="[^"]*"><title>([^<]*)</title>`)
	got := map[string]bool{}
	for _, m := range re.FindAllStringSubmatch(dom, -1) {
		got[m[2]] = true
	}
	for _, n := range nodes {
		if !got[htmlEscape(n.Label)] {
			t.Errorf("node %s (%q) is not drawn", n.ID, n.Label)
		}
	}
	for _, want := range []string{"job-1 round 1 (fedavg)", "job-1 round 2 (fedavg)", "tiny-base"} {
		if !strings.Contains(dom, want) {
			t.Errorf("rendered page lacks %q", want)
		}
	}
	// Selecting a node (the click handler) shows its details.
	dom = dump("file://" + page + "#" + "round:job-1/2")
	for _, want := range []string{`<g class="node round selected" data-id="round:job-1/2">`, "<td>committed at height</td><td>7</td>", "<td>strategy</td><td>fedavg</td>"} {
		if !strings.Contains(dom, want) {
			t.Errorf("after selecting round 2 the page lacks %q", want)
		}
	}
	dom = dump("file://" + page + "#" + "update:" + g.Rounds[1].Rejected[0].UpdateDigest)
	if !strings.Contains(dom, "element 1 is NaN (every value must be finite)</td>") {
		t.Errorf("the rejected update's details lack its reason")
	}
}

func itoa(n int) string { return strings.TrimSpace(strings.Repeat(" ", 0) + fmtInt(n)) }

func fmtInt(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

func htmlEscape(s string) string {
	r := strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;")
	return r.Replace(s)
}
