package cron

import (
	"strings"
	"testing"
	"time"
)

func mustTime(t *testing.T, s string) time.Time {
	t.Helper()
	v, err := time.Parse("2006-01-02 15:04", s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestNext(t *testing.T) {
	cases := []struct {
		spec, after string
		want        []string // successive fire times
	}{
		{"*/5 * * * *", "2026-11-22 01:02", []string{"2026-11-22 01:05", "2026-11-22 01:10", "2026-11-22 01:15"}},
		{"*/5 * * * *", "2026-11-22 01:05", []string{"2026-11-22 01:10"}}, // strictly after
		{"0 * * * *", "2026-11-22 23:30", []string{"2026-11-23 00:00", "2026-11-23 01:00"}},
		{"30 4 * * *", "2026-12-31 05:00", []string{"2027-01-01 04:30"}},
		{"15,45 9-10 * * *", "2026-11-22 00:00", []string{"2026-11-22 09:15", "2026-11-22 09:45", "2026-11-22 10:15", "2026-11-22 10:45", "2026-11-23 09:15"}},
		{"0 0 1 * *", "2026-01-31 12:00", []string{"2026-02-01 00:00", "2026-03-01 00:00"}},
		{"0 0 31 * *", "2026-01-31 12:00", []string{"2026-03-31 00:00", "2026-05-31 00:00"}},
		{"0 0 29 2 *", "2026-01-01 00:00", []string{"2028-02-29 00:00", "2032-02-29 00:00"}},
		// 2026-11-22 is a Sunday.
		{"0 12 * * mon-fri", "2026-11-21 13:00", []string{"2026-11-23 12:00", "2026-11-24 12:00"}},
		{"0 12 * * 0", "2026-11-21 13:00", []string{"2026-11-22 12:00", "2026-11-29 12:00"}},
		{"0 12 * * 7", "2026-11-21 13:00", []string{"2026-11-22 12:00"}},
		{"0 12 * * SAT,sun", "2026-11-20 13:00", []string{"2026-11-21 12:00", "2026-11-22 12:00", "2026-11-28 12:00"}},
		// Both day fields restricted: either matches (the 1st, or a Monday).
		{"0 0 1 * 1", "2026-11-28 00:00", []string{"2026-11-30 00:00", "2026-12-01 00:00", "2026-12-07 00:00"}},
		// Day of week starting with *: both must match (every other day AND the 13th).
		{"0 0 13 * */1", "2026-11-01 00:00", []string{"2026-11-13 00:00", "2026-12-13 00:00"}},
		{"0 0 * jan,jul *", "2026-02-01 00:00", []string{"2026-07-01 00:00", "2026-07-02 00:00"}},
		{"5/20 * * * *", "2026-11-22 01:00", []string{"2026-11-22 01:05", "2026-11-22 01:25", "2026-11-22 01:45", "2026-11-22 02:05"}},
		{"0-10/5 3 * * *", "2026-11-22 01:00", []string{"2026-11-22 03:00", "2026-11-22 03:05", "2026-11-22 03:10", "2026-11-23 03:00"}},
		{"@hourly", "2026-11-22 01:59", []string{"2026-11-22 02:00"}},
		{"@daily", "2026-11-22 01:59", []string{"2026-11-23 00:00"}},
		{"@weekly", "2026-11-22 01:59", []string{"2026-11-29 00:00"}},
		{"@monthly", "2026-11-22 01:59", []string{"2026-12-01 00:00"}},
		{"@yearly", "2026-11-22 01:59", []string{"2027-01-01 00:00"}},
	}
	for _, c := range cases {
		t.Run(c.spec+"@"+c.after, func(t *testing.T) {
			s, err := Parse(c.spec)
			if err != nil {
				t.Fatal(err)
			}
			at := mustTime(t, c.after)
			for _, w := range c.want {
				got := s.Next(at)
				if want := mustTime(t, w); !got.Equal(want) {
					t.Fatalf("Next(%s) = %s, want %s", at.Format(time.DateTime), got.Format(time.DateTime), w)
				}
				if !s.Matches(got) {
					t.Errorf("Matches(%s) = false for a time Next returned", got)
				}
				at = got
			}
		})
	}
}

func TestNextSecondsAreTruncated(t *testing.T) {
	s, _ := Parse("* * * * *")
	at := time.Date(2026, 11, 22, 1, 2, 59, 999, time.UTC)
	if got := s.Next(at); !got.Equal(time.Date(2026, 11, 22, 1, 3, 0, 0, time.UTC)) {
		t.Fatalf("Next = %s", got)
	}
}

func TestNextKeepsLocation(t *testing.T) {
	loc, err := time.LoadLocation("Asia/Kolkata") // +05:30: hour steps must follow the wall clock
	if err != nil {
		t.Skip("no tzdata:", err)
	}
	s, _ := Parse("0 9 * * *")
	got := s.Next(time.Date(2026, 11, 22, 7, 45, 0, 0, loc))
	if want := time.Date(2026, 11, 22, 9, 0, 0, 0, loc); !got.Equal(want) {
		t.Fatalf("Next = %s, want %s", got, want)
	}
}

func TestParseErrors(t *testing.T) {
	cases := map[string]string{
		"":                  "has 0 fields",
		"* * * *":           "has 4 fields",
		"* * * * * *":       "has 6 fields",
		"60 * * * *":        "minute",
		"* 24 * * *":        "hour",
		"* * 0 * *":         "day of month",
		"* * 32 * *":        "day of month",
		"* * * 13 *":        "month",
		"* * * * 8":         "day of week",
		"5-1 * * * *":       "runs backwards",
		"*/0 * * * *":       "step",
		"*/61 * * * *":      "step",
		"1,,2 * * * *":      "empty list item",
		"a * * * *":         "minute",
		"+5 * * * *":        "minute",
		"* * * foo *":       "month",
		"0 0 30 2 *":        "never fires",
		"0 0 31 4,6,9,11 *": "never fires",
		"@reboot":           "unknown macro",
		"@every 5m":         "unknown macro",
	}
	for spec, want := range cases {
		if _, err := Parse(spec); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q) = %v, want an error with %q", spec, err, want)
		}
	}
}

// TestNextAgainstScan checks Next against a minute-by-minute scan with
// Matches over a few weeks, for schedules covering every field's forms.
func TestNextAgainstScan(t *testing.T) {
	specs := []string{"*/7 */5 * * *", "0 0 1,15 * 3", "59 23 * * 6", "13 2-4 10-20 * mon", "0 */6 * feb-apr *", "*/30 * 29-31 * *"}
	start := time.Date(2028, 1, 25, 0, 0, 0, 0, time.UTC)
	for _, spec := range specs {
		s, err := Parse(spec)
		if err != nil {
			t.Fatal(err)
		}
		at := start
		for range 40 {
			want := at.Add(time.Minute)
			for !s.Matches(want) {
				want = want.Add(time.Minute)
			}
			got := s.Next(at)
			if !got.Equal(want) {
				t.Fatalf("%s: Next(%s) = %s, scan says %s", spec, at, got, want)
			}
			at = got
		}
	}
}

func BenchmarkNext(b *testing.B) {
	for _, spec := range []string{"*/5 * * * *", "0 0 29 2 *", "30 4 1,15 * mon"} {
		s, err := Parse(spec)
		if err != nil {
			b.Fatal(err)
		}
		at := time.Date(2026, 11, 22, 1, 2, 0, 0, time.UTC)
		b.Run(spec, func(b *testing.B) {
			for b.Loop() {
				s.Next(at)
			}
		})
	}
}
