package cli

import (
	"cmp"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/fedtune/fedtune/inference"
	"github.com/fedtune/fedtune/inference/receipt"
	"github.com/fedtune/fedtune/ledger"
	"github.com/fedtune/fedtune/ledger/client"
	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/chat"
	"github.com/fedtune/fedtune/model/engine"
	"github.com/fedtune/fedtune/model/tokenizer"
)

// auditReceiptOpts is what "audit receipt" checks.
type auditReceiptOpts struct {
	ledgerAddr, genesisPath string
	quorum                  int
	replay                  bool
	modelDir, adapterDir    string
	device                  string // --device of the replay
}

func newAuditReceiptCmd() *cobra.Command {
	var o auditReceiptOpts
	cmd := &cobra.Command{
		Use:   "receipt FILE [--ledger ADDR [--genesis FILE | --quorum N]] [--replay --model DIR [--adapter DIR] [--device D]]",
		Short: "Check an inference node's signed receipt: signature, signer's role, committed model, replay",
		Long: "Check the receipt an inference node signed for an answer. FILE is a receipt bundle (the envelope with the\n" +
			"request body and the prompt token ids, as inference/receipt.Bundle writes it) or a bare receipt envelope\n" +
			"(its JSON, or the base64 of the Fedtune-Receipt response header).\n" +
			"Each check prints a line; the first that fails ends the command with its reason.\n" +
			"  signature   the envelope is a receipt signed by the key it names (and a bundle's request and ids hash\n" +
			"              to what it signed)\n" +
			"  request     a bundle's request is one a server answers (not readable two ways) and asked for the\n" +
			"              receipt's temperature, top_p, stop strings, max_tokens and seed (when it gives them) and,\n" +
			"              given as token ids, its prompt ids\n" +
			"  --ledger    the signer is an active member with role inference; the model (and adapter) are committed\n" +
			"              models of the chain, an adapter its job's adapter on that model; the receipt's block is the\n" +
			"              chain's block that committed them, checked against its hash and cosignatures (the --genesis\n" +
			"              nodes' quorum, or --quorum N of any node). Membership is checked at the chain's head: a\n" +
			"              member removed since refuses all its receipts, older ones too; the receipt's tokenizer digest\n" +
			"              (its node's tokenizer and chat-template files, model.TokenizerDigest) is the one the chain\n" +
			"              registers the base model with, where it registers one (a receipt naming none then fails)\n" +
			"  --replay    checks that the bundle's prompt ids are the request's (its prompt tokenized, or its chat\n" +
			"              messages rendered with --model's chat template, as the server does) and regenerates the\n" +
			"              answer from them with the recorded sampling parameters and\n" +
			"              seed on the --model (and --adapter) folder, whose digests (weights; tokenizer, where the\n" +
			"              receipt names one) must be the receipt's, and\n" +
			"              compares the token ids bit for bit (their hash), an answer cut by a stop string cut where\n" +
			"              the replay's text meets it, stop token ids only the model's; needs a bundle. The receipt\n" +
			"              does not say which engine device answered: replay on the one the node served with (serve --device;\n" +
			"              the Host by default), since a GPU's answer agrees with the Host's to float32 rounding only",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := auditReceipt(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), args[0], o); err != nil {
				return fmt.Errorf("audit receipt: %w", err)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.ledgerAddr, "ledger", "", "gRPC address of a ledger node: check the signer, the model and the block against the chain")
	genesisFlag(cmd, &o.genesisPath)
	f.IntVar(&o.quorum, "quorum", 0, "without --genesis: the receipt's block must carry at least N valid node cosignatures")
	f.BoolVar(&o.replay, "replay", false, "regenerate the answer and compare the token ids (needs --model and a bundle)")
	f.StringVar(&o.modelDir, "model", "", "the model folder to replay with")
	f.StringVar(&o.adapterDir, "adapter", "", "the LoRA adapter folder to replay with")
	f.StringVar(&o.device, "device", "host", "with --replay: "+deviceHelp+"; the device the node served on")
	return cmd
}

// failed prints a failed check's line and returns its reason as an error.
func failed(w io.Writer, check string, err error) error {
	fmt.Fprintf(w, "FAIL %-9s %v\n", check, err)
	return fmt.Errorf("%s: %w", check, err)
}

