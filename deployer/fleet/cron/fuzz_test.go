package cron

import (
	"testing"
	"time"
)

// FuzzParse: Parse never panics; a schedule it accepts parses again to the
// same sets, and Next returns a later matching minute.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"*/5 * * * *", "0 0 1 1 *", "15,45 9-17 * * mon-fri", "0 0 29 2 *", "5/20 1-7/2 */3 jan-dec 0-7", "@daily", "0 0 30 2 *", "a b c d e"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		s, err := Parse(spec)
		if err != nil {
			return
		}
		again, err := Parse(s.String())
		if err != nil || again != s {
			t.Fatalf("reparse of %q: %v, %+v != %+v", s.String(), err, again, s)
		}
		at := time.Date(2030, 6, 15, 12, 34, 56, 0, time.UTC)
		next := s.Next(at)
		if next.IsZero() || !next.After(at) || !s.Matches(next) || next.Second() != 0 {
			t.Fatalf("%q: Next(%s) = %s", spec, at, next)
		}
	})
}
