package falcon

import (
	"strings"
	"testing"

	"github.com/opskit/opskit/internal/metric"
	"github.com/opskit/opskit/transfer/intake"
)

const now = 1_700_000_000

func TestParseItem(t *testing.T) {
	lim := intake.DefaultLimits()
	tests := []struct {
		name   string
		item   string
		reason string // "" when accepted
		want   metric.Point
	}{
		{
			name: "full item",
			item: `{"endpoint":"web1","metric":"cpu.idle","timestamp":1699999980,"step":60,"value":93.5,"counterType":"GAUGE","tags":"core=0,dc=bj"}`,
			want: metric.Point{
				Labels: metric.New(metric.Label{Name: "__name__", Value: "cpu.idle"}, metric.Label{Name: "endpoint", Value: "web1"},
					metric.Label{Name: "core", Value: "0"}, metric.Label{Name: "dc", Value: "bj"}),
				Time: 1699999980, Value: 93.5, Step: 60, Type: metric.Gauge,
			},
		},
		{
			name: "step 10 raised to 30 and time aligned to it",
			item: `{"endpoint":"h","metric":"m","timestamp":1000007,"step":10,"value":1,"counterType":"GAUGE"}`,
			want: metric.Point{Labels: nameEndpoint("m", "h"), Time: 999990, Value: 1, Step: 30},
		},
		{
			// 1000007 - 1000007 % 60: the epoch-aligned slot, as open-falcon's graph aligns.
			name: "ts 1000007 step 60 aligned down to 999960",
			item: `{"endpoint":"h","metric":"m","timestamp":1000007,"step":60,"value":1,"counterType":"COUNTER"}`,
			want: metric.Point{Labels: nameEndpoint("m", "h"), Time: 999960, Value: 1, Step: 60, Type: metric.Counter},
		},
		{
			name: "ts 1000007 step 1000 aligned down to 1000000",
			item: `{"endpoint":"h","metric":"m","timestamp":1000007,"step":1000,"value":1,"counterType":"GAUGE"}`,
			want: metric.Point{Labels: nameEndpoint("m", "h"), Time: 1000000, Value: 1, Step: 1000},
		},
		{
			name: "fractional step and timestamp are truncated",
			item: `{"endpoint":"h","metric":"m","timestamp":1000007.9,"step":60.5,"value":1,"counterType":"GAUGE"}`,
			want: metric.Point{Labels: nameEndpoint("m", "h"), Time: 999960, Value: 1, Step: 60},
		},
		{
			name: "numeric string value accepted",
			item: `{"endpoint":"h","metric":"m","timestamp":1699999980,"step":60,"value":"42.25","counterType":"DERIVE"}`,
			want: metric.Point{Labels: nameEndpoint("m", "h"), Time: 1699999980, Value: 42.25, Step: 60, Type: metric.Derive},
		},
		{
			name: "empty counterType is GAUGE",
			item: `{"endpoint":"h","metric":"m","timestamp":1699999980,"step":60,"value":1,"counterType":""}`,
			want: metric.Point{Labels: nameEndpoint("m", "h"), Time: 1699999980, Value: 1, Step: 60, Type: metric.Gauge},
		},
		{
			name: "lower-case counterType",
			item: `{"endpoint":"h","metric":"m","timestamp":1699999980,"step":60,"value":1,"counterType":"counter"}`,
			want: metric.Point{Labels: nameEndpoint("m", "h"), Time: 1699999980, Value: 1, Step: 60, Type: metric.Counter},
		},
		{
			name: "missing timestamp means now",
			item: `{"endpoint":"h","metric":"m","step":60,"value":1,"counterType":"GAUGE"}`,
			want: metric.Point{Labels: nameEndpoint("m", "h"), Time: now - now%60, Value: 1, Step: 60},
		},
		{
			name: "timestamp beyond twice now means now",
			item: `{"endpoint":"h","metric":"m","timestamp":9999999999,"step":60,"value":1,"counterType":"GAUGE"}`,
			want: metric.Point{Labels: nameEndpoint("m", "h"), Time: now - now%60, Value: 1, Step: 60},
		},
		{
			name: "negative timestamp means now",
			item: `{"endpoint":"h","metric":"m","timestamp":-5,"step":60,"value":1,"counterType":"GAUGE"}`,
			want: metric.Point{Labels: nameEndpoint("m", "h"), Time: now - now%60, Value: 1, Step: 60},
		},
		{
			name: "unicode endpoint, metric and tags",
			item: `{"endpoint":"主机-1","metric":"温度.cpu","timestamp":1699999980,"step":60,"value":-3e2,"counterType":"GAUGE","tags":"机房=北京"}`,
			want: metric.Point{
				Labels: metric.New(metric.Label{Name: "__name__", Value: "温度.cpu"}, metric.Label{Name: "endpoint", Value: "主机-1"}, metric.Label{Name: "机房", Value: "北京"}),
				Time:   1699999980, Value: -300, Step: 60,
			},
		},
		{
			name: "huge integer value is a float",
			item: `{"endpoint":"h","metric":"m","timestamp":1699999980,"step":60,"value":18446744073709551615,"counterType":"COUNTER"}`,
			want: metric.Point{Labels: nameEndpoint("m", "h"), Time: 1699999980, Value: 18446744073709551615, Step: 60, Type: metric.Counter},
		},
		{
			name: "repeated tag keeps the last and empty tag value is dropped",
			item: `{"endpoint":"h","metric":"m","timestamp":1699999980,"step":60,"value":1,"counterType":"GAUGE","tags":" a = 1 ,a=2,b="}`,
			want: metric.Point{Labels: metric.New(metric.Label{Name: "__name__", Value: "m"}, metric.Label{Name: "endpoint", Value: "h"}, metric.Label{Name: "a", Value: "2"}), Time: 1699999980, Value: 1, Step: 60},
		},
		{name: "empty metric", item: `{"endpoint":"h","metric":"","step":60,"value":1,"counterType":"GAUGE"}`, reason: intake.ReasonEmptyMetric},
		{name: "missing metric", item: `{"endpoint":"h","step":60,"value":1,"counterType":"GAUGE"}`, reason: intake.ReasonEmptyMetric},
		{name: "empty endpoint", item: `{"endpoint":"","metric":"m","step":60,"value":1,"counterType":"GAUGE"}`, reason: intake.ReasonEmptyEndpoint},
		{name: "unknown counterType", item: `{"endpoint":"h","metric":"m","step":60,"value":1,"counterType":"HISTOGRAM"}`, reason: intake.ReasonBadCounterType},
		{name: "step zero", item: `{"endpoint":"h","metric":"m","step":0,"value":1,"counterType":"GAUGE"}`, reason: intake.ReasonBadStep},
		{name: "negative step", item: `{"endpoint":"h","metric":"m","step":-60,"value":1,"counterType":"GAUGE"}`, reason: intake.ReasonBadStep},
		{name: "missing step", item: `{"endpoint":"h","metric":"m","value":1,"counterType":"GAUGE"}`, reason: intake.ReasonBadStep},
		{name: "step over a day", item: `{"endpoint":"h","metric":"m","step":1e12,"value":1,"counterType":"GAUGE"}`, reason: intake.ReasonBadStep},
		{name: "non-numeric string value", item: `{"endpoint":"h","metric":"m","step":60,"value":"abc","counterType":"GAUGE"}`, reason: intake.ReasonBadValue},
		{name: "empty string value", item: `{"endpoint":"h","metric":"m","step":60,"value":"","counterType":"GAUGE"}`, reason: intake.ReasonBadValue},
		{name: "missing value", item: `{"endpoint":"h","metric":"m","step":60,"counterType":"GAUGE"}`, reason: intake.ReasonBadValue},
		{name: "null value", item: `{"endpoint":"h","metric":"m","step":60,"value":null,"counterType":"GAUGE"}`, reason: intake.ReasonBadValue},
		{name: "boolean value", item: `{"endpoint":"h","metric":"m","step":60,"value":true,"counterType":"GAUGE"}`, reason: intake.ReasonBadValue},
		{name: "object value", item: `{"endpoint":"h","metric":"m","step":60,"value":{"a":1},"counterType":"GAUGE"}`, reason: intake.ReasonBadValue},
		{name: "NaN string value", item: `{"endpoint":"h","metric":"m","step":60,"value":"NaN","counterType":"GAUGE"}`, reason: intake.ReasonBadValue},
		{name: "Inf string value", item: `{"endpoint":"h","metric":"m","step":60,"value":"+Inf","counterType":"GAUGE"}`, reason: intake.ReasonBadValue},
		{name: "number too large for float64", item: `{"endpoint":"h","metric":"m","step":60,"value":1e400,"counterType":"GAUGE"}`, reason: intake.ReasonBadValue},
		{name: "bad tags", item: `{"endpoint":"h","metric":"m","step":60,"value":1,"counterType":"GAUGE","tags":"novalue"}`, reason: intake.ReasonBadTags},
		{name: "tag replacing the endpoint", item: `{"endpoint":"h","metric":"m","step":60,"value":1,"counterType":"GAUGE","tags":"endpoint=x"}`, reason: intake.ReasonBadTags},
		{name: "metric and tags over 510 bytes", item: `{"endpoint":"h","metric":"m","step":60,"value":1,"counterType":"GAUGE","tags":"k=` + strings.Repeat("v", 510) + `"}`, reason: intake.ReasonTooLong},
		{name: "metric name over its limit", item: `{"endpoint":"h","metric":"` + strings.Repeat("m", 300) + `","step":60,"value":1,"counterType":"GAUGE"}`, reason: intake.ReasonNameTooLong},
		{name: "timestamp that is not a number", item: `{"endpoint":"h","metric":"m","step":60,"value":1,"counterType":"GAUGE","timestamp":"soon"}`, reason: intake.ReasonBadJSON},
		{name: "not an object", item: `[1,2]`, reason: intake.ReasonBadJSON},
		{name: "string item", item: `"cpu"`, reason: intake.ReasonBadJSON},
		{name: "field of the wrong type", item: `{"endpoint":7,"metric":"m","step":60,"value":1}`, reason: intake.ReasonBadJSON},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, rej := ParseItem([]byte(tc.item), now, lim)
			if tc.reason != "" {
				if rej == nil {
					t.Fatalf("accepted %+v, want reject %q", got, tc.reason)
				}
				if rej.Reason != tc.reason {
					t.Fatalf("reason %q (%s), want %q", rej.Reason, rej.Detail, tc.reason)
				}
				if rej.Detail == "" {
					t.Fatal("reject without detail")
				}
				return
			}
			if rej != nil {
				t.Fatalf("rejected: %v", rej)
			}
			if !got.Labels.Equal(tc.want.Labels) || got.Time != tc.want.Time || got.Value != tc.want.Value || got.Step != tc.want.Step || got.Type != tc.want.Type {
				t.Fatalf("got %v t=%d v=%v step=%d type=%v\nwant %v t=%d v=%v step=%d type=%v",
					got.Labels, got.Time, got.Value, got.Step, got.Type,
					tc.want.Labels, tc.want.Time, tc.want.Value, tc.want.Step, tc.want.Type)
			}
		})
	}
}