func passed(w io.Writer, check, format string, args ...any) {
	fmt.Fprintf(w, "ok   %-9s %s\n", check, fmt.Sprintf(format, args...))
}

func auditReceipt(ctx context.Context, out, warn io.Writer, path string, o auditReceiptOpts) error {
	if o.replay && o.modelDir == "" {
		return errors.New("--replay needs --model")
	}
	if !o.replay && (o.modelDir != "" || o.adapterDir != "" || (o.device != "" && o.device != "host")) {
		return errors.New("--model, --adapter and --device are for --replay")
	}
	dev, err := parseDevice(o.device)
	if err != nil {
		return err
	}
	if o.ledgerAddr == "" && (o.genesisPath != "" || o.quorum != 0) {
		return errors.New("--genesis and --quorum are for --ledger")
	}
	if o.quorum < 0 {
		return fmt.Errorf("--quorum %d is negative", o.quorum)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	env, b, err := receipt.Parse(data)
	if err != nil {
		return failed(out, "signature", err)
	}
	r, err := receipt.Verify(env)
	if err != nil {
		return failed(out, "signature", err)
	}
	passed(out, "signature", "receipt signed by %s over model %s, %d tokens, at %s", r.Signer, r.Model, r.CompletionTokens, r.Time.Format("2006-01-02T15:04:05Z07:00"))
	if b != nil {
		if _, err := b.Check(); err != nil {
			return failed(out, "bundle", err)
		}
		passed(out, "bundle", "the request body and prompt ids hash to what the receipt signed")
		if err := checkRequest(out, b, r); err != nil {
			return err
		}
	}
	if o.ledgerAddr != "" {
		err := withClient(ctx, o.ledgerAddr, o.genesisPath, warn, func(c *client.Client) error {
			if err := auditReceiptLedger(ctx, out, c, r, o.quorum); err != nil {
				return err
			}
			return auditReceiptTokenizer(ctx, out, c, r)
		})
		if err != nil {
			return err
		}
	}
	if o.replay {
		if b == nil {
			return failed(out, "replay", errors.New("FILE is a bare receipt envelope; a replay needs the bundle with the request and prompt ids"))
		}
		if err := auditReceiptReplay(ctx, out, b, r, o.modelDir, o.adapterDir, dev); err != nil {
			return err
		}
	}
	return nil
}

// auditReceiptLedger checks the signer, the model and the block against
// the chain c serves.
func auditReceiptLedger(ctx context.Context, out io.Writer, c *client.Client, r *receipt.Receipt, quorum int) error {
	m, err := c.Member(ctx, r.Signer)
	switch {
	case errors.Is(err, ledger.ErrRecordNotFound):
		return failed(out, "signer", fmt.Errorf("%s is not a member of the chain", r.Signer))
	case err != nil:
		return failed(out, "signer", err)
	case m.PublicKey != r.PublicKey:
		return failed(out, "signer", fmt.Errorf("member %s holds key %s, the receipt names %s", r.Signer, m.PublicKey, r.PublicKey))
	case !m.Active:
		return failed(out, "signer", fmt.Errorf("member %s was removed at height %d (%s)", r.Signer, m.RemovedHeight, m.RemovedReason))
	case m.Role != ledger.RoleInference:
		return failed(out, "signer", fmt.Errorf("member %s has role %s, not %s", r.Signer, m.Role, ledger.RoleInference))
	}
	passed(out, "signer", "active member %s%s with role %s (added at height %d)", r.Signer, nameSuffix(m.Name), m.Role, m.AddedHeight)

	anchor, err := committedModel(ctx, out, c, "model", r.Model)
	if err != nil {
		return err
	}
	if r.Adapter != "" {
		if anchor, err = committedModel(ctx, out, c, "adapter", r.Adapter); err != nil {
			return err
		}
		if err := adapterOn(ctx, c, anchor, r.Model); err != nil {
			return failed(out, "adapter", err)
		}
		passed(out, "adapter", "%s is an adapter of the receipt's model %s", r.Adapter, r.Model)
	}
	if r.Block == nil {
		passed(out, "block", "none recorded (a standalone node); the %s was committed at height %d", what(r), anchor.Height)
		return nil
	}
	if r.Block.Height != anchor.Height {
		return failed(out, "block", fmt.Errorf("the receipt names height %d, the chain committed the %s %s at height %d", r.Block.Height, what(r), anchor.Digest, anchor.Height))
	}
	vb, how, err := receiptBlock(ctx, c, r.Block.Height, quorum)
	if err != nil {
		return failed(out, "block", err)
	}
	if got := hex.EncodeToString(vb.Hash[:]); got != r.Block.Hash {
		return failed(out, "block", fmt.Errorf("block %d of the chain has hash %s, the receipt names %s", r.Block.Height, got, r.Block.Hash))
	}
	if err := commitsModel(vb, anchor); err != nil {
		return failed(out, "block", err)
	}
	passed(out, "block", "height %d hash %s holds tx %s committing the %s (%s)", r.Block.Height, r.Block.Hash, anchor.TxHash, what(r), how)
	return nil
}

// maxBaseHops bounds the models registeredTokenizer walks through from a
// committed model to the registered base model it was trained from.
const maxBaseHops = 16

// auditReceiptTokenizer checks the receipt's tokenizer digest against the
// one the chain registers the base model of its model with (the model
// itself when registered; a full fine-tune's round model: its job's base
// model). A chain that records none lets any pass, with a note; where it
// records one, a receipt naming another, or none, fails.
func auditReceiptTokenizer(ctx context.Context, out io.Writer, c *client.Client, r *receipt.Receipt) error {
	base, want, err := registeredTokenizer(ctx, c, r.Model)
	if err != nil {
		return failed(out, "tokenizer", err)
	}
	switch {
	case want == "":
		fmt.Fprintf(out, "note %-9s the chain registers base model %s with no tokenizer digest: the receipt's (%s) is not checked against it\n", "tokenizer", base, cmp.Or(r.Tokenizer, "none"))
	case r.Tokenizer == "":
		return failed(out, "tokenizer", fmt.Errorf("%w: the receipt names no tokenizer digest, but the chain registers base model %s with tokenizer digest %s", receipt.ErrMismatch, base, want))
	case r.Tokenizer != want:
		return failed(out, "tokenizer", fmt.Errorf("%w: the receipt names tokenizer digest %s, but the chain registers base model %s with tokenizer digest %s: the node served another tokenizer or chat template",
			receipt.ErrMismatch, r.Tokenizer, base, want))
	default:
		passed(out, "tokenizer", "%s is the tokenizer digest the chain registers base model %s with", r.Tokenizer, base)
	}
	return nil
}

// registeredTokenizer returns the registered base model d was trained
// from (d itself when registered) and the tokenizer digest the chain
// registers it with ("" for none).
func registeredTokenizer(ctx context.Context, c *client.Client, d string) (base, tok string, err error) {
	for range maxBaseHops {
		m, err := c.Model(ctx, d)
		if err != nil {
			return "", "", fmt.Errorf("model %s: %w", d, err)
		}
		if m.JobID == "" {
			return d, m.Tokenizer, nil
		}
		rec, err := c.Job(ctx, m.JobID)
		if err != nil {
			return "", "", fmt.Errorf("job %q, whose round %d committed %s: %w", m.JobID, m.Round, d, err)
		}
		next := rec.Recipe.BaseModel
		if next == "" {
			r1, err := c.Round(ctx, m.JobID, 1)
			if err != nil {
				return "", "", fmt.Errorf("round 1 of job %q: %w", m.JobID, err)
			}
			next = r1.BaseModel
		}
		if next == "" || next == d {
			return "", "", fmt.Errorf("job %q, whose round %d committed %s, names no other base model", m.JobID, m.Round, d)
		}
		d = next
	}
	return "", "", fmt.Errorf("no registered base model within %d jobs of %s", maxBaseHops, d)
}

// adapterOn checks that the adapter ad (its ledger record) belongs on the
// model the receipt names: a round's adapter is trained on its job's base
// model (the recipe's, else round 1's), and the job must be a LoRA job. An
// adapter merged into another model is a model the chain never
// committed, even when both are committed models. A registered adapter
// (no job) carries no base to check.
func adapterOn(ctx context.Context, c *client.Client, ad *ledger.Model, model string) error {
	if ad.JobID == "" {
		return nil
	}
	rec, err := c.Job(ctx, ad.JobID)
	if err != nil {
		return fmt.Errorf("job %q, whose round %d committed adapter %s: %w", ad.JobID, ad.Round, ad.Digest, err)
	}
	if rec.Recipe.InitialAdapter == "" {
		return fmt.Errorf("%s is the full model round %d of job %q committed, not an adapter", ad.Digest, ad.Round, ad.JobID)
	}
	base := rec.Recipe.BaseModel
	if base == "" {
		r1, err := c.Round(ctx, ad.JobID, 1)
		if err != nil {
			return fmt.Errorf("round 1 of job %q: %w", ad.JobID, err)
		}
		base = r1.BaseModel
	}
	if base != model {
		return fmt.Errorf("adapter %s was committed by round %d of job %q, trained on base model %s, not on the receipt's model %s: the chain never committed that pair",
			ad.Digest, ad.Round, ad.JobID, base, model)
	}
	return nil
}

func what(r *receipt.Receipt) string {
	if r.Adapter != "" {
		return "adapter"
	}
	return "model"
}

func nameSuffix(name string) string {
	if name == "" {
		return ""
	}
	return " (" + name + ")"
}

// committedModel checks that digest is a model of the chain: registered,
// or the committed model of a round (which the round's record must name).
func committedModel(ctx context.Context, out io.Writer, c *client.Client, check, digest string) (*ledger.Model, error) {
	m, err := c.Model(ctx, digest)
	if errors.Is(err, ledger.ErrRecordNotFound) {
		return nil, failed(out, check, fmt.Errorf("%s is not a committed model of the chain (no ModelRegistered or RoundCommitted names it)", digest))
	}
	if err != nil {
		return nil, failed(out, check, err)
	}
	if m.JobID == "" {
		passed(out, check, "%s registered%s at height %d", digest, nameSuffix(m.Name), m.Height)
		return m, nil
	}
	rd, err := c.Round(ctx, m.JobID, m.Round)
	if err != nil {
		return nil, failed(out, check, fmt.Errorf("round %d of job %q, which committed %s: %w", m.Round, m.JobID, digest, err))
	}
	if rd.Status != ledger.StatusCommitted || rd.ModelDigest != digest {
		return nil, failed(out, check, fmt.Errorf("round %d of job %q is %s with model %q, not committed with %s", m.Round, m.JobID, rd.Status, rd.ModelDigest, digest))
	}
	passed(out, check, "%s committed by round %d of job %q at height %d", digest, m.Round, m.JobID, m.Height)
	return m, nil
}

// receiptBlock fetches block h checked against its hash and cosignatures:
// a pinned client's genesis quorum of its nodes, else quorum of any node.
func receiptBlock(ctx context.Context, c *client.Client, h uint64, quorum int) (*client.VerifiedBlock, string, error) {
	p := c.Pin()
	if p == nil {
		vb, err := c.Block(ctx, h, quorum, "")
		if err != nil {
			return nil, "", err
		}
		return vb, fmt.Sprintf("%d valid cosignatures; no --genesis, so any node key counts", len(vb.Cosignatures)), nil
	}
	vb, err := c.Block(ctx, h, p.Quorum, p.ChainID)
	if err != nil {
		return nil, "", err
	}
	n := 0
	for _, cp := range vb.Cosignatures {
		if p.Has(cp.NodeID) {
			n++
		}
	}
	if n < p.Quorum {
		return nil, "", fmt.Errorf("%w: block %d has %d valid cosignatures from the nodes pinned by %s, want %d", client.ErrQuorum, h, n, p.Source, p.Quorum)
	}
	return vb, fmt.Sprintf("cosigned by %d of the %d nodes of %s, quorum %d", n, len(p.Nodes), p.Source, p.Quorum), nil
}

// commitsModel checks that block vb holds m's tx and that it is the
// ModelRegistered or RoundCommitted of m.
func commitsModel(vb *client.VerifiedBlock, m *ledger.Model) error {
	for _, raw := range vb.Block.Txs {
		h := ledger.TxHash(raw)
		if hex.EncodeToString(h[:]) != m.TxHash {
			continue
		}
		tx, err := ledger.DecodeTx(raw)
		if err != nil {
			return fmt.Errorf("tx %s in block %d: %w", m.TxHash, vb.Block.Header.Height, err)
		}
		switch body := tx.Body.(type) {
		case ledger.ModelRegistered:
			if body.Digest == m.Digest {
				return nil
			}
		case ledger.RoundCommitted:
			if body.ModelDigest == m.Digest {
				return nil
			}
		}
		return fmt.Errorf("tx %s in block %d is a %s that does not commit %s", m.TxHash, vb.Block.Header.Height, tx.Body.TxType(), m.Digest)
	}
	return fmt.Errorf("block %d holds no tx %s, which the chain says committed %s", vb.Block.Header.Height, m.TxHash, m.Digest)
}

// auditReceiptReplay regenerates the answer of bundle b and compares its
// token ids with the receipt's hash, generating on dev.
func auditReceiptReplay(ctx context.Context, out io.Writer, b *receipt.Bundle, r *receipt.Receipt, modelDir, adapterDir string, dev serveDevice) error {
	m, err := model.Load(modelDir)
	if err != nil {
		return failed(out, "replay", err)
	}
	// The folder's file digest, or the digest of its weights as F32 (the
	// two differ for a folder stored in another dtype or sharded).
	d, err := model.DigestPath(modelDir)
	if err != nil {
		return failed(out, "replay", err)
	}
	if d != r.Model {
		if d2, err := m.Digest(); err != nil || d2 != r.Model {
			return failed(out, "replay", fmt.Errorf("--model %s has digest %s (weights as F32: %s), the receipt names %s", modelDir, d, d2, r.Model))
		}
	}
	switch {
	case r.Adapter != "" && adapterDir == "":
		return failed(out, "replay", fmt.Errorf("the receipt names adapter %s: pass its folder as --adapter (a node serving with --ledger keeps it as FETCH-DIR/adapter-%s when started with --fetch-dir FETCH-DIR)", r.Adapter, r.Adapter))
	case r.Adapter == "" && adapterDir != "":
		return failed(out, "replay", errors.New("the receipt names no adapter, and --adapter was given"))
	case adapterDir != "":
		ad, err := model.LoadAdapter(adapterDir, m.Config)
		if err != nil {
			return failed(out, "replay", err)
		}
		if d, err = model.DigestPath(adapterDir); err != nil {
			return failed(out, "replay", err)
		}
		if d != r.Adapter {
			if d2, err := ad.Digest(); err != nil || d2 != r.Adapter {
				return failed(out, "replay", fmt.Errorf("--adapter %s has digest %s (weights as F32: %s), the receipt names %s", adapterDir, d, d2, r.Adapter))
			}
		}
		if m, err = m.Merge(ad); err != nil {
			return failed(out, "replay", err)
		}
	}
	// The folder's tokenizer and chat template re-derive the prompt ids:
	// they must be the ones the receipt names (and so, with --ledger,
	// the chain's).
	td, err := model.TokenizerDigest(modelDir)
	if err != nil {
		return failed(out, "replay", err)
	}
	switch {
	case r.Tokenizer == "":
		fmt.Fprintf(out, "note %-9s the receipt names no tokenizer digest: the prompt is re-derived with --model %s's files (tokenizer digest %s), which it does not bind\n", "tokenizer", modelDir, td)
	case td != r.Tokenizer:
		return failed(out, "replay", fmt.Errorf("%w: --model %s's tokenizer and chat-template files have tokenizer digest %s, the receipt names %s",
			receipt.ErrMismatch, modelDir, td, r.Tokenizer))
	}
	tok, err := tokenizer.Load(modelDir, m.Config.VocabSize)
	if err != nil {
		return failed(out, "replay", err)
	}
	if err := checkPrompt(out, b, r, tok, modelDir, m.Config.BOSTokenID); err != nil {
		return err
	}
	s := r.Sampling
	// The server stops at the model's end-of-sequence ids and nowhere
	// else: a receipt naming others would excuse an answer cut at a token
	// the node chose.
	if s.StopTokenIDs != nil && !slices.Equal(s.StopTokenIDs, m.Config.EOSTokenID) {
		return failed(out, "replay", fmt.Errorf("%w: the receipt's stop_token_ids %v are not the model's end-of-sequence ids %v (eos_token_id of --model's config)",
			receipt.ErrMismatch, s.StopTokenIDs, []int(m.Config.EOSTokenID)))
	}
	stop := s.StopTokenIDs
	if stop == nil {
		stop = m.Config.EOSTokenID
	}
	ed, err := dev.openDevice()
	if err != nil {
		return failed(out, "replay", err)
	}
	ids, err := engine.Generate(ctx, ed, m, b.PromptIDs, model.GenerateConfig{
		MaxTokens: s.MaxTokens, Temperature: s.Temperature, TopP: s.TopP, Seed: s.Seed, Stop: stop})
	err = errors.Join(err, ed.Close())
	if err != nil {
		return failed(out, "replay", err)
	}
	mode := "greedy"
	if s.Temperature > 0 {
		mode = fmt.Sprintf("sampled, temperature %g top_p %g seed %d", s.Temperature, s.TopP, s.Seed)
	}
	// A GPU answers as the Host does to float32 rounding only, so a
	// mismatch says which device replayed.
	where := fmt.Sprintf(" (replayed on the %s device; replay on the device that served)", cmp.Or(dev.name, "host"))
	// Stop strings cut the answer at a text boundary the tokens do not
	// show: the server keeps the tokens up to the one that completes the
	// first stop string met, as inference.StopAfter finds it in the
	// replay; an answer cut anywhere else was cut by the node.
	n := r.CompletionTokens
	if len(ids) < n {
		return failed(out, "replay", fmt.Errorf("%w: the replay (%s) generated %d tokens, the receipt signed %d%s", receipt.ErrMismatch, mode, len(ids), n, firstDiff(b.CompletionIDs, ids)+where))
	}
	// An answer the node's time limit cut (receipt cut "time") is the
	// first n tokens of the replay, which no stop string ends sooner.
	if keep := inference.StopAfter(tok, ids, s.Stop); keep != n && (r.Cut != receipt.CutTime || keep < n) {
		why := "no stop string occurs in the replay's text"
		if keep < len(ids) {
			why = fmt.Sprintf("the replay's text meets a stop string %v at token %d", s.Stop, keep)
		}
		return failed(out, "replay", fmt.Errorf("%w: the replay (%s) keeps %d tokens (%s), the receipt signed %d%s", receipt.ErrMismatch, mode, keep, why, n, firstDiff(b.CompletionIDs, ids)+where))
	}
	got, err := receipt.TokensHash(ids[:n])
	if err != nil {
		return failed(out, "replay", err)
	}
	if got != r.TokensHash {
		return failed(out, "replay", fmt.Errorf("%w: the replay's %d tokens (%s) hash to %s, the receipt signed tokens_hash %s%s", receipt.ErrMismatch, n, mode, got, r.TokensHash, firstDiff(b.CompletionIDs, ids)+where))
	}
	passed(out, "replay", "%d tokens regenerated (%s) hash to the receipt's tokens_hash %s, on the %s device", n, mode, got, cmp.Or(dev.name, "host"))
	if r.Cut == receipt.CutTime {
		fmt.Fprintf(out, "note %-9s the node's time limit cut the answer after %d tokens (the replay goes on to %d)\n", "cut", n, inference.StopAfter(tok, ids, s.Stop))
	}
	if b.Response != "" && len(s.Stop) == 0 {
		if text := tok.Decode(ids[:n]); asJSONText(text) == b.Response {
			passed(out, "response", "the bundle's text is the replayed tokens' text")
		} else {
			fmt.Fprintf(out, "note %-9s the bundle's text differs from the replayed tokens' text %q (the text is not signed; the tokens are)\n", "response", text)
		}
	}
	return nil
}

// checkRequest checks that the receipt's sampling is what the bundle's
// request asked for, read as the server reads it (inference.DecodeRequest,
// which refuses a body that could be read two ways): temperature, top_p,
// the stop strings, max_tokens and the seed when the request gives them,
// and the prompt ids when the request gives token ids. A node could
// otherwise answer with parameters it chose, a prompt it chose, or cut
// the answer at a stop string nobody asked for, and sign that honestly.
func checkRequest(out io.Writer, b *receipt.Bundle, r *receipt.Receipt) error {
	req, err := decodeBundleRequest(b.Request)
	if err != nil {
		return failed(out, "request", err)
	}
	s := r.Sampling
	topP := s.TopP
	if topP == 0 {
		topP = 1
	}
	var bad []string
	if req.Temperature != s.Temperature {
		bad = append(bad, fmt.Sprintf("temperature %g, the receipt %g", req.Temperature, s.Temperature))
	}
	if req.TopP != topP {
		bad = append(bad, fmt.Sprintf("top_p %g, the receipt %g", req.TopP, s.TopP))
	}
	if !slices.Equal(req.Stop, s.Stop) {
		bad = append(bad, fmt.Sprintf("stop %q, the receipt %q", req.Stop, s.Stop))
	}
	if req.MaxTokens != 0 && req.MaxTokens != s.MaxTokens {
		bad = append(bad, fmt.Sprintf("max_tokens %d, the receipt %d", req.MaxTokens, s.MaxTokens))
	}
	if req.Seed != nil && uint64(*req.Seed) != s.Seed {
		bad = append(bad, fmt.Sprintf("seed %d, the receipt %d", *req.Seed, s.Seed))
	}
	if req.PromptTokens != nil && !slices.Equal(req.PromptTokens, b.PromptIDs) {
		i := 0
		for i < min(len(req.PromptTokens), len(b.PromptIDs)) && req.PromptTokens[i] == b.PromptIDs[i] {
			i++
		}
		bad = append(bad, fmt.Sprintf("%d prompt token ids, not the %d the receipt signed (they differ from position %d)", len(req.PromptTokens), len(b.PromptIDs), i))
	}
	if len(bad) > 0 {
		return failed(out, "request", fmt.Errorf("%w: the request asked for %s", receipt.ErrMismatch, strings.Join(bad, "; ")))
	}
	seed := "the server's seed"
	if req.Seed != nil {
		seed = "its seed"
	}
	passed(out, "request", "the receipt's sampling is the request's (temperature %g, top_p %g, max_tokens %d, stop %q, %s)", s.Temperature, topP, s.MaxTokens, s.Stop, seed)
	return nil
}

// checkPrompt re-derives the prompt ids from the request, read as the
// server reads it (inference.DecodeRequest, content parts included), and
// compares them with the bundle's (whose hash the receipt signed). Token
// ids must be the bundle's (checkRequest); a completions "prompt" string is
// tokenized with the model's tokenizer, with or without its BOS token. A
// chat request's messages are rendered with the model folder's chat
// template (model/chat, with the generation prompt, at the receipt's time
// or the day before, for a template that prints the date) or, without one,
// as "role: content" lines then "assistant:", and tokenized. A mismatch
// fails: the node fed the model a prompt the request did not ask for (a
// system prompt of its own, say). Only a template whose text depends on
// the time of day, which the receipt does not pin, is let off with a note.
func checkPrompt(out io.Writer, b *receipt.Bundle, r *receipt.Receipt, tok tokenizer.Tokenizer, modelDir string, bos *int) error {
	matches := func(ids []int) bool {
		return slices.Equal(ids, b.PromptIDs) || bos != nil && slices.Equal(append([]int{*bos}, ids...), b.PromptIDs)
	}
	req, err := decodeBundleRequest(b.Request)
	if err != nil {
		return failed(out, "prompt", err)
	}
	switch {
	case req.PromptTokens != nil:
		if !slices.Equal(req.PromptTokens, b.PromptIDs) {
			return failed(out, "prompt", fmt.Errorf("%w: the request's %d prompt token ids are not the bundle's %d", receipt.ErrMismatch, len(req.PromptTokens), len(b.PromptIDs)))
		}
		passed(out, "prompt", "the request's prompt is the bundle's %d token ids", len(b.PromptIDs))
	case req.Messages == nil:
		ids := tok.Encode(req.Prompt)
		if !matches(ids) {
			return failed(out, "prompt", fmt.Errorf("%w: the request's prompt tokenizes to %d ids, not the bundle's %d prompt ids", receipt.ErrMismatch, len(ids), len(b.PromptIDs)))
		}
		passed(out, "prompt", "the request's prompt tokenizes to the bundle's %d prompt ids", len(b.PromptIDs))
	default:
		text, how, err := renderChat(modelDir, req.Messages, r.Time)
		if err != nil {
			return failed(out, "prompt", fmt.Errorf("the request's %d messages rendered with %s: %w", len(req.Messages), how, err))
		}
		if matches(tok.Encode(text)) {
			passed(out, "prompt", "the request's %d messages, rendered with %s, tokenize to the bundle's %d prompt ids", len(req.Messages), how, len(b.PromptIDs))
			return nil
		}
		// A template that prints the date: the server rendered it when
		// the request came, maybe the day before the answer's time.
		before, _, errBefore := renderChat(modelDir, req.Messages, r.Time.AddDate(0, 0, -1))
		if errBefore == nil && before != text && matches(tok.Encode(before)) {
			passed(out, "prompt", "the request's %d messages, rendered with %s on the day before the receipt's time, tokenize to the bundle's %d prompt ids", len(req.Messages), how, len(b.PromptIDs))
			return nil
		}
		hour, _, errHour := renderChat(modelDir, req.Messages, r.Time.Add(-time.Minute))
		if errHour == nil && hour != text {
			fmt.Fprintf(out, "note %-9s the request's messages rendered with %s, which prints the time of day, do not give the bundle's prompt ids; replaying the bundle's %d ids, whose hash the receipt signed\n", "prompt", how, len(b.PromptIDs))
			return nil
		}
		return failed(out, "prompt", fmt.Errorf("%w: the request's %d messages rendered with %s tokenize to other ids than the bundle's %d prompt ids: the node fed the model another prompt",
			receipt.ErrMismatch, len(req.Messages), how, len(b.PromptIDs)))
	}
	return nil
}

// decodeBundleRequest reads a bundle's request body as the server did:
// a chat request when it has messages, else a completions request.
func decodeBundleRequest(body []byte) (*inference.Request, error) {
	var probe struct {
		Messages json.RawMessage `json:"messages"`
	}
	e := inference.Completions
	if json.Unmarshal(body, &probe) == nil && probe.Messages != nil {
		e = inference.ChatCompletions
	}
	req, apiErr := inference.DecodeRequest(e, body)
	if apiErr != nil {
		return nil, fmt.Errorf("%w: the request is not one a server answers: %s", receipt.ErrMismatch, apiErr.Message)
	}
	return req, nil
}

// renderChat renders msgs as a server would: with the model folder's chat
// template when it has one, else as "role: content" lines then
// "assistant:".
func renderChat(modelDir string, msgs []chat.Message, now time.Time) (text, how string, err error) {
	t, err := chat.Load(modelDir)
	if errors.Is(err, chat.ErrNoTemplate) || errors.Is(err, fs.ErrNotExist) {
		var b strings.Builder
		for _, m := range msgs {
			fmt.Fprintf(&b, "%s: %s\n", m.Role, m.Content)
		}
		b.WriteString("assistant:")
		return b.String(), "the plain role: content form (the model has no chat template)", nil
	}
	if err != nil {
		return "", "the model's chat template", err
	}
	text, err = t.Render(msgs, chat.Options{AddGenerationPrompt: true, Now: now})
	return text, "the model's chat template", err
}

// firstDiff names the first index where the recorded ids (when the bundle
// has them) and the replay differ.
func firstDiff(recorded, replay []int) string {
	if recorded == nil {
		return ""
	}
	for i := range min(len(recorded), len(replay)) {
		if recorded[i] != replay[i] {
			return fmt.Sprintf(" (first difference at token %d: recorded %d, replayed %d)", i, recorded[i], replay[i])
		}
	}
	return fmt.Sprintf(" (recorded %d ids, replayed %d)", len(recorded), len(replay))
}

// asJSONText is s as it reads back from JSON: encoding/json writes each
// byte of invalid UTF-8 (a byte-level token cut mid-character) as U+FFFD,
// so an answer's text in a bundle or a response body has them replaced.
func asJSONText(s string) string {
	b, err := json.Marshal(s)
	if err != nil {
		return s
	}
	var out string
	if json.Unmarshal(b, &out) != nil {
		return s
	}
	return out
}
