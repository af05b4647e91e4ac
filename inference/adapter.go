package inference

import (
	"os"
	"path/filepath"

	"github.com/fedtune/fedtune/model"
)

// AdapterFolder makes dir an adapter folder (as LoadModel's adapterDir) of
// the global LoRA adapter file global, as a job commits it: its adapter
// config from lc, and the file itself, unchanged, as its weights, so that
// the folder's digest is the committed one.
func AdapterFolder(global, dir string, lc model.LoRAConfig) error {
	ad, err := model.ReadAdapterFile(global, lc)
	if err != nil {
		return err
	}
	if _, err := ad.Save(dir); err != nil {
		return err
	}
	data, err := os.ReadFile(global)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, model.AdapterWeightsFile), data, 0o644)
}
