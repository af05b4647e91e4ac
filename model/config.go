package model

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/fedtune/fedtune/internal/strictjson"
	"github.com/fedtune/fedtune/internal/strictyaml"
)

// ErrConfig is wrapped by every error about an invalid model configuration.
var ErrConfig = errors.New("model: invalid config")

// Config holds the Hugging Face LlamaConfig fields fedtune reads and writes.
// The same field names are used in config.json and in model YAML files.
type Config struct {
	Architectures         []string `json:"architectures,omitempty" yaml:"architectures,omitempty"`
	ModelType             string   `json:"model_type" yaml:"model_type"`
	VocabSize             int      `json:"vocab_size" yaml:"vocab_size"`
	HiddenSize            int      `json:"hidden_size" yaml:"hidden_size"`
	IntermediateSize      int      `json:"intermediate_size" yaml:"intermediate_size"`
	NumHiddenLayers       int      `json:"num_hidden_layers" yaml:"num_hidden_layers"`
	NumAttentionHeads     int      `json:"num_attention_heads" yaml:"num_attention_heads"`
	NumKeyValueHeads      int      `json:"num_key_value_heads" yaml:"num_key_value_heads"`
	HeadDim               int      `json:"head_dim,omitempty" yaml:"head_dim,omitempty"`
	MaxPositionEmbeddings int      `json:"max_position_embeddings" yaml:"max_position_embeddings"`
	RMSNormEps            float64  `json:"rms_norm_eps" yaml:"rms_norm_eps"`
	RopeTheta             float64  `json:"rope_theta" yaml:"rope_theta"`
	TieWordEmbeddings     bool     `json:"tie_word_embeddings" yaml:"tie_word_embeddings"`
	HiddenAct             string   `json:"hidden_act" yaml:"hidden_act"`
	InitializerRange      float64  `json:"initializer_range" yaml:"initializer_range"`
	TorchDtype            string   `json:"torch_dtype,omitempty" yaml:"torch_dtype,omitempty"`
	BOSTokenID            *int     `json:"bos_token_id,omitempty" yaml:"bos_token_id,omitempty"`
	EOSTokenID            TokenIDs `json:"eos_token_id,omitempty" yaml:"eos_token_id,omitempty"`
	AttentionBias         bool     `json:"attention_bias" yaml:"attention_bias"`
	MLPBias               bool     `json:"mlp_bias" yaml:"mlp_bias"`
	// RopeScaling is null, or scaled rotary embeddings of type llama3 or
	// linear (see RopeScaling).
	RopeScaling *RopeScaling `json:"rope_scaling" yaml:"rope_scaling"`
}

// RopeScaling is config.json's "rope_scaling": the rotary frequency scaling
// of Llama 3.1+ ("llama3") or position interpolation ("linear"). Its keys are
// those transformers reads; any other key is refused by name.
type RopeScaling struct {
	// RopeType is "llama3", "linear" or "default" (no scaling). Older
	// configs spell it Type; when both are given they must agree.
	RopeType string `json:"rope_type,omitempty" yaml:"rope_type,omitempty"`
	Type     string `json:"type,omitempty" yaml:"type,omitempty"`
	// Factor divides the (low) frequencies: ≥ 1.
	Factor float64 `json:"factor,omitempty" yaml:"factor,omitempty"`
	// LowFreqFactor, HighFreqFactor and OriginalMaxPositionEmbeddings are
	// llama3's: wavelengths above original/low are divided by Factor, those
	// below original/high are kept, those between are interpolated.
	LowFreqFactor                 float64 `json:"low_freq_factor,omitempty" yaml:"low_freq_factor,omitempty"`
	HighFreqFactor                float64 `json:"high_freq_factor,omitempty" yaml:"high_freq_factor,omitempty"`
	OriginalMaxPositionEmbeddings int     `json:"original_max_position_embeddings,omitempty" yaml:"original_max_position_embeddings,omitempty"`
}

// UnmarshalJSON decodes rope_scaling strictly: an unknown key (such as a
// scaling type's parameter fedtune does not implement) is an error naming it.
func (r *RopeScaling) UnmarshalJSON(b []byte) error {
	type plain RopeScaling
	var p plain
	if err := strictjson.Unmarshal(b, &p); err != nil {
		return fmt.Errorf("rope_scaling: %w", err)
	}
	*r = RopeScaling(p)
	return nil
}

// Kind returns the scaling type: RopeType, else Type, else "default".
func (r *RopeScaling) Kind() string {
	switch {
	case r == nil:
		return "default"
	case r.RopeType != "":
		return r.RopeType
	case r.Type != "":
		return r.Type
	}
	return "default"
}

