package ship

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/opskit/opskit/collector/tail"
)

// jsonString is encoding/json's form of s, without HTML escaping (which
// the encoder does not do either).
func jsonString(t testing.TB, s string) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(s); err != nil {
		t.Fatal(err)
	}
	return strings.TrimSuffix(b.String(), "\n")
}

func TestAppendJSONMatchesEncodingJSON(t *testing.T) {
	long := strings.Repeat("GET /a HTTP/1.1 200 ", 5)
	for _, s := range []string{
		"",
		"plain",
		"exactly8",
		long,
		long + `"` + long,
		long + "\\" + long[:7],
		long[:9] + "\t" + long,
		long[:16] + "\x00\x1f\x7f",
		"naïve café " + long,
		"sep\u2028para\u2029" + long,
		long[:8] + "\u2028",
		"€" + long[:15] + "€",
		"bad \xff\xfe byte " + long,
		long + "\xe2\x80",
	} {
		got := string(appendJSON(nil, s, utf8.ValidString(s)))
		if want := jsonString(t, s); got != want {
			t.Errorf("%q:\n got %s\nwant %s", s, got, want)
		}
		if got := string(appendJSON(nil, []byte(s), utf8.ValidString(s))); got != jsonString(t, s) {
			t.Errorf("%q as bytes: got %s", s, got)
		}
	}
}

// TestAppendLineMatchesAppendJSON: the line's one-pass escaping writes
// what checking it first and escaping it second writes, after what dst
// already holds, and tells valid from invalid UTF-8.
func TestAppendLineMatchesAppendJSON(t *testing.T) {
	long := strings.Repeat("GET /a HTTP/1.1 200 ", 5)
	for _, s := range []string{
		"",
		"plain",
		"exactly8",
		"sixteen bytes ok",
		long,
		long + `"` + long,
		long[:9] + "\t" + long,
		long[:16] + "\x00\x1f\x7f",
		"naïve café " + long,
		long + "naïve",
		"sep\u2028para\u2029" + long,
		long[:8] + "\u2028",
		long[:15] + "\u2029" + long[:3] + "\u2028",
		"€" + long[:15] + "€",
		"bad \xff\xfe byte " + long,
		long + "\xe2\x80",
		long + "é" + long + "\xff",
		"\xe2\x80\xa8\xff",
	} {
		valid := utf8.ValidString(s)
		want := string(appendJSON([]byte("prefix"), []byte(s), valid))
		got, gotValid := appendLine([]byte("prefix"), []byte(s))
		if string(got) != want || gotValid != valid {
			t.Errorf("%q:\n got %s (valid %v)\nwant %s (valid %v)", s, got, gotValid, want, valid)
		}
	}
}

// FuzzAppendLine: appendLine agrees with appendJSON and utf8.Valid on any
// line.
func FuzzAppendLine(f *testing.F) {
	f.Add([]byte("10.1.2.3 - - [22/Nov/2026] \"GET / HTTP/1.1\" 200 \"Mozilla/5.0\""))
	f.Add([]byte("caf\xc3\xa9 \xe2\x80\xa8 \xff tail of more than sixteen bytes"))
	f.Fuzz(func(t *testing.T, line []byte) {
		valid := utf8.Valid(line)
		want := appendJSON([]byte("{"), line, valid)
		got, gotValid := appendLine([]byte("{"), line)
		if !bytes.Equal(got, want) || gotValid != valid {
			t.Fatalf("%q: got %s (valid %v), want %s (valid %v)", line, got, gotValid, want, valid)
		}
	})
}

// FuzzAppendJSON: the escaping matches encoding/json's for any input.
func FuzzAppendJSON(f *testing.F) {
	f.Add("10.1.2.3 - - [22/Nov/2026] \"GET / HTTP/1.1\" 200")
	f.Add("a\u2028b\xffc\\d\te")
	f.Fuzz(func(t *testing.T, s string) {
		// Equal once decoded: encoding/json writes \f and \b where the
		// encoder writes \u000c and \u0008.
		var got, want string
		if err := json.Unmarshal(appendJSON(nil, []byte(s), utf8.ValidString(s)), &got); err != nil {
			t.Fatalf("%q: %v", s, err)
		}
		if err := json.Unmarshal([]byte(jsonString(t, s)), &want); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Fatalf("%q: decodes to %q, want %q", s, got, want)
		}
	})
}

// TestEncoderCachesFollowChanges: the time, path and host formatted once
// for a run of events are formatted again when they change.
func TestEncoderCachesFollowChanges(t *testing.T) {
	enc := &Encoder{Host: "web-1"}
	t0 := time.Date(2026, 11, 22, 1, 2, 3, 4, time.UTC)
	events := []struct {
		host, path string
		at         time.Time
	}{
		{"web-1", "/var/log/a.log", t0},
		{"web-1", "/var/log/a.log", t0},
		{"web-1", "/var/log/b.log", t0},
		{"web-1", "/var/log/b.log", t0.Add(time.Millisecond)},
		{"web-2", "/var/log/a.log", t0.In(time.FixedZone("x", 3600))},
	}
	for i, e := range events {
		enc.Host = e.host
		data := enc.Append(nil, &tail.Event{Path: e.path, FileID: "f", Line: []byte("x"), Time: e.at})
		m, err := Decode(data)
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if m.Host != e.host || m.Path != e.path || !m.Time.Equal(e.at) {
			t.Errorf("event %d: got %s", i, data)
		}
	}
}
