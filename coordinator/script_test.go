package coordinator

import (
	"crypto/ed25519"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fedtune/fedtune/internal/digest"
	"github.com/fedtune/fedtune/ledger"
)

var rewrite = flag.Bool("rewrite", false, "rewrite the expected output of testdata/*.txt scripts")

// t0 is the start of every script's clock; times print as offsets to it.
var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// A script (testdata/*.txt) is a list of cases separated by blank lines:
//
//	directive arg key=value key="quoted value"
//	optional body lines
//	----
//	expected output lines
//
// Lines starting with # between cases are comments. Names such as t1, m0,
// u1 stand for SHA-256 digests (alias); output prints digests by alias.
type scriptCase struct {
	line    int
	cmd     string
	body    string
	want    string
	comment []string
}

func parseScript(t *testing.T, path string) []scriptCase {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	var cases []scriptCase
	var comments []string
	for i := 0; i < len(lines); {
		l := lines[i]
		if strings.TrimSpace(l) == "" {
			i++
			continue
		}
		if strings.HasPrefix(l, "#") {
			comments = append(comments, l)
			i++
			continue
		}
		c := scriptCase{line: i + 1, cmd: l, comment: comments}
		comments = nil
		i++
		var body []string
		for i < len(lines) && lines[i] != "----" {
			if strings.TrimSpace(lines[i]) == "" {
				t.Fatalf("%s:%d: blank line before ---- in case %q", path, i+1, c.cmd)
			}
			body = append(body, lines[i])
			i++
		}
		if i == len(lines) {
			t.Fatalf("%s:%d: case %q has no ----", path, c.line, c.cmd)
		}
		i++
		var want []string
		for i < len(lines) && strings.TrimSpace(lines[i]) != "" {
			want = append(want, lines[i])
			i++
		}
		c.body, c.want = strings.Join(body, "\n"), strings.Join(want, "\n")
		cases = append(cases, c)
	}
	return cases
}

func formatScript(cases []scriptCase) string {
	var b strings.Builder
	for i, c := range cases {
		if i > 0 {
			b.WriteString("\n")
		}
		for _, l := range c.comment {
			b.WriteString(l + "\n")
		}
		b.WriteString(c.cmd + "\n")
		if c.body != "" {
			b.WriteString(c.body + "\n")
		}
		b.WriteString("----\n" + c.want + "\n")
	}
	return b.String()
}

