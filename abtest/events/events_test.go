package events

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"
)

func TestUnmarshal(t *testing.T) {
	tests := []struct {
		in   string
		want Event
		err  string
	}{
		{`{"type":"exposure","unit":"u1","experiment":"e","variant":"t"}`, Event{Kind: Exposure, Unit: "u1", Experiment: "e", Variant: "t"}, ""},
		{`{"type":"conversion","unit":"u1","experiment":"e","name":"buy"}`, Event{Kind: Conversion, Unit: "u1", Experiment: "e", Name: "buy", Value: 1}, ""},
		{`{"type":"metric","unit":"u1","experiment":"e","name":"revenue","value":12.5,"time":"2026-11-01T10:00:00Z"}`,
			Event{Kind: Metric, Unit: "u1", Experiment: "e", Name: "revenue", Value: 12.5, Time: time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC)}, ""},
		{`{"type":"metric","unit":"u1","experiment":"e","name":"r","value":1,"time":1700000000.5}`,
			Event{Kind: Metric, Unit: "u1", Experiment: "e", Name: "r", Value: 1, Time: time.Unix(1700000000, 5e8)}, ""},
		{`{"type":"click","unit":"u1","experiment":"e"}`, Event{}, "unknown event type"},
		{`{"type":"exposure","unit":"","experiment":"e","variant":"t"}`, Event{}, "unit"},
		{`{"type":"exposure","unit":"u","experiment":"e"}`, Event{}, "variant"},
		{`{"type":"metric","unit":"u","experiment":"e","value":3}`, Event{}, "name"},
		{`{"type":"metric","unit":"u","experiment":"e","name":"n","time":"yesterday"}`, Event{}, "time"},
		{`{"type":"metric","unit":"u","experiment":"e","name":"n","time":true}`, Event{}, "time"},
		{`{"type":"exposure","unit":"` + strings.Repeat("x", 300) + `","experiment":"e","variant":"t"}`, Event{}, "unit"},
	}
	for _, tc := range tests {
		var e Event
		err := json.Unmarshal([]byte(tc.in), &e)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: error %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || !e.Time.Equal(tc.want.Time) {
			t.Errorf("%s: %+v, %v", tc.in, e, err)
			continue
		}
		e.Time, tc.want.Time = time.Time{}, time.Time{}
		if e != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.in, e, tc.want)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	e := Event{Kind: Metric, Unit: "u", Experiment: "e", Name: "n", Value: 0, Time: time.Unix(5, 0).UTC()}
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	var back Event
	if err := json.Unmarshal(b, &back); err != nil || !back.Time.Equal(e.Time) || back.Value != 0 || back.Kind != Metric {
		t.Fatalf("%s -> %+v %v", b, back, err)
	}
}

func FuzzUnmarshal(f *testing.F) {
	f.Add([]byte(`{"type":"exposure","unit":"u1","experiment":"e","variant":"t"}`))
	f.Add([]byte(`{"type":"metric","unit":"u1","experiment":"e","name":"r","value":1,"time":1700000000.5}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var e Event
		if json.Unmarshal(b, &e) != nil {
			return
		}
		if err := e.Validate(); err != nil {
			t.Fatalf("accepted an invalid event: %v", err)
		}
		out, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		var back Event
		if err := json.Unmarshal(out, &back); err != nil {
			t.Fatalf("re-reading %s: %v", out, err)
		}
	})
}

func TestBinaryRoundTrip(t *testing.T) {
	in := []Event{
		{Kind: Exposure, Unit: "ü", Experiment: "e", Variant: "t", Time: time.Unix(1, 2), Forced: true},
		{Kind: Metric, Unit: "u", Experiment: "e", Name: "n", Value: -2.5, Time: time.Unix(3, 0)},
	}
	var buf []byte
	for i := range in {
		buf = AppendBinary(buf, &in[i])
	}
	for i := range in {
		var e Event
		var err error
		if buf, err = DecodeBinary(buf, &e); err != nil || !e.Time.Equal(in[i].Time) {
			t.Fatalf("event %d: %+v %v", i, e, err)
		}
		e.Time, in[i].Time = time.Time{}, time.Time{}
		if e != in[i] {
			t.Fatalf("event %d: %+v, want %+v", i, e, in[i])
		}
	}
	if len(buf) != 0 {
		t.Fatalf("%d bytes left", len(buf))
	}
	if _, err := DecodeBinary([]byte{1, 0, 0}, new(Event)); err == nil {
		t.Fatal("short input accepted")
	}
}

func FuzzDecodeBinary(f *testing.F) {
	f.Add(AppendBinary(nil, &Event{Kind: Conversion, Unit: "u", Experiment: "e", Name: "buy", Value: 1}))
	f.Fuzz(func(t *testing.T, b []byte) {
		var e Event
		rest, err := DecodeBinary(b, &e)
		if err != nil {
			return
		}
		if len(rest) > len(b) {
			t.Fatal("rest longer than the input")
		}
		var back Event
		if _, err := DecodeBinary(AppendBinary(nil, &e), &back); err != nil || back.Unit != e.Unit || back.Name != e.Name ||
			back.Variant != e.Variant || !back.Time.Equal(e.Time) || math.Float64bits(back.Value) != math.Float64bits(e.Value) {
			t.Fatalf("round trip of %+v: %+v %v", e, back, err)
		}
	})
}
