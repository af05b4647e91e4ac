package devnet

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"gopkg.in/yaml.v3"

	"github.com/fedtune/fedtune/artifact"
	"github.com/fedtune/fedtune/datasets"
	"github.com/fedtune/fedtune/internal/dspub"
	"github.com/fedtune/fedtune/internal/spotcheck"
	"github.com/fedtune/fedtune/internal/tlsid"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
	"github.com/fedtune/fedtune/trainer"
	"github.com/fedtune/fedtune/verifier"
)

// VerifierName is the devnet identity of the verifier node that
// Options.Verify starts when it starts one: not a genesis member,
// admitted by the admin's MemberAdded with role verifier once the ledger
// runs. Several (Options.Verifiers) are verifier-1, verifier-2, ….
const VerifierName = "verifier"

// VerifierNames returns the devnet identities of the verifier nodes
// (none without Options.Verify).
func (n *Net) VerifierNames() []string {
	switch k := n.Opts.Verifiers; {
	case !n.Opts.Verify:
		return nil
	case k <= 1:
		return []string{VerifierName}
	default:
		names := make([]string, k)
		for i := range names {
			names[i] = fmt.Sprintf("%s-%d", VerifierName, i+1)
		}
		return names
	}
}

// verifierCache is the cache folder of fetched base models of verifier
// name: with several verifiers, one folder they share.
func (n *Net) verifierCache(name string) string {
	if len(n.VerifierNames()) > 1 {
		return n.path("verifier-cache")
	}
	return n.path(name, "models")
}

// startVerify sets the network up for spot checks (Options.Verify): the
// admin admits the verifiers; trainer-1 publishes its shard (a job with
// spot checks trains on published data alone, so any update can be
// replayed); the job files get datasets.published and verify {fraction:
// 1, by: [the verifiers], quorum}; and the verifier nodes start, each
// with only the ledger and artifact addresses and its key (they fetch the
// base model by the ledger's digests).
func (n *Net) startVerify(ctx context.Context) ([]*Part, error) {
	lc, err := n.Ledger(ctx, 0)
	if err != nil {
		return nil, err
	}
	defer lc.Close()
	names := n.VerifierNames()
	admin := client.NewSigner(lc, n.Keys["admin"])
	var vids []string
	for _, name := range names {
		pub := n.Keys[name].Public().(ed25519.PublicKey)
		if _, err := admin.Submit(ctx, ledger.MemberAdded{PublicKey: hex.EncodeToString(pub), Role: ledger.RoleVerifier, Name: name}); err != nil {
			return nil, fmt.Errorf("admit %s: %w", name, err)
		}
		vids = append(vids, n.ID(name))
	}
	k1 := n.Keys["trainer-1"]
	d, ok := trainer.ReadInstruct(n.Shards[0])
	format := dspub.FormatInstruct
	if !ok {
		format = dspub.FormatText
		if d, err = datasets.Load(n.Shards[0], datasets.Options{}); err != nil {
			return nil, err
		}
	}
	opt, err := tlsid.DialOption(k1, tlsid.ExpectID(n.ID("coordinator")))
	if err != nil {
		return nil, err
	}
	ac, err := artifact.Dial(n.Coordinator, opt)
	if err != nil {
		return nil, err
	}
	defer ac.Close()
	sm, err := trainer.PublishDataset(ctx, ac, k1, d, nil,
		datasets.PublishOptions{Name: "devnet-shard-1", Format: format, Licence: "CC-BY-4.0", ShardSamples: 64})
	if err != nil {
		return nil, fmt.Errorf("publish trainer-1's shard: %w", err)
	}
	if _, err := client.NewSigner(lc, k1).Submit(ctx, ledger.DatasetPublished{Manifest: string(sm.Envelope)}); err != nil {
		return nil, fmt.Errorf("publish trainer-1's shard: %w", err)
	}
	for _, p := range []string{n.JobFile, n.NextJobFile} {
		if p == "" {
			continue
		}
		var job map[string]any
		if err := readYAMLFile(p, &job); err != nil {
			return nil, err
		}
		job["datasets"] = map[string]any{"published": []string{sm.Digest}, "range_samples": 8}
		v := map[string]any{"fraction": 1, "by": vids}
		if len(vids) > 1 {
			v["quorum"] = n.Opts.VerifyQuorum
		}
		job["verify"] = v
		if err := writeYAML(p, job); err != nil {
			return nil, err
		}
	}
	if len(names) == 1 {
		fmt.Fprintf(n.Opts.Out, "verifier %s… admitted; trainer-1's shard published as %s…; the job spot-checks every update\n", vids[0][:12], sm.Digest[:12])
	} else {
		fmt.Fprintf(n.Opts.Out, "%d verifiers admitted (quorum %d, one base-model cache); trainer-1's shard published as %s…; the job spot-checks every update\n",
			len(names), n.Opts.VerifyQuorum, sm.Digest[:12])
	}
	var parts []*Part
	for i, name := range names {
		p, err := n.startVerifier(ctx, i+1, name)
		if err != nil {
			for _, p := range parts {
				p.stop()
				<-p.wait()
			}
			return nil, err
		}
		parts = append(parts, p)
	}
	return parts, nil
}

