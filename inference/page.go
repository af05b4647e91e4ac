package inference

import (
	"embed"
	"io/fs"
	"net/http"
)

// pageFS is the page at /: static HTML, JS and CSS, no build step and no
// external fetches.
//
//go:embed page
var pageFS embed.FS

// pageIndex serves the page's index.html.
func pageIndex() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := pageFS.ReadFile("page/index.html")
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		h := w.Header()
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("Content-Security-Policy", PageCSP)
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Content-Type-Options", "nosniff")
		w.Write(b)
	})
}

// PageCSP is the page's Content-Security-Policy: its own scripts, styles
// and API only, no inline script, no plugin, no <base> or form that could
// send the API key elsewhere, and not framed by another site (which could
// overlay the page to take the key typed into it).
const PageCSP = "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// pageAssets serves the page's scripts and style sheets under /page/.
func pageAssets() http.Handler {
	sub, err := fs.Sub(pageFS, "page")
	if err != nil {
		panic(err)
	}
	files := http.StripPrefix("/page/", http.FileServerFS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Content-Security-Policy", PageCSP)
		files.ServeHTTP(w, r)
	})
}
