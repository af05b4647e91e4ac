package devnet

import (
	"fmt"

	"gopkg.in/yaml.v3"

	"github.com/fedtune/fedtune/internal/atomicfile"
)

// writeConfig validates a part's config (a ledger/node.Config,
// coordinator.ServerConfig, aggnode.Config …, as a pointer), marshals it to
// YAML without the fields left at their zero value (which the part reads
// as its defaults) and writes it to path.
func writeConfig(path string, c interface{ Validate() error }) error {
	if err := c.Validate(); err != nil {
		return fmt.Errorf("devnet: %s: %w", path, err)
	}
	data, err := marshalConfig(c)
	if err != nil {
		return fmt.Errorf("devnet: %s: %w", path, err)
	}
	return atomicfile.Write(path, data, 0o600)
}

// marshalConfig is yaml.Marshal of v with every mapping entry whose value
// is zero ("", 0, 0s, false, null, an empty list or mapping) left out.
func marshalConfig(v any) ([]byte, error) {
	data, err := yaml.Marshal(v)
	if err != nil {
		return nil, err
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, err
	}
	for _, n := range doc.Content {
		pruneZero(n)
	}
	return yaml.Marshal(&doc)
}

// pruneZero removes the zero-valued entries of the mappings in n and
// reports whether n itself is zero.
func pruneZero(n *yaml.Node) bool {
	switch n.Kind {
	case yaml.MappingNode:
		kept := n.Content[:0]
		for i := 0; i+1 < len(n.Content); i += 2 {
			if !pruneZero(n.Content[i+1]) {
				kept = append(kept, n.Content[i], n.Content[i+1])
			}
		}
		n.Content = kept
		return len(kept) == 0
	case yaml.SequenceNode:
		for _, c := range n.Content {
			pruneZero(c)
		}
		return len(n.Content) == 0
	case yaml.ScalarNode:
		switch n.Tag {
		case "!!null":
			return true
		case "!!bool":
			return n.Value == "false"
		case "!!int", "!!float":
			return n.Value == "0"
		case "!!str":
			return n.Value == "" || n.Value == "0s"
		}
	}
	return false
}
