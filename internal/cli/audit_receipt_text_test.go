package cli

import "testing"

// TestAsJSONText: decoded text with a character cut mid-way compares
// equal to what a JSON body carries for it.
func TestAsJSONText(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"plain", "plain"},
		{"Qa\x95rr", "Qa\ufffdrr"},
		{"i\xe2\x82", "i\ufffd\ufffd"},
		{"é ok", "é ok"},
	} {
		if got := asJSONText(tc.in); got != tc.want {
			t.Errorf("asJSONText(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
