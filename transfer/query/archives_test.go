package query

import (
	"testing"
	"time"

	"github.com/opskit/opskit/transfer/storage"
)

func mustSchema(t *testing.T, pattern, retentions string) storage.Schema {
	t.Helper()
	s, err := storage.NewSchema(pattern, pattern, retentions, 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestLookback(t *testing.T) {
	now := time.Unix(testNow, 0)
	def := newArchivePlan(nil)
	tests := []struct {
		name   string
		plan   archivePlan
		oldest time.Duration // before now
		step   time.Duration
		want   time.Duration
	}{
		{"last hour keeps the 5m default", def, time.Hour, time.Minute, 5 * time.Minute},
		{"a day back reads 5m slots", def, 24 * time.Hour, time.Minute, 10 * time.Minute},
		{"just inside the 1m archive, the lookback pushes past it", def, 12*time.Hour - time.Minute, time.Minute, 10 * time.Minute},
		{"six days back reads 20m slots", def, 6 * 24 * time.Hour, time.Minute, 40 * time.Minute},
		{"a month back reads 3h slots", def, 30 * 24 * time.Hour, time.Hour, 6 * time.Hour},
		{"beyond every retention, the coarsest", def, 3 * 365 * 24 * time.Hour, time.Hour, 24 * time.Hour},
		{"a 1h step reads 20m slots even for recent data", def, time.Hour, time.Hour, 40 * time.Minute},
		{
			"several schemas: the coarsest answer",
			newArchivePlan([]storage.Schema{mustSchema(t, "^fast", "10s:1d"), mustSchema(t, "", "60s:1h,10m:30d")}),
			2 * time.Hour, time.Minute, 20 * time.Minute,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.plan.lookback(now, now.Add(-tt.oldest), tt.step); got != tt.want {
				t.Errorf("lookback = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestMinStepFor(t *testing.T) {
	def := newArchivePlan(nil)
	tests := []struct {
		want time.Duration
		min  int64
	}{
		{0, 0}, {15 * time.Second, 0}, {time.Minute, 60}, {4 * time.Minute, 60},
		{5 * time.Minute, 300}, {time.Hour, 1200}, {24 * time.Hour, 43200},
	}
	for _, tt := range tests {
		if got := def.minStepFor(tt.want); got != tt.min {
			t.Errorf("minStepFor(%v) = %d, want %d", tt.want, got, tt.min)
		}
	}
	// A schema matching every name replaces the default one.
	only := newArchivePlan([]storage.Schema{mustSchema(t, "", "10s:1h")})
	if len(only.schemas) != 1 || only.stepForAge(48*time.Hour) != 10*time.Second {
		t.Errorf("plan %+v: want only the 10s schema", only)
	}
	// A schema for some names keeps the default for the others.
	some := newArchivePlan([]storage.Schema{mustSchema(t, "^app\\.", "10s:1h")})
	if len(some.schemas) != 2 {
		t.Errorf("plan %+v: want the app schema and the default", some)
	}
}
