package jsonl

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestReaderSkipsBlankAndReportsLine(t *testing.T) {
	in := "{\"a\":1}\n\n  \n{\"a\":2}\r\nnot json\n{\"a\":3}"
	r := NewReader(strings.NewReader(in), 0)
	var got []int
	var errLines []int
	for {
		var v struct{ A int }
		err := r.Next(&v)
		if err == io.EOF {
			break
		}
		if err != nil {
			errLines = append(errLines, r.Line())
			continue
		}
		got = append(got, v.A)
	}
	if len(got) != 3 || got[2] != 3 {
		t.Fatalf("values = %v; want [1 2 3]", got)
	}
	if len(errLines) != 1 || errLines[0] != 5 {
		t.Fatalf("error lines = %v; want [5]", errLines)
	}
}

func TestReaderLineTooLongIsSkippable(t *testing.T) {
	in := strings.Repeat("x", 100) + "\n{\"a\":7}\n"
	r := NewReader(strings.NewReader(in), 16)
	if _, err := r.Raw(); !errors.Is(err, ErrLineTooLong) {
		t.Fatalf("err = %v; want ErrLineTooLong", err)
	}
	line, err := r.Raw()
	if err != nil || string(line) != `{"a":7}` {
		t.Fatalf("next line = %q, %v", line, err)
	}
}

func TestWriterOneValuePerLine(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	w.Write(map[string]int{"a": 1})
	w.Write("two")
	if buf.String() != "{\"a\":1}\n\"two\"\n" {
		t.Fatalf("output = %q", buf.String())
	}
	bw := NewBufferedWriter(&buf)
	bw.Write(3)
	if strings.HasSuffix(buf.String(), "3\n") {
		t.Fatal("buffered writer wrote before Flush")
	}
	bw.Flush()
	if !strings.HasSuffix(buf.String(), "3\n") {
		t.Fatal("Flush did not write")
	}
}

func FuzzReader(f *testing.F) {
	f.Add([]byte("{\"a\":1}\n{\"b\":[1,2]}\n"), 64)
	f.Add([]byte("\n\n\r\n"), 8)
	f.Add([]byte("{\"a\":"), 4)
	f.Fuzz(func(t *testing.T, data []byte, max int) {
		if max < 1 || max > 1<<16 {
			max = 1 << 10
		}
		r := NewReader(bytes.NewReader(data), max)
		for i := 0; i < len(data)+2; i++ {
			line, err := r.Raw()
			if err == io.EOF {
				return
			}
			if err == nil && (len(line) == 0 || len(line) > max) {
				t.Fatalf("line of %d bytes with limit %d", len(line), max)
			}
		}
		t.Fatal("reader did not reach EOF")
	})
}
