package intake

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/opskit/opskit/internal/metric"
)

func TestValidate(t *testing.T) {
	lim := Limits{MaxLabelsPerSeries: 3, MaxLabelNameLen: 5, MaxLabelValueLen: 6, MaxMetricNameLen: 7}.WithDefaults()
	l := func(n, v string) metric.Label { return metric.Label{Name: n, Value: v} }
	tests := []struct {
		name   string
		labels metric.Labels
		time   int64
		value  float64
		reason string
	}{
		{name: "ok", labels: metric.New(l("__name__", "cpu"), l("host", "web1")), time: 1, value: 1},
		{name: "name at its limit", labels: metric.New(l("__name__", "1234567")), time: 1},
		{name: "no name", labels: metric.New(l("host", "web1")), time: 1, reason: ReasonEmptyMetric},
		{name: "name too long", labels: metric.New(l("__name__", "12345678")), time: 1, reason: ReasonNameTooLong},
		{name: "too many labels", labels: metric.New(l("__name__", "m"), l("a", "1"), l("b", "1"), l("c", "1")), time: 1, reason: ReasonTooManyLabels},
		{name: "label name too long", labels: metric.New(l("__name__", "m"), l("abcdef", "1")), time: 1, reason: ReasonLabelTooLong},
		{name: "label value too long", labels: metric.New(l("__name__", "m"), l("a", "1234567")), time: 1, reason: ReasonLabelTooLong},
		{name: "duplicate label", labels: metric.Labels{l("__name__", "m"), l("a", "1"), l("a", "2")}, time: 1, reason: ReasonDuplicateLabel},
		{name: "empty label name", labels: metric.Labels{l("", "x"), l("__name__", "m")}, time: 1, reason: ReasonBadLabel},
		{name: "invalid UTF-8 value", labels: metric.New(l("__name__", "m"), l("a", "\xff")), time: 1, reason: ReasonBadLabel},
		{name: "NaN", labels: metric.New(l("__name__", "m")), time: 1, value: math.NaN(), reason: ReasonBadValue},
		{name: "-Inf", labels: metric.New(l("__name__", "m")), time: 1, value: math.Inf(-1), reason: ReasonBadValue},
		{name: "time zero", labels: metric.New(l("__name__", "m")), time: 0, reason: ReasonBadTimestamp},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := metric.Point{Labels: tc.labels, Time: tc.time, Value: tc.value}
			rej := lim.Validate(&p)
			switch {
			case tc.reason == "" && rej != nil:
				t.Fatalf("rejected: %v", rej)
			case tc.reason != "" && (rej == nil || rej.Reason != tc.reason):
				t.Fatalf("got %v, want reason %q", rej, tc.reason)
			case rej != nil && rej.Detail == "":
				t.Fatal("reject without detail")
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	d := DefaultLimits()
	if d.MaxBodyBytes != 32<<20 || d.MaxLabelsPerSeries != 64 || d.MaxLabelNameLen != 128 || d.MaxLabelValueLen != 1024 || d.MaxMetricNameLen != 256 {
		t.Fatalf("defaults %+v", d)
	}
	if got := (Limits{MaxLabelsPerSeries: 5}).WithDefaults(); got.MaxLabelsPerSeries != 5 || got.MaxBodyBytes != DefaultMaxBodyBytes {
		t.Fatalf("WithDefaults overrode a set field: %+v", got)
	}
}

func TestTruncate(t *testing.T) {
	if got := Truncate("short"); got != "short" {
		t.Fatal(got)
	}
	long := strings.Repeat("é", 100)
	got := Truncate(long)
	if !strings.HasSuffix(got, "...") || len(got) > 67 || !utf8.ValidString(got) {
		t.Fatalf("Truncate gave %q", got)
	}
}

func TestSplitAppendError(t *testing.T) {
	pe := &PartialError{Rejected: []PointReject{{Index: 1, Reason: ReasonOutOfOrder, Detail: "old"}}}
	if p, err := SplitAppendError(fmt.Errorf("wrapped: %w", pe)); p != pe || err != nil {
		t.Fatalf("partial: %v %v", p, err)
	}
	boom := errors.New("boom")
	if p, err := SplitAppendError(boom); p != nil || err != boom {
		t.Fatalf("failure: %v %v", p, err)
	}
	if p, err := SplitAppendError(nil); p != nil || err != nil {
		t.Fatal("nil error")
	}
}

func TestReadBodyEncodings(t *testing.T) {
	lim := Limits{MaxBodyBytes: 1000}.WithDefaults()
	gz := func(b []byte) []byte {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		zw.Write(b)
		zw.Close()
		return buf.Bytes()
	}
	cases := []struct {
		name, encoding string
		body           []byte
		wantCode       int
		wantBody       string
	}{
		{"plain", "", []byte("[1]"), 0, "[1]"},
		{"gzip", "gzip", gz([]byte("[1,2]")), 0, "[1,2]"},
		{"gzip bomb beyond the limit", "gzip", gz(bytes.Repeat([]byte(" "), 100_000)), http.StatusRequestEntityTooLarge, ""},
		{"not gzip", "gzip", []byte("plain text"), http.StatusBadRequest, ""},
		{"unknown encoding", "br", []byte("x"), http.StatusUnsupportedMediaType, ""},
		{"plain over the limit", "", bytes.Repeat([]byte("x"), 2000), http.StatusRequestEntityTooLarge, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/api/push", bytes.NewReader(c.body))
			if c.encoding != "" {
				r.Header.Set("Content-Encoding", c.encoding)
			}
			body, code, err := ReadBody(httptest.NewRecorder(), r, lim)
			if code != c.wantCode {
				t.Fatalf("code %d (err %v); want %d", code, err, c.wantCode)
			}
			if c.wantCode == 0 && string(body) != c.wantBody {
				t.Fatalf("body %q; want %q", body, c.wantBody)
			}
		})
	}
}
