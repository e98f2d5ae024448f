package alert

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func BenchmarkDecode100(b *testing.B) {
	var sb strings.Builder
	sb.WriteByte('[')
	for i := range 100 {
		if i > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, `{"labels":{"alertname":"Storm","group":"g%05d","instance":"i%06d","severity":"warning"},"annotations":{"summary":"storm alert %d"}}`, i/10, i, i)
	}
	sb.WriteByte(']')
	body := []byte(sb.String())
	now := time.Now()
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		alerts, bad, err := Decode(body, now, time.Minute, DefaultLimits)
		if err != nil || len(bad) > 0 || len(alerts) != 100 {
			b.Fatal(err, bad)
		}
	}
}
