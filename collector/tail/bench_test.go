package tail

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// discard counts events and marks them done.
type discard struct{ n int }

func (d *discard) Emit(_ context.Context, ev *Event) error { d.n++; ev.Done(); return nil }
func (d *discard) Flush(context.Context) error             { return nil }

// BenchmarkTailer reads a 16 MiB file of 200-byte lines through the
// tailer into an emitter that does nothing: the cost of finding lines and
// tracking their delivery.
func BenchmarkTailer(b *testing.B) {
	dir := b.TempDir()
	path := filepath.Join(dir, "a.log")
	line := strings.Repeat("x", 199) + "\n"
	data := []byte(strings.Repeat(line, 16<<20/len(line)))
	if err := os.WriteFile(path, data, 0o644); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		out := &discard{}
		tl, err := New(Config{Inputs: []*Input{{Paths: []string{path}}}, StopAtEOF: true, PollInterval: time.Millisecond}, out, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			b.Fatal(err)
		}
		if err := tl.Run(context.Background()); err != nil {
			b.Fatal(err)
		}
		if out.n != len(data)/len(line) {
			b.Fatalf("%d events", out.n)
		}
	}
}
