package gateway

import (
	"bytes"
	"net/http"
)

// rawHead is an upstream's response head kept as its bytes, for an answer
// the fast path forwards with its header unchanged. The client's head is
// then written straight from these lines (hop-by-hop ones and those the
// Connection header names left out) after the headers the gateway adds,
// instead of the lines being cut into a header map that is merged into
// the client's and walked again to encode it. The common answer passes;
// anything odd is read into a header map as before (readResponse).
//
// Its buffer belongs to one upstream connection and is reused by that
// connection's next exchange, so the head must be written out before the
// body is read to the end.
type rawHead struct {
	buf    []byte // the head as received, status line included
	lines  int    // offset in buf of the first header line
	code   int
	minor  int
	length int64 // the response's Content-Length
	close  bool  // the upstream closes the connection after this answer
	// The header names the Connection header lists (keep-alive and close
	// included), as offsets into buf.
	named  [maxConnectionNames]span
	nnamed int
	// What the lines passed on held, once appendPassed wrote them.
	passedFields
}

// maxConnectionNames: a head whose Connection header names more fields
// goes to the header map.
const maxConnectionNames = 4

// span is a piece of rawHead.buf.
type span struct{ start, end int }

// nextLineBytes is nextLine for bytes.
func nextLineBytes(b []byte) (line, rest []byte) {
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		return b, nil
	}
	line, rest = b[:i], b[i+1:]
	if len(line) > 0 && line[len(line)-1] == '\r' {
		line = line[:len(line)-1]
	}
	return line, rest
}