func TestScripts(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.txt"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no scripts: %v", err)
	}
	for _, path := range files {
		t.Run(strings.TrimSuffix(filepath.Base(path), ".txt"), func(t *testing.T) {
			cases := parseScript(t, path)
			h := newHarness(t)
			for i := range cases {
				c := &cases[i]
				got := h.run(c.cmd, c.body)
				if *rewrite {
					c.want = got
					continue
				}
				if got != c.want {
					t.Errorf("%s:%d: %s\ngot:\n%s\nwant:\n%s", path, c.line, c.cmd, got, c.want)
				}
			}
			if *rewrite {
				if err := os.WriteFile(path, []byte(formatScript(cases)), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// aliases maps names to digests and back.
type aliases struct {
	toHex   map[string]string
	toName  map[string]string
	pattern *regexp.Regexp
}

func newAliases() *aliases {
	return &aliases{toHex: map[string]string{}, toName: map[string]string{}, pattern: regexp.MustCompile(`[0-9a-f]{64}|[0-9a-f]{16}…`)}
}

func (a *aliases) id(name string) string {
	if digest.Valid(name) {
		return name
	}
	if h, ok := a.toHex[name]; ok {
		return h
	}
	// The name's bytes in hex, zero-padded: digests sort as their names do.
	if len(name) > 32 {
		panic("alias too long: " + name)
	}
	h := hex.EncodeToString([]byte(name)) + strings.Repeat("0", 64-2*len(name))
	a.set(name, h)
	return h
}

func (a *aliases) set(name, h string) {
	a.toHex[name], a.toName[h], a.toName[h[:16]+"…"] = h, name, name
}

func (a *aliases) name(h string) string {
	if n, ok := a.toName[h]; ok {
		return n
	}
	if len(h) >= 8 {
		return h[:8]
	}
	return h
}

func (a *aliases) names(s string) string {
	return a.pattern.ReplaceAllStringFunc(s, a.name)
}

type harness struct {
	t       *testing.T
	al      *aliases
	job     *Job
	m       *Machine
	base    string
	pending []ledger.TxBody // submitted, not yet confirmed
	hist    map[uint64]*ledger.Round
	key     ed25519.PrivateKey
	nonce   uint64
}

func newHarness(t *testing.T) *harness {
	return &harness{t: t, al: newAliases(), hist: map[uint64]*ledger.Round{},
		key: ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))}
}

// args splits a command line into positional words and key=value pairs
// (values may be double-quoted Go strings).
func splitArgs(line string) (pos []string, kv map[string]string, err error) {
	kv = map[string]string{}
	for line = strings.TrimSpace(line); line != ""; line = strings.TrimSpace(line) {
		var tok string
		i := strings.IndexByte(line, ' ')
		if q := strings.Index(line, `="`); q >= 0 && (i < 0 || q < i) {
			rest := line[q+1:]
			unq, err := strconv.QuotedPrefix(rest)
			if err != nil {
				return nil, nil, fmt.Errorf("bad quoted value in %q", line)
			}
			v, _ := strconv.Unquote(unq)
			kv[line[:q]] = v
			line = rest[len(unq):]
			continue
		}
		if i < 0 {
			tok, line = line, ""
		} else {
			tok, line = line[:i], line[i:]
		}
		if k, v, ok := strings.Cut(tok, "="); ok {
			kv[k] = v
		} else {
			pos = append(pos, tok)
		}
	}
	return pos, kv, nil
}

func (h *harness) at(s string) time.Time {
	d, err := time.ParseDuration(s)
	if err != nil {
		h.t.Fatalf("bad time %q: %v", s, err)
	}
	return t0.Add(d)
}

func (h *harness) u64(s string) uint64 {
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		h.t.Fatalf("bad number %q", s)
	}
	return v
}

func (h *harness) ids(list string) []string {
	if list == "" {
		return nil
	}
	var out []string
	for _, n := range strings.Split(list, ",") {
		out = append(out, h.al.id(n))
	}
	return out
}

var aliasRef = regexp.MustCompile(`@([A-Za-z0-9_-]+)`)

// run executes one case and returns its output.
func (h *harness) run(cmd, body string) string {
	pos, kv, err := splitArgs(cmd)
	if err != nil {
		h.t.Fatal(err)
	}
	if len(pos) == 0 {
		h.t.Fatalf("empty command %q", cmd)
	}
	arg := func(i int) string {
		if i >= len(pos) {
			h.t.Fatalf("%q: missing argument %d", cmd, i)
		}
		return pos[i]
	}
	switch pos[0] {
	case "job":
		// @name in the YAML stands for the alias's digest.
		y := aliasRef.ReplaceAllStringFunc(body, func(s string) string { return h.al.id(s[1:]) })
		j, err := ParseJob("job.yaml", []byte(y))
		if err != nil {
			return "error: " + h.al.names(err.Error())
		}
		h.job = j
		name := "job"
		for i := 2; ; i++ {
			if h, ok := h.al.toHex[name]; !ok || h == j.Digest() {
				break
			}
			name = fmt.Sprintf("job%d", i)
		}
		h.al.set(name, j.Digest())
		m, err := New(Config{Job: j})
		if err != nil {
			return "error: " + h.al.names(err.Error())
		}
		h.m, h.base = m, j.Model.Digest
		return fmt.Sprintf("job %s: %d rounds, %s, trainers min %d max %d fraction %g, deadline %v",
			j.Name, j.Rounds, j.Strategy.Name, j.Trainers.Min, j.Trainers.Max, j.Trainers.Fraction, j.Deadline)
	case "start":
		return h.step(JobStarted{Now: h.at(arg(1))})
	case "tick":
		return h.step(Tick{Now: h.at(arg(1))})
	case "members":
		return h.step(MembersChanged{Trainers: h.ids(strings.Join(pos[1:], ","))})
	case "join":
		var out []string
		for _, n := range pos[1:] {
			ds := []string{h.al.id("d-" + n)}
			if v, ok := kv["datasets"]; ok {
				ds = h.ids(v)
			}
			out = append(out, h.step(TrainerJoined{Trainer: h.al.id(n), Datasets: ds}))
		}
		return strings.Join(out, "\n")
	case "leave":
		return h.step(TrainerLeft{Trainer: h.al.id(arg(1))})
	case "update":
		n := arg(1)
		ds := "d-" + n
		if v, ok := kv["dataset"]; ok {
			ds = v
		}
		e := UpdateArrived{Round: h.u64(kv["round"]), Trainer: h.al.id(n), Digest: h.al.id(kv["digest"]),
			Dataset: h.al.id(ds), Samples: h.u64(kv["samples"]), DatasetName: ds, Licence: kv["licence"]}
		if r := h.hist[e.Round]; r != nil && r.Status == ledger.StatusOpen && slices.Contains(r.Trainers, e.Trainer) {
			r.Updates = append(r.Updates, ledger.Update{Trainer: e.Trainer, UpdateDigest: e.Digest, DatasetDigest: e.Dataset, Samples: e.Samples})
		}
		return h.step(e)
	case "invalid":
		return h.step(UpdateInvalid{Round: h.u64(kv["round"]), Trainer: h.al.id(arg(1)), Reason: kv["reason"]})
	case "aggdone":
		e := AggregationDone{Round: h.u64(kv["round"]), Model: h.al.id(kv["model"]), Weights: map[string]float64{}, Rejected: map[string]string{}}
		if s := kv["state"]; s != "" {
			e.State = h.al.id(s)
		}
		for _, tw := range strings.Split(kv["weights"], ",") {
			if tw == "" {
				continue
			}
			n, w, _ := strings.Cut(tw, ":")
			f, err := strconv.ParseFloat(w, 64)
			if err != nil {
				h.t.Fatalf("bad weight %q", tw)
			}
			e.Weights[h.al.id(n)] = f
		}
		for _, id := range h.ids(kv["rejected"]) {
			e.Rejected[id] = kv["why"]
		}
		return h.step(e)
	case "aggfail":
		return h.step(AggregationFailed{Round: h.u64(kv["round"]), Reason: kv["reason"]})
	case "confirm":
		// The ledger applies every pending tx, and the machine hears of each.
		// Txs the machine emits meanwhile wait for the next confirm.
		var out []string
		batch := h.pending
		h.pending = nil
		for _, tx := range batch {
			h.apply(tx)
			out = append(out, fmt.Sprintf("> %s round %d committed", tx.TxType(), txRound(tx)))
			out = append(out, h.step(TxCommitted{Type: tx.TxType(), Round: txRound(tx)}))
		}
		if len(out) == 0 {
			return "nothing pending"
		}
		return strings.Join(out, "\n")
	case "refuse":
		// The ledger refuses the first pending tx.
		if len(h.pending) == 0 {
			h.t.Fatalf("%q: nothing pending", cmd)
		}
		tx := h.pending[0]
		h.pending = h.pending[1:]
		return h.step(TxRejected{Type: tx.TxType(), Round: txRound(tx), Reason: kv["reason"]})
	case "apply":
		// The ledger applies the pending txs but the machine never hears of
		// it (the coordinator crashes first).
		n := len(h.pending)
		for _, tx := range h.pending {
			h.apply(tx)
		}
		h.pending = nil
		return fmt.Sprintf("applied %d txs", n)
	case "recover":
		// A new machine from the ledger's history; unconfirmed txs are lost.
		h.pending = nil
		var hist []ledger.Round
		for _, r := range h.hist {
			hist = append(hist, *r)
		}
		m, err := Recover(Config{Job: h.job}, hist)
		if err != nil {
			return "error: " + h.al.names(err.Error())
		}
		h.m = m
		return fmt.Sprintf("recovered at round %d, base %s", m.Round(), h.al.name(m.Base()))
	case "ledger":
		var out []string
		rounds := make([]uint64, 0, len(h.hist))
		for n := range h.hist {
			rounds = append(rounds, n)
		}
		slices.Sort(rounds)
		for _, n := range rounds {
			r := h.hist[n]
			s := fmt.Sprintf("round %d %s base=%s trainers=%s", n, r.Status, h.al.name(r.BaseModel), h.names(r.Trainers))
			if r.Status == ledger.StatusCommitted {
				s += " model=" + h.al.name(r.ModelDigest)
			}
			if r.FailReason != "" {
				s += fmt.Sprintf(" reason=%q", r.FailReason)
			}
			out = append(out, s)
		}
		if len(out) == 0 {
			return "empty"
		}
		return strings.Join(out, "\n")
	}
	h.t.Fatalf("unknown directive %q", pos[0])
	return ""
}

func txRound(tx ledger.TxBody) uint64 {
	switch b := tx.(type) {
	case ledger.RoundOpened:
		return b.Round
	case ledger.UpdateRejected:
		return b.Round
	case ledger.RoundCommitted:
		return b.Round
	case ledger.RoundFailed:
		return b.Round
	}
	return 0
}

// apply records tx in the fake ledger's rounds.
func (h *harness) apply(tx ledger.TxBody) {
	switch b := tx.(type) {
	case ledger.RoundOpened:
		h.hist[b.Round] = &ledger.Round{JobID: b.JobID, Round: b.Round, ConfigDigest: b.ConfigDigest, BaseModel: b.BaseModel,
			Strategy: b.Strategy, Trainers: b.Trainers, Deadline: b.Deadline, Status: ledger.StatusOpen}
	case ledger.UpdateRejected:
		for i := range h.hist[b.Round].Updates {
			if u := &h.hist[b.Round].Updates[i]; u.UpdateDigest == b.UpdateDigest {
				u.Rejected, u.RejectReason = true, b.Reason
			}
		}
	case ledger.RoundCommitted:
		r := h.hist[b.Round]
		r.Status, r.ModelDigest, r.CommittedStrategy, r.Params, r.Contributors = ledger.StatusCommitted, b.ModelDigest, b.Strategy, b.Params, b.Contributors
	case ledger.RoundFailed:
		r := h.hist[b.Round]
		r.Status, r.FailReason = ledger.StatusFailed, b.Reason
	}
}

func (h *harness) names(ids []string) string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = h.al.name(id)
	}
	return strings.Join(out, ",")
}

