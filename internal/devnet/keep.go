package devnet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/fedtune/fedtune/coordinator"
)

// KeptLine ends the guide UpKeep prints: from then on the network waits
// for Ctrl-C or SIGTERM.
const KeptLine = "== the network stays up until Ctrl-C or SIGTERM"

// NewTrainerName is the name the guide's commands give a joining trainer;
// its files go in the folder of that name in the devnet folder.
const NewTrainerName = "trainer-new"

// UpKeep is Up that keeps the network up after the job (Options.Keep must
// be set): it starts the network and runs the job, hands the result to
// report, writes the guide (WriteGuide) to Options.Out and then waits until
// ctx ends or a part exits, and stops every part. A cancelled ctx after the
// guide is the normal end: UpKeep then returns nil.
func (n *Net) UpKeep(ctx context.Context, report func(*Result)) error {
	if !n.Opts.Keep {
		return errors.New("devnet: UpKeep needs a network prepared with Options.Keep")
	}
	nw, err := n.Start(ctx)
	if err != nil {
		return err
	}
	defer nw.Stop()
	res, err := n.RunJob(ctx)
	if err != nil {
		return err
	}
	if report != nil {
		report(res)
	}
	if err := n.WriteGuide(n.Opts.Out, res.Model); err != nil {
		return err
	}
	ended := make(chan *Part, 1)
	for _, p := range nw.parts() {
		go func() {
			select {
			case <-p.wait():
				select {
				case ended <- p:
				default:
				}
			case <-ctx.Done():
			}
		}()
	}
	select {
	case <-ctx.Done():
	case p := <-ended:
		// A child process also ends when ctx does (SIGTERM from run).
		if ctx.Err() == nil {
			return fmt.Errorf("devnet: %s exited (%v) while the network was kept up (logs in %s)", p.Name, p.err, n.path("logs"))
		}
	}
	fmt.Fprintln(n.Opts.Out, "stopping the network")
	nw.Stop()
	fmt.Fprintln(n.Opts.Out, "network stopped")
	return nil
}

