package graphitein

import (
	"bufio"
	"bytes"
	"log/slog"
	"testing"

	"github.com/opskit/opskit/collector/sink"
	"github.com/opskit/opskit/transfer/intake"
)

// FuzzLines feeds arbitrary bytes to the TCP line reader and the UDP
// datagram parser: no panic, lines within the bound, valid series only.
func FuzzLines(f *testing.F) {
	f.Add([]byte("app.requests 12 1700000000\r\n\nbad line\napp.x;env=prod 1.5 -1\n"))
	f.Add([]byte("a;=b 1 1\na;b=~c 1 1\n\x00 1 1"))
	s := New(Config{MaxLineBytes: 64}, nil, nil, sink.NewCounters(nil, nil), slog.New(slog.DiscardHandler))
	lim := intake.DefaultLimits()
	f.Fuzz(func(t *testing.T, data []byte) {
		r := s.newLineReader(ProtoUDP, "fuzz")
		for _, p := range r.datagram(data, nil) {
			if rej := lim.Validate(&p); rej != nil {
				t.Fatalf("point %+v fails validation: %v", p, rej)
			}
		}
		br := bufio.NewReaderSize(bytes.NewReader(data), 16)
		for range len(data) + 1 {
			line, tooLong, err := readLine(br, 64)
			if len(line) > 65 || (tooLong && line != nil) {
				t.Fatalf("line of %d bytes, tooLong %v", len(line), tooLong)
			}
			if err != nil {
				return
			}
		}
		t.Fatal("readLine did not reach EOF")
	})
}