func nameEndpoint(name, endpoint string) metric.Labels {
	return metric.New(metric.Label{Name: metric.NameLabel, Value: name}, metric.Label{Name: metric.EndpointLabel, Value: endpoint})
}

func TestDecode(t *testing.T) {
	lim := intake.DefaultLimits()
	good := `{"endpoint":"h","metric":"m","timestamp":1699999980,"step":60,"value":1,"counterType":"GAUGE"}`
	tests := []struct {
		name       string
		body       string
		notArray   bool
		accepted   []int // indexes of the accepted items
		rejected   map[int]string
		totalItems int
	}{
		{name: "empty array", body: `[]`},
		{name: "one good item", body: `[` + good + `]`, accepted: []int{0}, totalItems: 1},
		{
			name:       "bad item in the middle keeps the others",
			body:       `[` + good + `,{"endpoint":"h","metric":"","step":60,"value":1},` + good + `]`,
			accepted:   []int{0, 2},
			rejected:   map[int]string{1: intake.ReasonEmptyMetric},
			totalItems: 3,
		},
		{
			name:       "non-object items among good ones",
			body:       "[\n 5, " + good + `, "x", null, [` + good + `]]`,
			accepted:   []int{1},
			rejected:   map[int]string{0: intake.ReasonBadJSON, 2: intake.ReasonBadJSON, 3: intake.ReasonBadJSON, 4: intake.ReasonBadJSON},
			totalItems: 5,
		},
		{
			name:       "syntax error keeps what came before",
			body:       `[` + good + `,{"endpoint": oops}, ` + good + `]`,
			accepted:   []int{0},
			rejected:   map[int]string{1: intake.ReasonBadJSON},
			totalItems: 2,
		},
		{
			name:       "truncated body",
			body:       `[` + good + `,` + good[:20],
			accepted:   []int{0},
			rejected:   map[int]string{1: intake.ReasonBadJSON},
			totalItems: 2,
		},
		{name: "object instead of array", body: good, notArray: true},
		{name: "empty body", body: ``, notArray: true},
		{name: "not JSON", body: `cpu.idle 1 2`, notArray: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, err := Decode([]byte(tc.body), now, lim)
			if tc.notArray {
				if err == nil {
					t.Fatalf("accepted a body that is not an array: %+v", res)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Indexes) != len(tc.accepted) || len(res.Points) != len(tc.accepted) {
				t.Fatalf("accepted %v, want %v (rejected %+v)", res.Indexes, tc.accepted, res.Rejected)
			}
			for i := range tc.accepted {
				if res.Indexes[i] != tc.accepted[i] {
					t.Fatalf("accepted %v, want %v", res.Indexes, tc.accepted)
				}
			}
			if len(res.Rejected) != len(tc.rejected) {
				t.Fatalf("rejected %+v, want %v", res.Rejected, tc.rejected)
			}
			for _, r := range res.Rejected {
				if tc.rejected[r.Index] != r.Reason {
					t.Fatalf("rejected %+v, want %v", res.Rejected, tc.rejected)
				}
			}
			if res.Items != tc.totalItems {
				t.Fatalf("items %d, want %d", res.Items, tc.totalItems)
			}
		})
	}
}

