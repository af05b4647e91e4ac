package tokenizer

import "encoding/json"

// postProcessor adds special tokens around the ids of one sequence, as a
// tokenizer.json "post_processor" does when special tokens are asked for.
type postProcessor interface {
	post(ids []int) []int
}

// template is TemplateProcessing's "single" template: nil entries stand for
// the sequence, the others for the ids of a special token.
type template [][]int

func (t template) post(ids []int) []int {
	var out []int
	for _, e := range t {
		if e == nil {
			out = append(out, ids...)
		} else {
			out = append(out, e...)
		}
	}
	return out
}

// noPost is a post-processor that changes no ids (ByteLevel's only trims
// offsets).
type noPost struct{}

func (noPost) post(ids []int) []int { return ids }

type postSequence []postProcessor

func (seq postSequence) post(ids []int) []int {
	for _, p := range seq {
		ids = p.post(ids)
	}
	return ids
}

type postJSON struct {
	Type       string            `json:"type"`
	Processors []json.RawMessage `json:"processors"`
	Single     []struct {
		SpecialToken *struct {
			ID string `json:"id"`
		} `json:"SpecialToken"`
		Sequence *struct {
			ID string `json:"id"`
		} `json:"Sequence"`
	} `json:"single"`
	SpecialTokens map[string]struct {
		IDs []int `json:"ids"`
	} `json:"special_tokens"`
}

// decodePostProcessor reads the post-processor at path; nil for JSON null.
// size bounds the ids a template may add.
func decodePostProcessor(raw json.RawMessage, path string) (postProcessor, error) {
	if isNull(raw) {
		return nil, nil
	}
	var p postJSON
	if err := json.Unmarshal(raw, &p); err != nil {
		return nil, bad("%s: %v", path, err)
	}
	switch p.Type {
	case "ByteLevel":
		return noPost{}, nil
	case "TemplateProcessing":
		var t template
		for i, e := range p.Single {
			switch {
			case e.Sequence != nil && e.SpecialToken == nil:
				if e.Sequence.ID != "A" {
					return nil, unsupported("%s: sequence %q", indexPath(path+".single", i), e.Sequence.ID)
				}
				t = append(t, nil)
			case e.SpecialToken != nil && e.Sequence == nil:
				st, ok := p.SpecialTokens[e.SpecialToken.ID]
				if !ok {
					return nil, bad("%s: special token %q not in special_tokens", indexPath(path+".single", i), e.SpecialToken.ID)
				}
				for _, id := range st.IDs {
					if id < 0 || id >= maxID {
						return nil, bad("%s.special_tokens[%q]: id %d out of range", path, e.SpecialToken.ID, id)
					}
				}
				t = append(t, append([]int{}, st.IDs...))
			default:
				return nil, bad("%s: want one of SpecialToken and Sequence", indexPath(path+".single", i))
			}
		}
		return t, nil
	case "Sequence":
		var seq postSequence
		for i, r := range p.Processors {
			q, err := decodePostProcessor(r, indexPath(path+".processors", i))
			if err != nil {
				return nil, err
			}
			if q != nil {
				seq = append(seq, q)
			}
		}
		return seq, nil
	default:
		return nil, unsupported("%s.type %q", path, p.Type)
	}
}

func (t template) specialIDs() []int {
	var out []int
	for _, e := range t {
		out = append(out, e...)
	}
	return out
}

func (seq postSequence) specialIDs() []int {
	var out []int
	for _, p := range seq {
		if s, ok := p.(interface{ specialIDs() []int }); ok {
			out = append(out, s.specialIDs()...)
		}
	}
	return out
}
