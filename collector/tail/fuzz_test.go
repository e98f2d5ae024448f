package tail

import (
	"bytes"
	"testing"
	"time"
)

// FuzzAssembler feeds arbitrary lines to the multiline assembler: it must
// never panic, every event must stay within its bounds and cover the
// lines' offsets in order, and without cutting the events must hold every
// byte of every line.
func FuzzAssembler(f *testing.F) {
	f.Add("^\\S", true, 64, []byte("first\n  cont\nsecond\n\tmore\n\tand more\nthird"))
	f.Add("^\\s", false, 8, []byte("a\n b\n c\nd\n"))
	f.Add("(", true, 0, []byte("x"))
	f.Fuzz(func(t *testing.T, pattern string, start bool, maxBytes int, input []byte) {
		match := "continuation"
		if start {
			match = "start"
		}
		a, err := NewAssembler(Multiline{Pattern: pattern, Match: match, MaxBytes: maxBytes % 4096, MaxLines: 7}, 1024)
		if err != nil {
			return
		}
		var events []Chunk
		off := int64(0)
		now := time.Unix(0, 0)
		for _, line := range bytes.Split(input, []byte{'\n'}) {
			c := Chunk{Text: line, Start: off, End: off + int64(len(line)) + 1}
			off = c.End
			if ev, ok := a.Add(c, now); ok {
				events = append(events, ev)
			}
		}
		if ev, ok := a.Flush(); ok {
			events = append(events, ev)
		}
		next := int64(0)
		var joined [][]byte
		cut := false
		for _, ev := range events {
			if ev.Start != next || ev.End <= ev.Start {
				t.Fatalf("event %d..%d after %d", ev.Start, ev.End, next)
			}
			next = ev.End
			if len(ev.Text) > a.maxBytes {
				t.Fatalf("event of %d bytes over %d", len(ev.Text), a.maxBytes)
			}
			cut = cut || ev.Truncated
			joined = append(joined, ev.Text)
		}
		if next != off {
			t.Fatalf("events end at %d, lines at %d", next, off)
		}
		if !cut && !bytes.Equal(bytes.Join(joined, []byte{'\n'}), input) {
			t.Fatalf("events %q do not rebuild %q", joined, input)
		}
	})
}

// FuzzParseCheckpoints feeds arbitrary bytes to the checkpoint reader: it
// must return an error or checkpoints that format and parse back the same.
func FuzzParseCheckpoints(f *testing.F) {
	f.Add(FormatCheckpoints([]Checkpoint{{Identity: Identity{Dev: 1, Inode: 2, FPLen: 10, FP: 3, Born: 4}, Path: "/var/log/a.log", Offset: 99}}))
	f.Add([]byte(`{"version":1,"files":[{"offset":-1}]}`))
	f.Add([]byte(`{"version":2}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		cps, err := ParseCheckpoints(data)
		if err != nil {
			return
		}
		again, err := ParseCheckpoints(FormatCheckpoints(cps))
		if err != nil || len(again) != len(cps) {
			t.Fatalf("round trip: %v, %d of %d", err, len(again), len(cps))
		}
	})
}
