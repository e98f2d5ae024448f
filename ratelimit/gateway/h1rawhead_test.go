package gateway

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

// clientHead is a response head the loop encoded: its status line and its
// fields by name, each name's values in the order sent.
type clientHead struct {
	status string
	fields map[string][]string
	// what the framing depends on
	length              int64
	sniff, closeAfter   bool
	eventStream, closes bool
}

func readClientHead(t testing.TB, w *response, dropDate bool) clientHead {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(string(w.head), "\r\n"), "\r\n")
	if dropDate {
		// Added by the gateway, last: its value is the clock's.
		if last := lines[len(lines)-1]; !strings.HasPrefix(last, "Date: ") {
			t.Fatalf("no Date added at the end of %q", w.head)
		}
		lines = lines[:len(lines)-1]
	}
	h := clientHead{status: lines[0], fields: map[string][]string{}, length: w.length, sniff: w.sniff, closeAfter: w.closeAfter}
	for _, l := range lines[1:] {
		name, value, ok := strings.Cut(l, ": ")
		if !ok {
			t.Fatalf("line %q in %q", l, w.head)
		}
		h.fields[name] = append(h.fields[name], value)
	}
	return h
}

// encodeBothWays encodes the client's head for an upstream's head, with
// gateway's headers set first, from the head's raw lines (rawOK false when
// rawHead leaves the head to the header map) and through the header map
// as forward does (mapOK false when parseResponseHead leaves it to
// net/http).
func encodeBothWays(t testing.TB, head, method string, gateway http.Header) (raw, viaMap clientHead, rawOK, mapOK bool) {
	t.Helper()
	req := &http.Request{Method: method}
	c := &serverConn{s: &Server{}}
	newWriter := func() *response {
		w := &response{c: c}
		w.reset(req, 1)
		for k, vv := range gateway {
			w.header[k] = vv[:len(vv):len(vv)]
		}
		return w
	}
	if resp, ok := parseResponseHead(head, req); ok {
		mapOK = true
		w := newWriter()
		removeHopByHop(resp.Header)
		for k, vv := range resp.Header {
			if old, ok := w.header[k]; ok {
				vv = append(old[:len(old):len(old)], vv...)
			}
			w.header[k] = vv
		}
		_, hasDate := w.header["Date"]
		w.WriteHeader(resp.StatusCode)
		viaMap = readClientHead(t, w, !hasDate)
		viaMap.closes = resp.Close
		if ct := resp.Header["Content-Type"]; len(ct) > 0 {
			viaMap.eventStream = eventStream(ct[0])
		}
	}
	var rh rawHead
	if rh.parse([]byte(head)) {
		rawOK = true
		w := newWriter()
		w.raw = &rh
		w.WriteHeader(rh.code)
		_, hasDate := gateway["Date"]
		raw = readClientHead(t, w, !hasDate && !rh.hasDate)
		raw.closes = rh.close
		raw.eventStream = eventStream(rh.contentType)
	}
	return raw, viaMap, rawOK, mapOK
}

