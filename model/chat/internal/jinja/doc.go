// Package jinja is the Jinja evaluator of model/chat: a copy of
// github.com/ardanlabs/jinja v1.8.0 (Apache-2.0, see LICENSE) changed to
// run templates that come from strangers.
//
// A chat template ships inside a published checkpoint's
// tokenizer_config.json, so a node that imports or serves a model runs
// code written by whoever published it. The upstream evaluator has no
// bound on the work a template may do; this copy adds one (see Limits and
// LimitError) and turns a panic inside an evaluation into an error.
// Everything else follows upstream, whose tests (jinja_test.go and
// testdata/templates) are kept here.
package jinja
