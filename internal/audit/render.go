package audit

import (
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
)

// Formats lists the lineage output formats Render knows.
var Formats = []string{"table", "json", "dot", "html"}

// Render writes g in format (one of Formats).
func Render(w io.Writer, g *Graph, format string) error {
	switch format {
	case "table":
		return renderTable(w, g)
	case "json":
		out, err := json.MarshalIndent(g, "", "  ")
		if err != nil {
			return fmt.Errorf("audit: lineage json: %w", err)
		}
		_, err = w.Write(append(out, '\n'))
		return err
	case "dot":
		return renderDOT(w, g)
	case "html":
		return renderHTML(w, g)
	}
	return fmt.Errorf("audit: unknown lineage format %q (want one of %s)", format, strings.Join(Formats, ", "))
}

func fmtParams(p map[string]string) string {
	if len(p) == 0 {
		return "-"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(p)) {
		parts = append(parts, k+"="+p[k])
	}
	return strings.Join(parts, " ")
}

func fmtWeight(w float64) string { return strconv.FormatFloat(w, 'g', 6, 64) }

func renderTable(w io.Writer, g *Graph) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "model\t%s\n", g.Model.Digest)
	fmt.Fprintf(tw, "base\t%s\t%s\t%s\t%s\n", g.Base.Digest, dash(g.Base.Name), dash(g.Base.Licence), dash(g.Base.Source))
	fmt.Fprintf(tw, "rounds\t%d\n", len(g.Rounds))
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range g.Rounds {
		fmt.Fprintf(w, "\nround %d of job %s (heights %d-%d)\n", r.Round, r.JobID, r.OpenedHeight, r.CommittedHeight)
		fmt.Fprintf(w, "  %s -> %s by aggregator %s\n", short(r.BaseModel), short(r.ModelDigest), short(r.Aggregator))
		fmt.Fprintf(w, "  strategy %s  params %s\n", r.Strategy, fmtParams(r.Params))
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  TRAINER\tWEIGHT\tUPDATE\tSAMPLES\tDATASET\tLICENCE\tROOT\tDATASET SAMPLES")
		for _, c := range r.Contributors {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%d\t%s\t%s\t%s\t%d\n", short(c.Trainer), fmtWeight(c.Weight), short(c.UpdateDigest), c.Samples,
				short(c.Dataset.Digest), dash(c.Dataset.Licence), dash(short(c.Dataset.Root)), c.Dataset.Samples)
			for _, p := range c.Published {
				fmt.Fprintf(tw, "  \t\t\t\t+ %s\t%s\t%s\t%d\n", short(p.Digest), dash(p.Licence), dash(short(p.Root)), p.Samples)
			}
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		for _, x := range r.Rejected {
			fmt.Fprintf(w, "  rejected %s from %s: %s\n", short(x.UpdateDigest), short(x.Trainer), x.Reason)
		}
		if ev := r.Eval; ev != nil {
			fmt.Fprintf(w, "  eval loss %.6f (mean NLL over %d tokens of eval set %s; RoundEvaluated at height %d by %s)\n",
				ev.MeanNLL, ev.Tokens, short(ev.EvalDigest), ev.Height, short(ev.Coordinator))
			for _, sc := range ev.Scores {
				fmt.Fprintf(w, "    loss removed by %s alone: %+.6f\n", short(sc.Trainer), sc.LossRemoved)
			}
		}
	}
	if len(g.Attestations) > 0 {
		fmt.Fprintf(w, "\nattestations\n")
		for _, d := range slices.Sorted(maps.Keys(g.Attestations)) {
			for _, a := range g.Attestations[d] {
				result := "fail"
				if a.Result.Pass {
					result = "pass"
				}
				fmt.Fprintf(w, "  dataset %s: %s %s by auditor %s (%d samples, %d findings; tool %q %s, report %s, height %d)\n",
					short(d), a.Kind, result, short(a.Auditor), a.Result.Samples, a.Result.Findings, a.Tool.Name, short(a.Tool.Digest), short(a.Report), a.Height)
			}
		}
	}
	for _, m := range g.Missing {
		fmt.Fprintf(w, "MISSING: round %d of job %s used dataset %s, which lacks the attestation its job requires: %s\n",
			m.Round, m.JobID, short(m.Dataset), m.Requirement)
	}
	if g.Anchored != nil {
		fmt.Fprintf(w, "\n%s\n", g.Anchored)
	}
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// node and edge are the drawing's elements, shared by DOT and HTML.
type node struct {
	ID      string      `json:"id"`
	Kind    string      `json:"kind"` // model, round, update, rejected, dataset
	Label   string      `json:"label"`
	Details [][2]string `json:"details"`
	X       int         `json:"x"`
	Y       int         `json:"y"`
}

