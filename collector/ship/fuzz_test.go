package ship

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/opskit/opskit/collector/tail"
)

// FuzzDecode feeds arbitrary bytes to the event decoder (what the sink
// reads from Kafka): it must return an error or a message, never panic;
// and an event the encoder writes from any line must decode to that line.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"time":"2026-11-22T00:15:00Z","host":"h","path":"/p","file":"1-2-3","offset":1,"line":"x"}`), []byte("line"))
	f.Add([]byte(`{"time":"2026-11-22T00:15:00Z","line":"\ufffd","raw":"/w=="}`), []byte{0xff})
	f.Add([]byte(`{}`), []byte("a\"b\\c\n"))
	f.Fuzz(func(t *testing.T, data, line []byte) {
		Decode(data)
		enc := &Encoder{Host: "h"}
		out := enc.Append(nil, &tail.Event{Input: &tail.Input{Fields: map[string]string{string(line): string(line)}}, Path: string(line), Line: line, Time: time.Unix(1, 0)})
		if !json.Valid(out) {
			t.Fatalf("invalid JSON for %q: %s", line, out)
		}
		m, err := Decode(out)
		if err != nil || m.Line != string(line) {
			t.Fatalf("line %q came back as %q, %v", line, m.Line, err)
		}
	})
}

// FuzzDecodeFast checks the reflection-free decoder against encoding/json:
// whatever it accepts, encoding/json must accept and read the same way.
func FuzzDecodeFast(f *testing.F) {
	f.Add([]byte(`{"time":"2026-11-22T00:15:00.5Z","host":"h","path":"/p","file":"1-2-3","offset":12,"line":"a\"b\\u00e9\ud83d\ude00","truncated":true,"fields":{"a":"b"},"raw":"/w=="}`))
	f.Add([]byte(` { "offset" : -0 , "time":"2026-11-22T00:15:00Z" } `))
	f.Add([]byte(`{"fields":{"a":"1","a":"2"},"line":"\u2028","time":"2026-11-22T00:15:00+02:00"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		fast, ok := decodeFast(data, Interner{})
		if !ok {
			return
		}
		var slow Message
		if err := json.Unmarshal(data, &slow); err != nil {
			t.Fatalf("fast decoder accepted what encoding/json refuses (%v): %q", err, data)
		}
		if !fast.Time.Equal(slow.Time) {
			t.Fatalf("time %v vs %v", fast.Time, slow.Time)
		}
		fast.Time, slow.Time = time.Time{}, time.Time{}
		if !reflect.DeepEqual(fast, slow) {
			t.Fatalf("decoders differ on %q:\n%+v\n%+v", data, fast, slow)
		}
	})
}
