package model

// tinyConfig is modeltest.TinyConfig for the tests inside package model,
// which cannot import modeltest (it imports model).
func tinyConfig() Config {
	c := DefaultConfig()
	c.VocabSize, c.HiddenSize, c.IntermediateSize, c.NumHiddenLayers = 37, 16, 24, 2
	c.NumAttentionHeads, c.NumKeyValueHeads, c.MaxPositionEmbeddings = 4, 2, 32
	c.InitializerRange = 0.3
	return c
}
