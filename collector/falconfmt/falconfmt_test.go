package falconfmt

import (
	"encoding/json"
	"math"
	"testing"

	"github.com/opskit/opskit/internal/metric"
	"github.com/opskit/opskit/transfer/intake"
	"github.com/opskit/opskit/transfer/intake/falcon"
)

// TestItemsParseInTransfer writes points and reads them back with
// transfer's own open-falcon parser.
func TestItemsParseInTransfer(t *testing.T) {
	d := Defaults{Endpoint: "web-1", Step: 60}
	tests := []struct {
		name         string
		p            metric.Point
		wantEndpoint string
		wantStep     int32
	}{
		{"defaults fill endpoint and step",
			metric.Point{Labels: metric.New(metric.Label{Name: metric.NameLabel, Value: "cpu.idle"}), Time: 1700000040, Value: 97.5},
			"web-1", 60},
		{"own endpoint, tags and step kept",
			metric.Point{Labels: metric.New(
				metric.Label{Name: metric.NameLabel, Value: "df.bytes.free.percent"},
				metric.Label{Name: metric.EndpointLabel, Value: "db-2"},
				metric.Label{Name: "mount", Value: "/srv/My Data"},
				metric.Label{Name: "fstype", Value: "ext4"}), Time: 1700000100, Value: 12.25, Step: 300},
			"db-2", 300},
		{"quotes, backslashes, control bytes and unicode",
			metric.Point{Labels: metric.New(
				metric.Label{Name: metric.NameLabel, Value: `app."q"\x` + "\x01é"},
				metric.Label{Name: "k", Value: "日本"}), Time: 1700000040, Value: -1e-300, Type: metric.Counter},
			"web-1", 60},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := AppendItem(nil, tt.p, d)
			if !json.Valid(raw) {
				t.Fatalf("not JSON: %s", raw)
			}
			got, rej := falcon.ParseItem(raw, 1700000000, intake.DefaultLimits())
			if rej != nil {
				t.Fatalf("transfer rejects %s: %v", raw, rej)
			}
			if got.Labels.Get(metric.EndpointLabel) != tt.wantEndpoint || got.Step != tt.wantStep || got.Value != tt.p.Value || got.Type != tt.p.Type {
				t.Errorf("parsed %+v from %s", got, raw)
			}
			for _, l := range tt.p.Labels {
				if l.Name != metric.EndpointLabel && got.Labels.Get(l.Name) != l.Value {
					t.Errorf("label %s = %q, want %q", l.Name, got.Labels.Get(l.Name), l.Value)
				}
			}
		})
	}
}

func TestArrayAndBadValues(t *testing.T) {
	pts := []metric.Point{
		{Labels: metric.New(metric.Label{Name: metric.NameLabel, Value: "a"}), Time: 1700000040, Value: 1},
		{Labels: metric.New(metric.Label{Name: metric.NameLabel, Value: "b"}), Time: 1700000040, Value: math.NaN()},
	}
	raw := AppendArray(nil, pts, Defaults{Endpoint: "h", Step: 60})
	var items []map[string]any
	if err := json.Unmarshal(raw, &items); err != nil || len(items) != 2 {
		t.Fatalf("array %s: %v", raw, err)
	}
	if items[1]["value"] != nil {
		t.Errorf("NaN written as %v, want null", items[1]["value"])
	}
	if string(AppendArray(nil, nil, Defaults{})) != "[]" {
		t.Error("empty array")
	}
}
