// Package dashboard is clusterwall's web dashboard: static HTML, CSS and
// JavaScript embedded in the binary (no CDN, works without internet). The
// daemon serves it on the admin listener under /ui/; the page reads the
// admin API (/v1/overview, /v1/decisions, /v1/decisions/stream, /v1/rules,
// /v1/dns/upstreams, /v1/status) with the operator's bearer token.
package dashboard

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed assets
var assets embed.FS

// Assets returns the dashboard's files (index.html, app.js, app.css).
func Assets() fs.FS {
	sub, err := fs.Sub(assets, "assets")
	if err != nil {
		panic(err) // the embedded directory exists at build time
	}
	return sub
}

// Handler serves the dashboard's files; mount it with the /ui prefix
// stripped. The page's scripts and styles come only from itself (a strict
// Content-Security-Policy), and it talks only to the admin API it was
// served by.
func Handler() http.Handler {
	files := http.FileServerFS(Assets())
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})
}