// validate reports rope_scaling's violations through bad.
func (r *RopeScaling) validate(bad func(field, format string, args ...any)) {
	if r == nil {
		return
	}
	if r.RopeType != "" && r.Type != "" && r.RopeType != r.Type {
		bad("rope_scaling", "rope_type %q and type %q disagree", r.RopeType, r.Type)
		return
	}
	unused := func(kind string, fields map[string]bool) {
		for _, f := range []struct {
			name string
			set  bool
		}{{"factor", r.Factor != 0}, {"low_freq_factor", r.LowFreqFactor != 0},
			{"high_freq_factor", r.HighFreqFactor != 0}, {"original_max_position_embeddings", r.OriginalMaxPositionEmbeddings != 0}} {
			if f.set && !fields[f.name] {
				bad("rope_scaling."+f.name, "is not a parameter of rope_type %q", kind)
			}
		}
	}
	switch k := r.Kind(); k {
	case "default":
		unused(k, nil)
	case "linear":
		unused(k, map[string]bool{"factor": true})
		if !(r.Factor >= 1) || math.IsInf(r.Factor, 0) {
			bad("rope_scaling.factor", "must be a finite number ≥ 1, got %g", r.Factor)
		}
	case "llama3":
		unused(k, map[string]bool{"factor": true, "low_freq_factor": true, "high_freq_factor": true, "original_max_position_embeddings": true})
		if !(r.Factor >= 1) || math.IsInf(r.Factor, 0) {
			bad("rope_scaling.factor", "must be a finite number ≥ 1, got %g", r.Factor)
		}
		if !(r.LowFreqFactor > 0) || math.IsInf(r.LowFreqFactor, 0) {
			bad("rope_scaling.low_freq_factor", "must be a finite positive number, got %g", r.LowFreqFactor)
		}
		if !(r.HighFreqFactor > r.LowFreqFactor) || math.IsInf(r.HighFreqFactor, 0) {
			bad("rope_scaling.high_freq_factor", "must be finite and larger than low_freq_factor %g, got %g", r.LowFreqFactor, r.HighFreqFactor)
		}
		if r.OriginalMaxPositionEmbeddings <= 0 || r.OriginalMaxPositionEmbeddings > maxDim {
			bad("rope_scaling.original_max_position_embeddings", "must be in [1, %d], got %d", maxDim, r.OriginalMaxPositionEmbeddings)
		}
	default:
		bad("rope_scaling", "rope_type %q is not supported; fedtune implements \"llama3\" and \"linear\" (or null)", k)
	}
}

// TokenIDs is one token ID or a list of them (HF's eos_token_id may be either).
type TokenIDs []int

// UnmarshalJSON accepts a number, a list of numbers or null.
func (t *TokenIDs) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if bytes.Equal(b, []byte("null")) {
		*t = nil
		return nil
	}
	if len(b) > 0 && b[0] == '[' {
		var l []int
		if err := json.Unmarshal(b, &l); err != nil {
			return err
		}
		*t = l
		return nil
	}
	var v int
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*t = TokenIDs{v}
	return nil
}

// MarshalJSON writes a single ID as a number, several as a list.
func (t TokenIDs) MarshalJSON() ([]byte, error) {
	if len(t) == 1 {
		return json.Marshal(t[0])
	}
	return json.Marshal([]int(t))
}

// UnmarshalYAML accepts a number or a sequence of numbers.
func (t *TokenIDs) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.SequenceNode {
		var l []int
		if err := n.Decode(&l); err != nil {
			return err
		}
		*t = l
		return nil
	}
	var v int
	if err := n.Decode(&v); err != nil {
		return err
	}
	*t = TokenIDs{v}
	return nil
}

// DefaultConfig returns the defaults applied before a YAML file or a
// config.json is decoded (those of transformers' LlamaConfig where the field
// is optional there).
func DefaultConfig() Config {
	return Config{
		Architectures:         []string{"LlamaForCausalLM"},
		ModelType:             "llama",
		MaxPositionEmbeddings: 2048,
		RMSNormEps:            1e-6,
		RopeTheta:             10000,
		HiddenAct:             "silu",
		InitializerRange:      0.02,
		TorchDtype:            "float32",
	}
}

// HeadDimension returns head_dim if set, else hidden_size/num_attention_heads.
func (c *Config) HeadDimension() int {
	if c.HeadDim > 0 {
		return c.HeadDim
	}
	if c.NumAttentionHeads == 0 {
		return 0
	}
	return c.HiddenSize / c.NumAttentionHeads
}

