// Package openblas holds the one OpenBLAS call the Host device makes through
// cgo (its thread count), in a package of its own because package engine
// has assembly files and cannot use cgo. It has code only with the
// openblas build tag.
package openblas
