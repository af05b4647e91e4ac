package engine

import (
	"strings"
	"testing"
)

func TestGemmLayout(t *testing.T) {
	for _, tc := range []struct {
		name    string
		g       Gemm
		want    GemmLayout
		wantErr string
	}{
		{"dense", Gemm{M: 2, N: 3, K: 4},
			GemmLayout{Batch: 1, ARows: 2, ACols: 4, BRows: 4, BCols: 3, LDA: 4, LDB: 3, LDC: 3, NeedA: 8, NeedB: 12, NeedC: 6}, ""},
		{"transposed", Gemm{TransA: true, TransB: true, M: 2, N: 3, K: 4},
			GemmLayout{Batch: 1, ARows: 4, ACols: 2, BRows: 3, BCols: 4, LDA: 2, LDB: 4, LDC: 3, NeedA: 8, NeedB: 12, NeedC: 6}, ""},
		{"strided batch with row strides", Gemm{M: 2, N: 2, K: 2, LDA: 5, LDB: 2, LDC: 7, Batch: 3, StrideA: 10, StrideB: 0, StrideC: 14},
			GemmLayout{Batch: 3, ARows: 2, ACols: 2, BRows: 2, BCols: 2, LDA: 5, LDB: 2, LDC: 7, NeedA: 27, NeedB: 4, NeedC: 37}, ""},
		{"empty K", Gemm{M: 2, N: 3, K: 0},
			GemmLayout{Batch: 1, ARows: 2, ACols: 0, BRows: 0, BCols: 3, LDA: 0, LDB: 3, LDC: 3, NeedA: 0, NeedB: 0, NeedC: 6}, ""},
		{"negative", Gemm{M: -1, N: 1, K: 1}, GemmLayout{}, "negative size"},
		{"short LDA", Gemm{M: 2, N: 2, K: 3, LDA: 2}, GemmLayout{}, "LDA 2 < 3 columns of the stored A"},
		{"short LDB transposed", Gemm{TransB: true, M: 2, N: 2, K: 3, LDB: 1}, GemmLayout{}, "LDB 1 < 3 columns of the stored B"},
		{"short LDC", Gemm{M: 2, N: 4, K: 1, LDC: 3}, GemmLayout{}, "LDC 3 < N 4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.g.Layout()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Layout() = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}
