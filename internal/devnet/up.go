package devnet

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	aggnode "github.com/fedtune/fedtune/aggregator/node"
	coordinatorv1 "github.com/fedtune/fedtune/api/coordinator/v1"
	"github.com/fedtune/fedtune/artifact"
	"github.com/fedtune/fedtune/coordinator"
	"github.com/fedtune/fedtune/eval"
	"github.com/fedtune/fedtune/internal/atomicfile"
	"github.com/fedtune/fedtune/internal/audit"
	"github.com/fedtune/fedtune/internal/tlsid"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
	"github.com/fedtune/fedtune/ledger/node"
	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/trainer"
)

// Result is the outcome of a devnet job.
type Result struct {
	Job    string
	State  string // coordinator.JobDone, JobFailed or JobCancelled
	Detail string
	// Model is the last committed global model (adapter for LoRA).
	Model  string
	Rounds []*coordinatorv1.Round
	// EvalBefore and EvalAfter score the base model and the final model on
	// the job's eval data (nil when the job has none).
	EvalBefore, EvalAfter *model.EvalResult
	// Lineage is the ledger's lineage of Model.
	Lineage *ledger.Lineage
	// Membership asks every dataset behind Model, through its trainer,
	// whether it holds the first record of trainer-1's shard (audit
	// contains); Sample is that record's file.
	Membership *audit.ContainsReport
	Sample     string
	// Served is the inference node's answer on Model and its receipt.
	Served *Served
}

// Part is one running part of the network.
type Part struct {
	Name string
	stop func()
	done chan error // receives the part's result, once

	once  sync.Once
	ended chan struct{} // closed when err holds the part's result
	err   error
}

// wait returns a channel that is closed once the part has ended; p.err is
// then its result. Unlike a receive from done, it can be used any number of
// times (Part.Stop, then Network.Stop).
func (p *Part) wait() <-chan struct{} {
	p.once.Do(func() {
		p.ended = make(chan struct{})
		go func() {
			p.err = <-p.done
			close(p.ended)
		}()
	})
	return p.ended
}

// Stop stops the part and waits for it (SIGTERM, then SIGKILL after 10s).
// Calling it again returns the same result.
func (p *Part) Stop() error {
	p.stop()
	<-p.wait()
	return p.err
}

// partStopTimeout bounds how long Network.Stop waits for its parts.
const partStopTimeout = 60 * time.Second

// Network is a started devnet.
type Network struct {
	*Net
	Ledgers   []*Part
	Coord     *Part
	Agg       *Part // the standalone aggregator (nil when in-process)
	Trainers  []*Part
	Verifier  *Part   // the (first) verifier node (Options.Verify)
	Verifiers []*Part // every verifier node, Verifier first
}

// Start starts the ledger nodes, waits for a leader, then the coordinator
// and the trainers.
func (n *Net) Start(ctx context.Context) (*Network, error) {
	nw := &Network{Net: n}
	ok := false
	defer func() {
		if !ok {
			nw.Stop()
		}
	}()
	if err := n.startLedgers(ctx, nw); err != nil {
		return nil, err
	}
	if n.Aggregator != "" {
		fmt.Fprintf(n.Opts.Out, "aggregator on %s (TLS, id %s…)\n", n.Aggregator, n.ID("aggregator")[:12])
		p, err := n.startAggregator(ctx)
		if err != nil {
			return nil, err
		}
		nw.Agg = p
		fmt.Fprintf(n.Opts.Out, "coordinator + artifact store on %s (TLS, id %s…)\n", n.Coordinator, n.ID("coordinator")[:12])
	} else {
		fmt.Fprintf(n.Opts.Out, "coordinator + aggregator + artifact store on %s (TLS, id %s…)\n", n.Coordinator, n.ID("coordinator")[:12])
	}
	p, err := n.startCoordinator(ctx)
	if err != nil {
		return nil, err
	}
	nw.Coord = p
	for i := 1; i <= n.Opts.Trainers; i++ {
		p, err := n.StartTrainer(ctx, i)
		if err != nil {
			return nil, err
		}
		nw.Trainers = append(nw.Trainers, p)
	}
	if err := n.waitJoined(ctx); err != nil {
		return nil, err
	}
	fmt.Fprintf(n.Opts.Out, "trainers: %d joined, each with its own shard\n", n.Opts.Trainers)
	if n.Opts.Verify {
		if nw.Verifiers, err = n.startVerify(ctx); err != nil {
			return nil, err
		}
		nw.Verifier = nw.Verifiers[0]
	}
	ok = true
	return nw, nil
}

