// Package cli holds alarm's pipe subcommands: `alarm send` posts alerts
// read as JSON lines to an alarm (or any Alertmanager), `alarm history`
// prints the event history as JSON lines.
package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/opskit/opskit/alarm/matcher"
	"github.com/opskit/opskit/internal/jsonl"
)

// Exit codes, as every opskit subcommand uses them.
const (
	ExitOK      = 0
	ExitFailure = 1
	ExitUsage   = 2
)

const sendUsage = `Usage: alarm send [flags] < alerts.jsonl

Reads alerts on stdin, one JSON object per line in the Alertmanager v2 form
({"labels":{...},"annotations":{...},"startsAt":...,"endsAt":...}; a line may
also be a JSON array of them), and posts them in batches to
http://ADDR/api/v2/alerts. Prints one JSON line per request:
{"sent":N,"accepted":N,"rejected":[{"line":L,"error":"..."}]}.
Exits 0 when everything was accepted, 1 when anything was refused or a
request failed, 2 on bad usage.

Flags:
`

// SendResult is the line printed per request.
type SendResult struct {
	Sent     int            `json:"sent"`
	Accepted int            `json:"accepted"`
	Rejected []LineRejected `json:"rejected,omitempty"`
	Error    string         `json:"error,omitempty"`
}

// LineRejected is one refused alert, by input line.
type LineRejected struct {
	Line  int    `json:"line"`
	Error string `json:"error"`
}

// Send is `alarm send`.
func Send(ctx context.Context, args []string, in io.Reader, out, errw io.Writer) int {
	fs := pflag.NewFlagSet("alarm send", pflag.ContinueOnError)
	fs.SetOutput(errw)
	addr := fs.String("addr", "127.0.0.1:7140", "alarm (or Alertmanager) HOST:PORT")
	batch := fs.Int("batch", 500, "alerts per request")
	timeout := fs.Duration("timeout", 30*time.Second, "time limit of one request")
	fs.Usage = func() { fmt.Fprint(errw, sendUsage, fs.FlagUsages()) }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return ExitOK
		}
		return ExitUsage
	}
	if fs.NArg() > 0 || *batch <= 0 {
		fs.Usage()
		return ExitUsage
	}
	client := &http.Client{Timeout: *timeout}
	enc := json.NewEncoder(out)
	r := jsonl.NewReader(in, 0)
	var pending []json.RawMessage
	var lines []int
	failed := false
	flush := func() {
		if len(pending) == 0 {
			return
		}
		res := post(ctx, client, *addr, pending, lines)
		enc.Encode(res)
		if res.Error != "" || len(res.Rejected) > 0 {
			failed = true
		}
		pending, lines = pending[:0], lines[:0]
	}
	for {
		raw, err := r.Raw()
		if err == io.EOF {
			break
		}
		if err != nil {
			enc.Encode(SendResult{Error: err.Error()})
			failed = true
			if errors.Is(err, jsonl.ErrLineTooLong) {
				continue
			}
			break
		}
		switch raw[0] {
		case '[':
			var arr []json.RawMessage
			if err := json.Unmarshal(raw, &arr); err != nil {
				enc.Encode(SendResult{Rejected: []LineRejected{{r.Line(), err.Error()}}})
				failed = true
				continue
			}
			for _, a := range arr {
				pending = append(pending, a)
				lines = append(lines, r.Line())
				if len(pending) >= *batch {
					flush()
				}
			}
		case '{':
			if !json.Valid(raw) {
				enc.Encode(SendResult{Rejected: []LineRejected{{r.Line(), "not valid JSON"}}})
				failed = true
				continue
			}
			pending = append(pending, append(json.RawMessage(nil), raw...))
			lines = append(lines, r.Line())
		default:
			enc.Encode(SendResult{Rejected: []LineRejected{{r.Line(), "want a JSON object or array"}}})
			failed = true
			continue
		}
		if len(pending) >= *batch {
			flush()
		}
	}
	flush()
	if failed {
		return ExitFailure
	}
	return ExitOK
}

func post(ctx context.Context, client *http.Client, addr string, alerts []json.RawMessage, lines []int) SendResult {
	res := SendResult{Sent: len(alerts)}
	body, _ := json.Marshal(alerts)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/api/v2/alerts", bytes.NewReader(body))
	if err != nil {
		res.Error = err.Error()
		return res
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode == http.StatusOK {
		res.Accepted = len(alerts)
		return res
	}
	// alarm names the refused alerts by index; anything else refused it all.
	var detail struct {
		Accepted int `json:"accepted"`
		Rejected []struct {
			Index int    `json:"index"`
			Error string `json:"error"`
		} `json:"rejected"`
	}
	if json.Unmarshal(b, &detail) == nil && len(detail.Rejected) > 0 {
		res.Accepted = detail.Accepted
		for _, r := range detail.Rejected {
			line := 0
			if r.Index >= 0 && r.Index < len(lines) {
				line = lines[r.Index]
			}
			res.Rejected = append(res.Rejected, LineRejected{line, r.Error})
		}
		return res
	}
	res.Error = fmt.Sprintf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(b)))
	return res
}

const historyUsage = `Usage: alarm history [flags]

Prints alarm's event history (firing, resolved, grouped, silenced,
inhibited, notification_queued, notified, dead_lettered, silence_set) as
JSON lines, oldest first.

Flags:
`

// History is `alarm history`.
func History(ctx context.Context, args []string, out, errw io.Writer) int {
	fs := pflag.NewFlagSet("alarm history", pflag.ContinueOnError)
	fs.SetOutput(errw)
	addr := fs.String("addr", "127.0.0.1:7140", "alarm HOST:PORT")
	since := fs.String("since", "24h", "look back this far (24h, 7d) or from an RFC 3339 time")
	match := fs.StringArray("match", nil, "label matchers, e.g. 'endpoint=web01' (repeatable; all must match)")
	limit := fs.Int("limit", 10000, "print at most the newest N events")
	fs.Usage = func() { fmt.Fprint(errw, historyUsage, fs.FlagUsages()) }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return ExitOK
		}
		return ExitUsage
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return ExitUsage
	}
	q := url.Values{"since": {*since}, "limit": {fmt.Sprint(*limit)}}
	for _, m := range *match {
		if _, err := matcher.Parse(m); err != nil {
			fmt.Fprintf(errw, "alarm history: --match: %v\n", err)
			return ExitUsage
		}
		q.Add("match", m)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+*addr+"/api/alarm/history?"+q.Encode(), nil)
	if err != nil {
		fmt.Fprintf(errw, "alarm history: %v\n", err)
		return ExitUsage
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Fprintf(errw, "alarm history: %v\n", err)
		return ExitFailure
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		fmt.Fprintf(errw, "alarm history: HTTP %d: %s\n", resp.StatusCode, strings.TrimSpace(string(b)))
		if resp.StatusCode == http.StatusBadRequest {
			return ExitUsage
		}
		return ExitFailure
	}
	if _, err := io.Copy(out, resp.Body); err != nil {
		fmt.Fprintf(errw, "alarm history: %v\n", err)
		return ExitFailure
	}
	return ExitOK
}
