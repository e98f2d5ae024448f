package gateway

import (
	"bufio"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
)

func TestParseHead(t *testing.T) {
	tests := []struct {
		name, head string
		err        error
		method     string
		target     string
		minor      int
		host       string
		length     int64
		close      bool
		fields     int
	}{
		{name: "plain", head: "GET /a?b=c HTTP/1.1\r\nHost: h\r\nX-Y: z\r\n\r\n", method: "GET", target: "/a?b=c", minor: 1, host: "h", length: -1, fields: 2},
		{name: "bare LF", head: "GET / HTTP/1.1\nHost: h\n\n", method: "GET", target: "/", minor: 1, host: "h", length: -1, fields: 1},
		{name: "1.0 no host", head: "GET / HTTP/1.0\r\n\r\n", method: "GET", target: "/", length: -1},
		{name: "length", head: "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 12\r\nContent-Length: 12\r\n\r\n", method: "POST", target: "/", minor: 1, host: "h", length: 12, fields: 3},
		{name: "close", head: "GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Close\r\n\r\n", method: "GET", target: "/", minor: 1, host: "h", length: -1, close: true, fields: 2},
		{name: "no version", head: "GET /\r\n\r\n", err: errBadRequestLine},
		{name: "bad method", head: "GE@T / HTTP/1.1\r\n\r\n", err: errBadRequestLine},
		{name: "no colon", head: "GET / HTTP/1.1\r\nHost: h\r\nbad\r\n\r\n", err: errBadHeaderLine},
		{name: "bad name", head: "GET / HTTP/1.1\r\nHost: h\r\nX Y: z\r\n\r\n", err: errBadHeaderLine},
		{name: "too many", head: "GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n", err: errTooManyHeaders},
		{name: "h2 preface", head: "PRI * HTTP/2.0\r\n\r\n", err: errHandOver},
		{name: "absolute", head: "GET http://x/ HTTP/1.1\r\nHost: h\r\n\r\n", err: errHandOver},
		{name: "chunked", head: "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n", err: errHandOver},
		{name: "upgrade", head: "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n", err: errHandOver},
		{name: "expect", head: "PUT / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n", err: errHandOver},
		{name: "folded", head: "GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n", err: errHandOver},
		{name: "1.1 without host", head: "GET / HTTP/1.1\r\n\r\n", err: errHandOver},
		{name: "two hosts", head: "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", err: errHandOver},
		{name: "lengths differ", head: "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", err: errHandOver},
		{name: "signed length", head: "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +1\r\n\r\n", err: errHandOver},
		{name: "HTTP/1.2", head: "GET / HTTP/1.2\r\nHost: h\r\n\r\n", err: errHandOver},
	}
	var h requestHead
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := parseHead(tt.head, &h, 3)
			if err != tt.err {
				t.Fatalf("err %v, want %v", err, tt.err)
			}
			if err != nil {
				return
			}
			if h.method != tt.method || h.target != tt.target || h.minor != tt.minor || h.host != tt.host ||
				h.contentLength != tt.length || h.connClose != tt.close || len(h.fields) != tt.fields {
				t.Fatalf("got %+v", h)
			}
		})
	}
}

func TestCanonicalName(t *testing.T) {
	for _, name := range []string{"host", "HOST", "content-length", "x-opskit-dye", "X-Already-Canonical", "a-b-c", "weird_name", "x--y", strings.Repeat("long-", 20)} {
		if got, want := canonicalName(name), http.CanonicalHeaderKey(name); got != want {
			t.Errorf("canonicalName(%q) = %q, want %q", name, got, want)
		}
	}
}

func TestHeadEnd(t *testing.T) {
	for in, want := range map[string]int{
		"GET / HTTP/1.1\r\nHost: h\r\n\r\nrest": 27,
		"GET / HTTP/1.1\nHost: h\n\nrest":       24,
		"GET / HTTP/1.1\r\nHost: h\r\n":         -1,
		"\r\nGET":                               2,
		"":                                      -1,
	} {
		if got := headEnd([]byte(in)); got != want {
			t.Errorf("headEnd(%q) = %d, want %d", in, got, want)
		}
	}
}