func TestRawHeadCopy(t *testing.T) {
	gw := http.Header{"Ratelimit": {`"q";r=9;t=1`}, "X-Ratelimit-Limit": {"10"}}
	tests := []struct {
		name   string
		head   string
		method string
		rawOK  bool
		want   map[string][]string // fields sent, without the gateway's
		length int64
		closes bool
	}{
		{name: "plain", head: "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\n", rawOK: true,
			want: map[string][]string{"Content-Type": {"text/plain"}, "Content-Length": {"3"}}, length: 3},
		{name: "hop-by-hop dropped",
			head: "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTe: trailers\r\n" +
				"Upgrade: h2c\r\nProxy-Authenticate: Basic\r\nProxy-Authorization: x\r\nX-Kept: 1\r\nContent-Length: 0\r\n\r\n",
			rawOK: true, want: map[string][]string{"X-Kept": {"1"}, "Content-Length": {"0"}}},
		{name: "named by Connection dropped",
			head:  "HTTP/1.1 200 OK\r\nConnection: X-Secret , keep-alive,,Close-Me\r\nX-Secret: 1\r\nx-secret: 2\r\nclose-me: y\r\nX-Secrets: kept\r\nContent-Length: 1\r\n\r\n",
			rawOK: true, want: map[string][]string{"X-Secrets": {"kept"}, "Content-Length": {"1"}}, length: 1},
		{name: "named by a closing Connection kept",
			// net/http removes the Connection header of an answer that
			// closes before ReverseProxy could read what it names.
			head:  "HTTP/1.1 200 OK\r\nConnection: X-Secret, close\r\nX-Secret: 1\r\nContent-Length: 1\r\n\r\n",
			rawOK: true, want: map[string][]string{"X-Secret": {"1"}, "Content-Length": {"1"}}, length: 1, closes: true},
		{name: "hop-by-hop in any case",
			head:  "HTTP/1.1 200 OK\r\nCONNECTION: X-Gone\r\nKEEP-ALIVE: timeout=5\r\nx-GONE: 1\r\nTE: x\r\nContent-Length: 0\r\n\r\n",
			rawOK: true, want: map[string][]string{"Content-Length": {"0"}}},
		{name: "duplicates kept in order",
			head:  "HTTP/1.1 201 Created\nSet-Cookie: a=1\nX-A: 1\nset-cookie: b=2\nSET-COOKIE:c=3 \nContent-Length: 2\nContent-Length: 2\n\n",
			rawOK: true, want: map[string][]string{"Set-Cookie": {"a=1", "b=2", "c=3"}, "X-A": {"1"}, "Content-Length": {"2", "2"}}, length: 2},
		{name: "gateway's values first",
			head:  "HTTP/1.1 200 OK\r\nRatelimit: upstream\r\nContent-Length: 0\r\nDate: Sun, 22 Nov 2026 06:00:00 GMT\r\n\r\n",
			rawOK: true, want: map[string][]string{"Ratelimit": {`"q";r=9;t=1`, "upstream"}, "Content-Length": {"0"}, "Date": {"Sun, 22 Nov 2026 06:00:00 GMT"}}},
		{name: "HTTP/1.0 closes", head: "HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", rawOK: true,
			want: map[string][]string{"Content-Length": {"0"}}, closes: true},
		{name: "HEAD keeps the length", head: "HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", method: "HEAD", rawOK: true,
			want: map[string][]string{"Content-Length": {"99"}}, length: 99},
		{name: "Connection names Content-Length", head: "HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 5\r\n\r\n", rawOK: true,
			want: map[string][]string{}, length: -1},
		{name: "event stream", head: "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nContent-Length: 5\r\n\r\n", rawOK: true,
			want: map[string][]string{"Content-Type": {"text/event-stream; charset=utf-8"}, "Content-Length": {"5"}}, length: 5},

		{name: "folded line", head: "HTTP/1.1 200 OK\r\nX-A: 1\r\n  more\r\nContent-Length: 0\r\n\r\n"},
		{name: "chunked", head: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"},
		{name: "trailer", head: "HTTP/1.1 200 OK\r\nTrailer: X-T\r\nContent-Length: 0\r\n\r\n"},
		{name: "no length", head: "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n"},
		{name: "two lengths", head: "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"},
		{name: "pragma", head: "HTTP/1.1 200 OK\r\nPragma: no-cache\r\nContent-Length: 0\r\n\r\n"},
		{name: "interim", head: "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"},
		{name: "no content", head: "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"},
		{name: "not modified", head: "HTTP/1.1 304 Not Modified\r\nContent-Length: 0\r\n\r\n"},
		{name: "bad name", head: "HTTP/1.1 200 OK\r\nX A: 1\r\nContent-Length: 0\r\n\r\n"},
		{name: "control byte", head: "HTTP/1.1 200 OK\r\nX-A: 1\x01\r\nContent-Length: 0\r\n\r\n"},
		{name: "HTTP/2 status line", head: "HTTP/2 200\r\nContent-Length: 0\r\n\r\n"},
		{name: "five Connection names", head: "HTTP/1.1 200 OK\r\nConnection: a, b, c, d, e\r\nContent-Length: 0\r\n\r\n"},
		{name: "Connection not ASCII", head: "HTTP/1.1 200 OK\r\nConnection: clo\u017fe\r\nContent-Length: 0\r\n\r\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			method := tc.method
			if method == "" {
				method = "GET"
			}
			raw, viaMap, rawOK, mapOK := encodeBothWays(t, tc.head, method, gw)
			if rawOK != tc.rawOK {
				t.Fatalf("copied raw: %v, want %v", rawOK, tc.rawOK)
			}
			if !rawOK {
				return
			}
			if !mapOK {
				t.Fatal("copied raw a head the header map refuses")
			}
			if !reflect.DeepEqual(raw, viaMap) {
				t.Fatalf("raw copy and header map differ:\n raw %+v\n map %+v", raw, viaMap)
			}
			want := map[string][]string{}
			for k, v := range gw {
				want[k] = v
			}
			for k, v := range tc.want {
				if k != "Ratelimit" {
					want[k] = v
				}
			}
			if v, ok := tc.want["Ratelimit"]; ok {
				want["Ratelimit"] = v
			}
			if !reflect.DeepEqual(raw.fields, want) {
				t.Errorf("fields\n got %v\nwant %v", raw.fields, want)
			}
			if raw.length != tc.length || raw.closes != tc.closes {
				t.Errorf("length %d close %v, want %d %v", raw.length, raw.closes, tc.length, tc.closes)
			}
		})
	}
}

