package inference

import (
	"cmp"
	"context"
	"fmt"
	"mime"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Guards against other sites and greedy clients: a page of any web site
// can make its visitor's browser send requests to a node on the visitor's
// own machine, by a form (cross-site request forgery: a "simple" request,
// which may not have Content-Type application/json) or by a name of the
// site's own that resolves to 127.0.0.1 (DNS rebinding: the Host header
// then holds that name). And one client may hold every connection.

// checkHost refuses a request that came in on a loopback address under a
// Host other than the loopback names (localhost, 127.0.0.1, [::1], with no
// port or the port it came in on) and cfg.AllowHosts.
func (s *Server) checkHost(r *http.Request) *APIError {
	local, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if !ok {
		return nil
	}
	lhost, lport, err := net.SplitHostPort(local.String())
	if err != nil {
		return nil
	}
	if ip := net.ParseIP(lhost); ip == nil || !ip.IsLoopback() {
		return nil
	}
	host := strings.ToLower(r.Host)
	name, port := host, ""
	if h, p, err := net.SplitHostPort(host); err == nil {
		name, port = h, p
	} else if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		name = host[1 : len(host)-1]
	}
	switch name {
	case "localhost", "127.0.0.1", "::1":
		if port == "" || port == lport {
			return nil
		}
	}
	for _, a := range s.cfg.AllowHosts {
		a = strings.ToLower(a)
		if a == "*" || a == host || a == name || a == "["+name+"]" {
			return nil
		}
	}
	return &APIError{Status: http.StatusForbidden, Type: "invalid_request_error", Code: "host_not_allowed",
		Message: fmt.Sprintf("the Host header %q is not a name of this node: it listens on loopback address %s, where it answers localhost:%s, 127.0.0.1:%s and [::1]:%s "+
			"(a page of another site may be reaching it through a name that resolves to this machine); "+
			"if the node is meant to be reached by that name, start it with --allow-host %s", r.Host, local, lport, lport, lport, cmp.Or(r.Host, `""`))}
}

// checkJSON refuses a request body that is not declared JSON: a browser
// sends a cross-site POST without asking the site first only for form and
// text/plain bodies, never for application/json.
func checkJSON(r *http.Request) *APIError {
	ct := r.Header.Get("Content-Type")
	mt, params, err := mime.ParseMediaType(ct)
	ok := err == nil && mt == "application/json"
	for k, v := range params {
		if k != "charset" || !strings.EqualFold(v, "utf-8") {
			ok = false
		}
	}
	if ok {
		return nil
	}
	got := "no Content-Type"
	if ct != "" {
		got = fmt.Sprintf("Content-Type %q", ct)
	}
	return &APIError{Status: http.StatusUnsupportedMediaType, Type: "invalid_request_error", Code: "unsupported_media_type",
		Message: fmt.Sprintf("the request has %s: send the body as JSON with Content-Type: application/json (charset utf-8 at most)", got)}
}

// overKey marks, in a connection's context, a connection over its remote
// IP's limit.
type overKey struct{}

// connLimit counts the connections open from each remote IP.
type connLimit struct {
	max int
	mu  sync.Mutex
	n   map[string]int
}

// limitListener caps the connections open at once from one remote IP at
// connLimit.max. A connection over the cap is accepted uncounted, marked,
// given a short write deadline and answered 429 with Retry-After (and
// closed) by the handler, so that its client reads why; one that sends
// nothing is cut at the server's header timeout.
type limitListener struct {
	net.Listener
	l *connLimit
}

// overGrace is how long a connection over its IP's cap may take to send
// the request that is answered 429.
const overGrace = 2 * time.Second

func (ll limitListener) Accept() (net.Conn, error) {
	c, err := ll.Listener.Accept()
	if err != nil {
		return nil, err
	}
	ip := c.RemoteAddr().String()
	if h, _, err := net.SplitHostPort(ip); err == nil {
		ip = h
	}
	ll.l.mu.Lock()
	over := ll.l.n[ip] >= ll.l.max
	if !over {
		ll.l.n[ip]++
	}
	ll.l.mu.Unlock()
	if over {
		c.SetDeadline(time.Now().Add(overGrace))
		return &limitConn{Conn: c, over: true}, nil
	}
	return &limitConn{Conn: c, ip: ip, l: ll.l}, nil
}

// limitConn gives its IP's count back when it closes.
type limitConn struct {
	net.Conn
	ip   string
	l    *connLimit
	over bool
	once sync.Once
}

func (c *limitConn) Close() error {
	if c.l != nil {
		c.once.Do(func() {
			c.l.mu.Lock()
			if c.l.n[c.ip]--; c.l.n[c.ip] <= 0 {
				delete(c.l.n, c.ip)
			}
			c.l.mu.Unlock()
		})
	}
	return c.Conn.Close()
}

// Listen wraps ln with the cap on connections per remote IP
// (Config.MaxConnsPerIP); serve it with HTTPServer.
func (s *Server) Listen(ln net.Listener) net.Listener {
	if s.cfg.MaxConnsPerIP < 0 {
		return ln
	}
	return limitListener{Listener: ln, l: &connLimit{max: s.cfg.MaxConnsPerIP, n: map[string]int{}}}
}

// HTTPServer returns an http.Server for Handler with the limits of a
// public server: the time and size of a request's headers, the time an
// idle connection stays open, and the 429 answer of a connection over its
// IP's cap (with a listener from Listen).
func (s *Server) HTTPServer() *http.Server {
	return &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: s.cfg.HeaderTimeout,
		MaxHeaderBytes:    s.cfg.MaxHeaderBytes,
		IdleTimeout:       2 * time.Minute,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if lc, ok := c.(*limitConn); ok && lc.over {
				return context.WithValue(ctx, overKey{}, true)
			}
			return ctx
		},
	}
}

// tooManyConns answers a request on a connection over its IP's cap 429
// (writeError adds Retry-After) and closes the connection.
func (s *Server) tooManyConns(w http.ResponseWriter, r *http.Request) bool {
	if r.Context().Value(overKey{}) == nil {
		return false
	}
	w.Header().Set("Connection", "close")
	writeError(w, &APIError{Status: http.StatusTooManyRequests, Type: "requests", Code: "rate_limit_exceeded",
		Message: fmt.Sprintf("too many connections from your address: %d are open at most at once; retry after closing one", s.cfg.MaxConnsPerIP)})
	return true
}
