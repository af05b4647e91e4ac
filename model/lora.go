package model

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/fedtune/fedtune/model/safetensors"
)

// File names of a PEFT LoRA adapter folder.
const (
	AdapterConfigFile  = "adapter_config.json"
	AdapterWeightsFile = "adapter_model.safetensors"
	PEFTPrefix         = "base_model.model."
)

// ErrAdapter is wrapped by every error about an adapter that is malformed
// or does not fit its base model.
var ErrAdapter = errors.New("model: invalid LoRA adapter")

// LoRAConfig describes low-rank adapters on the chosen projections.
type LoRAConfig struct {
	Rank    int      // r
	Alpha   float64  // lora_alpha; scaling = Alpha/Rank
	Dropout float64  // lora_dropout, applied to the adapter's input in training
	Targets []string // target_modules, e.g. q_proj, v_proj
}

// DefaultTargets are the projections adapted when none are named.
var DefaultTargets = []string{"q_proj", "v_proj"}

// Scaling returns alpha/r.
func (c *LoRAConfig) Scaling() float64 { return c.Alpha / float64(c.Rank) }

// Validate checks the LoRA settings.
func (c *LoRAConfig) Validate() error {
	var msgs []string
	if c.Rank <= 0 {
		msgs = append(msgs, fmt.Sprintf("r (rank) must be positive, got %d", c.Rank))
	}
	if !(c.Alpha > 0) {
		msgs = append(msgs, fmt.Sprintf("lora_alpha must be positive, got %g", c.Alpha))
	}
	if c.Dropout < 0 || c.Dropout >= 1 {
		msgs = append(msgs, fmt.Sprintf("lora_dropout must be in [0, 1), got %g", c.Dropout))
	}
	if len(c.Targets) == 0 {
		msgs = append(msgs, "target_modules is empty")
	}
	var cfg Config
	for _, t := range c.Targets {
		if _, err := cfg.ProjShape(t); err != nil {
			msgs = append(msgs, "target_modules: "+err.Error())
		}
	}
	if len(msgs) > 0 {
		return fmt.Errorf("%w: %s", ErrAdapter, strings.Join(msgs, "; "))
	}
	return nil
}

// Adapter is a set of LoRA weights in the PEFT layout: for each adapted
// projection W [out, in], lora_A [r, in] and lora_B [out, r], so that the
// adapted weight is W + scaling·B·A. Tensors are keyed by their PEFT names
// (base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight).
type Adapter struct {
	Config    LoRAConfig
	BaseModel string // base_model_name_or_path
	Tensors   map[string]*Tensor
}

// LoRANames returns the PEFT tensor names of lora_A and lora_B for the
// projection weight named base (model.layers.N.…_proj.weight).
func LoRANames(base string) (a, b string) {
	stem := PEFTPrefix + strings.TrimSuffix(base, ".weight")
	return stem + ".lora_A.weight", stem + ".lora_B.weight"
}

// AdaptedWeights lists the base weights the adapter touches, in order.
func AdaptedWeights(c *Config, lc *LoRAConfig) []string {
	var out []string
	for l := 0; l < c.NumHiddenLayers; l++ {
		for _, p := range append(slices.Clone(attnProjs), mlpProjs...) {
			if slices.Contains(lc.Targets, p) {
				out = append(out, ProjName(l, p))
			}
		}
	}
	return out
}

// NewAdapter returns a fresh adapter for a model with config c: B is zero
// and A is drawn from a seeded Kaiming-uniform distribution as PEFT does
// (kaiming_uniform_ with a=√5, i.e. U(−1/√in, 1/√in)).
func NewAdapter(c Config, lc LoRAConfig, seed uint64) (*Adapter, error) {
	if err := lc.Validate(); err != nil {
		return nil, err
	}
	ad := &Adapter{Config: lc, Tensors: map[string]*Tensor{}}
	for _, w := range AdaptedWeights(&c, &lc) {
		shape, _ := c.ProjShape(ProjOf(w))
		out, in := shape[0], shape[1]
		an, bn := LoRANames(w)
		a := &Tensor{Shape: []int{lc.Rank, in}, Data: make([]float32, lc.Rank*in)}
		bound := 1 / math.Sqrt(float64(in))
		r := tensorRNG(seed, an)
		for i := range a.Data {
			a.Data[i] = float32(float64(2*r.Float64()-1) * bound) // unfused: the same bits with GOAMD64=v3 and on arm64
		}
		ad.Tensors[an] = a
		ad.Tensors[bn] = &Tensor{Shape: []int{out, lc.Rank}, Data: make([]float32, out*lc.Rank)}
	}
	return ad, nil
}