// WriteGuide writes the kept network's addresses and files, and the
// commands (absolute paths, ready to paste) that join a new trainer,
// launch another job and audit model, one command a line. It ends with
// KeptLine.
func (n *Net) WriteGuide(w io.Writer, model string) error {
	if n.NextJobFile == "" {
		return errors.New("devnet: no guide without Options.Keep")
	}
	bin, err := n.command()
	if err != nil {
		return err
	}
	data, err := filepath.Abs(filepath.Join(n.Opts.Repo, "datasets", "testdata", "tasks", "train.jsonl"))
	if err != nil {
		return err
	}
	var b strings.Builder
	line := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	cmd := func(args ...string) {
		q := make([]string, len(args))
		for i, a := range args {
			q[i] = shellQuote(a)
		}
		line("%s %s", shellQuote(bin), strings.Join(q, " "))
	}
	genesis, admin, ledger := n.GenesisPath(), n.path("keys", "admin.key"), n.LedgerGRPC[0]
	coord := []string{"--coordinator", n.Coordinator, "--coordinator-id", n.ID("coordinator"), "--key", admin}
	line("\n== the network is up")
	line("folder          %s (keys/: every part's key; certs/; logs/: every part's log)", n.Dir)
	line("genesis         %s", genesis)
	line("admin key       %s", admin)
	for i, a := range n.LedgerGRPC {
		line("ledger node-%d   gRPC %s, data %s", i+1, a, n.path(fmt.Sprintf("ledger-node-%d", i+1)))
	}
	for i, a := range n.LedgerMetrics {
		line("metrics node-%d  http://%s/metrics", i+1, a)
	}
	line("coordinator     %s (id %s), data %s", n.Coordinator, n.ID("coordinator"), n.path("coordinator"))
	line("artifact store  %s (the coordinator's), blobs in %s", n.Coordinator, n.path("coordinator", "artifacts"))
	if n.Aggregator != "" {
		line("aggregator      %s (id %s), data %s", n.Aggregator, n.ID("aggregator"), n.path("aggregator"))
	} else {
		line("aggregator      in the coordinator's process (key %s)", n.path("keys", "aggregator.key"))
	}
	line("last model      %s", model)
	if names := n.VerifierNames(); len(names) == 1 {
		line("verifier        id %s, data %s, metrics http://%s/metrics", n.ID(names[0]), n.path(names[0]), n.VerifierMetrics)
		line("\n# The verifier (role verifier, admitted by the admin) replays every update of the jobs")
		line("# before their rounds commit (verify: {fraction: 1, by: [it]}); it runs as:")
		cmd(n.VerifierArgs()...)
	} else if len(names) > 1 {
		for i, name := range names {
			line("%-15s id %s, data %s, metrics http://%s/metrics", name, n.ID(name), n.path(name), n.VerifiersMetrics[i])
		}
		line("\n# The verifiers (role verifier, admitted by the admin) replay every update of the jobs")
		line("# before their rounds commit (verify: {fraction: 1, by: [them], quorum: %d}); each runs as:", n.Opts.VerifyQuorum)
		for _, name := range names {
			cmd(n.VerifierArgsOf(name)...)
		}
	}
	if n.Opts.Verify {
		line("# each round's verdicts (UpdateVerified / UpdateRejected naming a step):")
		cmd("ledger", "query", "round", n.JobName, "--round", "1", "--addr", ledger, "--genesis", genesis)
	}
	line("\n# Join a new trainer: make its key and config, add it to the ledger as the admin,")
	line("# then join (it trains until Ctrl-C: run it in a terminal of its own).")
	dir := n.path(NewTrainerName)
	cmd("trainer", "init", "--dir", dir, "--name", NewTrainerName, "--data", data, "--coordinator", n.Coordinator,
		"--coordinator-id", n.ID("coordinator"), "--ledger", ledger, "--genesis", genesis)
	cmd("admin", "add-member", "--role", "trainer", "--name", NewTrainerName, "--pubkey", filepath.Join(dir, "trainer.pub"),
		"--key", admin, "--addr", ledger, "--genesis", genesis)
	cmd("trainer", "join", "--config", filepath.Join(dir, "trainer.yaml"))
	line("\n# Launch another job and follow it: the first job again, named %s, with the next", n.NextJobName)
	line("# seed. A job name runs once: for a third run, copy the file and change its name: and seed: lines.")
	cmd(append([]string{"round", "launch", "-f", n.NextJobFile}, coord...)...)
	cmd(append([]string{"round", "status", n.NextJobName}, coord...)...)
	line("# The coordinator runs one job at a time: one waiting for more trainers than joined")
	line("# holds it until cancelled (its launcher's or an admin's key):")
	cmd(append([]string{"round", "cancel", n.NextJobName, "--reason", "waits for more trainers than joined"}, coord...)...)
	if next, err := coordinator.LoadJob(n.NextJobFile); err == nil && next.Model.Path != "" {
		line("# The other examples in configs/jobs/ run here too: copy one, give it a new name:, and set")
		line("# model.path: %s and eval.data: %s as %s does.", next.Model.Path, next.Eval.Data, filepath.Base(n.NextJobFile))
	}
	line("\n# Audit the model: its lineage, each fact checked against blocks cosigned by 2 of")
	line("# the 3 nodes; then the whole chain re-derived from genesis, every aggregation re-run.")
	cmd("audit", "lineage", model, "--addr", ledger, "--quorum", "2", "--genesis", genesis)
	cmd("audit", "verify", "--ledger", ledger, "--genesis", genesis, "--artifacts", n.path("coordinator", "artifacts"))
	line("\n# Serve the model through OpenAI's API as the inference node (role inference in the genesis;")
	line("# Ctrl-C stops it), each answer's receipt bundle written to %s,", n.path("receipts"))
	line("# ask it, then audit an answer's bundle against the chain and by replay.")
	served := []string{"--model", n.servedModel(model)}
	if ad := n.servedAdapter(model); ad != "" {
		served = append(served, "--adapter", ad)
	}
	cmd(append(append([]string{"serve"}, served...), "--model-id", n.JobName, "--addr", "127.0.0.1:8000", "--key", n.path("keys", InferenceName+".key"),
		"--receipts-dir", n.path("receipts"))...)
	line(`curl -s http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' -d '{"model":"%s","messages":[{"role":"user","content":"hello"}],"max_tokens":16}'`, n.JobName)
	line("# REQUEST-HASH.json: the answer's bundle, the newest file in %s (ls -t %s | head -1).", n.path("receipts"), shellQuote(n.path("receipts")))
	cmd(append([]string{"audit", "receipt", n.path("receipts", "REQUEST-HASH.json"), "--ledger", ledger, "--genesis", genesis, "--replay"}, served...)...)
	line("")
	line("%s", KeptLine)
	_, err = io.WriteString(w, b.String())
	return err
}

// command returns the fedtune executable the guide's commands run: the
// one the parts run as, or "fedtune" when they run in this process.
func (n *Net) command() (string, error) {
	if n.Opts.InProcess {
		return "fedtune", nil
	}
	bin := n.Opts.Binary
	if bin == "" {
		var err error
		if bin, err = os.Executable(); err != nil {
			return "", err
		}
	}
	return filepath.Abs(bin)
}

// shellQuote quotes s for a POSIX shell when it holds anything but
// letters, digits and -_./:=@+,.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:=@+,") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