// StartLedgers starts only the three ledger nodes and waits for a leader:
// the network a test of the ledger alone needs. Stop stops them.
func (n *Net) StartLedgers(ctx context.Context) (*Network, error) {
	nw := &Network{Net: n}
	if err := n.startLedgers(ctx, nw); err != nil {
		nw.Stop()
		return nil, err
	}
	return nw, nil
}

func (n *Net) startLedgers(ctx context.Context, nw *Network) error {
	fmt.Fprintf(n.Opts.Out, "ledger: 3 nodes (raft + pebble) on %v\n", n.LedgerGRPC)
	for i := 1; i <= 3; i++ {
		p, err := n.startLedger(ctx, i)
		if err != nil {
			return err
		}
		nw.Ledgers = append(nw.Ledgers, p)
	}
	return n.waitLeader(ctx, nw.Ledgers)
}

// Stop stops every part, trainers first.
func (nw *Network) Stop() {
	parts := nw.parts()
	for _, p := range parts {
		if p != nil {
			p.stop()
		}
	}
	// Every part was signalled above, so each gets partStopTimeout from
	// then to end; one that does not is reported and left behind.
	timeout := time.NewTimer(partStopTimeout)
	defer timeout.Stop()
	expired := false
	for _, p := range parts {
		if p == nil {
			continue
		}
		if !expired {
			select {
			case <-p.wait():
				continue
			case <-timeout.C:
				expired = true
			}
		}
		select {
		case <-p.wait():
		default:
			fmt.Fprintf(nw.Opts.Out, "%s did not stop within %v; leaving it\n", p.Name, partStopTimeout)
		}
	}
	nw.Verifier, nw.Verifiers, nw.Trainers, nw.Coord, nw.Agg, nw.Ledgers = nil, nil, nil, nil, nil, nil
}

// parts returns the started parts in the order they stop: the verifiers,
// trainers, the coordinator, the aggregator, the ledger nodes.
func (nw *Network) parts() []*Part {
	var out []*Part
	out = append(out, nw.Verifiers...)
	out = append(out, nw.Trainers...)
	for _, p := range []*Part{nw.Coord, nw.Agg} {
		if p != nil {
			out = append(out, p)
		}
	}
	return append(out, nw.Ledgers...)
}

// run starts a part: a child process running the fedtune binary with
// args, or fn in a goroutine.
func (n *Net) run(ctx context.Context, name string, args []string, fn func(context.Context) error) (*Part, error) {
	p := &Part{Name: name, done: make(chan error, 1)}
	if n.Opts.InProcess {
		pctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		p.stop = cancel
		go func() { p.done <- fn(pctx) }()
		return p, nil
	}
	bin := n.Opts.Binary
	if bin == "" {
		var err error
		if bin, err = os.Executable(); err != nil {
			return nil, err
		}
	}
	logf, err := os.Create(n.path("logs", name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = n.Dir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // Ctrl-C reaches only us; we stop the children
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); logf.Close() }()
	p.stop = func() { _ = cmd.Process.Signal(syscall.SIGTERM) }
	go func() {
		select {
		case err := <-exited:
			p.done <- err
			return
		case <-ctx.Done():
			_ = cmd.Process.Signal(syscall.SIGTERM)
		}
		select {
		case err := <-exited:
			p.done <- err
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			p.done <- <-exited
		}
	}()
	// A stop requested before ctx ends also escalates to SIGKILL.
	stop := p.stop
	p.stop = func() {
		stop()
		go func() {
			time.Sleep(10 * time.Second)
			_ = cmd.Process.Kill()
		}()
	}
	return p, nil
}

