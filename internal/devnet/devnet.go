package devnet

import (
	"bytes"
	"cmp"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	aggnode "github.com/fedtune/fedtune/aggregator/node"
	"github.com/fedtune/fedtune/coordinator"
	"github.com/fedtune/fedtune/datasets"
	"github.com/fedtune/fedtune/internal/atomicfile"
	"github.com/fedtune/fedtune/internal/digest"
	"github.com/fedtune/fedtune/internal/freeport"
	"github.com/fedtune/fedtune/internal/tlsid"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/node"
	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/chat"
	"github.com/fedtune/fedtune/model/safetensors"
	"github.com/fedtune/fedtune/model/tokenizer"
	"github.com/fedtune/fedtune/trainer"
	"github.com/fedtune/fedtune/verifier"
)

// Options configure a devnet. Paths default relative to Repo.
type Options struct {
	// Dir receives everything (required).
	Dir string
	// Repo is the fedtune source tree the shipped files are read from
	// (default: the working directory).
	Repo string
	// Trainers is how many trainers run (1 to 3: one per shipped shard;
	// default 3).
	Trainers int
	// Job is the job file (default configs/jobs/demo-lora.yaml). Its
	// model.path is replaced by the devnet's base model.
	Job string
	// JobName, Rounds and LocalSteps override the job's (0 or "": keep).
	JobName    string
	Rounds     int
	LocalSteps int
	// MinTrainers overrides trainers.min (0: keep).
	MinTrainers int
	// ModelConfig is the base model's config (default configs/models/tiny.yaml).
	ModelConfig string
	// PretrainData and PretrainSteps pre-train the base model from its
	// seeded initialisation (default datasets/testdata/english/train.txt, 100).
	PretrainData  string
	PretrainSteps int
	// EvalData, when set, replaces the job's eval data for the before and
	// after scores (relative to Repo).
	EvalData string
	// VerifyReceipt, when set, checks the receipt of the demo's inference
	// answer against the ledger and by replay (fedtune audit receipt's
	// check, which the CLI passes in).
	VerifyReceipt ReceiptVerifier
	// TrainData, when set, replaces the shipped shards: its lines (plain
	// JSONL samples or instruction records) are dealt round-robin to the
	// trainers, trainer i taking lines i, i+Trainers, … (relative to
	// Repo).
	TrainData string
	// ModelFiles, when set, is a folder whose tokenizer.json and
	// tokenizer_config.json (its chat template), where present, join the
	// base model folder; the pre-training tokenizes with that tokenizer
	// (relative to Repo).
	ModelFiles string
	// Binary is the fedtune executable for child processes (default: this
	// process's executable).
	Binary string
	// RemoteAggregator runs the aggregator as its own process (fedtune
	// aggregator start, with the aggregator key) that the coordinator
	// calls; the coordinator then holds no aggregator key.
	RemoteAggregator bool
	// InProcess runs every part in this process instead.
	InProcess bool
	// Keep prepares the network to be kept up after its job (UpKeep): the
	// ledger nodes serve metrics, and a second job file (Net.NextJobFile)
	// is written for the printed launch command.
	Keep bool
	// Device is the trainers' training device, on which the base model is
	// pre-trained too (trainer.Config.Device: cpu, the engine's Host and
	// the default; host; gorgonia; cuda; "" is cpu).
	Device string
	// Verify starts a verifier node (admitted by the admin with role
	// verifier) and runs the job on trainer-1's shard, published, with
	// verify {fraction: 1, by: [the verifier]}: every update is replayed
	// before its round commits.
	Verify bool
	// Verifiers is how many verifier nodes Verify starts (0: 1; more than
	// 0 turns Verify on). With more than one they are named verifier-1,
	// verifier-2, …, the job's verify rule names them all with quorum
	// VerifyQuorum, and they share one cache folder of fetched base
	// models.
	Verifiers int
	// VerifyQuorum is the job's verify quorum (0: a majority of the
	// verifiers).
	VerifyQuorum int
	// VerifierReplayer, with InProcess, gives verifier i (1-based) the
	// replayer to use instead of real, the real one (nil or a nil result:
	// real): a test's lying verifier.
	VerifierReplayer func(i int, real verifier.Replayer) verifier.Replayer
	// TrainerBackend, with InProcess, gives trainer i (1-based) its
	// training backend (nil or a nil result: trainer.NewBackend(Device)).
	TrainerBackend func(i int) trainer.Backend
	// Out receives the progress display (nil: discard).
	Out io.Writer
	// Logger receives logs of in-process parts (nil: discard).
	Logger *slog.Logger
}