// trimBlank drops spaces and tabs at both ends.
func trimBlank(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// asciiEqualFold compares a header name with another, ignoring ASCII case
// only (Unicode folding would match names net/textproto keeps apart).
func asciiEqualFold[T string | []byte](b []byte, name T) bool {
	if len(b) != len(name) {
		return false
	}
	for i := 0; i < len(b); i++ {
		x, y := b[i], name[i]
		if x >= 'A' && x <= 'Z' {
			x += 'a' - 'A'
		}
		if y >= 'A' && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// isName compares a token with a name in lower case made of letters and
// '-' only: a byte of the token matches when it does with its case bit set
// (only letters can become a letter that way, and only CR, never in a
// token, becomes '-').
func isName(token []byte, lower string) bool {
	if len(token) != len(lower) {
		return false
	}
	for i := 0; i < len(token); i++ {
		if token[i]|0x20 != lower[i] {
			return false
		}
	}
	return true
}

// cutField splits a header line into its name and trimmed value; ok is
// false for a line readResponse must leave to the header map (no colon, a
// name that is not a token, a folded line, control bytes in the value).
func cutField(l []byte) (name, value []byte, ok bool) {
	colon := bytes.IndexByte(l, ':')
	if colon < 0 {
		return nil, nil, false
	}
	name, value = l[:colon], trimBlank(l[colon+1:])
	if !isToken(name) || !validFieldValue(value) {
		return nil, nil, false
	}
	return name, value, true
}

// parse reads head (as headEnd delimits it) into h; false leaves it to
// parseResponseHead. It passes what parseResponseHead reads the same way
// and what the copy needs nothing more of: a final status with a body
// allowed, a Content-Length (one value, maybe repeated), no
// Transfer-Encoding or Trailer, no Pragma (net/http adds a Cache-Control
// for it), and a Connection header in ASCII naming at most
// maxConnectionNames fields.
func (h *rawHead) parse(head []byte) bool {
	h.buf = append(h.buf[:0], head...)
	b := h.buf
	line, rest := nextLineBytes(b)
	switch {
	case bytes.HasPrefix(line, []byte("HTTP/1.1 ")):
		h.minor = 1
	case bytes.HasPrefix(line, []byte("HTTP/1.0 ")):
		h.minor = 0
	default:
		return false
	}
	status := line[len("HTTP/1.1 "):]
	if len(status) < 3 || (len(status) > 3 && status[3] != ' ') {
		return false
	}
	code := 0
	for i := 0; i < 3; i++ {
		if status[i] < '0' || status[i] > '9' {
			return false
		}
		code = code*10 + int(status[i]-'0')
	}
	if code < 200 || code == http.StatusNoContent || code == http.StatusNotModified {
		return false
	}
	h.code = code
	h.lines = len(b) - len(rest)
	h.length = -1
	h.nnamed = 0
	var connClose, keepAlive bool
	for {
		var l []byte
		l, rest = nextLineBytes(rest)
		if len(l) == 0 {
			break
		}
		name, value, ok := cutField(l)
		if !ok {
			return false
		}
		// By length first: most names are none of these.
		switch {
		case len(name) == 14 && isName(name, "content-length"):
			v, ok := parseContentLength(value)
			if !ok || (h.length >= 0 && v != h.length) {
				return false
			}
			h.length = v
		case len(name) == 17 && isName(name, "transfer-encoding"),
			len(name) == 7 && isName(name, "trailer"),
			len(name) == 6 && isName(name, "pragma"):
			return false
		case len(name) == 10 && isName(name, "connection"):
			for len(value) > 0 {
				i := bytes.IndexByte(value, ',')
				if i < 0 {
					i = len(value)
				}
				f := trimBlank(value[:i])
				value = value[min(i+1, len(value)):]
				if len(f) == 0 {
					continue
				}
				for _, c := range f {
					if c >= 0x80 {
						return false // Unicode case folding: the header map's business
					}
				}
				if h.nnamed == len(h.named) {
					return false
				}
				start := cap(h.buf) - cap(f)
				h.named[h.nnamed] = span{start, start + len(f)}
				h.nnamed++
				connClose = connClose || isName(f, "close")
				keepAlive = keepAlive || isName(f, "keep-alive")
			}
		}
	}
	if h.length < 0 {
		return false
	}
	if connClose {
		// net/http drops a closing answer's Connection header as it reads
		// it, so ReverseProxy never sees what it names: neither do we.
		h.nnamed = 0
	}
	h.close = connClose || (h.minor == 0 && !keepAlive)
	return true
}

// hopByHop: response headers that are not passed on.
func hopByHop(name []byte) bool {
	switch len(name) {
	case 2:
		return isName(name, "te")
	case 7:
		return isName(name, "upgrade") || isName(name, "trailer")
	case 10:
		return isName(name, "connection") || isName(name, "keep-alive")
	case 16:
		return isName(name, "proxy-connection")
	case 17:
		return isName(name, "transfer-encoding")
	case 18:
		return isName(name, "proxy-authenticate")
	case 19:
		return isName(name, "proxy-authorization")
	}
	return false
}

// passed says whether a header line of h goes to the client: not
// hop-by-hop, and not named by the Connection header.
func (h *rawHead) passed(name []byte) bool {
	if hopByHop(name) {
		return false
	}
	for _, s := range h.named[:h.nnamed] {
		if asciiEqualFold(name, h.buf[s.start:s.end]) {
			return false
		}
	}
	return true
}

// passedFields is what the lines passed on hold that the client's framing
// depends on.
type passedFields struct {
	passedLength int64 // the first Content-Length passed, -1 if none
	hasDate      bool
	contentType  []byte // the first Content-Type passed, nil if none
}

// appendPassed appends the header lines passed on to b, names in
// canonical form and values trimmed (as the header map would write them),
// and keeps in h.passedFields what they held. With skipLength,
// Content-Length lines are left out.
func (h *rawHead) appendPassed(b []byte, skipLength bool) []byte {
	pf := &h.passedFields
	*pf = passedFields{passedLength: -1}
	rest := h.buf[h.lines:]
	for {
		var l []byte
		l, rest = nextLineBytes(rest)
		if len(l) == 0 {
			return b
		}
		// parse checked every line: only cut it.
		colon := bytes.IndexByte(l, ':')
		name, value := l[:colon], trimBlank(l[colon+1:])
		if !h.passed(name) {
			continue
		}
		switch {
		case len(name) == 14 && isName(name, "content-length"):
			if pf.passedLength < 0 {
				pf.passedLength, _ = parseContentLength(value)
			}
			if skipLength {
				continue
			}
		case len(name) == 4 && isName(name, "date"):
			pf.hasDate = true
		case len(name) == 12 && isName(name, "content-type"):
			if pf.contentType == nil {
				pf.contentType = value
			}
		}
		b = appendCanonical(b, name)
		b = append(b, ": "...)
		b = append(b, value...)
		b = append(b, "\r\n"...)
	}
}

// appendCanonical appends a token in canonical header form
// (Content-Type), as net/textproto makes it.
func appendCanonical(b, name []byte) []byte {
	upper := true
	for _, c := range name {
		switch {
		case upper && c >= 'a' && c <= 'z':
			c -= 'a' - 'A'
		case !upper && c >= 'A' && c <= 'Z':
			c += 'a' - 'A'
		}
		b = append(b, c)
		upper = c == '-'
	}
	return b
}