func (n *Net) startLedger(ctx context.Context, i int) (*Part, error) {
	name := fmt.Sprintf("node-%d", i)
	cfgPath := n.path(name + ".yaml")
	return n.run(ctx, name, []string{"--log-level", "info", "ledger", "start", "--config", cfgPath}, func(ctx context.Context) error {
		cfg, err := node.LoadConfig(cfgPath)
		if err != nil {
			return err
		}
		nd, err := node.New(cfg, node.Options{Logger: n.Opts.Logger.With("node", i)})
		if err != nil {
			return err
		}
		return nd.Run(ctx)
	})
}

func (n *Net) startCoordinator(ctx context.Context) (*Part, error) {
	cfgPath := n.path("coordinator.yaml")
	p, err := n.run(ctx, "coordinator", []string{"--log-level", "info", "coordinator", "start", "--config", cfgPath}, func(ctx context.Context) error {
		cfg, err := coordinator.LoadServerConfig(cfgPath)
		if err != nil {
			return err
		}
		srv, err := coordinator.NewServer(ctx, *cfg, nil, n.Opts.Logger.With("part", "coordinator"))
		if err != nil {
			return err
		}
		return srv.Run(ctx)
	})
	if err != nil {
		return nil, err
	}
	return p, nil
}

func (n *Net) startAggregator(ctx context.Context) (*Part, error) {
	cfgPath := n.path("aggregator.yaml")
	return n.run(ctx, "aggregator", []string{"--log-level", "info", "aggregator", "start", "--config", cfgPath}, func(ctx context.Context) error {
		cfg, err := aggnode.LoadConfig(cfgPath)
		if err != nil {
			return err
		}
		srv, err := aggnode.NewServer(ctx, *cfg, nil, n.Opts.Logger.With("part", "aggregator"))
		if err != nil {
			return err
		}
		return srv.Run(ctx)
	})
}

// StartTrainer starts trainer i (1-based).
func (n *Net) StartTrainer(ctx context.Context, i int) (*Part, error) {
	name := fmt.Sprintf("trainer-%d", i)
	cfgPath := n.path(name, "trainer.yaml")
	return n.run(ctx, name, []string{"--log-level", "info", "trainer", "join", "--config", cfgPath}, func(ctx context.Context) error {
		cfg, err := trainer.LoadConfig(cfgPath)
		if err != nil {
			return err
		}
		var be trainer.Backend
		if n.Opts.TrainerBackend != nil {
			be = n.Opts.TrainerBackend(i)
		}
		t, err := trainer.New(*cfg, trainer.Options{Logger: n.Opts.Logger.With("part", name), Backend: be})
		if err != nil {
			return err
		}
		return t.Run(ctx)
	})
}

// Ledger dials ledger node i (0-based) over TLS as the admin key,
// accepting only the devnet's node keys.
func (n *Net) Ledger(ctx context.Context, i int) (*client.Client, error) {
	return client.Dial(ctx, n.LedgerGRPC[i], n.Keys["admin"], tlsid.AllowIDs(n.ID("node-1"), n.ID("node-2"), n.ID("node-3")))
}