// startVerifier starts verifier node i (1-based), named name.
func (n *Net) startVerifier(ctx context.Context, i int, name string) (*Part, error) {
	vk := n.Keys[name]
	work := n.path(name)
	args := append([]string{"--log-level", "info"}, n.VerifierArgsOf(name)...)
	return n.run(ctx, name, args, func(ctx context.Context) error {
		vlc, err := client.Dial(ctx, n.LedgerGRPC[0], vk, tlsid.AllowIDs(n.ID("node-1"), n.ID("node-2"), n.ID("node-3")))
		if err != nil {
			return err
		}
		defer vlc.Close()
		opt, err := tlsid.DialOption(vk, tlsid.ExpectID(n.ID("coordinator")))
		if err != nil {
			return err
		}
		vac, err := artifact.Dial(n.Coordinator, opt)
		if err != nil {
			return err
		}
		defer vac.Close()
		st, err := artifact.OpenStore(filepath.Join(work, "artifacts"))
		if err != nil {
			return err
		}
		log := n.Opts.Logger.With("part", name)
		var rp verifier.Replayer = &spotcheck.Replayer{Ledger: vlc, Artifacts: vac, Store: st, CacheDir: n.verifierCache(name),
			WorkDir: filepath.Join(work, "replays"), Logger: log}
		if f := n.Opts.VerifierReplayer; f != nil {
			if r := f(i, rp); r != nil {
				rp = r
			}
		}
		vn, err := verifier.New(verifier.Config{Ledger: vlc, Key: vk, Logger: log, Replayer: rp})
		if err != nil {
			return err
		}
		return vn.Run(ctx)
	})
}

// VerifierArgs are the arguments of the fedtune command that runs the
// devnet's (first) verifier node (Options.Verify).
func (n *Net) VerifierArgs() []string { return n.VerifierArgsOf(n.VerifierNames()[0]) }

// VerifierArgsOf are the arguments of the fedtune command that runs the
// devnet's verifier node name.
func (n *Net) VerifierArgsOf(name string) []string {
	metrics := ""
	if i := slices.Index(n.VerifierNames(), name); i >= 0 && i < len(n.VerifiersMetrics) {
		metrics = n.VerifiersMetrics[i]
	}
	args := []string{"verifier", "--ledger", n.LedgerGRPC[0], "--genesis", n.GenesisPath(), "--key", n.path("keys", name+".key"),
		"--artifacts", n.Coordinator, "--artifacts-id", n.ID("coordinator"), "--work-dir", n.path(name), "--metrics", metrics}
	if c := n.verifierCache(name); c != n.path(name, "models") {
		args = append(args, "--cache", c)
	}
	return args
}

// readYAMLFile reads the YAML file at path into v.
func readYAMLFile(path string, v any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := yaml.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
