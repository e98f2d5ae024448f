package graphite

import (
	"bytes"
	"math"
	"testing"

	"github.com/opskit/opskit/transfer/intake"
)

// FuzzParseLine feeds arbitrary lines to the Graphite parser: it must never
// panic, what it accepts must be storable, and a second parse of the same
// line (served from the path cache) must agree with the first.
func FuzzParseLine(f *testing.F) {
	f.Add([]byte("servers.web1.cpu.idle 93.5 1699999999"))
	f.Add([]byte("disk.used;host=web1;mount=/var 42 -1\r"))
	lim := intake.DefaultLimits()
	f.Fuzz(func(t *testing.T, line []byte) {
		p := NewParser(lim, 0)
		pt, rej := p.ParseLine(line, now)
		again, rej2 := p.ParseLine(line, now)
		if (rej == nil) != (rej2 == nil) {
			t.Fatalf("cached parse disagrees: %v then %v", rej, rej2)
		}
		if rej != nil {
			if rej.Reason == "" || rej.Detail == "" {
				t.Fatalf("reject without reason or detail: %+v", rej)
			}
			return
		}
		if !pt.Labels.Equal(again.Labels) || pt.Time != again.Time || math.Float64bits(pt.Value) != math.Float64bits(again.Value) {
			t.Fatalf("cached parse differs: %v vs %v", pt, again)
		}
		if pt.Labels.Name() == "" {
			t.Fatal("accepted a point without a name")
		}
		if rej := lim.Validate(&pt); rej != nil {
			t.Fatalf("accepted a point that fails validation: %v", rej)
		}
		if math.IsNaN(pt.Value) || math.IsInf(pt.Value, 0) || pt.Time <= 0 {
			t.Fatalf("accepted value %v at %d", pt.Value, pt.Time)
		}
		if bytes.IndexByte(line, '\n') >= 0 {
			t.Fatalf("accepted a line holding a newline: %q", line)
		}
		// The body parser must agree with the line parser on a one-line body.
		pts, _, rejected := ParseBody(line, now, lim)
		if len(pts) != 1 || len(rejected) != 0 {
			t.Fatalf("one line gave %d points and %d rejections", len(pts), len(rejected))
		}
	})
}
