package devnet

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"

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
// Options.Verify starts: not a genesis member, admitted by the admin's
// MemberAdded with role verifier once the ledger runs.
const VerifierName = "verifier"

// startVerify sets the network up for spot checks (Options.Verify): the
// admin admits the verifier; trainer-1 publishes its shard (a job with
// spot checks trains on published data alone, so any update can be
// replayed); the job files get datasets.published and verify {fraction:
// 1, by: [the verifier]}; and the verifier node starts, with only the
// ledger and artifact addresses and its key (it fetches the base model
// by the ledger's digests).
func (n *Net) startVerify(ctx context.Context) (*Part, error) {
	lc, err := n.Ledger(ctx, 0)
	if err != nil {
		return nil, err
	}
	defer lc.Close()
	vk := n.Keys[VerifierName]
	pub := vk.Public().(ed25519.PublicKey)
	if _, err := client.NewSigner(lc, n.Keys["admin"]).Submit(ctx, ledger.MemberAdded{
		PublicKey: hex.EncodeToString(pub), Role: ledger.RoleVerifier, Name: VerifierName}); err != nil {
		return nil, fmt.Errorf("admit the verifier: %w", err)
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
	vid := n.ID(VerifierName)
	for _, p := range []string{n.JobFile, n.NextJobFile} {
		if p == "" {
			continue
		}
		var job map[string]any
		if err := readYAMLFile(p, &job); err != nil {
			return nil, err
		}
		job["datasets"] = map[string]any{"published": []string{sm.Digest}, "range_samples": 8}
		job["verify"] = map[string]any{"fraction": 1, "by": []string{vid}}
		if err := writeYAML(p, job); err != nil {
			return nil, err
		}
	}
	fmt.Fprintf(n.Opts.Out, "verifier %s… admitted; trainer-1's shard published as %s…; the job spot-checks every update\n", vid[:12], sm.Digest[:12])
	work := n.path(VerifierName)
	args := append([]string{"--log-level", "info"}, n.VerifierArgs()...)
	return n.run(ctx, VerifierName, args, func(ctx context.Context) error {
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
		log := n.Opts.Logger.With("part", VerifierName)
		vn, err := verifier.New(verifier.Config{Ledger: vlc, Key: vk, Logger: log,
			Replayer: &spotcheck.Replayer{Ledger: vlc, Artifacts: vac, Store: st, CacheDir: filepath.Join(work, "models"),
				WorkDir: filepath.Join(work, "replays"), Logger: log}})
		if err != nil {
			return err
		}
		return vn.Run(ctx)
	})
}

// VerifierArgs are the arguments of the fedtune command that runs the
// devnet's verifier node (Options.Verify).
func (n *Net) VerifierArgs() []string {
	return []string{"verifier", "--ledger", n.LedgerGRPC[0], "--genesis", n.GenesisPath(), "--key", n.path("keys", VerifierName+".key"),
		"--artifacts", n.Coordinator, "--artifacts-id", n.ID("coordinator"), "--work-dir", n.path(VerifierName), "--metrics", n.VerifierMetrics}
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
