// Package send is the `filefly send` and `filefly status` commands: upload
// a file to the server (unless it already holds it), start a transfer, and
// with --wait follow it, printing JSON lines of progress on stdout and a
// final table on stderr.
package send

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/opskit/opskit/filefly/api"
	"github.com/opskit/opskit/filefly/piece"
	"github.com/opskit/opskit/filefly/throttle"
	"github.com/opskit/opskit/internal/jsonl"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// Progress is one JSON line of `send --wait`: a host's state when it changed.
type Progress struct {
	Time     time.Time `json:"time"`
	Transfer string    `json:"transfer"`
	Host     string    `json:"host"`
	State    string    `json:"state"`
	Bytes    int64     `json:"bytes"`
	Size     int64     `json:"size"`
	Rate     float64   `json:"rate"`          // bytes/s
	ETA      float64   `json:"eta,omitempty"` // seconds
	Source   string    `json:"source,omitempty"`
	Error    string    `json:"error,omitempty"`
}

type client struct {
	base string
	http *http.Client
}

func newClient(addr string) *client {
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	return &client{base: strings.TrimRight(addr, "/"), http: &http.Client{Transport: &http.Transport{Proxy: nil}}}
}

func (c *client) do(ctx context.Context, method, path string, body io.Reader, out any) (int, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return 0, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, err
	}
	if resp.StatusCode/100 != 2 {
		return resp.StatusCode, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(b)))
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: %w", method, path, err)
		}
	}
	return resp.StatusCode, nil
}

// ParseHosts reads --hosts: a comma or space separated list, or (given as
// @FILE or the name of an existing file) a file of hosts, one or more a
// line, # starting a comment.
func ParseHosts(v string) ([]string, error) {
	text := v
	name, isFile := strings.CutPrefix(v, "@")
	if !isFile {
		if info, err := os.Stat(v); err == nil && info.Mode().IsRegular() {
			isFile = true
		}
	}
	if isFile {
		b, err := os.ReadFile(name)
		if err != nil {
			return nil, fmt.Errorf("--hosts: %w", err)
		}
		text = string(b)
	}
	var hosts []string
	for _, line := range strings.Split(text, "\n") {
		line, _, _ = strings.Cut(line, "#")
		for _, f := range strings.FieldsFunc(line, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\r' }) {
			hosts = append(hosts, f)
		}
	}
	return hosts, nil
}

// Main runs `filefly send`.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("filefly send", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		server, hostsArg, mode, rateArg string
		req                             api.SendRequest
		postTimeout, timeout, interval  time.Duration
		wait                            bool
	)
	fs.StringVar(&server, "server", "127.0.0.1:7180", "filefly server address")
	fs.StringVar(&req.App, "app", "", "send to the live hosts of this app (from the server's configd)")
	fs.StringVar(&req.Env, "env", "", "with --app: only hosts labelled env=ENV")
	fs.StringVar(&hostsArg, "hosts", "", "agents as host[:port],... or @FILE (port 7181 when omitted)")
	fs.StringVar(&req.Dest, "dest", "", "absolute destination path on each host (required)")
	fs.StringVar(&mode, "mode", "0644", "file mode (octal)")
	fs.StringVar(&req.Owner, "owner", "", "owner as USER or USER:GROUP (the agent must be allowed to chown)")
	fs.StringVar(&req.PostCmd, "post-cmd", "", "command run with sh -c on each host once the file is in place")
	fs.DurationVar(&postTimeout, "post-cmd-timeout", time.Minute, "deadline of --post-cmd")
	fs.StringVar(&rateArg, "rate", "", "cap of each host's download for this transfer, e.g. 50MB/s")
	fs.StringVar(&req.Topology, "topology", api.TopologyTree, "relay layout: tree (two stripe trees: even and odd pieces, each host relays in one), tree1 (a single tree), chain or star")
	fs.IntVar(&req.Fanout, "fanout", 2, "children per node of a tree")
	fs.DurationVar(&timeout, "timeout", time.Hour, "deadline of the whole transfer: hosts not done by then are reported late")
	fs.BoolVar(&wait, "wait", false, "follow the transfer: JSON lines of progress, a final table, exit 1 if any host failed")
	fs.DurationVar(&interval, "interval", time.Second, "with --wait: longest time between progress lines")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() != 1 || req.Dest == "" || (req.App == "") == (hostsArg == "") {
		fmt.Fprintln(stderr, "usage: filefly send FILE --dest PATH (--app APP | --hosts LIST) [--wait]")
		return exitUsage
	}
	m, err := strconv.ParseUint(mode, 8, 32)
	if err != nil || m > 0o7777 {
		fmt.Fprintf(stderr, "filefly send: --mode %q: want octal such as 0644\n", mode)
		return exitUsage
	}
	req.Mode = uint32(m)
	if req.Rate, err = throttle.ParseRate(rateArg); err != nil {
		fmt.Fprintf(stderr, "filefly send: --rate: %v\n", err)
		return exitUsage
	}
	if hostsArg != "" {
		if req.Hosts, err = ParseHosts(hostsArg); err != nil {
			fmt.Fprintf(stderr, "filefly send: %v\n", err)
			return exitUsage
		}
	}
	req.PostCmdTimeout, req.Timeout = api.Duration(postTimeout), api.Duration(timeout)
	c := newClient(server)
	sum, err := upload(ctx, c, fs.Arg(0))
	if err != nil {
		fmt.Fprintf(stderr, "filefly send: %v\n", err)
		return exitFailure
	}
	req.SHA256 = sum
	var t api.Transfer
	if _, err := c.do(ctx, http.MethodPost, "/v1/transfers", jsonBody(req), &t); err != nil {
		fmt.Fprintf(stderr, "filefly send: %v\n", err)
		return exitFailure
	}
	fmt.Fprintf(stderr, "transfer %s: %s (%d bytes, %d pieces of %d) to %d hosts\n", t.ID, fs.Arg(0), t.Manifest.Size, t.Manifest.Count(), t.Manifest.PieceSize, len(t.Hosts))
	if !wait {
		jsonl.NewWriter(stdout).Write(map[string]any{"transfer": t.ID, "sha256": sum, "hosts": len(t.Hosts)})
		return exitOK
	}
	return follow(ctx, c, t.ID, interval, stdout, stderr)
}

