package inference

import (
	"errors"
	"fmt"
	"io/fs"
	"sync"
	"time"

	"github.com/fedtune/fedtune/inference/receipt"
	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/chat"
	"github.com/fedtune/fedtune/model/engine"
	"github.com/fedtune/fedtune/model/tokenizer"
)

// Model is a served model: what the API needs besides the Generator.
type Model struct {
	ID      string // the name clients ask for ("model" of a request)
	Digest  string // weight digest of the model (receipts)
	Adapter string // weight digest of the LoRA adapter merged in; "" for none
	// Tokenizer is the tokenizer digest (model.TokenizerDigest) of the
	// folder Tok and Chat were read from (receipts); "" when they came
	// from no folder (NewModel).
	Tokenizer  string
	Block      *receipt.Block      // the ledger block that committed the weights; nil standalone
	Context    int                 // max_position_embeddings: prompt + answer tokens at most
	Gen        Generator           // continues prompts
	Tok        tokenizer.Tokenizer // text <-> token ids
	Chat       ChatTemplate        // chat messages -> prompt text; nil means PlainChat
	BOS        *int                // put before a completion's prompt and PlainChat's text when set
	StopTokens []int               // end-of-sequence ids: an answer ends there with finish_reason "stop"
	Created    time.Time           // "created" of the model object
	// Lineage is the model's history on the ledger, answered at
	// LineagePath and drawn by the page at /; nil when standalone.
	Lineage *Lineage
	// LineageFunc, when set, is asked for the lineage at each request
	// instead of Lineage (a ledger-following node updates it as the
	// coordinator reports eval losses); it must be safe for concurrent
	// use, and nil from it means Lineage.
	LineageFunc func() *Lineage

	refs sync.WaitGroup // requests running on this model
}

// LoadOptions are LoadModelWith's choices beyond the folders.
type LoadOptions struct {
	// BF16Weights keeps a BF16 checkpoint's matrices in bfloat16 on the
	// engine (half the memory of float32) at the cost of decoding speed:
	// every product widens its weight panel again, about 4x slower per
	// decoded token at one stream. The answers are the same bits either
	// way. Off by default: a server is sized for throughput.
	BF16Weights bool
}

// LoadModel loads the model folder dir (with the LoRA adapter folder
// adapterDir merged in when set), its tokenizer and its chat template
// (PlainChat when it has none), and serves it as NewModel does, as Model
// id (the folder's weight digest when id is ""). Weights are held as
// float32; LoadModelWith can keep them in bfloat16.
func LoadModel(dir, adapterDir, id string, dev engine.Device, slots int) (*Model, error) {
	return LoadModelWith(dir, adapterDir, id, dev, slots, LoadOptions{})
}

// LoadModelWith is LoadModel with options.
func LoadModelWith(dir, adapterDir, id string, dev engine.Device, slots int, opts LoadOptions) (*Model, error) {
	load := model.Load
	if opts.BF16Weights {
		load = model.LoadBF16
	}
	m, err := load(dir)
	if err != nil {
		return nil, err
	}
	md, err := model.DigestPath(dir)
	if err != nil {
		return nil, err
	}
	var ad string
	if adapterDir != "" {
		a, err := model.LoadAdapter(adapterDir, m.Config)
		if err != nil {
			return nil, err
		}
		if ad, err = model.DigestPath(adapterDir); err != nil {
			return nil, err
		}
		if m, err = m.MergeShared(a); err != nil {
			return nil, err
		}
	}
	// The receipts name the digest of the files Tok and Chat are read from.
	td, err := model.TokenizerDigest(dir)
	if err != nil {
		return nil, err
	}
	tok, err := tokenizer.Load(dir, m.Config.VocabSize)
	if err != nil {
		return nil, err
	}
	var ct ChatTemplate
	switch t, err := chat.Load(dir); {
	case err == nil:
		ct = TemplateChat{t}
	case errors.Is(err, chat.ErrNoTemplate) || errors.Is(err, fs.ErrNotExist):
	default:
		return nil, err
	}
	if id == "" {
		id = md
	}
	sm, err := NewModel(m, tok, id, dev, slots)
	if err != nil {
		return nil, err
	}
	sm.Digest, sm.Adapter, sm.Chat, sm.Tokenizer = md, ad, ct, td
	return sm, nil
}

// NewModel serves m with tokenizer tok as Model id (m's digest when id is
// ""), uploaded to dev: on a BatcherGenerator decoding up to slots
// requests together (default 16) when dev is an engine.CacheDevice (the
// Host is), else on an EngineGenerator. Its Digest is m.Digest(), the
// digest of its weights as F32.
func NewModel(m *model.Model, tok tokenizer.Tokenizer, id string, dev engine.Device, slots int) (*Model, error) {
	d, err := m.Digest()
	if err != nil {
		return nil, fmt.Errorf("inference: model digest: %w", err)
	}
	var g Generator
	ctxLen := m.Config.MaxPositionEmbeddings
	if cd, ok := dev.(engine.CacheDevice); ok {
		bg, err := NewBatcherGenerator(cd, m, engine.BatcherConfig{Slots: slots})
		if err != nil {
			return nil, err
		}
		g, ctxLen = bg, bg.Context()
	} else if g, err = NewEngineGenerator(dev, m); err != nil {
		return nil, err
	}
	if id == "" {
		id = d
	}
	return &Model{ID: id, Digest: d, Context: ctxLen, Gen: g, Tok: tok,
		BOS: m.Config.BOSTokenID, StopTokens: m.Config.EOSTokenID, Created: time.Now()}, nil
}
