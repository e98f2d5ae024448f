package matcher

import "testing"

func BenchmarkParse(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(`{alertname="DiskFull", severity=~"warning|critical", instance!="web01"}`); err != nil {
			b.Fatal(err)
		}
	}
}