// waitLeader waits until node 1 reports a leader. A node that exits
// meanwhile (a port taken, a bad config) ends the wait with its error.
func (n *Net) waitLeader(ctx context.Context, nodes []*Part) error {
	c, err := n.Ledger(ctx, 0)
	if err != nil {
		return err
	}
	defer c.Close()
	deadline := time.Now().Add(60 * time.Second)
	for {
		qctx, cancel := context.WithTimeout(ctx, time.Second)
		st, err := c.Status(qctx)
		cancel()
		if err == nil && st.LeaderId != "" {
			fmt.Fprintf(n.Opts.Out, "  leader %s…, height %d\n", st.LeaderId[:12], st.Height)
			return nil
		}
		for _, p := range nodes {
			select {
			case <-p.wait():
				return fmt.Errorf("devnet: ledger %s exited before a leader was elected (logs in %s): %v", p.Name, n.path("logs"), p.err)
			default:
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("devnet: no ledger leader after 60s (logs in %s): %v", n.path("logs"), err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// waitJoined waits until every trainer has joined the coordinator.
func (n *Net) waitJoined(ctx context.Context) error {
	conn, err := n.dial("admin")
	if err != nil {
		return err
	}
	defer conn.Close()
	c := coordinatorv1.NewCoordinatorClient(conn)
	deadline := time.Now().Add(90 * time.Second)
	for {
		st, err := c.Status(ctx, &coordinatorv1.StatusRequest{})
		if err == nil && (st.State != coordinator.JobIdle || len(st.Joined) >= n.Opts.Trainers) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("devnet: trainers did not all join within 90s (logs in %s): %v", n.path("logs"), err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// dial opens a TLS connection to the coordinator as the named identity.
func (n *Net) dial(as string) (*grpc.ClientConn, error) {
	opt, err := tlsid.DialOption(n.Keys[as], tlsid.ExpectID(n.ID("coordinator")))
	if err != nil {
		return nil, err
	}
	return grpc.NewClient(n.Coordinator, opt)
}

// launchWait bounds how long Launch asks again while the coordinator is
// unavailable (starting, or its ledger unreachable).
var launchWait = 2 * time.Minute

// Launch sends the job to the coordinator (as the admin), retrying while
// the coordinator is starting, for up to launchWait.
func (n *Net) Launch(ctx context.Context) (*coordinatorv1.LaunchJobResponse, error) {
	conn, err := n.dial("admin")
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	data, err := os.ReadFile(n.JobFile)
	if err != nil {
		return nil, err
	}
	c := coordinatorv1.NewCoordinatorClient(conn)
	deadline := time.Now().Add(launchWait)
	for {
		resp, err := c.LaunchJob(ctx, &coordinatorv1.LaunchJobRequest{JobYaml: data, Source: n.JobFile})
		if status.Code(err) != codes.Unavailable {
			return resp, coordinator.LaunchRefusal(n.JobFile, err)
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("the coordinator at %s was unavailable for %s (logs in %s): %s", n.Coordinator, launchWait, n.path("logs"), status.Convert(err).Message())
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Follow polls the job's status, printing progress, until it is done or
// failed, and returns the last status.
func (n *Net) Follow(ctx context.Context) (*coordinatorv1.StatusResponse, error) {
	conn, err := n.dial("admin")
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	c := coordinatorv1.NewCoordinatorClient(conn)
	names := map[string]string{}
	for name := range n.Keys {
		names[n.ID(name)] = name
	}
	evalOn := "the job's eval data"
	if job, err := coordinator.LoadJob(n.JobFile); err == nil && job.Eval.Data != "" {
		evalOn = filepath.Base(job.Eval.Data)
	}
	seen := map[string]bool{}
	say := func(key, format string, args ...any) {
		if !seen[key] {
			seen[key] = true
			fmt.Fprintf(n.Opts.Out, format+"\n", args...)
		}
	}
	start := time.Now()
	for {
		st, err := c.Status(ctx, &coordinatorv1.StatusRequest{JobId: n.JobName})
		if err == nil {
			for _, r := range st.Rounds {
				sel := make([]string, len(r.Selected))
				for i, id := range r.Selected {
					sel[i] = names[id]
				}
				say(fmt.Sprintf("open %d", r.Round), "[%5.1fs] round %d/%d opened: %v", time.Since(start).Seconds(), r.Round, st.RoundsTotal, sel)
				for _, u := range r.Updates {
					say(fmt.Sprintf("u %d %s", r.Round, u.Trainer), "[%5.1fs]   %s: update %s… loss %.4f on %d samples",
						time.Since(start).Seconds(), names[u.Trainer], u.UpdateDigest[:12], u.Metrics["loss"], u.Samples)
					if u.Rejected {
						say(fmt.Sprintf("rej %d %s", r.Round, u.Trainer), "[%5.1fs]   %s: update rejected: %s", time.Since(start).Seconds(), names[u.Trainer], u.RejectReason)
					}
				}
				switch r.Status {
				case string(ledger.StatusCommitted):
					say(fmt.Sprintf("end %d", r.Round), "[%5.1fs] round %d committed: global %s", time.Since(start).Seconds(), r.Round, r.ModelDigest)
					if r.Evaluated {
						say(fmt.Sprintf("eval %d", r.Round), "[%5.1fs] round %d eval by the coordinator on %s: NLL %.4f (perplexity %.2f)", time.Since(start).Seconds(), r.Round, evalOn, r.EvalNll, r.EvalPerplexity)
					}
				case string(ledger.StatusFailed):
					say(fmt.Sprintf("end %d", r.Round), "[%5.1fs] round %d failed: %s", time.Since(start).Seconds(), r.Round, r.FailReason)
				}
			}
			if st.State == coordinator.JobDone || st.State == coordinator.JobFailed || st.State == coordinator.JobCancelled {
				return st, nil
			}
			if st.State == coordinator.JobWaiting && st.Detail != "" {
				say("wait "+st.Detail, "[%5.1fs] waiting: %s", time.Since(start).Seconds(), st.Detail)
			}
		} else if c := status.Code(err); c != codes.Unavailable && c != codes.NotFound {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// Fetch downloads blob digest from the coordinator's artifact service.
func (n *Net) Fetch(ctx context.Context, digest, to string) error {
	opt, err := tlsid.DialOption(n.Keys["admin"], tlsid.ExpectID(n.ID("coordinator")))
	if err != nil {
		return err
	}
	ac, err := artifact.Dial(n.Coordinator, opt)
	if err != nil {
		return err
	}
	defer ac.Close()
	f, err := os.Create(to)
	if err != nil {
		return err
	}
	if _, err := ac.Download(ctx, digest, f); err != nil {
		f.Close()
		os.Remove(to)
		return err
	}
	return f.Close()
}

// Lineage reads the lineage of a model from the ledger.
func (n *Net) Lineage(ctx context.Context, digest string) (*ledger.Lineage, error) {
	c, err := n.Ledger(ctx, 2)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.Lineage(ctx, digest)
}

// Eval scores the base model, with the global weights in file global
// applied when given, on the job's eval data.
func (n *Net) Eval(ctx context.Context, global string) (*model.EvalResult, error) {
	if n.EvalData == "" {
		return nil, nil
	}
	job, err := coordinator.LoadJob(n.JobFile)
	if err != nil {
		return nil, err
	}
	var lora *model.LoRAConfig
	if l := job.FineTune.LoRA; job.FineTune.Mode == model.ModeLoRA && l != nil {
		lora = &model.LoRAConfig{Rank: l.Rank, Alpha: l.Alpha, Dropout: l.Dropout, Targets: l.Targets}
	}
	m, err := eval.LoadGlobal(n.BaseModel, global, lora)
	if err != nil {
		return nil, err
	}
	res, err := eval.File(ctx, m, n.BaseModel, n.EvalData, nil)
	if err != nil {
		return nil, err
	}
	return &res, nil
}

// Up prepares nothing: it starts the prepared network, evaluates the base
// model, runs the job to its end, reads the final model's lineage and
// evaluates it, then stops everything (also when ctx is cancelled).
func (n *Net) Up(ctx context.Context) (*Result, error) {
	nw, err := n.Start(ctx)
	if err != nil {
		return nil, err
	}
	defer nw.Stop()
	return n.RunJob(ctx)
}

// RunJob runs the job on the started network: it evaluates the base model,
// launches the job, follows it to its end, reads the final model's lineage
// and evaluates it.
func (n *Net) RunJob(ctx context.Context) (*Result, error) {
	var err error
	res := &Result{Job: n.JobName}
	if res.EvalBefore, err = n.Eval(ctx, ""); err != nil {
		return nil, fmt.Errorf("eval before: %w", err)
	}
	if res.EvalBefore != nil {
		fmt.Fprintf(n.Opts.Out, "eval before: mean NLL %.4f (perplexity %.2f) on %s\n", res.EvalBefore.MeanNLL, res.EvalBefore.Perplexity, filepath.Base(n.EvalData))
	}
	lr, err := n.Launch(ctx)
	if err != nil {
		return nil, fmt.Errorf("launch: %w", err)
	}
	fmt.Fprintf(n.Opts.Out, "job %s launched (config %s…)\n", lr.JobId, lr.ConfigDigest[:12])
	st, err := n.Follow(ctx)
	if err != nil {
		return nil, err
	}
	res.State, res.Detail, res.Rounds, res.Model = st.State, st.Detail, st.Rounds, st.Model
	if res.Model == "" {
		return res, fmt.Errorf("devnet: job %s ended %s without a committed model: %s", n.JobName, st.State, st.Detail)
	}
	if res.Lineage, err = n.Lineage(ctx, res.Model); err != nil {
		return res, fmt.Errorf("lineage: %w", err)
	}
	if res.Sample, res.Membership, err = n.contains(ctx, res.Model, res.Lineage); err != nil {
		return res, fmt.Errorf("audit contains: %w", err)
	}
	final := n.path("models", "final-"+res.Model[:12]+".safetensors")
	if err := n.Fetch(ctx, res.Model, final); err != nil {
		return res, fmt.Errorf("fetch final model: %w", err)
	}
	if res.EvalAfter, err = n.Eval(ctx, final); err != nil {
		return res, fmt.Errorf("eval after: %w", err)
	}
	if res.Served, err = n.Serve(ctx, res, final); err != nil {
		return res, fmt.Errorf("inference node: %w", err)
	}
	return res, nil
}

// contains writes the first record of trainer-1's shard to a file and asks
// every dataset in the lineage whether it holds it.
func (n *Net) contains(ctx context.Context, digest string, l *ledger.Lineage) (string, *audit.ContainsReport, error) {
	data, err := os.ReadFile(n.Shards[0])
	if err != nil {
		return "", nil, err
	}
	first, _, _ := bytes.Cut(data, []byte("\n"))
	sample := n.path("sample.jsonl")
	if err := atomicfile.Write(sample, append(first, '\n'), 0o644); err != nil {
		return "", nil, err
	}
	leaf, err := audit.SampleLeaf(sample, "")
	if err != nil {
		return "", nil, err
	}
	conn, err := n.dial("admin")
	if err != nil {
		return "", nil, err
	}
	defer conn.Close()
	// Published datasets are proved from their leaves in the coordinator's
	// artifact store, not asked of their owners.
	opt, err := tlsid.DialOption(n.Keys["admin"], tlsid.ExpectID(n.ID("coordinator")))
	if err != nil {
		return "", nil, err
	}
	ac, err := artifact.Dial(n.Coordinator, opt)
	if err != nil {
		return "", nil, err
	}
	defer ac.Close()
	rep, err := audit.ContainsWithLeaves(ctx, coordinatorv1.NewCoordinatorClient(conn), ac, digest, leaf, audit.LineageDatasets(l), 20*time.Second)
	return sample, rep, err
}

// TrainerName returns the devnet name of a key ID ("" when unknown).
func (n *Net) TrainerName(id string) string {
	for name := range n.Keys {
		if n.ID(name) == id {
			return name
		}
	}
	return ""
}

// Names returns the identities' names, sorted.
func (n *Net) Names() []string {
	var out []string
	for name := range n.Keys {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}
