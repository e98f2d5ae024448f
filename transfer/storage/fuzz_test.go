package storage

import (
	"math"
	"reflect"
	"strings"
	"testing"
	"time"
)

// FuzzParseRetentions checks the retention parser never panics and that
// what it accepts is a valid archive list that round-trips.
func FuzzParseRetentions(f *testing.F) {
	for _, s := range []string{DefaultRetentions, "10:360", "1m:1w,1h:1y", "60s:0", "5m:1d,1m:2d", "", ":", "1y:1y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		rs, err := ParseRetentions(s)
		if err != nil {
			if rs != nil {
				t.Fatal("archives with an error")
			}
			return
		}
		if err := checkArchives(rs); err != nil || len(rs) == 0 {
			t.Fatalf("%q accepted as %v: %v", s, rs, err)
		}
		var parts []string
		for _, r := range rs {
			if r.Step <= 0 || r.Rows <= 0 || r.Rows > maxRows {
				t.Fatalf("%q gave %v", s, r)
			}
			parts = append(parts, r.String())
		}
		again, err := ParseRetentions(strings.Join(parts, ","))
		if err != nil || !reflect.DeepEqual(again, rs) {
			t.Fatalf("%q: %v does not round-trip: %v %v", s, rs, again, err)
		}
	})
}

// FuzzNewSchema covers the storage-schemas fields together.
func FuzzNewSchema(f *testing.F) {
	f.Add(`^app\.`, "10s:1h,1m:1d", int64(20), 0.5)
	f.Add("(", "60s:1h", int64(0), -1.0)
	f.Fuzz(func(t *testing.T, pattern, retentions string, heartbeat int64, xff float64) {
		s, err := NewSchema("f", pattern, retentions, time.Duration(heartbeat)*time.Second, xff)
		if err != nil {
			return
		}
		if len(s.Retentions) == 0 || s.Heartbeat < 0 || !(s.XFF >= 0 && s.XFF <= 1) {
			t.Fatalf("accepted an invalid schema %+v", s)
		}
		s.Match("cpu.idle")
	})
}

// FuzzDecodeRecord checks the WAL payload decoder never panics and that a
// record it accepts encodes back to a record that decodes the same.
func FuzzDecodeRecord(f *testing.F) {
	rs, _ := ParseRetentions(DefaultRetentions)
	create := appendCreate(nil, &createRecord{ID: 7, Start: t0, Layout: layout{archives: rs, heartbeat: 120, xff: 0.5}, Labels: labels("cpu.idle", "endpoint", "h1")})
	points := pointsHeader(nil, recPoints)
	points = appendPoint(points, 7, t0, 1.5)
	points = appendPoint(points, 8, t0+60, math.NaN())
	finishPoints(points, 2)
	late := pointsHeader(nil, recLate)
	late = appendPoint(late, 7, t0-60, 2.5)
	finishPoints(late, 1)
	f.Add(create)
	f.Add(points)
	f.Add(late)
	f.Add(appendExpire(nil, 7))
	f.Add([]byte{'P', 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, payload []byte) {
		var rec walRecord
		if err := decodeRecord(payload, &rec); err != nil {
			return
		}
		var again []byte
		switch rec.Kind {
		case recCreate:
			again = appendCreate(nil, &rec.Create)
		case recPoints, recLate:
			again = pointsHeader(nil, rec.Kind)
			for _, p := range rec.Points {
				again = appendPoint(again, p.ID, p.Time, p.Value)
			}
			finishPoints(again, len(rec.Points))
		case recExpire:
			again = appendExpire(nil, rec.Expire)
		}
		var rec2 walRecord
		if err := decodeRecord(again, &rec2); err != nil {
			t.Fatalf("re-encoded record does not decode: %v", err)
		}
		if rec.Kind != rec2.Kind || len(rec.Points) != len(rec2.Points) || rec.Expire != rec2.Expire ||
			rec.Create.ID != rec2.Create.ID || !rec.Create.Labels.Equal(rec2.Create.Labels) ||
			!reflect.DeepEqual(rec.Create.Layout.archives, rec2.Create.Layout.archives) {
			t.Fatalf("round trip changed the record: %+v vs %+v", rec, rec2)
		}
	})
}

// FuzzParseSchemas checks the storage-schemas.conf parser never panics and
// that every schema it returns is usable.
func FuzzParseSchemas(f *testing.F) {
	f.Add("[carbon]\npattern = ^carbon\\.\nretentions = 60:90d\n")
	f.Add("[app]\npattern = ^app\\.\nretentions = 10s:6h,1m:7d\nheartbeat = 30s\nxFilesFactor = 0.3\n")
	f.Add("# only a comment\n")
	f.Add("[a]\npattern = (\n")
	f.Fuzz(func(t *testing.T, text string) {
		ss, err := ParseSchemas(text)
		if err != nil {
			return
		}
		for _, s := range ss {
			if len(s.Retentions) == 0 || s.Pattern == nil || s.XFF < 0 || s.XFF > 1 || s.Heartbeat < 0 {
				t.Fatalf("unusable schema %+v", s)
			}
			MatchSchema(ss, "cpu.idle")
		}
	})
}
