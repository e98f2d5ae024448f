// Package push is the "transfer push" subcommand: it reads open-falcon JSON
// items or Graphite lines on stdin, sends them in batches to a transfer
// node's /api/push and /api/graphite, and prints one JSON line per request
// with what was accepted and what was refused, by input line number.
package push

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/opskit/opskit/internal/kit"
	"github.com/opskit/opskit/transfer/intake"
)

// Exit codes, as every opskit subcommand uses them.
const (
	ExitOK      = 0
	ExitRefused = 1
	ExitUsage   = 2
)

const usage = `Usage: transfer push [flags] < input

Reads metrics on stdin, one per line, and sends them to a transfer node:
  a line starting with "{" is one open-falcon JSON item,
  a line starting with "[" is a JSON array of them,
  any other line is Graphite plaintext ("path value [timestamp]").
Prints one JSON line per request: {"accepted":N,"rejected":[{"index":LINE,...}]}.
Exits 0 when everything was accepted, 1 when anything was refused or a
request failed, 2 on bad usage. Each flag may also be set with its
OPSKIT_<FLAG> environment variable, e.g. OPSKIT_ADDR.

Flags:
`

// maxLine bounds one input line (a JSON array line can be large).
const maxLine = 64 << 20

// Main runs "transfer push" with args (without the subcommand name) and
// returns the exit code. A flag not given on the command line may come from
// its OPSKIT_<FLAG> environment variable, e.g. OPSKIT_ADDR.
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return mainWithEnv(ctx, args, stdin, stdout, stderr, os.LookupEnv)
}

func mainWithEnv(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, lookupEnv func(string) (string, bool)) int {
	fs := pflag.NewFlagSet("transfer push", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:7120", "transfer HTTP address, host:port or a http(s):// URL")
	batch := fs.Int("batch", 1000, "lines (or items of JSON array lines) per request")
	format := fs.String("format", "auto", "input format: auto (by first character), json or graphite")
	timeout := fs.Duration("timeout", 30*time.Second, "timeout of one request")
	retries := fs.Int("retries", 2, "extra attempts of a request that failed with a network error or a 5xx answer")
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return ExitOK
		}
		fmt.Fprintf(stderr, "transfer push: %v\n", err)
		fmt.Fprintln(stderr, "run \"transfer push --help\" for usage")
		return ExitUsage
	}
	var envErr error
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Changed || envErr != nil {
			return
		}
		if v, ok := lookupEnv(kit.EnvName(f.Name)); ok {
			if err := fs.Set(f.Name, v); err != nil {
				envErr = fmt.Errorf("%s: %w", kit.EnvName(f.Name), err)
			}
		}
	})
	if envErr != nil {
		fmt.Fprintf(stderr, "transfer push: %v\n", envErr)
		return ExitUsage
	}
	switch {
	case fs.NArg() > 0:
		fmt.Fprintf(stderr, "transfer push: unexpected argument %q (input is read from stdin)\n", fs.Arg(0))
		return ExitUsage
	case *format != "auto" && *format != "json" && *format != "graphite":
		fmt.Fprintf(stderr, "transfer push: --format must be auto, json or graphite, not %q\n", *format)
		return ExitUsage
	case *batch <= 0:
		fmt.Fprintf(stderr, "transfer push: --batch must be positive, not %d\n", *batch)
		return ExitUsage
	case *retries < 0:
		fmt.Fprintf(stderr, "transfer push: --retries must not be negative\n")
		return ExitUsage
	}
	base := *addr
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	base = strings.TrimRight(base, "/")

	p := &pusher{
		base:    base,
		client:  &http.Client{Timeout: *timeout},
		retries: *retries,
		batch:   *batch,
		out:     json.NewEncoder(stdout),
		stderr:  stderr,
	}
	err := p.run(ctx, stdin, *format)
	if err != nil {
		fmt.Fprintf(stderr, "transfer push: %v\n", err)
	}
	if err != nil || p.refused > 0 || p.failedRequests > 0 {
		fmt.Fprintf(stderr, "transfer push: %d accepted, %d refused, %d of %d requests failed\n",
			p.accepted, p.refused, p.failedRequests, p.requests)
		return ExitRefused
	}
	return ExitOK
}

// origin locates an item in the input: its line and, for an array line,
// its position in the array (-1 otherwise).
type origin struct {
	line int
	item int
}

// Rejected is one refused item as printed on stdout.
type Rejected struct {
	// Index is the input line number, 1-based.
	Index int `json:"index"`
	// Item is the position in a JSON array line.
	Item   *int   `json:"item,omitempty"`
	Reason string `json:"reason"`
	Detail string `json:"detail,omitempty"`
}

// Result is one printed line: the outcome of one request, or of input
// lines refused before sending.
type Result struct {
	Accepted int        `json:"accepted"`
	Rejected []Rejected `json:"rejected"`
	Error    string     `json:"error,omitempty"`
}

type pusher struct {
	base    string
	client  *http.Client
	retries int
	batch   int
	out     *json.Encoder
	stderr  io.Writer

	jsonItems   []json.RawMessage
	jsonOrigins []origin
	lines       [][]byte
	lineOrigins []origin

	accepted, refused, requests, failedRequests int
}