func (o *Options) fill() error {
	if o.Dir == "" {
		return errors.New("devnet: Dir is required")
	}
	if err := trainer.ValidateDevice(o.Device); err != nil {
		return fmt.Errorf("devnet: %w", err)
	}
	if o.Repo == "" {
		o.Repo = "."
	}
	if o.Trainers == 0 {
		o.Trainers = 3
	}
	if o.Trainers < 1 || o.Trainers > 3 {
		return fmt.Errorf("devnet: %d trainers; the shipped shards allow 1 to 3", o.Trainers)
	}
	if o.Verifiers < 0 || o.Verifiers > ledger.MaxVerifiers {
		return fmt.Errorf("devnet: %d verifiers; want 1 to %d", o.Verifiers, ledger.MaxVerifiers)
	}
	if o.Verifiers > 0 {
		o.Verify = true
	}
	if o.Verify {
		o.Verifiers = max(o.Verifiers, 1)
		if o.VerifyQuorum == 0 {
			o.VerifyQuorum = o.Verifiers/2 + 1
		}
		if o.VerifyQuorum < 1 || o.VerifyQuorum > o.Verifiers {
			return fmt.Errorf("devnet: verify quorum %d; want 1 to the %d verifiers", o.VerifyQuorum, o.Verifiers)
		}
	}
	rel := func(p *string, def string) {
		if *p == "" {
			*p = def
		}
		if !filepath.IsAbs(*p) {
			*p = filepath.Join(o.Repo, *p)
		}
	}
	rel(&o.Job, "configs/jobs/demo-lora.yaml")
	rel(&o.ModelConfig, "configs/models/tiny.yaml")
	rel(&o.PretrainData, "datasets/testdata/english/train.txt")
	for _, p := range []*string{&o.TrainData, &o.ModelFiles} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(o.Repo, *p)
		}
	}
	for _, p := range []string{o.Job, o.ModelConfig, o.PretrainData} {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("%w (run from the fedtune source tree, or give its path with --repo)", err)
		}
	}
	if o.PretrainSteps == 0 {
		o.PretrainSteps = 100
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Net is a prepared devnet: its folder and the identities and addresses in it.
type Net struct {
	Opts    Options
	Dir     string
	ChainID string
	// Keys by name: admin, coordinator, aggregator, node-N, inference,
	// auditor, trainer-N.
	Keys map[string]ed25519.PrivateKey
	// Ledger nodes' gRPC and raft addresses, in order.
	LedgerGRPC []string
	LedgerRaft []string
	// LedgerMetrics are the nodes' Prometheus /metrics addresses (only
	// with Options.Keep).
	LedgerMetrics []string
	// Coordinator is the coordinator's gRPC address.
	Coordinator string
	// Aggregator is the standalone aggregator's gRPC address ("" unless
	// Options.RemoteAggregator).
	Aggregator string
	// BaseModel is the base model folder and BaseDigest its weight digest.
	BaseModel  string
	BaseDigest string
	// JobFile is the job as the devnet runs it; JobName its name.
	JobFile string
	JobName string
	// NextJobFile is the job again under the name NextJobName, for the
	// guide's launch command (only with Options.Keep).
	NextJobFile string
	NextJobName string
	// VerifierMetrics is the first verifier node's /metrics address
	// (Options.Verify); VerifiersMetrics every verifier's, in the order
	// of VerifierNames.
	VerifierMetrics  string
	VerifiersMetrics []string
	// EvalData is the job's held-out evaluation data ("" when none).
	EvalData string
	// Shards are the trainers' data files.
	Shards []string
}

// ID returns the key ID of the named identity.
func (n *Net) ID(name string) string { return ledger.KeyID(n.Keys[name].Public().(ed25519.PublicKey)) }

// GenesisPath returns the devnet's genesis file, which every generated
// coordinator, aggregator and trainer config names as ledger_genesis to
// pin the ledger nodes.
func (n *Net) GenesisPath() string { return n.path("genesis.yaml") }

func (n *Net) path(p ...string) string { return filepath.Join(append([]string{n.Dir}, p...)...) }

func freePort() (string, error) { return freeport.Addr() }

// Prepare writes a devnet into opts.Dir: keys, genesis, certificates,
// configs for every part, the base model and the job.
func Prepare(ctx context.Context, opts Options) (*Net, error) {
	if err := opts.fill(); err != nil {
		return nil, err
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, err
	}
	n := &Net{Opts: opts, Dir: dir, ChainID: "fedtune-devnet", Keys: map[string]ed25519.PrivateKey{}}
	for _, d := range []string{"keys", "certs", "logs", "models"} {
		if err := os.MkdirAll(n.path(d), 0o755); err != nil {
			return nil, err
		}
	}
	names := []string{"admin", "coordinator", "aggregator", "node-1", "node-2", "node-3", InferenceName, AuditorName}
	for i := 1; i <= opts.Trainers; i++ {
		names = append(names, fmt.Sprintf("trainer-%d", i))
	}
	names = append(names, n.VerifierNames()...)
	for _, name := range names {
		k, err := ledger.GenerateKey()
		if err != nil {
			return nil, err
		}
		if err := ledger.SaveKey(n.path("keys", name+".key"), k); err != nil {
			return nil, err
		}
		if err := ledger.SavePublicKey(n.path("keys", name+".pub"), k.Public().(ed25519.PublicKey)); err != nil {
			return nil, err
		}
		// The TLS certificate every part derives from its key at start,
		// written out for inspection (openssl x509 -text).
		pem, err := tlsid.CertificatePEM(k)
		if err != nil {
			return nil, err
		}
		if err := atomicfile.Write(n.path("certs", name+".pem"), pem, 0o644); err != nil {
			return nil, err
		}
		n.Keys[name] = k
	}
	if err := n.writeGenesis(); err != nil {
		return nil, err
	}
	if err := n.writeLedgerConfigs(); err != nil {
		return nil, err
	}
	if n.Coordinator, err = freePort(); err != nil {
		return nil, err
	}
	if opts.RemoteAggregator {
		if n.Aggregator, err = freePort(); err != nil {
			return nil, err
		}
	}
	for range n.VerifierNames() {
		a, err := freePort()
		if err != nil {
			return nil, err
		}
		n.VerifiersMetrics = append(n.VerifiersMetrics, a)
	}
	if len(n.VerifiersMetrics) > 0 {
		n.VerifierMetrics = n.VerifiersMetrics[0]
	}
	if err := n.writeCoordinatorConfig(); err != nil {
		return nil, err
	}
	if err := n.writeTrainerConfigs(); err != nil {
		return nil, err
	}
	if pre, err := n.checkJob(); err != nil {
		return nil, err
	} else if !pre {
		// A pretrain job's base is its initial model (writeJob).
		if err := n.makeBaseModel(ctx); err != nil {
			return nil, err
		}
	}
	if err := n.writeJob(); err != nil {
		return nil, err
	}
	if opts.EvalData != "" {
		p := opts.EvalData
		if !filepath.IsAbs(p) {
			p = filepath.Join(opts.Repo, p)
		}
		if n.EvalData, err = filepath.Abs(p); err != nil {
			return nil, err
		}
	}
	return n, nil
}

// AuditorName is the devnet identity of the auditor: a genesis member
// with role auditor, which may attest datasets (DatasetAttested).
const AuditorName = "auditor"

func (n *Net) writeGenesis() error {
	var missing []string
	pub := func(name string) string {
		k, ok := n.Keys[name]
		if !ok || len(k) != ed25519.PrivateKeySize {
			missing = append(missing, name)
			return ""
		}
		return hex.EncodeToString(k.Public().(ed25519.PublicKey))
	}
	g := ledger.Genesis{ChainID: n.ChainID, Policy: ledger.DefaultPolicy()}
	g.Policy.BlockInterval = 10 * time.Millisecond
	members := [][2]string{{"admin", "admin"}, {"coordinator", "coordinator"}, {"aggregator", "aggregator"}, {InferenceName, string(ledger.RoleInference)},
		{AuditorName, string(ledger.RoleAuditor)}}
	for i := 1; i <= n.Opts.Trainers; i++ {
		members = append(members, [2]string{fmt.Sprintf("trainer-%d", i), "trainer"})
	}
	for _, m := range members {
		g.Members = append(g.Members, ledger.GenesisMember{Name: m[0], Role: ledger.Role(m[1]), PublicKey: pub(m[0])})
	}
	for i := 1; i <= 3; i++ {
		name := fmt.Sprintf("node-%d", i)
		g.Nodes = append(g.Nodes, ledger.GenesisNode{Name: name, PublicKey: pub(name)})
	}
	if len(missing) > 0 {
		return fmt.Errorf("devnet genesis: no key for %s", strings.Join(missing, ", "))
	}
	if err := g.Validate(); err != nil {
		return fmt.Errorf("devnet: genesis: %w", err)
	}
	data, err := marshalConfig(&g)
	if err != nil {
		return err
	}
	return atomicfile.Write(n.GenesisPath(), data, 0o644)
}

func (n *Net) writeLedgerConfigs() error {
	for i := 0; i < 3; i++ {
		g, err := freePort()
		if err != nil {
			return err
		}
		r, err := freePort()
		if err != nil {
			return err
		}
		n.LedgerGRPC, n.LedgerRaft = append(n.LedgerGRPC, g), append(n.LedgerRaft, r)
		if n.Opts.Keep {
			m, err := freePort()
			if err != nil {
				return err
			}
			n.LedgerMetrics = append(n.LedgerMetrics, m)
		}
	}
	var peers []node.PeerConfig
	for i := 0; i < 3; i++ {
		peers = append(peers, node.PeerConfig{ID: n.ID(fmt.Sprintf("node-%d", i+1)), RaftAddress: n.LedgerRaft[i], GRPCAddress: n.LedgerGRPC[i]})
	}
	for i := 0; i < 3; i++ {
		name := fmt.Sprintf("node-%d", i+1)
		c := node.Config{NodeID: n.ID(name), DataDir: "ledger-" + name, KeyFile: "keys/" + name + ".key",
			RaftAddress: n.LedgerRaft[i], GRPCAddress: n.LedgerGRPC[i], Bootstrap: true, Peers: peers,
			Raft: node.RaftConfig{HeartbeatTimeout: 500 * time.Millisecond, ElectionTimeout: 500 * time.Millisecond,
				LeaderLeaseTimeout: 250 * time.Millisecond, CommitTimeout: 5 * time.Millisecond}}
		if n.Opts.Keep {
			c.MetricsAddress = n.LedgerMetrics[i]
		}
		if err := writeConfig(n.path(name+".yaml"), &c); err != nil {
			return err
		}
		if _, _, err := node.Init(n.path("genesis.yaml"), n.path(c.DataDir), n.path(c.KeyFile)); err != nil {
			return err
		}
	}
	return nil
}

func (n *Net) writeCoordinatorConfig() error {
	if err := os.MkdirAll(n.EvalDataRoot(), 0o755); err != nil {
		return err
	}
	c := coordinator.DefaultServerConfig()
	c.Listen, c.CoordinatorKey, c.AggregatorKey = n.Coordinator, "keys/coordinator.key", "keys/aggregator.key"
	c.Ledger, c.LedgerGenesis, c.DataDir = n.LedgerGRPC[0], "genesis.yaml", "coordinator"
	c.Tick, c.EvalDataRoot = 200*time.Millisecond, evalDataDir
	// The artifact limits stay unwritten: the coordinator's defaults.
	c.Artifacts = coordinator.ArtifactLimits{}
	if n.Aggregator != "" {
		c.AggregatorKey = ""
		c.Aggregator = &coordinator.RemoteAggregatorConfig{Address: n.Aggregator, ID: n.ID("aggregator")}
		a := aggnode.Config{Listen: n.Aggregator, Key: "keys/aggregator.key", Ledger: n.LedgerGRPC[1%len(n.LedgerGRPC)],
			LedgerGenesis: "genesis.yaml", Coordinator: n.Coordinator, CoordinatorID: n.ID("coordinator"), DataDir: "aggregator"}
		if err := writeConfig(n.path("aggregator.yaml"), &a); err != nil {
			return err
		}
	}
	return writeConfig(n.path("coordinator.yaml"), &c)
}

// evalDataDir is the coordinator's eval_data_root, relative to the devnet
// folder: the only place a job's eval.data path may name.
const evalDataDir = "data"

// EvalDataRoot returns the coordinator's eval data root: a job's eval.data
// path is read relative to it (and only inside it).
func (n *Net) EvalDataRoot() string { return n.path(evalDataDir) }

func (n *Net) writeTrainerConfigs() error {
	shards, err := n.dealTrainData()
	if err != nil {
		return err
	}
	for i := 1; i <= n.Opts.Trainers; i++ {
		name := fmt.Sprintf("trainer-%d", i)
		shard := filepath.Join(n.Opts.Repo, "datasets", "testdata", "shards", name+".jsonl")
		if shards != nil {
			shard = shards[i-1]
		}
		abs, err := filepath.Abs(shard)
		if err != nil {
			return err
		}
		n.Shards = append(n.Shards, abs)
		if err := os.MkdirAll(n.path(name), 0o700); err != nil {
			return err
		}
		c := trainer.Config{Name: name, KeyFile: "../keys/" + name + ".key", Coordinator: n.Coordinator,
			CoordinatorID: n.ID("coordinator"), Ledger: n.LedgerGRPC[(i-1)%3], LedgerGenesis: "../genesis.yaml", Data: abs, Licence: "CC0-1.0",
			Source: "fedtune shipped shard " + name, WorkDir: "work", Device: n.Opts.Device}
		data, err := c.Encode()
		if err != nil {
			return err
		}
		if err := atomicfile.Write(n.path(name, "trainer.yaml"), data, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// makeBaseModel initialises the tiny model from its config and pre-trains
// it briefly on English text on the trainers' device, so fine-tuning starts from a model that has
// learnt something.
func (n *Net) makeBaseModel(ctx context.Context) error {
	cfg, err := model.LoadConfigYAML(n.Opts.ModelConfig)
	if err != nil {
		return err
	}
	m, err := model.New(cfg, 1)
	if err != nil {
		return err
	}
	tok, err := tokenizer.Load(n.Opts.ModelFiles, cfg.VocabSize)
	if err != nil {
		return err
	}
	ds, err := datasets.Load(n.Opts.PretrainData, datasets.Options{})
	if err != nil {
		return err
	}
	windows := datasets.Windows(datasets.Tokenize(ds, tok), 64)
	tc := model.TrainConfig{Steps: n.Opts.PretrainSteps, Batch: 8, SeqLen: 64, LR: 3e-3, ClipNorm: 1, Schedule: model.ScheduleCosine, Seed: 1}
	fmt.Fprintf(n.Opts.Out, "base model: %s, pre-training %d steps on %s\n", filepath.Base(n.Opts.ModelConfig), tc.Steps, filepath.Base(n.Opts.PretrainData))
	tc.Progress = func(step int, loss, _ float64) {
		if step%25 == 0 || step == tc.Steps {
			fmt.Fprintf(n.Opts.Out, "  pre-train step %d/%d loss %.4f\n", step, tc.Steps, loss)
		}
	}
	tr, err := trainer.Train(ctx, n.Opts.Device, m, nil, tc, datasets.NewBatcher(windows, tc.Batch, 1))
	if err != nil {
		return err
	}
	n.BaseModel = n.path("models", "base")
	if n.BaseDigest, err = tr.Model.Save(n.BaseModel, safetensors.F32); err != nil {
		return err
	}
	if n.Opts.ModelFiles != "" {
		for _, name := range []string{tokenizer.FileName, chat.ConfigFileName} {
			data, err := os.ReadFile(filepath.Join(n.Opts.ModelFiles, name))
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return err
			}
			if err := atomicfile.Write(filepath.Join(n.BaseModel, name), data, 0o644); err != nil {
				return err
			}
		}
	}
	fmt.Fprintf(n.Opts.Out, "  base model %s\n", n.BaseDigest)
	return nil
}

// checkJob loads the devnet's job, refuses one whose rounds could never
// open on it (more trainers than it runs), and says whether it is a
// pretrain job.
func (n *Net) checkJob() (pretrain bool, err error) {
	job, err := coordinator.LoadJob(n.Opts.Job)
	if err != nil {
		return false, err
	}
	if need := cmp.Or(n.Opts.MinTrainers, job.Trainers.Min); need > n.Opts.Trainers {
		return false, fmt.Errorf("devnet: %s needs at least %d trainers (trainers.min) and the devnet runs %d (--trainers, at most 3, one per shipped shard): its first round would wait forever; run it on a network with more trainers, or lower trainers.min in a copy if its strategy allows", n.Opts.Job, need, n.Opts.Trainers)
	}
	return job.FineTune.Mode == model.ModePretrain, nil
}

// writeJob writes the job with the devnet's base model and overrides.
func (n *Net) writeJob() error {
	data, err := os.ReadFile(n.Opts.Job)
	if err != nil {
		return err
	}
	job, err := coordinator.ParseJob(n.Opts.Job, data)
	if err != nil {
		return err
	}
	var doc map[string]any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return err
	}
	pretrain := job.FineTune.Mode == model.ModePretrain
	if pretrain {
		// A pre-training job starts from the model its seed initialises
		// from model.init: the devnet writes the same one as its base
		// (for the before and after scores) and pins its digest.
		init, err := coordinator.InitialModel(job)
		if err != nil {
			return err
		}
		n.BaseModel = n.path("models", "init")
		if n.BaseDigest, err = init.Save(n.BaseModel, safetensors.F32); err != nil {
			return err
		}
		p := job.Model.Init
		if !filepath.IsAbs(p) {
			if p, err = filepath.Abs(filepath.Join(filepath.Dir(n.Opts.Job), p)); err != nil {
				return err
			}
		}
		doc["model"] = map[string]any{"init": p, "digest": n.BaseDigest}
		fmt.Fprintf(n.Opts.Out, "pretrain job: initial model %s from %s, seed %d\n", n.BaseDigest, filepath.Base(p), coordinator.InitSeed(job.Seed))
	} else {
		doc["model"] = map[string]any{"path": n.BaseModel, "digest": n.BaseDigest}
	}
	name := job.Name
	if n.Opts.JobName != "" {
		name = n.Opts.JobName
	}
	doc["name"] = name
	if n.Opts.Rounds > 0 {
		doc["rounds"] = n.Opts.Rounds
	}
	if n.Opts.LocalSteps > 0 {
		tr, _ := doc["train"].(map[string]any)
		if tr == nil {
			tr = map[string]any{}
		}
		if pretrain {
			tr["inner_steps"] = n.Opts.LocalSteps
		} else {
			tr["local_steps"] = n.Opts.LocalSteps
		}
		doc["train"] = tr
	}
	if n.Opts.MinTrainers > 0 {
		t, _ := doc["trainers"].(map[string]any)
		if t == nil {
			t = map[string]any{}
		}
		t["min"] = n.Opts.MinTrainers
		doc["trainers"] = t
	}
	if job.Eval.Data != "" && !digest.Valid(job.Eval.Data) {
		// The source job names its eval data relative to its own file; the
		// coordinator reads eval.data only inside its eval_data_root, so the
		// file is copied there and named by its place in it.
		p := job.Eval.Data
		if !filepath.IsAbs(p) {
			p = filepath.Join(filepath.Dir(n.Opts.Job), p)
		}
		if n.EvalData, err = filepath.Abs(p); err != nil {
			return err
		}
		data, err := os.ReadFile(n.EvalData)
		if err != nil {
			return fmt.Errorf("devnet job eval.data: %w", err)
		}
		name := filepath.Base(n.EvalData)
		if err := atomicfile.Write(filepath.Join(n.EvalDataRoot(), name), data, 0o644); err != nil {
			return err
		}
		ev, _ := doc["eval"].(map[string]any)
		ev["data"] = name
	}
	n.JobFile, n.JobName = n.path("job.yaml"), name
	if err := writeYAML(n.JobFile, doc); err != nil {
		return err
	}
	if _, err := coordinator.LoadJob(n.JobFile); err != nil {
		return fmt.Errorf("devnet job: %w", err)
	}
	if !n.Opts.Keep {
		return nil
	}
	// The same job under another name, for the guide's launch command (a
	// job name is launched once), and the next seed: with the first job's
	// seed a trainer given the same data range would train exactly its
	// round again and submit the weights that round committed as a model,
	// which the ledger refuses as an update.
	doc["name"] = name + "-2"
	switch s := doc["seed"].(type) {
	case nil:
		doc["seed"] = 1
	case int:
		doc["seed"] = s + 1
	case uint64:
		doc["seed"] = s + 1
	}
	n.NextJobFile, n.NextJobName = n.path("job-2.yaml"), name+"-2"
	if err := writeYAML(n.NextJobFile, doc); err != nil {
		return err
	}
	if _, err := coordinator.LoadJob(n.NextJobFile); err != nil {
		return fmt.Errorf("devnet job: %w", err)
	}
	return nil
}

func writeYAML(path string, v any) error {
	data, err := yaml.Marshal(v)
	if err != nil {
		return err
	}
	return atomicfile.Write(path, data, 0o600)
}

// dealTrainData deals Options.TrainData's lines round-robin into one file
// per trainer (keeping its extension) and returns their paths; nil when
// the shipped shards are used.
func (n *Net) dealTrainData() ([]string, error) {
	if n.Opts.TrainData == "" {
		return nil, nil
	}
	data, err := os.ReadFile(n.Opts.TrainData)
	if err != nil {
		return nil, fmt.Errorf("devnet train data: %w", err)
	}
	parts := make([][]byte, n.Opts.Trainers)
	k := 0
	for _, line := range bytes.Split(data, []byte("\n")) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		parts[k%len(parts)] = append(append(parts[k%len(parts)], line...), '\n')
		k++
	}
	if k < n.Opts.Trainers {
		return nil, fmt.Errorf("devnet train data %s: %d lines for %d trainers", n.Opts.TrainData, k, n.Opts.Trainers)
	}
	if err := os.MkdirAll(n.path("data-shards"), 0o755); err != nil {
		return nil, err
	}
	out := make([]string, len(parts))
	for i, p := range parts {
		out[i] = n.path("data-shards", fmt.Sprintf("trainer-%d%s", i+1, filepath.Ext(n.Opts.TrainData)))
		if err := atomicfile.Write(out[i], p, 0o644); err != nil {
			return nil, err
		}
	}
	return out, nil
}