// TestFastAndStandardPathsAgree covers the shapes the fast item reader
// hands to encoding/json, and checks both give the same point.
func TestFastAndStandardPathsAgree(t *testing.T) {
	lim := intake.DefaultLimits()
	items := []struct {
		raw  string
		fast bool
	}{
		{`{"endpoint":"h","metric":"m","timestamp":1699999980,"step":60,"value":1,"counterType":"GAUGE","tags":"a=b"}`, true},
		{` { "endpoint" : "h" , "metric":"m", "step":60, "value":"2", "extra":{"x":[1,2,{"y":null}]} } `, true},
		{`{"endpoint":"h","metric":"m","step":60,"value":1,"metric":"last"}`, true},
		{`{"endpoint":"h","metric":"m","step":60,"value":1,"metric":null}`, true},
		{`{"endpoint":"h\u00e9","metric":"m\n","step":60,"value":1}`, false},
		{`{"Endpoint":"h","METRIC":"m","step":60,"value":1}`, false},
		{`{"endpoint":"h","metric":"m","step":"60","timestamp":"1699999980","value":1}`, false},
		{"{\"endpoint\":\"h\xff\",\"metric\":\"m\",\"step\":60,\"value\":1}", false},
		{`{"endpoint":"h","metric":"m","step":60,"value":"\u0031"}`, true},
		{`{"endpoint":"h","metric":"m","step":60,"value":1,}`, false},
		{`{"endpoint":"h","metric":"m","step":60,"value":1}x`, false},
	}
	for _, tc := range items {
		var fast Item
		if got := fastItem([]byte(tc.raw), &fast); got != tc.fast {
			t.Errorf("%s: fast path took it = %v, want %v", tc.raw, got, tc.fast)
		}
		var std Item
		stdRej := decodeItemStd([]byte(tc.raw), &std)
		if tc.fast && (stdRej != nil || !sameItem(&fast, &std)) {
			t.Errorf("%s: fast %+v, std %+v %v", tc.raw, fast, std, stdRej)
		}
		p1, r1 := ParseItem([]byte(tc.raw), now, lim)
		var p2 metric.Point
		var r2 *intake.Reject
		if stdRej != nil {
			r2 = stdRej
		} else {
			p2, r2 = std.Point(now, lim)
		}
		if (r1 == nil) != (r2 == nil) || (r1 != nil && r1.Reason != r2.Reason) || !p1.Labels.Equal(p2.Labels) || p1.Value != p2.Value || p1.Time != p2.Time {
			t.Errorf("%s: ParseItem %v %v, encoding/json %v %v", tc.raw, p1, r1, p2, r2)
		}
	}
}
