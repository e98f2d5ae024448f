package fleet

import (
	"bytes"
	"context"
	"errors"
	"sync"

	"github.com/opskit/opskit/deployer/hosts"
)

// ExecEvent is one line of a host's output, or the end of its run. A
// stream of them (JSON lines) is what POST /v1/exec answers.
type ExecEvent struct {
	Host string `json:"host,omitempty"`
	// Type is "line" (Line holds one line of output, without its newline),
	// "end" (the host's run is over: ExitCode, Refused, Error) or, last
	// of a stream over HTTP, "summary" (Hosts ran, Failed of them did not
	// exit 0; Host is empty).
	Type     string `json:"type"`
	Line     string `json:"line,omitempty"`
	ExitCode int    `json:"exit_code,omitempty"`
	Refused  bool   `json:"refused,omitempty"`
	Error    string `json:"error,omitempty"`
	Hosts    int    `json:"hosts,omitempty"`
	Failed   int    `json:"failed,omitempty"`
}

// ExecResult is one host's outcome of a diagnostic command.
type ExecResult struct {
	Host string `json:"host"`
	// ExitCode is the command's exit status, -1 if it did not run to an
	// exit (refused, unreachable agent, killed at its timeout).
	ExitCode int    `json:"exit_code"`
	Refused  bool   `json:"refused,omitempty"`
	Error    string `json:"error,omitempty"`
	Bytes    int64  `json:"bytes"`
}

// OK reports whether the command ran and exited 0.
func (r ExecResult) OK() bool { return r.ExitCode == 0 && r.Error == "" }

// maxLine is the longest line passed on whole; longer ones are split.
const maxLine = 64 << 10

// Exec runs the diagnostic command name with args on each of the target's
// hosts concurrently. Each host's output goes to emit line by line as it
// arrives (emit is never called concurrently), followed by an "end" event
// with its exit code; a refusal by the host's allowlist is reported as such
// for that host. The results are in host order.
func (f *Fleet) Exec(ctx context.Context, t Target, name string, args []string, emit func(ExecEvent)) ([]ExecResult, error) {
	if err := f.CheckAllowed(name); err != nil {
		return nil, err
	}
	hs, err := f.Resolve(ctx, t)
	if err != nil {
		return nil, err
	}
	var mu sync.Mutex
	send := func(ev ExecEvent) {
		mu.Lock()
		defer mu.Unlock()
		emit(ev)
	}
	results := make([]ExecResult, len(hs))
	f.eachHost(ctx, hs, func(ctx context.Context, i int, h hosts.Host) {
		lw := &lineWriter{emit: func(line string) { send(ExecEvent{Host: h.Name, Type: "line", Line: line}) }}
		code, err := f.Agents.Diag(ctx, h.Addr, name, args, lw)
		lw.flush()
		r := ExecResult{Host: h.Name, ExitCode: code, Refused: errors.Is(err, ErrRefused), Error: hostErrorText(err), Bytes: lw.bytes}
		results[i] = r
		send(ExecEvent{Host: h.Name, Type: "end", ExitCode: r.ExitCode, Refused: r.Refused, Error: r.Error})
	})
	return results, nil
}

// lineWriter cuts a byte stream into lines.
type lineWriter struct {
	emit    func(string)
	partial []byte
	bytes   int64
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.bytes += int64(len(p))
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			w.partial = append(w.partial, p...)
			// Pass on the head of an overlong line early, keeping one byte
			// more than a piece: it may be the "\r" of a "\r\n".
			for len(w.partial) > maxLine+1 {
				w.emit(string(w.partial[:maxLine]))
				w.partial = append(w.partial[:0], w.partial[maxLine:]...)
			}
			break
		}
		w.partial = append(w.partial, p[:i]...)
		w.emitPieces(bytes.TrimSuffix(w.partial, []byte("\r")))
		w.partial = w.partial[:0]
		p = p[i+1:]
	}
	return n, nil
}

// emitPieces passes on a line, in maxLine pieces if it is longer.
func (w *lineWriter) emitPieces(line []byte) {
	for len(line) > maxLine {
		w.emit(string(line[:maxLine]))
		line = line[maxLine:]
	}
	w.emit(string(line))
}

// flush passes on a last line that had no newline.
func (w *lineWriter) flush() {
	if len(w.partial) > 0 {
		w.emitPieces(w.partial)
		w.partial = nil
	}
}
