package gateway

import (
	"bufio"
	"io"
	"net/http"
	"strings"
)

// readResponse reads an upstream's response head. The common answer (a
// final status with a Content-Length, HTTP/1.x, no Transfer-Encoding) is
// parsed in place. When the caller takes heads raw (x.rawDst), such a head
// is kept as bytes there (see rawHead) and the response has no Header;
// otherwise it becomes one string, the header's names and values cut from
// it. Anything else (interim and 204/304 answers, chunked or
// close-delimited bodies, trailers, heads over the buffer, odd bytes) is
// left to http.ReadResponse, which reads the same bytes.
func readResponse(br *bufio.Reader, req *http.Request, x *exchangeScratch) (*http.Response, error) {
	end := -1
	for {
		buf, _ := br.Peek(br.Buffered())
		if end = headEnd(buf); end >= 0 {
			break
		}
		if len(buf) >= br.Size() {
			return http.ReadResponse(br, req)
		}
		if _, err := br.Peek(len(buf) + 1); err != nil {
			if len(buf) > 0 && err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
	buf, _ := br.Peek(end)
	if raw := x.rawDst; raw != nil && raw.parse(buf) {
		br.Discard(end)
		resp := &x.resp
		*resp = http.Response{StatusCode: raw.code, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: raw.minor,
			ContentLength: raw.length, Request: req, Close: raw.close}
		if raw.minor == 0 {
			resp.Proto = "HTTP/1.0"
		}
		x.raw = true
		x.setBody(resp, br, req)
		return resp, nil
	}
	resp, ok := parseResponseHead(string(buf), req)
	if !ok {
		return http.ReadResponse(br, req)
	}
	br.Discard(end)
	x.setBody(resp, br, req)
	return resp, nil
}

// setBody gives a response parsed in place its body.
func (x *exchangeScratch) setBody(resp *http.Response, br *bufio.Reader, req *http.Request) {
	if resp.ContentLength == 0 || req.Method == http.MethodHead {
		resp.Body = http.NoBody
		return
	}
	x.length = lengthBody{br: br, left: resp.ContentLength}
	resp.Body = &x.length
}

// parseResponseHead parses a head readResponse may serve itself; ok is
// false for anything it leaves to net/http.
func parseResponseHead(head string, req *http.Request) (*http.Response, bool) {
	line, rest := nextLine(head)
	var minor int
	switch {
	case strings.HasPrefix(line, "HTTP/1.1 "):
		minor = 1
	case strings.HasPrefix(line, "HTTP/1.0 "):
	default:
		return nil, false
	}
	status := line[len("HTTP/1.1 "):]
	if len(status) < 3 || (len(status) > 3 && status[3] != ' ') {
		return nil, false
	}
	code := 0
	for i := 0; i < 3; i++ {
		if status[i] < '0' || status[i] > '9' {
			return nil, false
		}
		code = code*10 + int(status[i]-'0')
	}
	if code < 200 || code == http.StatusNoContent || code == http.StatusNotModified {
		return nil, false
	}
	// Count the fields first: one map of the right size.
	n := strings.Count(rest, "\n")
	h := make(http.Header, n)
	values := make([]string, 0, n)
	length := int64(-1)
	var connClose, keepAlive bool
	for {
		var l string
		l, rest = nextLine(rest)
		if l == "" {
			break
		}
		name, value, found := strings.Cut(l, ":")
		if !found || !isToken(name) || l[0] == ' ' || l[0] == '\t' {
			return nil, false
		}
		value = strings.Trim(value, " \t")
		if !validFieldValue(value) {
			return nil, false
		}
		name = canonicalName(name)
		switch name {
		case "Content-Length":
			v, ok := parseContentLength(value)
			if !ok || (length >= 0 && v != length) {
				return nil, false
			}
			length = v
		case "Transfer-Encoding", "Trailer":
			return nil, false
		case "Connection":
			for f := range strings.SplitSeq(value, ",") {
				f = strings.Trim(f, " \t")
				connClose = connClose || strings.EqualFold(f, "close")
				keepAlive = keepAlive || strings.EqualFold(f, "keep-alive")
			}
		}
		values = append(values, value)
		i := len(values) - 1
		if old, ok := h[name]; ok {
			h[name] = append(old, value)
		} else {
			h[name] = values[i : i+1 : i+1]
		}
	}
	if length < 0 {
		return nil, false
	}
	if _, ok := h["Cache-Control"]; !ok {
		if p := h["Pragma"]; len(p) > 0 && p[0] == "no-cache" {
			h["Cache-Control"] = []string{"no-cache"}
		}
	}
	resp := &http.Response{
		Status: status, StatusCode: code,
		Proto: line[:len("HTTP/1.1")], ProtoMajor: 1, ProtoMinor: minor,
		Header: h, ContentLength: length, Request: req,
		Close: connClose || (minor == 0 && !keepAlive),
	}
	if connClose {
		delete(h, "Connection") // as net/http does for a response that closes
	}
	return resp, true
}

// lengthBody reads a response body of known length from the connection.
type lengthBody struct {
	br   *bufio.Reader
	left int64
}

func (b *lengthBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.br.Read(p)
	b.left -= int64(n)
	switch {
	case b.left == 0:
		return n, io.EOF
	case err == io.EOF:
		return n, io.ErrUnexpectedEOF
	}
	return n, err
}

func (b *lengthBody) Close() error { return nil }