// KVHeads returns num_key_value_heads, defaulting to num_attention_heads.
func (c *Config) KVHeads() int {
	if c.NumKeyValueHeads > 0 {
		return c.NumKeyValueHeads
	}
	return c.NumAttentionHeads
}

// FieldError is one violation found by Validate.
type FieldError struct {
	Field string // the config key, as spelled in config.json / YAML
	Msg   string
	Line  int // line in the YAML file, when known
}

func (e FieldError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("line %d: %s: %s", e.Line, e.Field, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.Field, e.Msg)
}

// ConfigError lists every violation in one configuration source.
type ConfigError struct {
	Source string // file name, or "" for an in-memory Config
	Errs   []FieldError
}

func (e *ConfigError) Error() string {
	var b strings.Builder
	if e.Source != "" {
		b.WriteString(e.Source)
		b.WriteString(": ")
	}
	b.WriteString("invalid model config: ")
	for i, fe := range e.Errs {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(fe.Error())
	}
	return b.String()
}

// Unwrap makes errors.Is(err, ErrConfig) true.
func (e *ConfigError) Unwrap() error { return ErrConfig }

// maxDim bounds every size in a config, so that shape products cannot
// overflow.
const maxDim = 1 << 22

// Validate checks the configuration and reports every violation at once.
func (c *Config) Validate() error {
	var errs []FieldError
	bad := func(field, format string, args ...any) {
		errs = append(errs, FieldError{Field: field, Msg: fmt.Sprintf(format, args...)})
	}
	// Mistral's architecture is Llama's (the same tensors and forward)
	// plus a sliding attention window, which ParseConfigJSON refuses
	// unless it is null.
	arch := map[string]string{"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM"}[c.ModelType]
	if arch == "" {
		bad("model_type", "is %q; only \"llama\" (LlamaForCausalLM) and \"mistral\" without a sliding window are supported", c.ModelType)
	}
	for _, a := range c.Architectures {
		if arch != "" && a != arch {
			bad("architectures", "lists %q; model_type %q is %s", a, c.ModelType, arch)
		}
	}
	if c.VocabSize <= 0 {
		bad("vocab_size", "must be positive (256 for the byte tokenizer), got %d", c.VocabSize)
	}
	if c.HiddenSize <= 0 {
		bad("hidden_size", "must be positive, got %d", c.HiddenSize)
	}
	if c.IntermediateSize <= 0 {
		bad("intermediate_size", "must be positive, got %d", c.IntermediateSize)
	}
	if c.NumHiddenLayers <= 0 {
		bad("num_hidden_layers", "must be positive, got %d", c.NumHiddenLayers)
	}
	if c.NumAttentionHeads <= 0 {
		bad("num_attention_heads", "must be positive, got %d", c.NumAttentionHeads)
	} else {
		if c.HeadDim < 0 {
			bad("head_dim", "must be positive when set, got %d", c.HeadDim)
		} else if c.HeadDim == 0 && c.HiddenSize > 0 && c.HiddenSize%c.NumAttentionHeads != 0 {
			bad("num_attention_heads", "%d does not divide hidden_size %d; set head_dim explicitly or change the head count", c.NumAttentionHeads, c.HiddenSize)
		}
		if hd := c.HeadDimension(); hd > 0 && hd%2 != 0 {
			bad("head_dim", "head dimension %d must be even for rotary embeddings", hd)
		}
		if c.NumKeyValueHeads < 0 {
			bad("num_key_value_heads", "must be positive, got %d", c.NumKeyValueHeads)
		} else if kv := c.KVHeads(); c.NumAttentionHeads%kv != 0 {
			bad("num_key_value_heads", "%d does not divide num_attention_heads %d (grouped-query attention needs whole groups)", kv, c.NumAttentionHeads)
		}
	}
	for _, f := range []struct {
		name string
		v    int
	}{{"vocab_size", c.VocabSize}, {"hidden_size", c.HiddenSize}, {"intermediate_size", c.IntermediateSize},
		{"num_hidden_layers", c.NumHiddenLayers}, {"num_attention_heads", c.NumAttentionHeads},
		{"num_key_value_heads", c.NumKeyValueHeads}, {"head_dim", c.HeadDim}, {"max_position_embeddings", c.MaxPositionEmbeddings}} {
		if f.v > maxDim {
			bad(f.name, "%d is larger than fedtune supports (%d)", f.v, maxDim)
		}
	}
	if c.MaxPositionEmbeddings < 2 {
		bad("max_position_embeddings", "must be at least 2, got %d", c.MaxPositionEmbeddings)
	}
	if !(c.RMSNormEps > 0) {
		bad("rms_norm_eps", "must be positive (e.g. 1e-6), got %g", c.RMSNormEps)
	}
	if !(c.RopeTheta > 0) {
		bad("rope_theta", "must be positive (e.g. 10000), got %g", c.RopeTheta)
	}
	if c.HiddenAct != "silu" {
		bad("hidden_act", "is %q; only \"silu\" (SwiGLU) is supported", c.HiddenAct)
	}
	if c.InitializerRange < 0 {
		bad("initializer_range", "must not be negative, got %g", c.InitializerRange)
	}
	switch c.TorchDtype {
	case "", "float32", "float16", "bfloat16":
	default:
		bad("torch_dtype", "is %q; use float32, float16 or bfloat16", c.TorchDtype)
	}
	if c.AttentionBias {
		bad("attention_bias", "attention projections with bias are not supported; set false")
	}
	if c.MLPBias {
		bad("mlp_bias", "MLP projections with bias are not supported; set false")
	}
	c.RopeScaling.validate(bad)
	if c.BOSTokenID != nil && (*c.BOSTokenID < 0 || *c.BOSTokenID >= c.VocabSize) {
		bad("bos_token_id", "%d is outside the vocabulary [0, %d)", *c.BOSTokenID, c.VocabSize)
	}
	for _, id := range c.EOSTokenID {
		if id < 0 || id >= c.VocabSize {
			bad("eos_token_id", "%d is outside the vocabulary [0, %d)", id, c.VocabSize)
		}
	}
	if len(errs) > 0 {
		return &ConfigError{Errs: errs}
	}
	return nil
}

