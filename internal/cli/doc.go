// Package cli wires every fedtune package into the fedtune command line.
// It is the only package that imports all the others; each top-level
// subcommand lives in its own file and registers itself with register.
package cli