// FuzzRawHeadCopy: a head copied raw is accepted by the header map too,
// and the client gets the same status, fields (each name's values in the
// same order), framing and connection handling either way.
func FuzzRawHeadCopy(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Type: text/plain\r\n\r\n",
		"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\n",
		"HTTP/1.1 503\r\ncontent-length: 10\r\nconnection: close, X-A\r\nx-a: 1\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n",
		"HTTP/1.1 200 OK\nDate: Sun, 22 Nov 2026 06:00:00 GMT\nRatelimit: u\nContent-Length: 1\n\n",
		"HTTP/1.1 200 OK\r\nConnection: content-length, date\r\nContent-Length: 1\r\nDate: x\r\nContent-Type: text/event-stream\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTe: x\r\nUpgrade: y\r\nProxy-Authenticate: z\r\nTransfer-Encoding: chunked\r\n\r\n",
	} {
		f.Add(s, false)
	}
	gw := http.Header{"Ratelimit": {`"q";r=9;t=1`}}
	f.Fuzz(func(t *testing.T, in string, head bool) {
		end := headEnd([]byte(in))
		if end < 0 {
			return
		}
		method := "GET"
		if head {
			method = "HEAD"
		}
		raw, viaMap, rawOK, mapOK := encodeBothWays(t, in[:end], method, gw)
		if !rawOK {
			return
		}
		if !mapOK {
			t.Fatalf("%q copied raw, refused by the header map", in[:end])
		}
		if !reflect.DeepEqual(raw, viaMap) {
			t.Fatalf("%q:\n raw %+v\n map %+v", in[:end], raw, viaMap)
		}
	})
}

// TestRawHeadAnswersAsReverseProxy: the client gets the same header for a
// GET, whose answer's head the loop copies raw, as for a POST, whose answer
// goes through httputil.ReverseProxy and net/http's Transport.
func TestRawHeadAnswersAsReverseProxy(t *testing.T) {
	const answer = "HTTP/1.1 200 OK\r\nconnection: X-Up-Hop, keep-alive\r\nx-up-hop: 1\r\nKeep-Alive: timeout=5\r\n" +
		"Set-Cookie: a=1\r\nx-multi: 1\r\nset-cookie: b=2\r\nProxy-Authenticate: Basic\r\nContent-Type: text/plain\r\n" +
		"Date: Sun, 22 Nov 2026 06:00:00 GMT\r\nContent-Length: 2\r\n\r\nok"
	up := newRawUpstream(t, func(c net.Conn, req *http.Request) bool {
		io.Copy(io.Discard, req.Body)
		_, err := io.WriteString(c, answer)
		return err == nil
	})
	_, srv := newGateway(t, fmt.Sprintf(`
upstreams:
  app: {servers: [%s]}
routes:
  - {name: r, upstream: app}
`, up.addr), nil)
	send := func(method string) http.Header {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+"/x", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "ok" {
			t.Fatalf("%s: %d %q", method, resp.StatusCode, body)
		}
		return resp.Header
	}
	fast, slow := send("GET"), send("POST")
	if fmt.Sprint(fast) != fmt.Sprint(slow) {
		t.Errorf("client got\nraw copy:     %v\nReverseProxy: %v", fast, slow)
	}
	if v := fast.Values("Set-Cookie"); !reflect.DeepEqual(v, []string{"a=1", "b=2"}) {
		t.Errorf("Set-Cookie %q", v)
	}
	for _, k := range []string{"X-Up-Hop", "Keep-Alive", "Connection", "Proxy-Authenticate"} {
		if v := fast.Get(k); v != "" {
			t.Errorf("hop-by-hop %s: %q reached the client", k, v)
		}
	}
}

// BenchmarkResponseHead: an nginx-like upstream head read and the client's
// head encoded, with the gateway's RateLimit lines, copied raw against
// through the header map (the path before the raw copy).
//
//	go test -run XXX -bench ResponseHead -benchtime 200000x ./ratelimit/gateway/
func BenchmarkResponseHead(b *testing.B) {
	head := []byte("HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sun, 22 Nov 2026 06:00:00 GMT\r\n" +
		"Content-Type: application/octet-stream\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\n")
	extra := []byte("Ratelimit-Policy: \"q\";q=1000000;w=1\r\nRatelimit: \"q\";r=1000;t=0\r\nX-Ratelimit-Limit: 1000000\r\n" +
		"X-Ratelimit-Remaining: 1000\r\nX-Ratelimit-Reset: 0\r\n")
	req := &http.Request{Method: "GET"}
	c := &serverConn{s: &Server{}}
	w := &response{c: c}
	b.Run("raw", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			w.reset(req, 1)
			w.extra = append(w.extra, extra...)
			if !c.upstreamHead.parse(head) {
				b.Fatal("not copied raw")
			}
			w.raw = &c.upstreamHead
			w.WriteHeader(c.upstreamHead.code)
			w.raw = nil
		}
	})
	b.Run("map", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			w.reset(req, 1)
			w.extra = append(w.extra, extra...)
			resp, ok := parseResponseHead(string(head), req)
			if !ok {
				b.Fatal("not parsed")
			}
			removeHopByHop(resp.Header)
			for k, vv := range resp.Header {
				w.header[k] = vv
			}
			w.WriteHeader(resp.StatusCode)
		}
	})
}