func (p *pusher) run(ctx context.Context, stdin io.Reader, format string) error {
	sc := bufio.NewScanner(stdin)
	sc.Buffer(make([]byte, 64<<10), maxLine)
	lineNo := 0
	for sc.Scan() {
		lineNo++
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		isJSON := format == "json" || (format == "auto" && (line[0] == '{' || line[0] == '['))
		if isJSON {
			p.addJSON(line, lineNo)
		} else {
			p.lines = append(p.lines, bytes.Clone(line))
			p.lineOrigins = append(p.lineOrigins, origin{line: lineNo, item: -1})
		}
		if len(p.jsonItems) >= p.batch {
			p.sendJSON(ctx)
		}
		if len(p.lines) >= p.batch {
			p.sendGraphite(ctx)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		p.sendJSON(ctx)
		p.sendGraphite(ctx)
		return fmt.Errorf("reading stdin after line %d: %w", lineNo, err)
	}
	p.sendJSON(ctx)
	p.sendGraphite(ctx)
	return nil
}

// addJSON queues one JSON line: an object, or an array of items. A line
// that is not valid JSON is refused here, since it would spoil the batch.
func (p *pusher) addJSON(line []byte, lineNo int) {
	switch line[0] {
	case '{':
		if json.Valid(line) {
			p.jsonItems = append(p.jsonItems, bytes.Clone(line))
			p.jsonOrigins = append(p.jsonOrigins, origin{line: lineNo, item: -1})
			return
		}
	case '[':
		var items []json.RawMessage
		if err := json.Unmarshal(line, &items); err == nil {
			for i, it := range items {
				p.jsonItems = append(p.jsonItems, bytes.Clone(it))
				p.jsonOrigins = append(p.jsonOrigins, origin{line: lineNo, item: i})
			}
			return
		}
	}
	p.refused++
	p.print(Result{Rejected: []Rejected{{
		Index:  lineNo,
		Reason: intake.ReasonBadJSON,
		Detail: "line is not a JSON object or array: " + intake.Truncate(string(line)),
	}}})
}

func (p *pusher) sendJSON(ctx context.Context) {
	if len(p.jsonItems) == 0 {
		return
	}
	var body bytes.Buffer
	body.WriteByte('[')
	for i, it := range p.jsonItems {
		if i > 0 {
			body.WriteByte(',')
		}
		body.Write(it)
	}
	body.WriteByte(']')
	p.send(ctx, "/api/push", "application/json", body.Bytes(), p.jsonOrigins, 0)
	p.jsonItems, p.jsonOrigins = p.jsonItems[:0], p.jsonOrigins[:0]
}

func (p *pusher) sendGraphite(ctx context.Context) {
	if len(p.lines) == 0 {
		return
	}
	body := bytes.Join(p.lines, []byte{'\n'})
	body = append(body, '\n')
	// The server numbers Graphite lines from 1.
	p.send(ctx, "/api/graphite", "text/plain", body, p.lineOrigins, 1)
	p.lines, p.lineOrigins = p.lines[:0], p.lineOrigins[:0]
}

// send posts one batch, retrying network errors and 5xx answers, then
// prints its result with indexes mapped back to input lines. indexBase is
// the server's index of the first item.
func (p *pusher) send(ctx context.Context, path, contentType string, body []byte, origins []origin, indexBase int) {
	p.requests++
	var (
		resp intake.Response
		err  error
	)
	for attempt := 0; ; attempt++ {
		var retry bool
		resp, retry, err = p.post(ctx, path, contentType, body)
		if err == nil || !retry || attempt >= p.retries || ctx.Err() != nil {
			break
		}
		select {
		case <-time.After(time.Duration(250<<attempt) * time.Millisecond):
		case <-ctx.Done():
		}
	}
	if err != nil {
		p.failedRequests++
		p.refused += len(origins)
		p.print(Result{Rejected: []Rejected{}, Error: fmt.Sprintf("lines %d-%d: %v", origins[0].line, origins[len(origins)-1].line, err)})
		return
	}
	out := Result{Accepted: resp.Accepted, Rejected: make([]Rejected, 0, len(resp.Rejected)), Error: resp.Error}
	for _, r := range resp.Rejected {
		rj := Rejected{Index: -1, Reason: r.Reason, Detail: r.Detail}
		if i := r.Index - indexBase; i >= 0 && i < len(origins) {
			rj.Index = origins[i].line
			if origins[i].item >= 0 {
				item := origins[i].item
				rj.Item = &item
			}
		}
		out.Rejected = append(out.Rejected, rj)
	}
	p.accepted += resp.Accepted
	p.refused += len(origins) - resp.Accepted
	p.print(out)
}

// post sends one request. It returns the decoded answer for 200 and for a
// 400 that lists rejected items; otherwise an error, and whether trying
// again may help.
func (p *pusher) post(ctx context.Context, path, contentType string, body []byte) (intake.Response, bool, error) {
	var resp intake.Response
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.base+path, bytes.NewReader(body))
	if err != nil {
		return resp, false, fmt.Errorf("building request: %w", err)
	}
	req.Header.Set("Content-Type", contentType)
	hr, err := p.client.Do(req)
	if err != nil {
		return resp, true, fmt.Errorf("POST %s: %w", path, err)
	}
	defer hr.Body.Close()
	data, err := io.ReadAll(io.LimitReader(hr.Body, 64<<20))
	if err != nil {
		return resp, true, fmt.Errorf("POST %s: reading answer: %w", path, err)
	}
	decodeErr := json.Unmarshal(data, &resp)
	switch {
	case hr.StatusCode == http.StatusOK && decodeErr == nil:
		return resp, false, nil
	case hr.StatusCode == http.StatusBadRequest && decodeErr == nil && len(resp.Rejected) > 0:
		return resp, false, nil
	}
	msg := resp.Error
	if decodeErr != nil || msg == "" {
		msg = intake.Truncate(strings.TrimSpace(string(data)))
	}
	return resp, hr.StatusCode >= 500, fmt.Errorf("POST %s: %s: %s", path, hr.Status, msg)
}

func (p *pusher) print(r Result) {
	if err := p.out.Encode(r); err != nil {
		fmt.Fprintf(p.stderr, "transfer push: writing result: %v\n", err)
	}
}
