// Package web serves deployer's status page: one HTML file with a little
// plain JavaScript (no build step) that shows the queue, the running
// deploys with each host's progress, and the history, refreshed every two
// seconds from deployer's JSON API.
//
// The page marks what it draws with stable attributes for scripts and
// tests: rows and boxes carry data-deploy="ID" and data-state="STATE"
// (class "queued" in #queue, "running" in #running, "finished" in
// #history); each host of a running deploy is a span.host with data-host
// and data-state; #updated gets data-ok="1" after a successful refresh.
// A bearer token for the API can be given once as /#token=SECRET; it is
// kept for the browser tab's session.
package web

import (
	_ "embed"
	"net/http"
)

//go:embed index.html
var page []byte

// Register serves the page at GET / and GET /ui/.
func Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /{$}", serve)
	mux.HandleFunc("GET /ui/{$}", serve)
}

func serve(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("Content-Security-Policy", "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write(page)
}
