package timeinterval

import (
	"testing"
	"time"
)

func TestContains(t *testing.T) {
	s, err := Build(Config{Name: "work", TimeIntervals: []IntervalConfig{
		{Times: []TimeRange{{"09:00", "17:00"}}, Weekdays: []string{"monday:friday"}},
		{DaysOfMonth: []string{"-1"}, Months: []string{"december"}, Years: []string{"2026"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		at   string
		want bool
	}{
		{"2026-03-04T10:00:00Z", true},  // Wednesday
		{"2026-03-04T17:00:00Z", false}, // end is exclusive
		{"2026-03-04T08:59:00Z", false},
		{"2026-03-07T10:00:00Z", false}, // Saturday
		{"2026-12-31T03:00:00Z", true},  // last day of December 2026
		{"2027-12-31T03:00:00Z", false}, // Friday, but 03:00 and 2027
		{"2026-12-30T03:00:00Z", false},
	}
	for _, tt := range tests {
		at, _ := time.Parse(time.RFC3339, tt.at)
		if got := s.Contains(at); got != tt.want {
			t.Errorf("%s: %v, want %v", tt.at, got, tt.want)
		}
	}
}

func TestLocation(t *testing.T) {
	s, err := Build(Config{Name: "night", TimeIntervals: []IntervalConfig{{Times: []TimeRange{{"00:00", "06:00"}}, Location: "Asia/Shanghai"}}})
	if err != nil {
		t.Fatal(err)
	}
	at, _ := time.Parse(time.RFC3339, "2026-03-04T20:00:00Z") // 04:00 in Shanghai
	if !s.Contains(at) {
		t.Fatal("location ignored")
	}
}

func TestBuildErrors(t *testing.T) {
	for _, c := range []IntervalConfig{
		{Times: []TimeRange{{"10:00", "09:00"}}},
		{Times: []TimeRange{{"25:00", "26:00"}}},
		{Weekdays: []string{"funday"}},
		{DaysOfMonth: []string{"40"}},
		{Months: []string{"march:january"}},
		{Location: "Nowhere/Land"},
	} {
		if _, err := Build(Config{Name: "x", TimeIntervals: []IntervalConfig{c}}); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}
