package inference

import (
	"fmt"
	"sync"
	"time"

	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/engine"
	"github.com/fedtune/fedtune/model/tokenizer"
)

// Model is a served model: what the API needs besides the Generator.
type Model struct {
	ID         string              // the name clients ask for ("model" of a request)
	Digest     string              // digest of the served weights (receipts)
	Context    int                 // max_position_embeddings: prompt + answer tokens at most
	Gen        Generator           // continues prompts
	Tok        tokenizer.Tokenizer // text <-> token ids
	Chat       ChatTemplate        // chat messages -> prompt text; nil means PlainChat
	BOS        *int                // prepended to every prompt when set
	StopTokens []int               // end-of-sequence ids: an answer ends there with finish_reason "stop"
	Created    time.Time           // "created" of the model object

	refs sync.WaitGroup // requests running on this model
}

// LoadModel loads the model folder dir (with the LoRA adapter folder
// adapterDir merged in when set) and its tokenizer, uploads it to dev, and
// returns it as Model id (the folder's digest when id is "").
func LoadModel(dir, adapterDir, id string, dev engine.Device) (*Model, error) {
	m, err := model.Load(dir)
	if err != nil {
		return nil, err
	}
	if adapterDir != "" {
		ad, err := model.LoadAdapter(adapterDir, m.Config)
		if err != nil {
			return nil, err
		}
		if m, err = m.Merge(ad); err != nil {
			return nil, err
		}
	}
	tok, err := tokenizer.Load(dir, m.Config.VocabSize)
	if err != nil {
		return nil, err
	}
	return NewModel(m, tok, id, dev)
}

// NewModel serves m with tokenizer tok as Model id (m's digest when id is
// ""), on an EngineGenerator on dev.
func NewModel(m *model.Model, tok tokenizer.Tokenizer, id string, dev engine.Device) (*Model, error) {
	d, err := m.Digest()
	if err != nil {
		return nil, fmt.Errorf("inference: model digest: %w", err)
	}
	g, err := NewEngineGenerator(dev, m)
	if err != nil {
		return nil, err
	}
	if id == "" {
		id = d
	}
	return &Model{ID: id, Digest: d, Context: m.Config.MaxPositionEmbeddings, Gen: g, Tok: tok,
		BOS: m.Config.BOSTokenID, StopTokens: m.Config.EOSTokenID, Created: time.Now()}, nil
}
