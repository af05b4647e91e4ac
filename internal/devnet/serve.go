package devnet

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/fedtune/fedtune/coordinator"
	"github.com/fedtune/fedtune/inference"
	"github.com/fedtune/fedtune/inference/receipt"
	"github.com/fedtune/fedtune/internal/digest"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/engine"
)

// InferenceName is the devnet identity of the inference node: a genesis
// member with role inference, whose key signs the demo answer's receipt.
const InferenceName = "inference"

// DemoQuestion is the chat message the demo sends to the inference node.
const DemoQuestion = "Say hello to the network."

// ReceiptVerifier checks the receipt bundle in file bundle as fedtune
// audit receipt does with --ledger ledgerAddr --genesis genesis --replay
// --model modelDir [--adapter adapterDir], writing its check lines to out.
type ReceiptVerifier func(ctx context.Context, out io.Writer, bundle, ledgerAddr, genesis, modelDir, adapterDir string) error

// Served is the demo's inference step: one chat answer of the job's final
// model and its checked receipt.
type Served struct {
	Addr      string // the node's HTTP address
	ModelDir  string // the served model folder (the base model)
	Adapter   string // the adapter folder merged in ("" for a full model)
	Question  string
	Answer    string
	Bundle    string // the answer's receipt bundle (inference.BundlePath)
	Receipt   *receipt.Receipt
	Verified  bool   // Options.VerifyReceipt passed (with --replay)
	Checks    string // its output
	Committed uint64 // the height of the block that committed the model
}

