// Package jsonl reads and writes JSON lines, the format of every opskit pipe
// subcommand: one JSON value per line on stdin and stdout.
package jsonl

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
)

// DefaultMaxLine bounds one input line so a runaway producer cannot exhaust memory.
const DefaultMaxLine = 4 << 20

// ErrLineTooLong is wrapped by Reader errors for a line over the limit.
var ErrLineTooLong = errors.New("line too long")

// Reader reads one JSON value per line. Blank lines are skipped. A line
// that does not decode is reported with its line number; the caller may go
// on reading the next one.
type Reader struct {
	br      *bufio.Reader
	maxLine int
	line    int
	buf     []byte
}

// NewReader reads from r with lines of at most maxLine bytes (0 = DefaultMaxLine).
func NewReader(r io.Reader, maxLine int) *Reader {
	if maxLine <= 0 {
		maxLine = DefaultMaxLine
	}
	return &Reader{br: bufio.NewReaderSize(r, 64<<10), maxLine: maxLine}
}

// Line is the number (1-based) of the line last read.
func (r *Reader) Line() int { return r.line }

// Raw returns the next non-blank line without its newline, or io.EOF. The
// slice is valid until the next call.
func (r *Reader) Raw() ([]byte, error) {
	for {
		r.buf = r.buf[:0]
		tooLong := false
		for {
			chunk, err := r.br.ReadSlice('\n')
			if len(r.buf)+len(chunk) > r.maxLine {
				tooLong = true
			} else {
				r.buf = append(r.buf, chunk...)
			}
			if err == bufio.ErrBufferFull {
				continue
			}
			if err == io.EOF && (len(r.buf) > 0 || tooLong) {
				break
			}
			if err != nil {
				return nil, err
			}
			break
		}
		r.line++
		if tooLong {
			return nil, fmt.Errorf("line %d: %w (limit %d bytes)", r.line, ErrLineTooLong, r.maxLine)
		}
		line := bytes.TrimSpace(r.buf)
		if len(line) == 0 {
			continue
		}
		return line, nil
	}
}

// Next decodes the next line into v. Unknown fields are allowed.
func (r *Reader) Next(v any) error {
	line, err := r.Raw()
	if err != nil {
		return err
	}
	if err := json.Unmarshal(line, v); err != nil {
		return fmt.Errorf("line %d: %w", r.line, err)
	}
	return nil
}

// Writer writes one JSON value per line; it is safe for concurrent use and
// each value is written whole.
type Writer struct {
	mu sync.Mutex
	bw *bufio.Writer
	// flushEach makes every Write reach the underlying writer at once, as
	// a pipe consumer expects.
	flushEach bool
}

// NewWriter writes to w, flushing after every value.
func NewWriter(w io.Writer) *Writer {
	return &Writer{bw: bufio.NewWriter(w), flushEach: true}
}

// NewBufferedWriter writes to w and flushes only on Flush.
func NewBufferedWriter(w io.Writer) *Writer {
	return &Writer{bw: bufio.NewWriterSize(w, 64<<10)}
}

// Write encodes v as one line.
func (w *Writer) Write(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.bw.Write(b)
	w.bw.WriteByte('\n')
	if w.flushEach {
		return w.bw.Flush()
	}
	return nil
}

// Flush writes buffered lines out.
func (w *Writer) Flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.bw.Flush()
}