type edge struct {
	From string `json:"from"`
	To   string `json:"to"`
	Kind string `json:"kind"` // base, output, update, data, rejected
}

// Layout constants of the HTML drawing (pixels).
const (
	colWidth  = 190
	rowHeight = 70
	nodeW     = 160
	nodeH     = 44
	margin    = 20
)

// layout places the graph: the chain of models and rounds on row 0, each
// round's updates below it one column left, their datasets one more column
// left, so a round takes four columns.
func layout(g *Graph) ([]node, []edge) {
	var nodes []node
	var edges []edge
	modelNode := func(m GraphModel, col int, what string) node {
		d := [][2]string{{"kind", what}, {"digest", m.Digest}}
		for _, kv := range [][2]string{{"name", m.Name}, {"licence", m.Licence}, {"source", m.Source}, {"registrar", m.Registrar}} {
			if kv[1] != "" {
				d = append(d, kv)
			}
		}
		d = append(d, [2]string{"height", strconv.FormatUint(m.Height, 10)})
		label := "model " + short(m.Digest)
		if m.Name != "" {
			label = m.Name + " " + short(m.Digest)
		}
		return node{ID: "model:" + m.Digest, Kind: "model", Label: label, Details: d, X: col, Y: 0}
	}
	nodes = append(nodes, modelNode(g.Base, 0, "base model"))
	prev := "model:" + g.Base.Digest
	for k, r := range g.Rounds {
		col := 4*k + 1
		rid := fmt.Sprintf("round:%s/%d", r.JobID, r.Round)
		rd := [][2]string{{"job", r.JobID}, {"round", strconv.FormatUint(r.Round, 10)}, {"strategy", r.Strategy}, {"params", fmtParams(r.Params)},
			{"config", r.ConfigDigest}, {"aggregator", r.Aggregator}, {"opened at height", strconv.FormatUint(r.OpenedHeight, 10)},
			{"committed at height", strconv.FormatUint(r.CommittedHeight, 10)}}
		if ev := r.Eval; ev != nil {
			rd = append(rd, [2]string{"eval loss", fmt.Sprintf("%.6f over %d tokens (eval set %s)", ev.MeanNLL, ev.Tokens, ev.EvalDigest)})
			for _, sc := range ev.Scores {
				rd = append(rd, [2]string{"loss removed by " + short(sc.Trainer), fmt.Sprintf("%+.6f", sc.LossRemoved)})
			}
		}
		nodes = append(nodes, node{ID: rid, Kind: "round", Label: fmt.Sprintf("%s round %d (%s)", r.JobID, r.Round, r.Strategy), Details: rd, X: col + 2, Y: 0})
		edges = append(edges, edge{From: prev, To: rid, Kind: "base"})
		row := 1
		for _, c := range r.Contributors {
			uid := "update:" + c.UpdateDigest
			nodes = append(nodes, node{ID: uid, Kind: "update", Label: fmt.Sprintf("update %s w=%s", short(c.UpdateDigest), fmtWeight(c.Weight)),
				Details: [][2]string{{"update", c.UpdateDigest}, {"trainer", c.Trainer}, {"weight", fmtWeight(c.Weight)}, {"samples", strconv.FormatUint(c.Samples, 10)}, {"dataset", c.Dataset.Digest}},
				X:       col + 1, Y: row})
			for k, ds := range append([]GraphDataset{c.Dataset}, c.Published...) {
				did := fmt.Sprintf("dataset:%s@%s", ds.Digest, rid)
				if k > 0 {
					did += "/" + c.Trainer
					row++
				}
				dd := [][2]string{{"manifest digest", ds.Digest}, {"name", dash(ds.Name)}, {"licence", dash(ds.Licence)},
					{"source", dash(ds.Source)}, {"samples", strconv.FormatUint(ds.Samples, 10)}, {"merkle root", dash(ds.Root)}}
				label := "dataset " + short(ds.Digest)
				if ds.Name != "" {
					label = ds.Name + " (" + dash(ds.Licence) + ")"
				}
				nodes = append(nodes, node{ID: did, Kind: "dataset", Label: label, Details: dd, X: col, Y: row})
				edges = append(edges, edge{From: did, To: uid, Kind: "data"})
			}
			edges = append(edges, edge{From: uid, To: rid, Kind: "update"})
			row++
		}
		for _, x := range r.Rejected {
			uid := "update:" + x.UpdateDigest
			nodes = append(nodes, node{ID: uid, Kind: "rejected", Label: "rejected " + short(x.UpdateDigest),
				Details: [][2]string{{"update", x.UpdateDigest}, {"trainer", x.Trainer}, {"reason", x.Reason}}, X: col + 1, Y: row})
			edges = append(edges, edge{From: uid, To: rid, Kind: "rejected"})
			row++
		}
		mid := "model:" + r.ModelDigest
		m := GraphModel{Digest: r.ModelDigest}
		if r.ModelDigest == g.Model.Digest {
			m = g.Model
		}
		nodes = append(nodes, modelNode(m, col+3, "model"))
		edges = append(edges, edge{From: rid, To: mid, Kind: "output"})
		prev = mid
	}
	return nodes, edges
}

