package ship

import (
	"testing"
	"time"

	"github.com/opskit/opskit/collector/tail"
)

var benchLine = []byte(`10.1.2.3 - - [22/Nov/2026:00:35:01 +0000] "GET /api/v1/orders/81723?page=3 HTTP/1.1" 200 5123 "-" "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36" rt=0.042`)

func benchEvent() *tail.Event {
	return &tail.Event{Input: &tail.Input{Fields: map[string]string{"app": "shop", "env": "prod"}}, Path: "/var/log/nginx/access.log",
		FileID: "fe00-99a99a-18ea36cc73838b4f", Offset: 123456789, Line: benchLine, Time: time.Unix(1795307653, 199837732)}
}

// BenchmarkEncode: one access-log line into its JSON event.
func BenchmarkEncode(b *testing.B) {
	enc := &Encoder{Host: "web-1"}
	ev := benchEvent()
	buf := make([]byte, 0, 1024)
	b.SetBytes(int64(len(benchLine)))
	for b.Loop() {
		buf = enc.Append(buf[:0], ev)
	}
}

// BenchmarkDecode: the sink's side, with and without interning.
func BenchmarkDecode(b *testing.B) {
	data := (&Encoder{Host: "web-1"}).Append(nil, benchEvent())
	b.Run("interned", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		in := Interner{}
		for b.Loop() {
			if _, err := DecodeInterned(data, in); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding-json-fallback", func(b *testing.B) {
		odd := append([]byte(`{"Unknown":1,`), data[1:]...) // forces the fallback
		b.SetBytes(int64(len(odd)))
		for b.Loop() {
			if _, err := Decode(odd); err != nil {
				b.Fatal(err)
			}
		}
	})
}