func jsonBody(v any) io.Reader {
	b, _ := json.Marshal(v)
	return bytes.NewReader(b)
}

// upload hashes the file and uploads it unless the server holds it.
func upload(ctx context.Context, c *client, path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	sum, size, err := piece.HashFile(f)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	code, err := c.do(ctx, http.MethodGet, "/v1/blobs/"+sum, nil, nil)
	if err == nil {
		return sum, nil
	}
	if code != http.StatusNotFound {
		return "", err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, c.base+"/v1/blobs/"+sum, f)
	if err != nil {
		return "", err
	}
	req.ContentLength = size
	resp, err := c.http.Do(req)
	if err != nil {
		return "", fmt.Errorf("upload: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(resp.Body)
		return "", fmt.Errorf("upload: %s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	return sum, nil
}

// follow long-polls the transfer until it is done.
func follow(ctx context.Context, c *client, id string, interval time.Duration, stdout, stderr io.Writer) int {
	out := jsonl.NewWriter(stdout)
	last := map[string]api.HostStatus{}
	lastPrint := time.Time{}
	for {
		var t api.Transfer
		_, err := c.do(ctx, http.MethodGet, "/v1/transfers/"+id+"?wait="+interval.String(), nil, &t)
		if err != nil {
			if ctx.Err() != nil {
				return exitFailure
			}
			fmt.Fprintf(stderr, "filefly send: %v (retrying)\n", err)
			select {
			case <-ctx.Done():
				return exitFailure
			case <-time.After(interval):
			}
			continue
		}
		// A line per host whose state or bytes changed, and a line per
		// running host at least every interval.
		beat := time.Since(lastPrint) >= interval
		for _, h := range t.Hosts {
			prev, seen := last[h.Host]
			if seen && prev.State == h.State && prev.Bytes == h.Bytes && !(beat && !api.Terminal(h.State)) {
				continue
			}
			last[h.Host] = h
			out.Write(Progress{Time: time.Now().UTC(), Transfer: id, Host: h.Host, State: h.State, Bytes: h.Bytes,
				Size: t.Manifest.Size, Rate: h.Rate, ETA: h.ETA, Source: h.Source, Error: h.Error})
		}
		if beat {
			lastPrint = time.Now()
		}
		if t.Done {
			return finalTable(t, stderr)
		}
	}
}

// finalTable writes one row per host and returns the exit code.
func finalTable(t api.Transfer, w io.Writer) int {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tSTATE\tBYTES\tSECONDS\tSHA256\tPOST-CMD\tERROR")
	var failed []string
	for _, h := range t.Hosts {
		secs := "-"
		if !h.Finished.IsZero() && !h.Started.IsZero() {
			secs = fmt.Sprintf("%.2f", h.Finished.Sub(h.Started).Seconds())
		}
		verified := "-"
		if h.SHA256Verified {
			verified = "verified"
		}
		post := "-"
		if h.PostCmdExit != nil {
			post = strconv.Itoa(*h.PostCmdExit)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\n", h.Host, h.State, h.Bytes, secs, verified, post, h.Error)
		if !api.OK(h.State) {
			failed = append(failed, h.Host)
		}
	}
	tw.Flush()
	if len(failed) > 0 {
		fmt.Fprintf(w, "transfer %s: %d of %d hosts failed: %s\n", t.ID, len(failed), len(t.Hosts), strings.Join(failed, " "))
		return exitFailure
	}
	fmt.Fprintf(w, "transfer %s: all %d hosts hold the file\n", t.ID, len(t.Hosts))
	return exitOK
}

// Status runs `filefly status ID`: the transfer as one JSON line on
// stdout, the table on stderr; exit 1 if a host failed.
func Status(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("filefly status", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	server := fs.String("server", "127.0.0.1:7180", "filefly server address")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	c := newClient(*server)
	if fs.NArg() == 0 {
		var ts []api.Transfer
		if _, err := c.do(ctx, http.MethodGet, "/v1/transfers", nil, &ts); err != nil {
			fmt.Fprintf(stderr, "filefly status: %v\n", err)
			return exitFailure
		}
		w := jsonl.NewWriter(stdout)
		for _, t := range ts {
			w.Write(t)
		}
		return exitOK
	}
	var t api.Transfer
	if _, err := c.do(ctx, http.MethodGet, "/v1/transfers/"+fs.Arg(0), nil, &t); err != nil {
		fmt.Fprintf(stderr, "filefly status: %v\n", err)
		return exitFailure
	}
	jsonl.NewWriter(stdout).Write(t)
	code := finalTable(t, stderr)
	if !t.Done {
		fmt.Fprintf(stderr, "transfer %s is still running\n", t.ID)
		return exitOK
	}
	return code
}
