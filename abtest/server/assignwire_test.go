package server

import (
	"bytes"
	"encoding/json"
	"net/url"
	"reflect"
	"strings"
	"testing"

	"github.com/opskit/opskit/abtest/sdk"
)

// checkAgainstNetURL fails t unless q holds what url.ParseQuery finds in raw:
// the first unit, every experiment, the first value of each attr.NAME.
func checkAgainstNetURL(t *testing.T, raw string, q *assignQuery) {
	t.Helper()
	values, _ := url.ParseQuery(raw)
	wantUnit := values.Get("unit")
	wantAttrs := map[string]any{}
	for k, vs := range values {
		if name, ok := strings.CutPrefix(k, "attr."); ok && len(vs) > 0 {
			wantAttrs[name] = QueryValue(vs[0])
		}
	}
	gotAttrs := q.attributes
	if gotAttrs == nil {
		gotAttrs = map[string]any{}
	}
	if q.unit != wantUnit || !reflect.DeepEqual(q.experiments, values["experiment"]) || !reflect.DeepEqual(gotAttrs, wantAttrs) {
		t.Fatalf("query %q:\nparsed unit %q, experiments %q, attributes %v\nnet/url     %q, %q, %v",
			raw, q.unit, q.experiments, gotAttrs, wantUnit, values["experiment"], wantAttrs)
	}
}

// checkAgainstEncodingJSON fails t unless appendAssignResponse writes what
// json.Encoder writes for the same AssignResponse.
func checkAgainstEncodingJSON(t *testing.T, unit string, results []sdk.Result) {
	t.Helper()
	resp := AssignResponse{Unit: unit, Assignments: []Assignment{}}
	for _, r := range results {
		resp.Assignments = append(resp.Assignments, Assignment{Experiment: r.Experiment, Layer: r.Layer,
			Variant: r.Variant, Index: r.Index, Forced: r.Forced, Bucket: r.Bucket})
	}
	var want bytes.Buffer
	if err := json.NewEncoder(&want).Encode(resp); err != nil {
		t.Fatal(err)
	}
	if got := appendAssignResponse([]byte("kept"), unit, results); string(got) != "kept"+want.String() {
		t.Fatalf("answer\n%s\nencoding/json\n%s", got[4:], want.Bytes())
	}
}

func TestParseAssignQuery(t *testing.T) {
	for _, raw := range []string{
		"",
		"unit=u1",
		"unit=u1&attr.country=US&attr.age=31&attr.member=true&attr.note=+1",
		"unit=first&unit=second",
		"unit=&unit=second",
		"unit=a%20b+c%2Bd",
		"experiment=a&unit=u&experiment=b&experiment=",
		"attr.x=1&attr.x=2",
		"attr.=empty&attr",
		"unit=u;x&unit=v",
		"unit=%zz&unit=ok",
		"%zz=1&unit=u",
		"unit=u&&&attr.k=%E2%82%AC",
		"unit",
		"unit=" + strings.Repeat("a&", 10001),
	} {
		var q assignQuery
		parseAssignQuery(raw, &q, map[string]any{})
		checkAgainstNetURL(t, raw, &q)
	}
}

// TestParseAssignQueryReusesTheMap: a query with attributes fills the map
// it is given; one without leaves attributes nil.
func TestParseAssignQueryReusesTheMap(t *testing.T) {
	attrs := map[string]any{}
	var q assignQuery
	parseAssignQuery("unit=u&attr.k=v", &q, attrs)
	if len(attrs) != 1 || attrs["k"] != "v" {
		t.Fatalf("given map holds %v", attrs)
	}
	q = assignQuery{}
	parseAssignQuery("unit=u", &q, map[string]any{})
	if q.attributes != nil {
		t.Fatalf("attributes %v without attr parameters", q.attributes)
	}
}

func TestAppendAssignResponse(t *testing.T) {
	for _, c := range []struct {
		name    string
		unit    string
		results []sdk.Result
	}{
		{"no assignment", "u1", nil},
		{"layers and plain", "u1", []sdk.Result{
			{Experiment: "ui-b", Layer: "ui", Variant: "control", Bucket: 0.4594},
			{Experiment: "price", Layer: "pricing", Variant: "low", Index: 1, Bucket: 0.6064},
			{Experiment: "us-only", Variant: "t", Index: 1, Forced: true, Bucket: 0},
		}},
		{"characters JSON escapes", "<script>&\"\\\n\x01\u2028\xff", []sdk.Result{
			{Experiment: "é", Layer: "a>b", Variant: "\t", Bucket: 0.9999},
		}},
		{"exponent buckets", "u", []sdk.Result{
			{Experiment: "e", Variant: "v", Bucket: 1e-7},
			{Experiment: "e", Variant: "v", Bucket: 5e-324},
			{Experiment: "e", Variant: "v", Bucket: 1e21},
			{Experiment: "e", Variant: "v", Bucket: 123456789.125},
		}},
	} {
		t.Run(c.name, func(t *testing.T) { checkAgainstEncodingJSON(t, c.unit, c.results) })
	}
}

func TestCouldBeNumber(t *testing.T) {
	// Every string ParseFloat accepts passes the pre-check.
	for _, v := range []string{"1", "-1", "+1", ".5", "1e3", "Inf", "+Inf", "-inf", "infinity", "NaN", "nan", "0x1p-2", "1_000"} {
		if !couldBeNumber(v) {
			t.Errorf("couldBeNumber(%q) = false", v)
		}
	}
	for v, want := range map[string]any{"US": "US", "31": 31.0, " 31": " 31", "true": true, "": "", "-2.5": -2.5} {
		if got := QueryValue(v); got != want {
			t.Errorf("QueryValue(%q) = %#v, want %#v", v, got, want)
		}
	}
}
