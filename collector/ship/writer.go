package ship

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"

	"github.com/opskit/opskit/collector/tail"
)

// Writer writes events as JSON lines to a stream (stdout) or a file. An
// event is done once a Flush wrote it (and, for a file, synced it).
type Writer struct {
	w       *bufio.Writer
	sync    func() error
	close   func() error
	enc     *Encoder
	pending []tail.Receipt // the tailer reuses its event
	buf     []byte
}

// NewWriter writes to w; host names the events' host.
func NewWriter(w io.Writer, host string) *Writer {
	return &Writer{w: bufio.NewWriterSize(w, 256<<10), enc: &Encoder{Host: host}}
}

// OpenFile appends to the file at path, creating it.
func OpenFile(path, host string) (*Writer, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("logs output: %w", err)
	}
	w := NewWriter(f, host)
	w.sync, w.close = f.Sync, f.Close
	return w, nil
}

// Emit buffers ev; a full buffer is flushed.
func (w *Writer) Emit(ctx context.Context, ev *tail.Event) error {
	w.buf = append(w.enc.Append(w.buf[:0], ev), '\n')
	if _, err := w.w.Write(w.buf); err != nil {
		return fmt.Errorf("logs output: %w", err)
	}
	w.pending = append(w.pending, ev.Receipt())
	if len(w.pending) >= 4096 {
		return w.Flush(ctx)
	}
	return nil
}

// Flush writes what is buffered and marks it done.
func (w *Writer) Flush(context.Context) error {
	if len(w.pending) == 0 {
		return nil
	}
	if err := w.w.Flush(); err != nil {
		return fmt.Errorf("logs output: %w", err)
	}
	if w.sync != nil {
		if err := w.sync(); err != nil {
			return fmt.Errorf("logs output: %w", err)
		}
	}
	for i := range w.pending {
		w.pending[i].Done()
	}
	clear(w.pending)
	w.pending = w.pending[:0]
	return nil
}

// Close flushes and closes a file.
func (w *Writer) Close(ctx context.Context) error {
	err := w.Flush(ctx)
	if w.close != nil {
		if cerr := w.close(); err == nil {
			err = cerr
		}
	}
	return err
}
