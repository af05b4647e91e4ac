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
		h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:")
		h.Set("X-Content-Type-Options", "nosniff")
		w.Write(b)
	})
}

// pageAssets serves the page's scripts and style sheets under /page/.
func pageAssets() http.Handler {
	sub, err := fs.Sub(pageFS, "page")
	if err != nil {
		panic(err)
	}
	return http.StripPrefix("/page/", http.FileServerFS(sub))
}