// ProjOf returns "q_proj" for "model.layers.3.self_attn.q_proj.weight".
func ProjOf(name string) string {
	parts := strings.Split(name, ".")
	if len(parts) < 2 {
		return ""
	}
	return parts[len(parts)-2]
}

// Check verifies that the adapter's tensors are exactly those its LoRA
// config implies for base config c. source names the adapter (a file) in
// errors.
func (ad *Adapter) Check(c *Config, source string) error {
	want := map[string][]int{}
	for _, w := range AdaptedWeights(c, &ad.Config) {
		shape, _ := c.ProjShape(ProjOf(w))
		an, bn := LoRANames(w)
		want[an] = []int{ad.Config.Rank, shape[1]}
		want[bn] = []int{shape[0], ad.Config.Rank}
	}
	for _, name := range slices.Sorted(maps.Keys(want)) {
		t, ok := ad.Tensors[name]
		if !ok {
			return fmt.Errorf("%s: tensor %q: missing (r=%d, target_modules=%v): %w", source, name, ad.Config.Rank, ad.Config.Targets, ErrAdapter)
		}
		if !slices.Equal(t.Shape, want[name]) || len(t.Data) != prod(t.Shape) {
			return fmt.Errorf("%s: tensor %q: shape %v with %d values, but r=%d and the base model want %v: %w",
				source, name, t.Shape, len(t.Data), ad.Config.Rank, want[name], ErrAdapter)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(ad.Tensors)) {
		if _, ok := want[name]; !ok {
			return fmt.Errorf("%s: tensor %q: not a LoRA weight of target_modules %v for this base model: %w", source, name, ad.Config.Targets, ErrAdapter)
		}
	}
	return nil
}

// peftConfig is adapter_config.json as PEFT writes it.
type peftConfig struct {
	PeftType            string          `json:"peft_type"`
	TaskType            string          `json:"task_type"`
	R                   int             `json:"r"`
	LoraAlpha           float64         `json:"lora_alpha"`
	LoraDropout         float64         `json:"lora_dropout"`
	TargetModules       json.RawMessage `json:"target_modules"`
	BaseModelNameOrPath string          `json:"base_model_name_or_path"`
	Bias                string          `json:"bias"`
	FanInFanOut         bool            `json:"fan_in_fan_out"`
	InferenceMode       bool            `json:"inference_mode"`
	InitLoraWeights     bool            `json:"init_lora_weights"`
	UseRSLoRA           bool            `json:"use_rslora"`
	UseDoRA             bool            `json:"use_dora"`
	ModulesToSave       json.RawMessage `json:"modules_to_save"`
	LayersToTransform   json.RawMessage `json:"layers_to_transform"`
	RankPattern         json.RawMessage `json:"rank_pattern"`
	AlphaPattern        json.RawMessage `json:"alpha_pattern"`
	Revision            *string         `json:"revision"`
	LayersPattern       json.RawMessage `json:"layers_pattern"`
	AutoMapping         json.RawMessage `json:"auto_mapping"`
	MegatronConfig      json.RawMessage `json:"megatron_config"`
	MegatronCore        string          `json:"megatron_core"`
	LoftqConfig         json.RawMessage `json:"loftq_config"`
}

func isNullish(r json.RawMessage) bool {
	s := strings.TrimSpace(string(r))
	return s == "" || s == "null" || s == "{}" || s == "[]"
}

// ParseAdapterConfig decodes adapter_config.json. name is used in errors.
func ParseAdapterConfig(name string, data []byte) (LoRAConfig, string, error) {
	var pc peftConfig
	if err := json.Unmarshal(data, &pc); err != nil {
		return LoRAConfig{}, "", fmt.Errorf("%s: %w: %v", name, ErrAdapter, err)
	}
	var msgs []string
	if pc.PeftType != "LORA" {
		msgs = append(msgs, fmt.Sprintf("peft_type is %q, want \"LORA\"", pc.PeftType))
	}
	if pc.Bias != "" && pc.Bias != "none" {
		msgs = append(msgs, fmt.Sprintf("bias %q is not supported (want \"none\")", pc.Bias))
	}
	if pc.FanInFanOut {
		msgs = append(msgs, "fan_in_fan_out true is not supported for LLaMA linear layers")
	}
	if pc.UseRSLoRA {
		msgs = append(msgs, "use_rslora true is not supported")
	}
	if pc.UseDoRA {
		msgs = append(msgs, "use_dora true is not supported")
	}
	if pc.TaskType != "" && pc.TaskType != "CAUSAL_LM" {
		msgs = append(msgs, fmt.Sprintf("task_type %q is not supported (want CAUSAL_LM)", pc.TaskType))
	}
	for k, v := range map[string]json.RawMessage{"modules_to_save": pc.ModulesToSave, "layers_to_transform": pc.LayersToTransform, "rank_pattern": pc.RankPattern, "alpha_pattern": pc.AlphaPattern} {
		if !isNullish(v) {
			msgs = append(msgs, k+" is not supported (must be null or empty)")
		}
	}
	var targets []string
	if err := json.Unmarshal(pc.TargetModules, &targets); err != nil {
		var one string
		if json.Unmarshal(pc.TargetModules, &one) != nil {
			msgs = append(msgs, "target_modules must be a list of projection names")
		} else {
			targets = strings.Split(one, ",")
		}
	}
	slices.Sort(targets)
	lc := LoRAConfig{Rank: pc.R, Alpha: pc.LoraAlpha, Dropout: pc.LoraDropout, Targets: targets}
	if len(msgs) == 0 {
		if err := lc.Validate(); err != nil {
			msgs = append(msgs, strings.TrimPrefix(err.Error(), ErrAdapter.Error()+": "))
		}
	}
	if len(msgs) > 0 {
		return LoRAConfig{}, "", fmt.Errorf("%s: %w: %s", name, ErrAdapter, strings.Join(msgs, "; "))
	}
	return lc, pc.BaseModelNameOrPath, nil
}

// LoadAdapter reads a PEFT adapter folder and checks it against base
// config c.
func LoadAdapter(dir string, c Config) (*Adapter, error) {
	cfgPath := filepath.Join(dir, AdapterConfigFile)
	data, err := os.ReadFile(cfgPath)
	if err != nil {
		return nil, err
	}
	lc, base, err := ParseAdapterConfig(cfgPath, data)
	if err != nil {
		return nil, err
	}
	wPath := filepath.Join(dir, AdapterWeightsFile)
	f, err := safetensors.Open(wPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if err := notDelta(wPath, f); err != nil {
		return nil, err
	}
	ad := &Adapter{Config: lc, BaseModel: base, Tensors: map[string]*Tensor{}}
	for _, ti := range f.Tensors() {
		if !ti.DType.IsFloat() {
			return nil, fmt.Errorf("%s: tensor %q: dtype %s is not a float type: %w", wPath, ti.Name, ti.DType, ErrAdapter)
		}
		// PEFT may also save the adapter name: ...lora_A.default.weight.
		name := strings.Replace(strings.Replace(ti.Name, ".lora_A.default.", ".lora_A.", 1), ".lora_B.default.", ".lora_B.", 1)
		data, err := f.Float32s(ti.Name)
		if err != nil {
			return nil, err
		}
		ad.Tensors[name] = &Tensor{Shape: slices.Clone(ti.Shape), Data: data}
	}
	if err := ad.Check(&c, wPath); err != nil {
		return nil, err
	}
	return ad, nil
}

// Save writes the adapter as adapter_config.json and a canonical
// adapter_model.safetensors (F32) and returns the adapter's weight digest.
func (ad *Adapter) Save(dir string) (string, error) {
	if err := ad.Config.Validate(); err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	targets := slices.Clone(ad.Config.Targets)
	slices.Sort(targets)
	pc := map[string]any{
		"peft_type":               "LORA",
		"task_type":               "CAUSAL_LM",
		"r":                       ad.Config.Rank,
		"lora_alpha":              ad.Config.Alpha,
		"lora_dropout":            ad.Config.Dropout,
		"target_modules":          targets,
		"base_model_name_or_path": ad.BaseModel,
		"bias":                    "none",
		"fan_in_fan_out":          false,
		"inference_mode":          true,
		"init_lora_weights":       true,
		"use_rslora":              false,
		"use_dora":                false,
		"modules_to_save":         nil,
		"layers_to_transform":     nil,
		"rank_pattern":            map[string]any{},
		"alpha_pattern":           map[string]any{},
		"revision":                nil,
	}
	js, err := json.MarshalIndent(pc, "", "  ")
	if err != nil {
		return "", err
	}
	ts, err := tensorsTo(ad.Tensors, safetensors.F32)
	if err != nil {
		return "", err
	}
	digest, err := safetensors.WriteFile(filepath.Join(dir, AdapterWeightsFile), ts, nil)
	if err != nil {
		return "", err
	}
	if _, err := safetensors.WriteFileFunc(filepath.Join(dir, AdapterConfigFile), func(w io.Writer) error {
		_, err := w.Write(append(js, '\n'))
		return err
	}); err != nil {
		return "", err
	}
	return digest, nil
}

// Digest returns the adapter's weight digest (canonical F32 safetensors).
func (ad *Adapter) Digest() (string, error) {
	ts, err := tensorsTo(ad.Tensors, safetensors.F32)
	if err != nil {
		return "", err
	}
	return safetensors.Digest(ts)
}

// Merge returns a copy of m with the adapter folded in: W += scaling·B·A
// for every adapted projection. m is not modified.
func (m *Model) Merge(ad *Adapter) (*Model, error) {
	if err := ad.Check(&m.Config, "adapter"); err != nil {
		return nil, err
	}
	return m.merge(ad, m.Clone())
}

// MergeShared is Merge without copying what the adapter leaves alone: the
// result holds float32 copies of the adapted projections only and shares
// every other tensor with m (so the base weights are not held twice; a
// BF16-held base, LoadBF16, stays so). Neither model's tensors may be
// modified afterwards.
func (m *Model) MergeShared(ad *Adapter) (*Model, error) {
	if err := ad.Check(&m.Config, "adapter"); err != nil {
		return nil, err
	}
	out := &Model{Config: m.Config, Tensors: maps.Clone(m.Tensors)}
	for _, w := range AdaptedWeights(&m.Config, &ad.Config) {
		t := m.Tensors[w]
		d := t.Float32s()
		if t.Data != nil {
			d = slices.Clone(d)
		}
		out.Tensors[w] = &Tensor{Shape: slices.Clone(t.Shape), Data: d}
	}
	return m.merge(ad, out)
}

// merge folds ad, checked against m, into out: a copy of m (at least of
// its adapted weights).
func (m *Model) merge(ad *Adapter, out *Model) (*Model, error) {
	s := ad.Config.Scaling()
	r := ad.Config.Rank
	for _, w := range AdaptedWeights(&m.Config, &ad.Config) {
		an, bn := LoRANames(w)
		a, b := ad.Tensors[an], ad.Tensors[bn]
		W := out.Tensors[w]
		if W.Data == nil { // BF16-held (LoadBF16): the merged weights are float32
			W.Data, W.BF16 = W.Float32s(), nil
		}
		nOut, nIn := W.Shape[0], W.Shape[1]
		row := make([]float64, nIn)
		for o := 0; o < nOut; o++ {
			clear(row)
			for k := 0; k < r; k++ {
				bk := float64(b.Data[o*r+k])
				if bk == 0 {
					continue
				}
				ar := a.Data[k*nIn : (k+1)*nIn]
				for i, av := range ar {
					row[i] += bk * float64(av)
				}
			}
			wr := W.Data[o*nIn : (o+1)*nIn]
			for i := range wr {
				wr[i] = float32(float64(wr[i]) + float64(s*row[i])) // unfused, as above
			}
		}
	}
	return out, nil
}
