package fleet

import (
	"bytes"
	"strings"
	"testing"
)

// FuzzLineWriter: however an agent's output is cut into writes, the lines
// passed on are the output's lines (a "\r" before a newline dropped, a
// line longer than maxLine split), and nothing is lost or invented.
func FuzzLineWriter(f *testing.F) {
	f.Add([]byte("a\nb\r\nc"), uint8(1))
	f.Add([]byte("\n\n\n"), uint8(2))
	f.Add([]byte("no newline at all"), uint8(5))
	f.Add(bytes.Repeat([]byte("x"), maxLine+3), uint8(200))
	f.Add(append(bytes.Repeat([]byte("x"), maxLine), "\r\nend"...), uint8(16))
	f.Fuzz(func(t *testing.T, out []byte, cut uint8) {
		var lines []string
		w := &lineWriter{emit: func(s string) { lines = append(lines, s) }}
		step := int(cut)%17 + 1
		for i := 0; i < len(out); i += step {
			w.Write(out[i:min(i+step, len(out))])
		}
		w.flush()
		if w.bytes != int64(len(out)) {
			t.Fatalf("counted %d bytes of %d", w.bytes, len(out))
		}
		var want []string
		text := string(out)
		for text != "" {
			line, rest, found := strings.Cut(text, "\n")
			if found {
				line = strings.TrimSuffix(line, "\r")
			}
			for len(line) > maxLine {
				want = append(want, line[:maxLine])
				line = line[maxLine:]
			}
			want = append(want, line)
			text = rest
		}
		if strings.Join(lines, "\n") != strings.Join(want, "\n") || len(lines) != len(want) {
			t.Fatalf("%d writes of %d bytes: got %d lines, want %d", (len(out)+step-1)/step, step, len(lines), len(want))
		}
	})
}
