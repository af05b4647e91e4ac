package engine

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	"math/rand/v2"
	"strings"
	"testing"
)

// fmaExact is a·b+c rounded once to float32, through big.Float.
func fmaExact(a, b, c float32) float32 {
	if math.IsNaN(float64(a)) || math.IsNaN(float64(b)) || math.IsNaN(float64(c)) ||
		math.IsInf(float64(a), 0) || math.IsInf(float64(b), 0) || math.IsInf(float64(c), 0) {
		return float32(float64(a)*float64(b) + float64(c))
	}
	p := new(big.Float).SetPrec(400).Mul(big.NewFloat(float64(a)).SetPrec(400), big.NewFloat(float64(b)))
	s := p.Add(p, big.NewFloat(float64(c)).SetPrec(400))
	if s.Sign() == 0 {
		return float32(float64(a)*float64(b) + float64(c)) // the sign of a zero sum
	}
	f, _ := s.Float32()
	return f
}

// randFloat32 draws a float32 of any sign and a wide range of exponents,
// with now and then a zero, a subnormal or a value near a power of two.
func randFloat32(r *rand.Rand) float32 {
	switch r.IntN(16) {
	case 0:
		return 0
	case 1:
		return math.Float32frombits(r.Uint32() & 0x807fffff) // subnormal
	case 2:
		return math.Float32frombits(uint32(r.IntN(40)+100)<<23 | r.Uint32()&0x80000000 | uint32(r.IntN(4)))
	}
	return float32(r.NormFloat64() * math.Exp2(float64(r.IntN(60)-30)))
}

var negZero = float32(math.Copysign(0, -1))

// TestFMA32 checks fma32 against a·b+c rounded once (big.Float), on random
// operands and on ones whose float64 sum is a float32 tie that the exact
// sum is not (where rounding twice goes wrong).
func TestFMA32(t *testing.T) {
	cases := [][3]float32{
		// 10610063·13264529 = 2⁴⁷−1: a·b = 2⁻²⁴ − 2⁻⁷¹, c odd: float64
		// rounds 1+2⁻²³+a·b to the tie 1+2⁻²³+2⁻²⁴, which is not one.
		{10610063 * 0x1p-47, 13264529 * 0x1p-24, 1 + 0x1p-23},
		{-10610063 * 0x1p-47, 13264529 * 0x1p-24, -(1 + 0x1p-23)},
		{10610063 * 0x1p-47, -13264529 * 0x1p-24, 1 + 0x1p-23},
		{10610063 * 0x1p-47, 13264529 * 0x1p-24, 1},
		{0x1p-149, 0.5, 0x1p-149},         // subnormal tie
		{negZero, 1, 0}, {0, -1, negZero}, // signed zeros
		{math.MaxFloat32, 2, -math.MaxFloat32},
	}
	r := rand.New(rand.NewPCG(7, 9))
	for range 200000 {
		cases = append(cases, [3]float32{randFloat32(r), randFloat32(r), randFloat32(r)})
	}
	// Operands whose product lands half an ulp of c away, give or take
	// an ulp of the product.
	for range 20000 {
		c := float32(1 + r.Float64())
		a := float32(1 + r.Float64())
		b := float32(float64(c) * 0x1p-24 / float64(a))
		for _, d := range []int{-1, 0, 1} {
			bb := math.Float32frombits(uint32(int(math.Float32bits(b)) + d))
			cases = append(cases, [3]float32{a, bb, c}, [3]float32{-a, bb, c})
		}
	}
	bad := 0
	for _, c := range cases {
		got, want := fma32(c[0], c[1], c[2]), fmaExact(c[0], c[1], c[2])
		if math.Float32bits(got) != math.Float32bits(want) {
			if bad++; bad < 10 {
				t.Errorf("fma32(%x, %x, %x) = %x, want %x", c[0], c[1], c[2], got, want)
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d wrong", bad, len(cases))
	}
}

// TestISASwitch: FEDTUNE_ENGINE_ISA's values as useISA takes them, and a
// bad one making every Host fail with an error that names the variable.
func TestISASwitch(t *testing.T) {
	defer func() { _ = useISA("") }()
	for _, c := range []struct {
		name, want string // want: the error's words, or "" for none
	}{
		{"", ""}, {"auto", ""}, {"generic", ""},
		{"AVX2", "unknown instruction set"}, {"sse", "unknown instruction set"},
	} {
		err := useISA(c.name)
		if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
			t.Errorf("useISA(%q) = %v, want %q", c.name, err, c.want)
		}
	}
	if bestISA() != isaAVX512 {
		if err := useISA(isaAVX512); err == nil || !strings.Contains(err.Error(), "offers at most") {
			t.Errorf("useISA(avx512) without AVX-512 = %v, want an error", err)
		}
	}
	if err := useISA(isaGeneric); err != nil || haveAVX2 || ISA() != isaGeneric {
		t.Fatalf("useISA(generic): %v, haveAVX2 %v, ISA %s", err, haveAVX2, ISA())
	}
	saved := isaErr
	isaErr = fmt.Errorf("%s=%q: unknown instruction set", ISAEnv, "bogus")
	defer func() { isaErr = saved }()
	if err := NewHost().Sync(); err == nil || !errors.Is(err, ErrDevice) || !strings.Contains(err.Error(), ISAEnv) {
		t.Errorf("NewHost with a bad %s: Sync = %v", ISAEnv, err)
	}
}
