package modeltest

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/fedtune/fedtune/model"
	"github.com/fedtune/fedtune/model/safetensors"
)

// HFCheckpoint describes how WriteHFCheckpoint lays a model out.
type HFCheckpoint struct {
	DType  safetensors.DType // BF16 unless set
	Shards int               // 1: model.safetensors; more: shards + index
}

// WriteHFCheckpoint writes m to dir the way transformers' save_pretrained
// does: config.json with transformers' bookkeeping keys, safetensors files
// with "__metadata__" {"format":"pt"} (written last in the header, the data
// laid out in reverse name order, so not canonically), named
// model-0000i-of-0000n.safetensors with model.safetensors.index.json when
// sharded, and generation_config.json and tokenizer_config.json. It returns
// the file names written.
func WriteHFCheckpoint(t testing.TB, dir string, m *model.Model, o HFCheckpoint) []string {
	t.Helper()
	if o.DType == "" {
		o.DType = safetensors.BF16
	}
	if o.Shards < 1 {
		o.Shards = 1
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name string, data []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var files []string
	cfg := m.Config
	cfg.TorchDtype = map[safetensors.DType]string{safetensors.F32: "float32", safetensors.F16: "float16", safetensors.BF16: "bfloat16"}[o.DType]
	cj, _ := json.Marshal(&cfg)
	var cm map[string]any
	_ = json.Unmarshal(cj, &cm)
	cm["transformers_version"], cm["use_cache"], cm["pretraining_tp"] = "4.46.3", true, 1
	cj, _ = json.MarshalIndent(cm, "", "  ")
	write(model.ConfigFile, append(cj, '\n'))
	write("generation_config.json", []byte("{\n  \"_from_model_config\": true,\n  \"bos_token_id\": 1,\n  \"eos_token_id\": 2,\n  \"transformers_version\": \"4.46.3\"\n}\n"))
	write("tokenizer_config.json", []byte("{\n  \"bos_token\": \"<s>\",\n  \"eos_token\": \"</s>\",\n  \"model_max_length\": 2048\n}\n"))
	files = append(files, model.ConfigFile, "generation_config.json", "tokenizer_config.json")

	names := m.Names()
	per := (len(names) + o.Shards - 1) / o.Shards
	weightMap := map[string]string{}
	var total int64
	for i := 0; i < o.Shards; i++ {
		part := names[min(i*per, len(names)):min((i+1)*per, len(names))]
		name := model.WeightsFile
		if o.Shards > 1 {
			name = fmt.Sprintf("model-%05d-of-%05d.safetensors", i+1, o.Shards)
		}
		var ts []safetensors.Tensor
		for _, n := range part {
			tn := m.Tensors[n]
			st, err := safetensors.FromFloat32(n, o.DType, tn.Shape, tn.Data)
			if err != nil {
				t.Fatal(err)
			}
			ts = append(ts, st)
			weightMap[n] = name
			total += int64(len(st.Data))
		}
		write(name, HFSafetensors(ts))
		files = append(files, name)
	}
	if o.Shards > 1 {
		idx, _ := json.MarshalIndent(map[string]any{"metadata": map[string]any{"total_size": total}, "weight_map": weightMap}, "", "  ")
		write(model.WeightsIndex, append(idx, '\n'))
		files = append(files, model.WeightsIndex)
	}
	sort.Strings(files)
	return files
}

// HFSafetensors encodes ts as the Python safetensors library might lay
// them out: data in reverse name order, "__metadata__" {"format":"pt"} as
// the header's last key, the header padded to 8 bytes.
func HFSafetensors(ts []safetensors.Tensor) []byte {
	sorted := append([]safetensors.Tensor(nil), ts...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name > sorted[j].Name })
	var hdr bytes.Buffer
	var data []byte
	hdr.WriteByte('{')
	for _, t := range sorted {
		shape, _ := json.Marshal(t.Shape)
		if len(t.Shape) == 0 {
			shape = []byte("[]")
		}
		name, _ := json.Marshal(t.Name)
		fmt.Fprintf(&hdr, `%s:{"dtype":"%s","shape":%s,"data_offsets":[%d,%d]},`, name, t.DType, shape, len(data), len(data)+len(t.Data))
		data = append(data, t.Data...)
	}
	hdr.WriteString(`"__metadata__":{"format":"pt"}}`)
	for hdr.Len()%8 != 0 {
		hdr.WriteByte(' ')
	}
	var out bytes.Buffer
	_ = binary.Write(&out, binary.LittleEndian, uint64(hdr.Len()))
	out.Write(hdr.Bytes())
	out.Write(data)
	return out.Bytes()
}
