// Package cron runs scheduled fleet jobs: a standard five-field cron
// schedule, a job store with each run's per-host results, and a scheduler
// driven by an injectable clock.
package cron

import (
	"errors"
	"fmt"
	"math/bits"
	"strconv"
	"strings"
	"time"
)

// Schedule is a parsed five-field cron expression: minute, hour, day of
// month, month, day of week. It follows Vixie cron (the cron of Debian and
// most Linux systems):
//
//   - each field is a comma list of `*`, `N`, `A-B`, each optionally
//     followed by `/STEP`; `N/STEP` means from N to the field's maximum;
//   - months and weekdays also take English three-letter names (jan, mon);
//     weekday 0 and 7 are both Sunday;
//   - when both day of month and day of week are restricted (neither
//     starts with `*`), a day matches if EITHER matches; otherwise both
//     must match (an unrestricted field matches every day);
//   - @yearly (@annually), @monthly, @weekly, @daily (@midnight) and
//     @hourly stand for their usual expressions; @reboot is refused.
//
// Times are matched in the location of the time given to Next.
type Schedule struct {
	spec                          string
	minute, hour, dom, month, dow uint64
	domRestricted, dowRestricted  bool
}

type field struct {
	name     string
	min, max int
	names    []string // names[i] is value min+i
}

var (
	minuteField = field{name: "minute", min: 0, max: 59}
	hourField   = field{name: "hour", min: 0, max: 23}
	domField    = field{name: "day of month", min: 1, max: 31}
	monthField  = field{name: "month", min: 1, max: 12, names: []string{"jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"}}
	// Day of week accepts 0-7; 7 is folded onto 0 (Sunday) after parsing.
	dowField = field{name: "day of week", min: 0, max: 7, names: []string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}}
)

var macros = map[string]string{
	"@yearly":   "0 0 1 1 *",
	"@annually": "0 0 1 1 *",
	"@monthly":  "0 0 1 * *",
	"@weekly":   "0 0 * * 0",
	"@daily":    "0 0 * * *",
	"@midnight": "0 0 * * *",
	"@hourly":   "0 * * * *",
}

// searchYears bounds Next: every schedule that can fire at all fires
// within 8 years (Feb 29 on a given weekday repeats well inside that, as
// leap years come every 4 years until 2100).
const searchYears = 8

// Parse parses a cron expression. A schedule that can never fire (such as
// "0 0 30 2 *") is an error.
func Parse(spec string) (Schedule, error) {
	spec = strings.TrimSpace(spec)
	if len(spec) > 1024 {
		return Schedule{}, errors.New("cron: schedule longer than 1024 bytes")
	}
	expr := spec
	if strings.HasPrefix(spec, "@") {
		m, ok := macros[strings.ToLower(spec)]
		if !ok {
			return Schedule{}, fmt.Errorf("cron: unknown macro %q (want @yearly, @monthly, @weekly, @daily, @hourly)", spec)
		}
		expr = m
	}
	parts := strings.Fields(expr)
	if len(parts) != 5 {
		return Schedule{}, fmt.Errorf("cron: %q has %d fields, want 5 (minute hour day-of-month month day-of-week)", spec, len(parts))
	}
	s := Schedule{spec: spec}
	var err error
	for i, f := range []struct {
		field *field
		dst   *uint64
	}{{&minuteField, &s.minute}, {&hourField, &s.hour}, {&domField, &s.dom}, {&monthField, &s.month}, {&dowField, &s.dow}} {
		if *f.dst, err = f.field.parse(parts[i]); err != nil {
			return Schedule{}, fmt.Errorf("cron: %q: %w", spec, err)
		}
	}
	if s.dow&(1<<7) != 0 {
		s.dow = s.dow&^(1<<7) | 1
	}
	s.domRestricted = !strings.HasPrefix(parts[2], "*")
	s.dowRestricted = !strings.HasPrefix(parts[4], "*")
	ref := time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)
	if s.Next(ref).IsZero() {
		return Schedule{}, fmt.Errorf("cron: %q never fires", spec)
	}
	return s, nil
}