// Serve starts an inference node in this process on the job's final model
// (res.Model, fetched from the artifact store and checked against the
// round the ledger committed it in), sends it one chat request, and checks
// the receipt of its answer with Options.VerifyReceipt when set. A LoRA
// job's adapter is merged into the base model; a full fine-tune's weights
// are served on the base folder's config and tokenizer.
func (n *Net) Serve(ctx context.Context, res *Result, final string) (*Served, error) {
	c, err := n.Ledger(ctx, 0)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	lm, err := c.Model(ctx, res.Model)
	if err != nil {
		return nil, fmt.Errorf("model %s on the ledger: %w", res.Model, err)
	}
	rd, err := c.Round(ctx, lm.JobID, lm.Round)
	if err != nil {
		return nil, err
	}
	if rd.Status != ledger.StatusCommitted || rd.ModelDigest != res.Model {
		return nil, fmt.Errorf("round %d of job %q is %s with model %q, not committed with %s", lm.Round, lm.JobID, rd.Status, rd.ModelDigest, res.Model)
	}
	if err := fileDigest(final, res.Model); err != nil {
		return nil, err
	}
	vb, err := c.Block(ctx, lm.Height, 2, n.ChainID)
	if err != nil {
		return nil, fmt.Errorf("block %d: %w", lm.Height, err)
	}
	block := &receipt.Block{Height: lm.Height, Hash: hex.EncodeToString(vb.Hash[:])}

	job, err := coordinator.LoadJob(n.JobFile)
	if err != nil {
		return nil, err
	}
	s := &Served{ModelDir: n.BaseModel, Question: DemoQuestion, Committed: lm.Height}
	var sm *inference.Model
	if l := job.FineTune.LoRA; job.FineTune.Mode == model.ModeLoRA && l != nil {
		s.Adapter = n.servedAdapter(res.Model)
		if err := inference.AdapterFolder(final, s.Adapter, model.LoRAConfig{Rank: l.Rank, Alpha: l.Alpha, Dropout: l.Dropout, Targets: l.Targets}); err != nil {
			return nil, err
		}
		if sm, err = inference.LoadModel(n.BaseModel, s.Adapter, "", engine.NewHost(), 2); err != nil {
			return nil, err
		}
		if sm.Adapter != res.Model {
			sm.Gen.Close()
			return nil, fmt.Errorf("the served adapter has digest %s, the ledger committed %s", sm.Adapter, res.Model)
		}
	} else {
		// A full fine-tune's global weights, on the base folder's config,
		// tokenizer and chat template.
		s.ModelDir = n.servedModel(res.Model)
		if err := inference.ModelFolder(n.BaseModel, final, s.ModelDir); err != nil {
			return nil, err
		}
		if sm, err = inference.LoadModel(s.ModelDir, "", "", engine.NewHost(), 2); err != nil {
			return nil, err
		}
		if sm.Digest != res.Model {
			sm.Gen.Close()
			return nil, fmt.Errorf("the served model has digest %s, the ledger committed %s", sm.Digest, res.Model)
		}
	}
	sm.Block = block
	dir := n.path("receipts")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		sm.Gen.Close()
		return nil, err
	}
	// The node's request log goes to logs/inference.log, as every other
	// part's does, not into the demo's display.
	if err := os.MkdirAll(n.path("logs"), 0o755); err != nil {
		sm.Gen.Close()
		return nil, err
	}
	logf, err := os.OpenFile(n.path("logs", InferenceName+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		sm.Gen.Close()
		return nil, err
	}
	defer logf.Close()
	srv := inference.NewServer(sm, inference.Config{MaxConcurrent: 2, RequestTimeout: time.Minute,
		Receipter: inference.Signer{Key: n.Keys[InferenceName], Dir: dir}, Logger: slog.New(slog.NewTextHandler(logf, nil))})
	defer srv.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go hs.Serve(ln)
	defer hs.Close()
	s.Addr = ln.Addr().String()

	body, err := json.Marshal(map[string]any{"model": sm.ID, "max_tokens": 24, "temperature": 0,
		"messages": []map[string]string{{"role": "user", "content": DemoQuestion}}})
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+s.Addr+"/v1/chat/completions", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("chat completion: %s: %s", resp.Status, bytes.TrimSpace(data))
	}
	var cr struct {
		Choices []struct {
			Message struct {
				Content string `json:"content"`
			} `json:"message"`
		} `json:"choices"`
	}
	if err := json.Unmarshal(data, &cr); err != nil || len(cr.Choices) != 1 {
		return nil, fmt.Errorf("chat completion: unexpected answer %s", bytes.TrimSpace(data))
	}
	s.Answer = cr.Choices[0].Message.Content
	s.Bundle = inference.BundlePath(dir, body)
	b, err := os.ReadFile(s.Bundle)
	if err != nil {
		return nil, fmt.Errorf("receipt bundle: %w", err)
	}
	env, _, err := receipt.Parse(b)
	if err != nil {
		return nil, err
	}
	if s.Receipt, err = receipt.Verify(env); err != nil {
		return nil, err
	}
	if v := n.Opts.VerifyReceipt; v != nil {
		var out bytes.Buffer
		err := v(ctx, &out, s.Bundle, n.LedgerGRPC[0], n.GenesisPath(), s.ModelDir, s.Adapter)
		s.Checks = out.String()
		if err != nil {
			return nil, fmt.Errorf("receipt: %w\n%s", err, s.Checks)
		}
		s.Verified = true
	}
	return s, nil
}

// fileDigest checks that the file at path has the digest want.
func fileDigest(path, want string) error {
	got, err := digest.File(path)
	if err != nil {
		return err
	}
	if got != want {
		if d, err := model.DigestPath(path); err == nil && d == want {
			return nil
		}
		return fmt.Errorf("%s has digest %s, the ledger committed %s", path, got, want)
	}
	return nil
}

// servedModel is the model folder Serve serves for model digest: the base
// model for a LoRA job (the adapter merged in), a folder of the full
// weights on the base's other files for a full fine-tune.
func (n *Net) servedModel(digest string) string {
	job, err := coordinator.LoadJob(n.JobFile)
	if err != nil || job.FineTune.Mode == model.ModeLoRA || len(digest) < 12 {
		return n.BaseModel
	}
	return n.path("models", "served-"+digest[:12])
}

// servedAdapter is the adapter folder Serve makes of the global adapter
// model ("" for a job that is not LoRA).
func (n *Net) servedAdapter(digest string) string {
	job, err := coordinator.LoadJob(n.JobFile)
	if err != nil || job.FineTune.Mode != model.ModeLoRA || len(digest) < 12 {
		return ""
	}
	return n.path("models", "served-adapter-"+digest[:12])
}