func (h *harness) rel(t time.Time) string { return "+" + t.Sub(t0).String() }

// step feeds one event and prints the Ready.
func (h *harness) step(ev Event) string {
	if h.m == nil {
		h.t.Fatal("no job: start the script with a job directive")
	}
	rd, err := h.m.Step(ev)
	if err != nil {
		if !rd.Empty() {
			h.t.Errorf("Step returned an error and a non-empty Ready")
		}
		return "error: " + h.al.names(err.Error())
	}
	var out []string
	for _, tx := range rd.Txs {
		// Every body must be one the ledger accepts without state.
		h.nonce++
		if _, err := ledger.SignTx(h.key, "test", h.nonce, tx); err != nil {
			h.t.Errorf("tx %s is not valid: %v", tx.TxType(), err)
		}
		h.pending = append(h.pending, tx)
		switch b := tx.(type) {
		case ledger.RoundOpened:
			out = append(out, fmt.Sprintf("tx RoundOpened round=%d base=%s trainers=%s deadline=%s strategy=%s config=%s",
				b.Round, h.al.name(b.BaseModel), h.names(b.Trainers), h.rel(b.Deadline), b.Strategy, h.al.name(b.ConfigDigest)))
		case ledger.UpdateRejected:
			out = append(out, fmt.Sprintf("tx UpdateRejected round=%d update=%s reason=%q", b.Round, h.al.name(b.UpdateDigest), h.al.names(b.Reason)))
		case ledger.RoundCommitted:
			var cs, ps []string
			for _, c := range b.Contributors {
				cs = append(cs, fmt.Sprintf("%s:%s:%g", h.al.name(c.Trainer), h.al.name(c.UpdateDigest), c.Weight))
			}
			keys := make([]string, 0, len(b.Params))
			for k := range b.Params {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				ps = append(ps, k+"="+h.al.names(b.Params[k]))
			}
			out = append(out, fmt.Sprintf("tx RoundCommitted round=%d model=%s strategy=%s contributors=%s params={%s}",
				b.Round, h.al.name(b.ModelDigest), b.Strategy, strings.Join(cs, ","), strings.Join(ps, " ")))
		case ledger.RoundFailed:
			out = append(out, fmt.Sprintf("tx RoundFailed round=%d reason=%q", b.Round, h.al.names(b.Reason)))
		default:
			h.t.Errorf("unexpected tx %T", tx)
		}
	}
	for _, tk := range rd.Tasks {
		if tk.ConfigDigest != h.job.Digest() || tk.Seed != TaskSeed(h.job.Seed, tk.Round, tk.Trainer) {
			h.t.Errorf("task for %s has wrong config digest or seed", tk.Trainer)
		}
		out = append(out, fmt.Sprintf("task %s round=%d base=%s deadline=%s", h.al.name(tk.Trainer), tk.Round, h.al.name(tk.BaseModel), h.rel(tk.Deadline)))
	}
	if a := rd.Aggregation; a != nil {
		var in []string
		for _, i := range a.Inputs {
			in = append(in, fmt.Sprintf("%s:%s:%d", h.al.name(i.Trainer), h.al.name(i.Digest), i.Samples))
		}
		st := "-"
		if a.State != "" {
			st = h.al.name(a.State)
		}
		out = append(out, fmt.Sprintf("aggregate round=%d base=%s state=%s strategy=%s inputs=%s", a.Round, h.al.name(a.Base), st, a.Strategy, strings.Join(in, ",")))
	}
	if !rd.Wake.IsZero() {
		out = append(out, "wake "+h.rel(rd.Wake))
	}
	if rd.Waiting != "" {
		out = append(out, "waiting: "+rd.Waiting)
	}
	if d := rd.Done; d != nil {
		s := fmt.Sprintf("done committed=%d failed=%d model=%s", d.Committed, d.Failed, h.al.name(d.Model))
		if d.Err != "" {
			s += fmt.Sprintf(" err=%q", h.al.names(d.Err))
		}
		out = append(out, s)
	}
	if len(out) == 0 {
		return "ok"
	}
	return strings.Join(out, "\n")
}
