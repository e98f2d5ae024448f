// Package timeinterval reads Alertmanager's time_intervals: named sets of
// recurring periods (times of day, weekdays, days of month, months, years,
// in a time zone) that routes use to mute or enable notifications, and that
// alarm's maintenance windows use to mute matching alerts.
package timeinterval

import (
	"fmt"
	"strconv"
	"strings"
	"time"
	// Time zones work on hosts without tzdata.
	_ "time/tzdata"
)

// Config is one named entry of `time_intervals:`.
type Config struct {
	Name          string           `yaml:"name"`
	TimeIntervals []IntervalConfig `yaml:"time_intervals"`
}

// IntervalConfig is one period; every field given must match (an absent
// field matches everything).
type IntervalConfig struct {
	Times       []TimeRange `yaml:"times"`
	Weekdays    []string    `yaml:"weekdays"`
	DaysOfMonth []string    `yaml:"days_of_month"`
	Months      []string    `yaml:"months"`
	Years       []string    `yaml:"years"`
	Location    string      `yaml:"location"`
}

// TimeRange is a time of day range, start inclusive, end exclusive, HH:MM.
type TimeRange struct {
	StartTime string `yaml:"start_time"`
	EndTime   string `yaml:"end_time"`
}

// Set is a built named interval.
type Set struct {
	Name      string
	intervals []interval
}

type span struct{ lo, hi int } // inclusive

type interval struct {
	minutes  []span // minutes of the day, hi exclusive
	weekdays []span
	days     []span // may be negative: -1 is the last day
	months   []span
	years    []span
	loc      *time.Location
}

var weekdayNames = map[string]int{"sunday": 0, "monday": 1, "tuesday": 2, "wednesday": 3, "thursday": 4, "friday": 5, "saturday": 6}

var monthNames = map[string]int{"january": 1, "february": 2, "march": 3, "april": 4, "may": 5, "june": 6,
	"july": 7, "august": 8, "september": 9, "october": 10, "november": 11, "december": 12}

// Build checks a named interval.
func Build(c Config) (*Set, error) {
	if c.Name == "" {
		return nil, fmt.Errorf("time interval without a name")
	}
	s := &Set{Name: c.Name}
	for i, ic := range c.TimeIntervals {
		in, err := build(ic)
		if err != nil {
			return nil, fmt.Errorf("time interval %s[%d]: %w", c.Name, i, err)
		}
		s.intervals = append(s.intervals, in)
	}
	return s, nil
}

func build(c IntervalConfig) (interval, error) {
	in := interval{loc: time.UTC}
	if c.Location != "" {
		loc, err := time.LoadLocation(c.Location)
		if err != nil {
			return in, fmt.Errorf("location: %w", err)
		}
		in.loc = loc
	}
	for _, t := range c.Times {
		lo, err := clock(t.StartTime)
		if err != nil {
			return in, err
		}
		hi, err := clock(t.EndTime)
		if err != nil {
			return in, err
		}
		if hi <= lo {
			return in, fmt.Errorf("times: end %s not after start %s", t.EndTime, t.StartTime)
		}
		in.minutes = append(in.minutes, span{lo, hi})
	}
	var err error
	if in.weekdays, err = ranges("weekdays", c.Weekdays, weekdayNames, 0, 6, false); err != nil {
		return in, err
	}
	if in.days, err = ranges("days_of_month", c.DaysOfMonth, nil, 1, 31, true); err != nil {
		return in, err
	}
	if in.months, err = ranges("months", c.Months, monthNames, 1, 12, false); err != nil {
		return in, err
	}
	if in.years, err = ranges("years", c.Years, nil, 1, 9999, false); err != nil {
		return in, err
	}
	return in, nil
}

func clock(s string) (int, error) {
	h, m, ok := strings.Cut(s, ":")
	hh, err1 := strconv.Atoi(h)
	mm, err2 := strconv.Atoi(m)
	if !ok || err1 != nil || err2 != nil || hh < 0 || mm < 0 || mm > 59 || hh > 24 || (hh == 24 && mm != 0) {
		return 0, fmt.Errorf("times: %q is not HH:MM between 00:00 and 24:00", s)
	}
	return hh*60 + mm, nil
}

func ranges(field string, items []string, names map[string]int, min, max int, negative bool) ([]span, error) {
	var out []span
	value := func(s string) (int, error) {
		if v, ok := names[strings.ToLower(s)]; ok {
			return v, nil
		}
		v, err := strconv.Atoi(s)
		if err != nil {
			return 0, fmt.Errorf("%s: %q is not a number or a name", field, s)
		}
		if (v < min || v > max) && !(negative && v < 0 && v >= -max) {
			return 0, fmt.Errorf("%s: %d out of range %d..%d", field, v, min, max)
		}
		return v, nil
	}
	for _, item := range items {
		loS, hiS, isRange := strings.Cut(item, ":")
		lo, err := value(strings.TrimSpace(loS))
		if err != nil {
			return nil, err
		}
		hi := lo
		if isRange {
			if hi, err = value(strings.TrimSpace(hiS)); err != nil {
				return nil, err
			}
		}
		if (lo >= 0) == (hi >= 0) && hi < lo {
			return nil, fmt.Errorf("%s: range %q ends before it starts", field, item)
		}
		out = append(out, span{lo, hi})
	}
	return out, nil
}

func inSpans(spans []span, v int) bool {
	if len(spans) == 0 {
		return true
	}
	for _, s := range spans {
		if v >= s.lo && v <= s.hi {
			return true
		}
	}
	return false
}

// Contains reports whether t falls in any of the set's periods.
func (s *Set) Contains(t time.Time) bool {
	for _, in := range s.intervals {
		if in.contains(t) {
			return true
		}
	}
	return false
}

func (in interval) contains(t time.Time) bool {
	t = t.In(in.loc)
	if len(in.minutes) > 0 {
		m := t.Hour()*60 + t.Minute()
		ok := false
		for _, s := range in.minutes {
			if m >= s.lo && m < s.hi {
				ok = true
			}
		}
		if !ok {
			return false
		}
	}
	if !inSpans(in.weekdays, int(t.Weekday())) || !inSpans(in.months, int(t.Month())) || !inSpans(in.years, t.Year()) {
		return false
	}
	if len(in.days) > 0 {
		last := time.Date(t.Year(), t.Month()+1, 0, 0, 0, 0, 0, in.loc).Day()
		ok := false
		for _, s := range in.days {
			lo, hi := s.lo, s.hi
			if lo < 0 {
				lo = last + lo + 1
			}
			if hi < 0 {
				hi = last + hi + 1
			}
			if t.Day() >= lo && t.Day() <= hi {
				ok = true
			}
		}
		if !ok {
			return false
		}
	}
	return true
}