// ParseConfigJSON decodes a Hugging Face config.json, fills defaults and
// validates it. name is used in errors. Keys other than Config's are taken
// by name (see otherKeys): those that change nothing fedtune computes are
// ignored, those that would (a sliding window, attention dropout, an
// unknown key) are refused naming the key.
func ParseConfigJSON(name string, data []byte) (Config, error) {
	c := DefaultConfig()
	c.Architectures = nil
	if err := json.Unmarshal(data, &c); err != nil {
		return Config{}, fmt.Errorf("%s: %w: %v", name, ErrConfig, err)
	}
	var raw map[string]json.RawMessage
	_ = json.Unmarshal(data, &raw) // it decoded into c above
	err := c.Validate()
	if extra := otherKeys(raw); len(extra) > 0 {
		var ce *ConfigError
		if !errors.As(err, &ce) {
			ce = &ConfigError{}
		}
		ce.Errs = append(ce.Errs, extra...)
		err = ce
	}
	if err != nil {
		var ce *ConfigError
		if errors.As(err, &ce) {
			ce.Source = name
		}
		return Config{}, err
	}
	return c, nil
}

// LoadConfigJSON reads and validates the config.json at path.
func LoadConfigJSON(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, err
	}
	return ParseConfigJSON(path, data)
}

// EncodeJSON returns c as Save writes it to config.json: the canonical
// bytes of a model config, the same for the same Config whatever file it
// was read from (a YAML model config and the config.json of a model
// initialised from it encode alike). A pretrain job pins its model.init
// config by the digest of these bytes.
func (c *Config) EncodeJSON() ([]byte, error) { return c.encodeJSON() }

// encodeJSON returns c as written to config.json.
func (c *Config) encodeJSON() ([]byte, error) {
	cc := *c
	cc.NumKeyValueHeads = c.KVHeads() // transformers wants it explicit (null or a count, never 0)
	b, err := json.MarshalIndent(&cc, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// ParseConfigYAML decodes a model YAML file strictly (an unknown key is an
// error naming the line), fills defaults and validates it; violations name
// the file, the key and its line.
func ParseConfigYAML(name string, data []byte) (Config, error) {
	c := DefaultConfig()
	if err := strictyaml.Decode(name, data, &c); err != nil {
		return Config{}, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	if err := c.Validate(); err != nil {
		var ce *ConfigError
		if errors.As(err, &ce) {
			ce.Source = name
			var root yaml.Node
			if yaml.Unmarshal(data, &root) == nil {
				lines := keyLines(&root)
				for i := range ce.Errs {
					ce.Errs[i].Line = lines[ce.Errs[i].Field]
				}
			}
		}
		return Config{}, err
	}
	return c, nil
}

// LoadConfigYAML reads a model YAML file (configs/models/*.yaml).
func LoadConfigYAML(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, err
	}
	return ParseConfigYAML(path, data)
}

// keyLines maps each top-level key of a YAML document to its line.
func keyLines(root *yaml.Node) map[string]int {
	m := map[string]int{}
	n := root
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	if n.Kind != yaml.MappingNode {
		return m
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		m[n.Content[i].Value] = n.Content[i].Line
	}
	return m
}
