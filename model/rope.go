package model

import (
	"bytes"
	"encoding/json"
	"math"
	"sort"
)

// RopeInvFreq returns the hd/2 rotary inverse frequencies of c, hd being
// c.HeadDimension(), with c.RopeScaling applied, computed as transformers'
// rope initialisation functions compute them in float32
// (_compute_default_rope_parameters, _compute_linear_scaling_rope_parameters,
// _compute_llama3_parameters). Every forward pass (the Gorgonia graph, the
// Runner, the engine's trainer) takes its frequencies from here.
func (c *Config) RopeInvFreq() []float32 {
	hd := c.HeadDimension()
	half := hd / 2
	inv := make([]float32, half)
	for j := range inv {
		// inv_freq = 1 / base^(arange(0, hd, 2) / hd), kept in float32.
		inv[j] = float32(1 / math.Pow(c.RopeTheta, float64(2*j)/float64(hd)))
	}
	rs := c.RopeScaling
	switch rs.Kind() {
	case "linear":
		f := float32(rs.Factor)
		for j := range inv {
			inv[j] /= f
		}
	case "llama3":
		factor := float32(rs.Factor)
		low := float32(rs.LowFreqFactor)
		old := float32(rs.OriginalMaxPositionEmbeddings)
		// transformers' _compute_llama3_parameters, op by op as torch runs
		// it on float32 tensors: a Python scalar over a tensor is the
		// tensor's reciprocal times the scalar (Tensor.__rtruediv__), a
		// tensor over a scalar a float32 division, and scalars computed
		// from Python floats are rounded to float32 where they meet a
		// tensor.
		lowWavelen := float32(float64(rs.OriginalMaxPositionEmbeddings) / rs.LowFreqFactor)
		highWavelen := float32(float64(rs.OriginalMaxPositionEmbeddings) / rs.HighFreqFactor)
		span := float32(rs.HighFreqFactor - rs.LowFreqFactor)
		twoPi := float32(2 * math.Pi)
		for j, f := range inv {
			wavelen := float32(float32(1/f) * twoPi)
			scaled := f
			if wavelen > lowWavelen {
				scaled = float32(f / factor)
			}
			if !(wavelen < highWavelen) && !(wavelen > lowWavelen) {
				smooth := float32(float32(float32(float32(1/wavelen)*old)-low) / span)
				scaled = float32(float32(float32(float32(1-smooth)*scaled)/factor) + float32(smooth*scaled))
			}
			inv[j] = scaled
		}
	}
	return inv
}

// RopeCosSin returns c's [T, hd] cos and sin tables in Hugging Face's
// rotate-half convention (frequency j repeated in both halves): angle(t, j)
// = float32(t) · inv_freq[j mod hd/2], the product in float32 as
// transformers forms it.
func (c *Config) RopeCosSin(T int) (cos, sin []float64) {
	inv := c.RopeInvFreq()
	hd := c.HeadDimension()
	half := len(inv)
	cos, sin = make([]float64, T*hd), make([]float64, T*hd)
	for t := 0; t < T; t++ {
		for j := 0; j < hd; j++ {
			ang := float64(float32(t) * inv[j%half])
			cos[t*hd+j], sin[t*hd+j] = math.Cos(ang), math.Sin(ang)
		}
	}
	return cos, sin
}

// ignoredKeys are config.json keys of published Llama 2, TinyLlama, Llama
// 3.x, Mistral-style and SmolLM checkpoints that change nothing fedtune
// computes (bookkeeping, generation and serving hints).
var ignoredKeys = map[string]bool{
	"_name_or_path": true, "transformers_version": true, "use_cache": true,
	"pad_token_id": true, "pretraining_tp": true, "is_llama_config": true,
	"output_attentions": true, "output_hidden_states": true, "return_dict": true,
	"torchscript": true, "sep_token_id": true,
	"unk_token_id": true, "max_length": true,
	"bad_words_ids": true, "begin_suppress_tokens": true, "suppress_tokens": true,
	"temperature": true, "top_p": true, "top_k": true, "do_sample": true,
	"num_beams": true, "repetition_penalty": true, "length_penalty": true,
	"id2label": true, "label2id": true, "problem_type": true, "finetuning_task": true,
	"tokenizer_class": true, "prefix": true, "task_specific_params": true,
	"chunk_size_feed_forward": true, "is_encoder_decoder": true, "is_decoder": true,
	"add_cross_attention": true, "tie_encoder_decoder": true, "cross_attention_hidden_size": true,
	"decoder_start_token_id": true, "early_stopping": true, "min_length": true,
	"no_repeat_ngram_size": true, "num_return_sequences": true, "output_scores": true,
	"return_dict_in_generate": true, "forced_bos_token_id": true, "forced_eos_token_id": true,
	"remove_invalid_values": true, "exponential_decay_length_penalty": true,
	"typical_p": true, "diversity_penalty": true, "num_beam_groups": true,
	"encoder_no_repeat_ngram_size": true, "pruned_heads": true,
}

// zeroKeys are keys accepted only when null, false or zero, with why
// fedtune cannot honour another value.
var zeroKeys = map[string]string{
	"attention_dropout":  "attention dropout is not implemented; set 0.0",
	"sliding_window":     "sliding-window attention is not implemented; set null",
	"use_sliding_window": "sliding-window attention is not implemented; set false",
	"rope_interleaved":   "interleaved (GPT-J style) rotary embeddings are not implemented; set false",
	"residual_dropout":   "dropout is not implemented; set 0.0",
	"embd_pdrop":         "dropout is not implemented; set 0.0",
}

// otherKeys checks the keys of a config.json that Config does not hold.
func otherKeys(raw map[string]json.RawMessage) []FieldError {
	own := configKeys()
	var keys []string
	for k := range raw {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var errs []FieldError
	for _, k := range keys {
		switch {
		case own[k], ignoredKeys[k]:
		case zeroKeys[k] != "":
			v := bytes.TrimSpace(raw[k])
			var f float64
			if bytes.Equal(v, []byte("null")) || bytes.Equal(v, []byte("false")) ||
				(json.Unmarshal(v, &f) == nil && f == 0) {
				continue
			}
			errs = append(errs, FieldError{Field: k, Msg: "is " + string(v) + ": " + zeroKeys[k]})
		default:
			errs = append(errs, FieldError{Field: k, Msg: "is not a LlamaConfig key fedtune knows; remove it if it changes nothing, or use a model fedtune supports"})
		}
	}
	return errs
}

// configKeys returns the JSON keys of Config's fields.
func configKeys() map[string]bool {
	b, _ := json.Marshal(Config{HeadDim: 1, TorchDtype: "x", BOSTokenID: new(int), EOSTokenID: TokenIDs{1}, Architectures: []string{"x"}})
	var m map[string]json.RawMessage
	_ = json.Unmarshal(b, &m)
	keys := map[string]bool{}
	for k := range m {
		keys[k] = true
	}
	return keys
}
