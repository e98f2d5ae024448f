package gateway

import (
	"bufio"
	"errors"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"
)

// forward proxies an idempotent request without a body (most of a
// gateway's traffic) without httputil.ReverseProxy: the request is written
// to the upstream straight from the inbound one, with no clone of it or of
// its header, and the response's header values are handed to the client's
// header as they are. What it sends and answers is what ReverseProxy with
// the gateway's Rewrite does: hop-by-hop headers dropped both ways (Te:
// trailers kept), the client's Forwarded and X-Forwarded-* replaced by
// X-Forwarded-For (the peer), -Host and -Proto, no User-Agent added, 1xx
// answers passed on, streamed responses flushed as they come, trailers
// passed on. It reports whether the response was cut short after its
// header was sent (the caller then aborts the client's connection, as
// ReverseProxy does).
func (g *Gateway) forward(w *statusWriter, req *http.Request, at *attempt, f *forwarding) (cut bool) {
	*f = forwarding{w: w, req: req, pool: at.pool}
	lw, loop := w.ResponseWriter.(*response)
	if loop {
		// The loop's writer can take the upstream's head as its bytes.
		f.x.rawDst = &lw.c.upstreamHead
	}
	resp, err := at.send(req.Context(), true, f)
	if err != nil {
		g.proxyErrorAt(w, req, at, err)
		return false
	}
	defer resp.Body.Close()
	if f.x.raw {
		// No header to merge: the head's lines go to the client as they
		// are encoded, after the gateway's own.
		lw.raw = f.x.rawDst
		w.WriteHeader(resp.StatusCode)
		lw.raw = nil
		if b := &f.x.body; b.c != nil && resp.ContentLength >= 0 && int64(b.c.br.Buffered()) >= resp.ContentLength {
			// The body came with the head: what is left is writing at
			// most a buffer of it to the client, so the client's idle
			// time may count from the answer's reading.
			lw.c.answeredAt = b.idleFrom
		}
		return g.copyBody(w, resp, eventStream(f.x.rawDst.contentType)) != nil
	}
	removeHopByHop(resp.Header)
	h := w.Header()
	for k, vv := range resp.Header {
		if old, ok := h[k]; ok {
			vv = append(old[:len(old):len(old)], vv...)
		}
		h[k] = vv
	}
	announced := len(resp.Trailer)
	if announced > 0 {
		keys := make([]string, 0, announced)
		for k := range resp.Trailer {
			keys = append(keys, k)
		}
		h["Trailer"] = append(h["Trailer"], strings.Join(keys, ", "))
	}
	w.WriteHeader(resp.StatusCode)
	var contentType string
	if ct := resp.Header["Content-Type"]; len(ct) > 0 {
		contentType = ct[0]
	}
	if err := g.copyBody(w, resp, eventStream(contentType)); err != nil {
		return true
	}
	resp.Body.Close() // now: it fills resp.Trailer
	if len(resp.Trailer) > 0 {
		w.Flush() // the body must be chunked for trailers to follow
	}
	if len(resp.Trailer) == announced {
		for k, vv := range resp.Trailer {
			h[k] = vv
		}
		return false
	}
	for k, vv := range resp.Trailer {
		h[http.TrailerPrefix+k] = vv
	}
	return false
}

// eventStream says whether a Content-Type is server-sent events, whose
// answers are flushed as they come.
func eventStream[T string | []byte](contentType T) bool {
	const sse = "text/event-stream"
	if len(contentType) < len(sse) || string(contentType[:len(sse)]) != sse {
		return false
	}
	base, _, _ := mime.ParseMediaType(string(contentType))
	return base == "text/event-stream"
}

// forwarding is one request on the fast path: the sender and outgoing
// request the transport needs, in one allocation.
type forwarding struct {
	w    *statusWriter
	req  *http.Request
	pool *pool
	x    exchangeScratch
}

func (f *forwarding) scratch() *exchangeScratch { return &f.x }

func (f *forwarding) sendTo(addr string, now time.Time) (*http.Response, error) {
	return f.pool.h1.roundTrip(f.req.Context(), addr, f.req, f, now)
}

func (f *forwarding) writeTo(bw *bufio.Writer) error {
	if lw, ok := f.w.ResponseWriter.(*response); ok && f.req.RemoteAddr == lw.c.remoteAddr {
		return writeRequest(bw, f.req, &lw.c.peer)
	}
	p := parsePeer(f.req.RemoteAddr)
	return writeRequest(bw, f.req, &p)
}

// interim passes a 1xx answer on; its header is not kept for the response.
func (f *forwarding) interim(code int, h http.Header) {
	out := f.w.Header()
	for k, vv := range h {
		out[k] = vv
	}
	f.w.WriteHeader(code)
	for k := range h {
		delete(out, k)
	}
}

