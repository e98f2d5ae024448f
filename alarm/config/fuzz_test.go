package config

import (
	"net/http"
	"testing"
)

// FuzzParse checks that no configuration file makes Parse panic.
func FuzzParse(f *testing.F) {
	f.Add([]byte(sample))
	f.Add([]byte("route:\n  receiver: a\n  routes: [{matchers: ['a=~\"b\"'], mute_time_intervals: [t]}]\nreceivers: [{name: a}]\ntime_intervals: [{name: t, time_intervals: [{times: [{start_time: '01:00', end_time: '02:00'}], days_of_month: ['-1'], weekdays: ['monday:friday']}]}]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("fuzz", data, http.DefaultClient)
		if err == nil && (c.Route == nil || c.ResolveTimeout <= 0) {
			t.Fatalf("accepted an incomplete config: %+v", c)
		}
	})
}
