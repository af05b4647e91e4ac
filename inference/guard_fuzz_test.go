package inference

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
)

// FuzzGuardHeaders: the Host and Content-Type checks read any header
// without panicking; a Host they let through on a loopback address is one
// of its loopback names (or Config.AllowHosts'), and a Content-Type they
// let through is JSON.
func FuzzGuardHeaders(f *testing.F) {
	for _, s := range [][2]string{
		{"localhost:8000", "application/json"}, {"[::1]:8000", "application/json; charset=utf-8"},
		{"evil.example:8000", "text/plain"}, {"[::1", "application/json;"}, {"", ""}, {"127.0.0.1:8000:1", "application/json; charset="},
		{"[fe80::1%25eth0]:8000", "APPLICATION/JSON ; CHARSET=\"UTF-8\""}, {"node.example", "multipart/form-data; boundary=x"},
	} {
		f.Add(s[0], s[1])
	}
	local := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8000}
	s := &Server{cfg: Config{AllowHosts: []string{"node.example"}}}
	f.Fuzz(func(t *testing.T, host, ct string) {
		r, _ := http.NewRequestWithContext(context.WithValue(context.Background(), http.LocalAddrContextKey, net.Addr(local)), "POST", "/v1/completions", nil)
		r.Host = host
		r.Header.Set("Content-Type", ct)
		if e := s.checkHost(r); e == nil {
			name := strings.ToLower(host)
			if h, _, err := net.SplitHostPort(name); err == nil {
				name = h
			}
			name = strings.Trim(name, "[]")
			switch name {
			case "localhost", "127.0.0.1", "::1", "node.example":
			default:
				t.Errorf("Host %q let through", host)
			}
		} else if e.Status != http.StatusForbidden || e.Message == "" {
			t.Errorf("Host %q: %+v", host, e)
		}
		if e := checkJSON(r); e == nil {
			if !strings.HasPrefix(strings.ToLower(strings.TrimSpace(ct)), "application/json") {
				t.Errorf("Content-Type %q let through", ct)
			}
		} else if e.Status != http.StatusUnsupportedMediaType {
			t.Errorf("Content-Type %q: %+v", ct, e)
		}
	})
}
