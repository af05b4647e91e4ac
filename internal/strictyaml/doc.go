// Package strictyaml decodes fedtune's YAML configuration files strictly:
// one document, no unknown keys, and every error written as "name:line:
// message" so that a person can find and fix the line.
//
// Every config type in fedtune (genesis, ledger node, coordinator,
// aggregator, trainer, job, model) decodes through Decode, then fills
// defaults and validates on its own.
package strictyaml