// copyBody copies the response body to the client, flushing after each
// piece when the response is a stream (no length, or server-sent events).
func (g *Gateway) copyBody(w *statusWriter, resp *http.Response, events bool) error {
	stream := resp.ContentLength == -1 || events
	// The pool's pointer itself, not bufferPool.Put: that would allocate
	// a new one per request.
	bp := g.buffers.p.Get().(*[]byte)
	defer g.buffers.p.Put(bp)
	buf := *bp
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return werr
			}
			if stream {
				w.Flush()
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}

// forwardable: idempotent, no body, no upgrade, no request to close.
func forwardable(req *http.Request) bool {
	if req.Close || req.ContentLength != 0 || (req.Body != nil && req.Body != http.NoBody) || !idempotent(req) {
		return false
	}
	_, upgrade := req.Header["Upgrade"]
	return !upgrade
}

// skippedRequestHeader: not copied from the inbound request, as the
// request line and framing are written anew, hop-by-hop headers stay
// behind and the forwarding headers are replaced.
func skippedRequestHeader(k string) bool {
	switch k {
	case "Host", "Content-Length", "Transfer-Encoding", "Trailer",
		"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Upgrade",
		"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto":
		return true
	}
	return false
}

var errBadHost = errors.New("gateway: host header with a line break")

// writeRequest writes req as an HTTP/1.1 request to an upstream; peer is
// req.RemoteAddr taken apart.
func writeRequest(bw *bufio.Writer, req *http.Request, peer *peer) error {
	if hasLineBreak(req.Host) {
		return errBadHost
	}
	bw.WriteString(req.Method)
	bw.WriteByte(' ')
	bw.WriteString(req.URL.RequestURI())
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(req.Host)
	bw.WriteString("\r\n")
	// Headers the Connection header names are hop-by-hop too.
	var named []string
	for _, v := range req.Header["Connection"] {
		for f := range strings.SplitSeq(v, ",") {
			if f = strings.TrimSpace(f); f != "" {
				named = append(named, http.CanonicalHeaderKey(f))
			}
		}
	}
outer:
	for k, vv := range req.Header {
		if skippedRequestHeader(k) {
			continue
		}
		for _, n := range named {
			if n == k {
				continue outer
			}
		}
		for _, v := range vv {
			if k == "User-Agent" && v == "" {
				continue
			}
			writeHeaderLine(bw, k, v)
		}
	}
	if hasToken(req.Header["Te"], "trailers") {
		bw.WriteString("Te: trailers\r\n")
	}
	if req.Method == http.MethodPut {
		bw.WriteString("Content-Length: 0\r\n")
	}
	if peer.split {
		writeHeaderLine(bw, "X-Forwarded-For", peer.host)
	}
	writeHeaderLine(bw, "X-Forwarded-Host", req.Host)
	if req.TLS != nil {
		bw.WriteString("X-Forwarded-Proto: https\r\n\r\n")
	} else {
		bw.WriteString("X-Forwarded-Proto: http\r\n\r\n")
	}
	return nil
}

// hasToken says whether a comma-separated header holds token.
func hasToken(values []string, token string) bool {
	for _, v := range values {
		for f := range strings.SplitSeq(v, ",") {
			if f, _, _ = strings.Cut(f, ";"); strings.EqualFold(strings.TrimSpace(f), token) {
				return true
			}
		}
	}
	return false
}

// writeHeaderLine writes one header line; line breaks in the value (only
// a value the gateway set itself could hold one) become spaces, as
// net/http does.
func writeHeaderLine(bw *bufio.Writer, k, v string) {
	bw.WriteString(k)
	bw.WriteString(": ")
	if hasLineBreak(v) {
		v = strings.NewReplacer("\r", " ", "\n", " ").Replace(v)
	}
	bw.WriteString(strings.TrimSpace(v))
	bw.WriteString("\r\n")
}

// removeHopByHop drops hop-by-hop headers, and those the Connection header
// names, from a response header.
func removeHopByHop(h http.Header) {
	for _, v := range h["Connection"] {
		for f := range strings.SplitSeq(v, ",") {
			switch f = strings.TrimSpace(f); {
			case f == "":
			case strings.EqualFold(f, "keep-alive"):
				// Nearly every upstream names only this one, dropped
				// below anyway: no canonical copy of the name to make.
			case strings.EqualFold(f, "close"):
				delete(h, "Close")
			default:
				h.Del(f)
			}
		}
	}
	for _, k := range [...]string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"} {
		delete(h, k)
	}
}

// hasLineBreak reports a CR or LF in s (a loop: strings.ContainsAny builds
// a set of its characters on every call, which the profile showed).
func hasLineBreak(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == '\r' || s[i] == '\n' {
			return true
		}
	}
	return false
}
