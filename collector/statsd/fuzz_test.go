package statsd

import (
	"math"
	"testing"
	"time"

	"github.com/opskit/opskit/transfer/intake"
)

// FuzzStatsD feeds arbitrary datagrams to the parser and the aggregator:
// nothing may panic, and every point flushed is finite and well named.
func FuzzStatsD(f *testing.F) {
	for _, seed := range []string{
		"hits:1|c\nrt:320|ms|@0.5|#route:/login,env:prod",
		"temp:-4.5|g\ntemp:+1|g\nusers:alice|s",
		"x:1|c|@0\n:1|c\nx:1|q\nx|c",
		"q:1|c|#endpoint:db-1,canary,we ird:a=b",
	} {
		f.Add([]byte(seed))
	}
	lim := intake.DefaultLimits()
	f.Fuzz(func(t *testing.T, datagram []byte) {
		Lines(datagram, func(line []byte) {
			var s Sample
			if ParseLine(line, &s) == nil && (s.Rate <= 0 || s.Rate > 1 || math.IsNaN(s.Value)) {
				t.Fatalf("%q parsed to %+v", line, s)
			}
		})
		a := New(Config{}, 1)
		a.Shard(0).AddDatagram(datagram, 1)
		pts, _ := a.Flush(100, time.Second)
		for _, p := range pts {
			// Values may overflow to infinity (sums of huge values); the
			// spool writer turns those into items transfer refuses alone.
			// The series identity, though, must always be acceptable.
			if rej := lim.ValidateLabels(p.Labels); rej != nil {
				t.Fatalf("series %v from %q: %v", p.Labels, datagram, rej)
			}
		}
	})
}
