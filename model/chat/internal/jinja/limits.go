package jinja

import "fmt"

// Limits bound the work of one render. A zero field takes the default of
// DefaultLimits.
type Limits struct {
	// Steps bounds the template nodes executed, expressions evaluated and
	// loop iterations run, plus the size of every value a filter, method,
	// operator or output has to walk (a list of n items counts n).
	Steps int64
	// Output bounds the bytes of the rendered text, and of any one string
	// the template builds.
	Output int
	// Alloc bounds the bytes of all the strings and lists the template
	// builds during the render, taken together.
	Alloc int64
	// Depth bounds the nesting of expression evaluation and macro calls
	// (recursion), and of the lists and dicts the template builds.
	Depth int
}

// DefaultLimits are generous for every published chat template: a
// conversation of thousands of turns renders far within them.
var DefaultLimits = Limits{
	Steps:  4_000_000,
	Output: 16 << 20,
	Alloc:  256 << 20,
	Depth:  500,
}

// MaxParseDepth bounds the nesting of blocks and expressions a template
// source may have; a deeper one fails to compile.
const MaxParseDepth = 200

// maxBuild bounds any one string or list a builtin builds before the
// render's own Output limit is checked on its result.
const maxBuild = 64 << 20

// maxRange bounds the items of range().
const maxRange = 1 << 20

// LimitError is a render stopped by one of its Limits.
type LimitError struct {
	// Limit names the limit: "steps", "output", "alloc", "depth" (the
	// Limits fields, lower case), "parse depth", "range" or "build".
	Limit string
	// Max is the limit's value.
	Max int64
	// What says what reached it.
	What string
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("jinja: template exceeds its %s limit (%d): %s", e.Limit, e.Max, e.What)
}

func (l Limits) withDefaults() Limits {
	if l.Steps <= 0 {
		l.Steps = DefaultLimits.Steps
	}
	if l.Output <= 0 {
		l.Output = DefaultLimits.Output
	}
	if l.Alloc <= 0 {
		l.Alloc = DefaultLimits.Alloc
	}
	if l.Depth <= 0 {
		l.Depth = DefaultLimits.Depth
	}
	return l
}

// budget is what one render has left of its Limits; the evaluators of a
// render (macro bodies, set blocks, caller bodies) share it.
type budget struct {
	lim   Limits
	steps int64
	alloc int64
	depth int
}

// step charges n steps.
func (b *budget) step(n int64, what string) error {
	b.steps += n
	if b.steps > b.lim.Steps {
		return &LimitError{Limit: "steps", Max: b.lim.Steps, What: what}
	}
	return nil
}

// charge charges n bytes built.
func (b *budget) charge(n int64, what string) error {
	b.alloc += n
	if b.alloc > b.lim.Alloc {
		return &LimitError{Limit: "alloc", Max: b.lim.Alloc, What: what}
	}
	return nil
}

// enter counts one level of evaluation nesting; leave undoes it.
func (b *budget) enter(what string) error {
	b.depth++
	if b.depth > b.lim.Depth {
		return &LimitError{Limit: "depth", Max: int64(b.lim.Depth), What: what}
	}
	return nil
}

func (b *budget) leave() { b.depth-- }

// result checks a value the template built: a string within Output, a
// list or dict within Depth; it charges its bytes to Alloc.
func (b *budget) result(v Value, what string) error {
	switch v.kind {
	case KindString:
		n := len(v.AsString())
		if n > b.lim.Output {
			return &LimitError{Limit: "output", Max: int64(b.lim.Output), What: fmt.Sprintf("%s built a string of %d bytes", what, n)}
		}
		return b.charge(int64(n), what)
	case KindList:
		l := v.AsList()
		if l.depth > b.lim.Depth {
			return &LimitError{Limit: "depth", Max: int64(b.lim.Depth), What: what + " built a list nested too deep"}
		}
		if err := b.step(int64(len(l.Items)), what); err != nil {
			return err
		}
		return b.charge(16*int64(len(l.Items)), what)
	case KindDict:
		d := v.AsDict()
		if d.depth > b.lim.Depth {
			return &LimitError{Limit: "depth", Max: int64(b.lim.Depth), What: what + " built a dict nested too deep"}
		}
	}
	return nil
}

// buildLimit is the error of a builtin asked to build n bytes or items,
// over maxBuild.
func buildLimit(what string, n int64) error {
	if n > maxBuild || n < 0 {
		return &LimitError{Limit: "build", Max: maxBuild, What: fmt.Sprintf("%s would build %d bytes", what, n)}
	}
	return nil
}

// errStored is returned when a template puts a namespace, loop or cycler
// (whose contents change) inside a list, dict or namespace: templates run
// in transformers' sandbox do not need it, and refusing it keeps every
// value acyclic and its size known.
func errStored(where string) error {
	return fmt.Errorf("%s: a namespace, loop or cycler cannot be stored inside a list, dict or namespace", where)
}