// FuzzParseHead: the parser never panics, and a head it accepts is one
// net/http reads the same way (method, target, version, Host, header,
// framing), so serving it on the fast path changes nothing.
func FuzzParseHead(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
		"GET /a?b=c HTTP/1.0\r\nx-test: 1\r\nCONNECTION: keep-alive\r\n\r\n",
		"POST /p HTTP/1.1\r\nHost: h:80\r\nContent-Length: 3\r\n\r\n",
		"GET / HTTP/1.1\nHost: [::1]:8080\nPragma: no-cache\nA: b\nA: c\n\n",
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
		"GET /a/b;c=d/@x:y?q=1&r=%20# HTTP/1.1\r\nHost: h\r\n\r\n",
		"GET /p? HTTP/1.1\r\nHost: h\r\n\r\n",
		"GET //x/y??z HTTP/1.1\r\nHost: h\r\n\r\n",
		"GET   /   HTTP/1.1\r\n\r\n",
		"G\x00T / HTTP/1.1\r\n\r\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		end := headEnd([]byte(in))
		if end < 0 {
			return
		}
		head := in[:end]
		var h requestHead
		if err := parseHead(head, &h, 100); err != nil {
			return
		}
		wantURL, err := url.ParseRequestURI(h.target)
		if err != nil {
			return // the server hands these to net/http too
		}
		var reused url.URL
		if gotURL, err := parseTarget(h.target, &reused); err != nil || !reflect.DeepEqual(gotURL, wantURL) {
			t.Fatalf("%q: target read as %#v (%v), url.ParseRequestURI %#v", head, gotURL, err, wantURL)
		}
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(head)))
		if err != nil {
			t.Fatalf("accepted %q, net/http refuses it: %v", head, err)
		}
		if req.Method != h.method || req.RequestURI != h.target || req.ProtoMinor != h.minor || req.ProtoMajor != 1 || req.Host != h.host {
			t.Fatalf("%q: net/http reads %s %s %s host %q; we read %+v", head, req.Method, req.RequestURI, req.Proto, req.Host, h)
		}
		got := http.Header{}
		h.fillHeader(got, nil)
		// ReadRequest leaves Host in the header; the server drops it.
		want := req.Header.Clone()
		delete(want, "Host")
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%q: header %v, net/http %v", head, got, want)
		}
		if h.contentLength >= 0 && req.ContentLength != h.contentLength {
			t.Fatalf("%q: length %d, net/http %d", head, h.contentLength, req.ContentLength)
		}
		if h.contentLength < 0 && req.ContentLength != 0 {
			t.Fatalf("%q: no length, net/http %d", head, req.ContentLength)
		}
		if close := h.connClose || (h.minor == 0 && !h.connKeepAlive); close != req.Close {
			t.Fatalf("%q: close %v, net/http %v", head, close, req.Close)
		}
	})
}

// FuzzParseResponseHead: an upstream's response head the transport reads
// itself is read as net/http reads it (status, protocol, header, length,
// close).
func FuzzParseResponseHead(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Type: text/plain\r\n\r\n",
		"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n",
		"HTTP/1.1 503\r\ncontent-length: 10\r\nconnection: close\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
		"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n",
		"HTTP/1.1 200 OK\nPragma: no-cache\nContent-Length: 1\n\n",
	} {
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, in string, head bool) {
		end := headEnd([]byte(in))
		if end < 0 {
			return
		}
		req := &http.Request{Method: "GET"}
		if head {
			req.Method = "HEAD"
		}
		got, ok := parseResponseHead(in[:end], req)
		if !ok {
			return
		}
		want, err := http.ReadResponse(bufio.NewReader(strings.NewReader(in[:end])), req)
		if err != nil {
			t.Fatalf("accepted %q, net/http refuses it: %v", in[:end], err)
		}
		if got.Status != want.Status || got.StatusCode != want.StatusCode || got.Proto != want.Proto || got.ProtoMinor != want.ProtoMinor ||
			got.ContentLength != want.ContentLength || got.Close != want.Close || !reflect.DeepEqual(got.Header, want.Header) {
			t.Fatalf("%q:\n got %+v\nwant %+v", in[:end], got, want)
		}
	})
}