func dotQuote(s string) string {
	s = strings.ReplaceAll(s, `\`, `\\`)
	s = strings.ReplaceAll(s, `"`, `\"`)
	return `"` + s + `"`
}

func renderDOT(w io.Writer, g *Graph) error {
	nodes, edges := layout(g)
	var b strings.Builder
	b.WriteString("digraph lineage {\n")
	if g.Anchored != nil {
		fmt.Fprintf(&b, "  // %s\n", g.Anchored)
	}
	b.WriteString("  rankdir=LR;\n  node [fontname=\"Helvetica\", fontsize=10];\n")
	shapes := map[string]string{"model": "box, style=\"rounded,filled\", fillcolor=\"#dbeafe\"", "round": "ellipse, style=filled, fillcolor=\"#fef3c7\"",
		"update": "note", "rejected": "note, color=\"#b91c1c\", fontcolor=\"#b91c1c\"", "dataset": "cylinder, style=filled, fillcolor=\"#dcfce7\""}
	seen := map[string]bool{}
	for _, n := range nodes {
		id := n.ID
		if n.Kind == "dataset" {
			id, _, _ = strings.Cut(n.ID, "@") // one node per dataset in DOT
		}
		if seen[id] {
			continue
		}
		seen[id] = true
		var tip []string
		for _, kv := range n.Details {
			tip = append(tip, kv[0]+": "+kv[1])
		}
		fmt.Fprintf(&b, "  %s [label=%s, shape=%s, tooltip=%s];\n", dotQuote(id), dotQuote(n.Label), shapes[n.Kind], dotQuote(strings.Join(tip, "\n")))
	}
	styles := map[string]string{"base": "", "output": " [penwidth=2]", "update": "", "data": " [style=dashed]", "rejected": " [color=\"#b91c1c\", style=dotted, label=\"rejected\"]"}
	for _, e := range edges {
		from, _, _ := strings.Cut(e.From, "@")
		fmt.Fprintf(&b, "  %s -> %s%s;\n", dotQuote(from), dotQuote(e.To), styles[e.Kind])
	}
	b.WriteString("}\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// htmlPage is the self-contained lineage page: no external scripts, styles
// or fonts. The script draws the graph as SVG from the embedded layout and
// shows a node's details when it is clicked.
var htmlPage = template.Must(template.New("lineage").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>fedtune lineage of {{.Short}}</title>
<style>
body { font-family: sans-serif; margin: 0; display: flex; height: 100vh; }
#graph { flex: 3; overflow: auto; border-right: 1px solid #ccc; }
#details { flex: 1; padding: 1em; overflow: auto; font-size: 13px; }
#details td { vertical-align: top; padding: 2px 6px; word-break: break-all; }
.node rect { stroke: #333; stroke-width: 1; cursor: pointer; }
.node text { font-size: 11px; pointer-events: none; }
.model rect { fill: #dbeafe; } .round rect { fill: #fef3c7; } .update rect { fill: #f3f4f6; }
.rejected rect { fill: #fee2e2; stroke: #b91c1c; } .dataset rect { fill: #dcfce7; }
.selected rect { stroke-width: 3; }
line { stroke: #666; stroke-width: 1.2; } line.rejected { stroke: #b91c1c; stroke-dasharray: 3 3; } line.data { stroke-dasharray: 5 3; }
</style>
</head>
<body>
<div id="graph"></div>
<div id="details"><h3>Lineage of {{.Short}}</h3><p>Click a node to see its details.</p>{{with .Anchored}}<p>{{.}}</p>{{end}}</div>
<script id="lineage-data" type="application/json">{{.Data}}</script>
<script>
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("lineage-data").textContent);
  var NS = "http://www.w3.org/2000/svg";
  var W = {{.NodeW}}, H = {{.NodeH}}, CW = {{.ColW}}, RH = {{.RowH}}, M = {{.Margin}};
  var pos = {}, maxX = 0, maxY = 0;
  data.nodes.forEach(function (n) {
    pos[n.id] = {x: M + n.x * CW, y: M + n.y * RH};
    maxX = Math.max(maxX, n.x); maxY = Math.max(maxY, n.y);
  });
  var svg = document.createElementNS(NS, "svg");
  svg.setAttribute("width", M * 2 + maxX * CW + W);
  svg.setAttribute("height", M * 2 + maxY * RH + H);
  data.edges.forEach(function (e) {
    var a = pos[e.from], b = pos[e.to];
    var l = document.createElementNS(NS, "line");
    l.setAttribute("x1", a.x + W); l.setAttribute("y1", a.y + H / 2);
    l.setAttribute("x2", b.x); l.setAttribute("y2", b.y + H / 2);
    l.setAttribute("class", e.kind);
    svg.appendChild(l);
  });
  var selected = null;
  function show(n, g) {
    if (selected) { selected.classList.remove("selected"); }
    selected = g; g.classList.add("selected");
    var d = document.getElementById("details");
    d.textContent = "";
    var h = document.createElement("h3"); h.textContent = n.label; d.appendChild(h);
    var t = document.createElement("table");
    n.details.forEach(function (kv) {
      var tr = document.createElement("tr"), k = document.createElement("td"), v = document.createElement("td");
      k.textContent = kv[0]; v.textContent = kv[1]; tr.appendChild(k); tr.appendChild(v); t.appendChild(tr);
    });
    d.appendChild(t);
  }
  data.nodes.forEach(function (n) {
    var p = pos[n.id];
    var g = document.createElementNS(NS, "g");
    g.setAttribute("class", "node " + n.kind);
    g.setAttribute("data-id", n.id);
    var r = document.createElementNS(NS, "rect");
    r.setAttribute("x", p.x); r.setAttribute("y", p.y); r.setAttribute("width", W); r.setAttribute("height", H); r.setAttribute("rx", 6);
    var t = document.createElementNS(NS, "text");
    t.setAttribute("x", p.x + 6); t.setAttribute("y", p.y + H / 2 + 4);
    t.textContent = n.label.length > 26 ? n.label.slice(0, 25) + "\u2026" : n.label;
    var title = document.createElementNS(NS, "title"); title.textContent = n.label;
    g.appendChild(title); g.appendChild(r); g.appendChild(t);
    g.addEventListener("click", function () { show(n, g); });
    svg.appendChild(g);
  });
  document.getElementById("graph").appendChild(svg);
  // A fragment (#<node id>) selects that node, as a click would.
  if (location.hash.length > 1) {
    var want = decodeURIComponent(location.hash.slice(1));
    Array.prototype.forEach.call(svg.querySelectorAll("g.node"), function (g) {
      if (g.getAttribute("data-id") === want) { g.dispatchEvent(new MouseEvent("click", {bubbles: true})); }
    });
  }
  document.body.setAttribute("data-rendered", String(data.nodes.length));
})();
</script>
</body>
</html>
`))

func anchoredLine(g *Graph) string {
	if g.Anchored == nil {
		return ""
	}
	return g.Anchored.String()
}

func renderHTML(w io.Writer, g *Graph) error {
	nodes, edges := layout(g)
	data, err := json.Marshal(map[string]any{"nodes": nodes, "edges": edges})
	if err != nil {
		return fmt.Errorf("audit: lineage html: %w", err)
	}
	return htmlPage.Execute(w, map[string]any{
		"Short": short(g.Model.Digest), "Data": template.JS(data), "Anchored": anchoredLine(g),
		"NodeW": nodeW, "NodeH": nodeH, "ColW": colWidth, "RowH": rowHeight, "Margin": margin,
	})
}
