package gateway

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
)

// The fast server's request-head parser. It works on one string holding
// the request line and header lines (one allocation for the whole head)
// and hands out substrings of it, so a request's method, target, header
// names and values cost no allocation of their own.
//
// It accepts only what it is sure net/http would read the same way. What
// it cannot answer with a clean 400 it reports as errHandOver, and the
// connection then goes to net/http with the bytes read so far, so odd but
// valid requests (absolute-form targets, folded headers, Expect,
// Transfer-Encoding, HTTP/2's preface) are served exactly as before.

var (
	errBadRequestLine = errors.New("malformed request line")
	errBadHeaderLine  = errors.New("malformed header line")
	errTooManyHeaders = errors.New("too many header fields")
	errHandOver       = errors.New("request left to net/http")
)

// headerField is one header line, its name in canonical form.
type headerField struct{ name, value string }

// requestHead is a parsed request line and header. Its fields slice is
// reused from request to request on a connection.
type requestHead struct {
	method, target string
	minor          int // HTTP/1.minor
	fields         []headerField
	// from the header, for framing and keep-alive
	host          string
	hosts         int
	contentLength int64 // -1: none given
	connClose     bool  // Connection: close
	connKeepAlive bool  // Connection: keep-alive
}

// headEnd returns the length of the request head at the start of buf
// (through the empty line that ends it), or -1 when buf does not hold it
// all yet. Lines may end in CRLF or a bare LF, as net/http allows. An
// empty first line ends the head at once (the parser then refuses it).
func headEnd(buf []byte) int {
	pos := 0
	for {
		i := indexByte(buf[pos:], '\n')
		if i < 0 {
			return -1
		}
		line := buf[pos : pos+i]
		if len(line) > 0 && line[len(line)-1] == '\r' {
			line = line[:len(line)-1]
		}
		pos += i + 1
		if len(line) == 0 {
			return pos
		}
	}
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

// parseHead parses head (as headEnd delimits it) into h. maxFields bounds
// the header lines.
func parseHead(head string, h *requestHead, maxFields int) error {
	h.fields = h.fields[:0]
	h.host, h.hosts, h.contentLength, h.connClose, h.connKeepAlive = "", 0, -1, false, false
	line, rest := nextLine(head)
	if line == "PRI * HTTP/2.0" {
		return errHandOver // HTTP/2 with prior knowledge
	}
	method, rest1, ok1 := strings.Cut(line, " ")
	target, proto, ok2 := strings.Cut(rest1, " ")
	if !ok1 || !ok2 || !isToken(method) || target == "" {
		return errBadRequestLine
	}
	switch proto {
	case "HTTP/1.1":
		h.minor = 1
	case "HTTP/1.0":
		h.minor = 0
	default:
		// Other versions, and spaces in the target: net/http decides.
		return errHandOver
	}
	if target[0] != '/' || !validTarget(target) {
		return errHandOver // absolute form, "*", or bytes net/http may refuse
	}
	h.method, h.target = method, target
	for {
		line, rest = nextLine(rest)
		if line == "" {
			break
		}
		if line[0] == ' ' || line[0] == '\t' {
			return errHandOver // obsolete line folding
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok || !isToken(name) {
			return errBadHeaderLine
		}
		value = strings.Trim(value, " \t")
		if !validFieldValue(value) {
			return errHandOver
		}
		if len(h.fields) == maxFields {
			return errTooManyHeaders
		}
		name = canonicalName(name)
		switch name {
		case "Host":
			h.host = value
			h.hosts++
		case "Content-Length":
			n, ok := parseContentLength(value)
			if !ok || (h.contentLength >= 0 && h.contentLength != n) {
				return errHandOver
			}
			h.contentLength = n
		case "Transfer-Encoding", "Expect", "Upgrade":
			return errHandOver
		case "Connection":
			for f := range strings.SplitSeq(value, ",") {
				f = strings.Trim(f, " \t")
				h.connClose = h.connClose || strings.EqualFold(f, "close")
				h.connKeepAlive = h.connKeepAlive || strings.EqualFold(f, "keep-alive")
			}
		}
		h.fields = append(h.fields, headerField{name, value})
	}
	if h.hosts > 1 || (h.minor == 1 && h.hosts == 0) || !validHost(h.host) {
		return errHandOver // net/http answers these with its own 400
	}
	return nil
}

// fillHeader fills dst (emptied first) with the header fields as
// net/http's server would: Host left out (it is the request's Host),
// Pragma: no-cache implying Cache-Control: no-cache. The values share one
// backing array, values (returned for reuse), each value's slice capped so
// that an Add by the handler cannot write over the next.
func (h *requestHead) fillHeader(dst http.Header, values []string) []string {
	clear(dst)
	values = values[:0]
	for _, f := range h.fields {
		values = append(values, f.value)
	}
	for i, f := range h.fields {
		if f.name == "Host" {
			continue
		}
		if old, ok := dst[f.name]; ok {
			dst[f.name] = append(old, f.value)
			continue
		}
		dst[f.name] = values[i : i+1 : i+1]
	}
	if _, ok := dst["Cache-Control"]; !ok {
		if p := dst["Pragma"]; len(p) > 0 && p[0] == "no-cache" {
			dst["Cache-Control"] = []string{"no-cache"}
		}
	}
	return values
}

// parseTarget reads an origin-form target as url.ParseRequestURI does.
// One whose path holds only bytes that need no escaping is cut into dst
// (reused) without an allocation; others go to url.ParseRequestURI.
func parseTarget(target string, dst *url.URL) (*url.URL, error) {
	path, query, hasQuery := strings.Cut(target, "?")
	if path == "" || path[0] != '/' {
		return url.ParseRequestURI(target)
	}
	for i := 0; i < len(path); i++ {
		if !plainPathByte(path[i]) {
			return url.ParseRequestURI(target)
		}
	}
	if strings.IndexByte(query, '#') >= 0 {
		return url.ParseRequestURI(target)
	}
	*dst = url.URL{Path: path, RawQuery: query, ForceQuery: hasQuery && query == ""}
	return dst, nil
}

// plainPathByte: the bytes net/url leaves unescaped in a path (letters,
// digits, "-._~", "$&+,;=:@" and '/'), so its RawPath stays empty.
func plainPathByte(c byte) bool { return plainPathBytes[c] }

// byteSet is a set of bytes looked up in one step (a search of a string
// of punctuation per byte showed in the profile).
type byteSet [256]bool

func newByteSet(punctuation string) *byteSet {
	var s byteSet
	for c := 0; c < 256; c++ {
		s[c] = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte(punctuation, byte(c)) >= 0
	}
	return &s
}

// Letters, digits and the punctuation given; never written after start.
var (
	plainPathBytes = newByteSet("-._~$&+,;=:@/")
	tokenBytes     = newByteSet("!#$%&'*+-.^_`|~")
	hostBytes      = newByteSet("-._:[]")
)

// nextLine cuts the first line off s, without its CRLF or LF.
func nextLine(s string) (line, rest string) {
	i := strings.IndexByte(s, '\n')
	if i < 0 {
		return s, ""
	}
	line, rest = s[:i], s[i+1:]
	if len(line) > 0 && line[len(line)-1] == '\r' {
		line = line[:len(line)-1]
	}
	return line, rest
}

// tokenByte marks the bytes of an RFC 9110 token.
func tokenByte(c byte) bool { return tokenBytes[c] }

func isToken[T string | []byte](s T) bool {
	if len(s) == 0 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !tokenByte(s[i]) {
			return false
		}
	}
	return true
}

// validTarget: printable ASCII only (net/http refuses control bytes and
// would have to decide on the rest).
func validTarget(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}

// validFieldValue: no control bytes but tab (net/http refuses them).
func validFieldValue[T string | []byte](s T) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// validHost: what a Host header may hold without net/http's closer look
// (letters, digits, and the punctuation of names, IPv6 literals and
// ports).
func validHost(s string) bool {
	for i := 0; i < len(s); i++ {
		if !hostBytes[s[i]] {
			return false
		}
	}
	return true
}

// parseContentLength reads a decimal length; net/http refuses the rest.
func parseContentLength[T string | []byte](s T) (int64, bool) {
	if len(s) == 0 || len(s) > 18 {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		n = n*10 + int64(s[i]-'0')
	}
	return n, true
}

// canonicalName returns name in canonical form (Content-Type), as
// net/textproto writes it; a name already canonical (nearly every one) is
// returned as it is, and common ones are interned, so neither allocates.
func canonicalName(name string) string {
	upper := true
	canonical := true
	for i := 0; i < len(name); i++ {
		c := name[i]
		if upper && c >= 'a' && c <= 'z' || !upper && c >= 'A' && c <= 'Z' {
			canonical = false
			break
		}
		upper = c == '-'
	}
	if canonical {
		return name
	}
	var small [64]byte
	var b []byte
	if len(name) <= len(small) {
		b = small[:len(name)]
	} else {
		b = make([]byte, len(name))
	}
	upper = true
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case upper && c >= 'a' && c <= 'z':
			c -= 'a' - 'A'
		case !upper && c >= 'A' && c <= 'Z':
			c += 'a' - 'A'
		}
		b[i] = c
		upper = c == '-'
	}
	if s, ok := commonNames[string(b)]; ok {
		return s
	}
	return string(b)
}

// commonNames interns header names clients commonly send in lower case
// (HTTP/2-minded clients do). It is never written after start.
var commonNames = func() map[string]string {
	m := map[string]string{}
	for _, n := range []string{"Accept", "Accept-Encoding", "Accept-Language", "Authorization", "Cache-Control",
		"Connection", "Content-Length", "Content-Type", "Cookie", "Host", "If-Modified-Since", "If-None-Match",
		"Origin", "Referer", "User-Agent", "X-Api-Key", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto",
		"X-Real-Ip", "X-Request-Id", DyeHeader, RequestTimeoutHeader} {
		m[n] = n
	}
	return m
}()