// parse returns the field's values as a bit set.
func (f *field) parse(text string) (uint64, error) {
	var set uint64
	for _, item := range strings.Split(text, ",") {
		if item == "" {
			return 0, fmt.Errorf("%s: empty list item in %q", f.name, text)
		}
		rangePart, stepPart, hasStep := strings.Cut(item, "/")
		step := 1
		if hasStep {
			n, err := strconv.Atoi(stepPart)
			if err != nil || n < 1 || n > f.max-f.min+1 {
				return 0, fmt.Errorf("%s: step %q: want 1 to %d", f.name, stepPart, f.max-f.min+1)
			}
			step = n
		}
		var lo, hi int
		switch {
		case rangePart == "*":
			lo, hi = f.min, f.max
			if f == &dowField {
				hi = 6 // "*" is every day once, not Sunday twice
			}
		case strings.Contains(rangePart, "-"):
			a, b, _ := strings.Cut(rangePart, "-")
			var err error
			if lo, err = f.value(a); err != nil {
				return 0, err
			}
			if hi, err = f.value(b); err != nil {
				return 0, err
			}
			if lo > hi {
				return 0, fmt.Errorf("%s: range %q runs backwards", f.name, rangePart)
			}
		default:
			var err error
			if lo, err = f.value(rangePart); err != nil {
				return 0, err
			}
			hi = lo
			if hasStep {
				hi = f.max // "N/STEP": from N to the end
			}
		}
		for v := lo; v <= hi; v += step {
			set |= 1 << uint(v)
		}
	}
	return set, nil
}

// value reads one number or name of the field.
func (f *field) value(text string) (int, error) {
	for i, n := range f.names {
		if strings.EqualFold(text, n) {
			return f.min + i, nil
		}
	}
	n, err := strconv.Atoi(text)
	if err != nil || n < f.min || n > f.max || strings.HasPrefix(text, "+") {
		return 0, fmt.Errorf("%s: %q is not a value from %d to %d", f.name, text, f.min, f.max)
	}
	return n, nil
}

// String returns the expression as it was given (trimmed).
func (s Schedule) String() string { return s.spec }

// IsZero reports whether s was never parsed.
func (s Schedule) IsZero() bool { return s.minute == 0 }

// Next returns the first time after t (strictly later, at a whole minute)
// that the schedule matches, in t's location, or the zero time if there is
// none within 8 years.
func (s Schedule) Next(t time.Time) time.Time {
	if s.IsZero() {
		return time.Time{}
	}
	loc := t.Location()
	t = t.Truncate(time.Minute).Add(time.Minute)
	limit := t.AddDate(searchYears, 0, 0)
	for t.Before(limit) {
		y, mo, d := t.Date()
		if s.month&(1<<uint(mo)) == 0 {
			t = time.Date(y, mo+1, 1, 0, 0, 0, 0, loc)
			continue
		}
		if !s.dayMatches(t) {
			t = time.Date(y, mo, d+1, 0, 0, 0, 0, loc)
			continue
		}
		if s.hour&(1<<uint(t.Hour())) == 0 {
			t = nextHour(t)
			continue
		}
		if s.minute&(1<<uint(t.Minute())) == 0 {
			// Jump straight to the next allowed minute of this hour, if any.
			rest := s.minute >> uint(t.Minute())
			if rest == 0 {
				t = nextHour(t)
			} else {
				t = t.Add(time.Duration(bits.TrailingZeros64(rest)) * time.Minute)
			}
			continue
		}
		return t
	}
	return time.Time{}
}

// nextHour returns the start of the hour after t's, by the wall clock of
// t's location (half-hour zones included); a DST change never makes it go
// backwards.
func nextHour(t time.Time) time.Time {
	y, mo, d := t.Date()
	next := time.Date(y, mo, d, t.Hour()+1, 0, 0, 0, t.Location())
	if !next.After(t) {
		next = t.Add(time.Minute)
	}
	return next
}

// Matches reports whether the minute holding t is one the schedule fires at.
func (s Schedule) Matches(t time.Time) bool {
	return !s.IsZero() && s.month&(1<<uint(t.Month())) != 0 && s.dayMatches(t) &&
		s.hour&(1<<uint(t.Hour())) != 0 && s.minute&(1<<uint(t.Minute())) != 0
}

func (s Schedule) dayMatches(t time.Time) bool {
	domOK := s.dom&(1<<uint(t.Day())) != 0
	dowOK := s.dow&(1<<uint(t.Weekday())) != 0
	if s.domRestricted && s.dowRestricted {
		return domOK || dowOK
	}
	return domOK && dowOK
}
