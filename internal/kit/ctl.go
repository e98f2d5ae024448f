package kit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"
)

// runCtl implements `<binary> ctl COMMAND [ARGS] --addr HOST:PORT`.
func runCtl(ctx context.Context, spec Spec, args []string, stdio IO, env func(string) (string, bool)) int {
	fs := pflag.NewFlagSet(spec.Name+" ctl", pflag.ContinueOnError)
	fs.SetOutput(stdio.Err)
	addr := fs.String("addr", spec.Listen, "the daemon's HTTP address, HOST:PORT (env OPSKIT_ADDR)")
	token := fs.String("token", "", "admin bearer token (env OPSKIT_ADMIN_TOKEN); prefer --token-file")
	tokenFile := fs.String("token-file", "", "file holding the admin bearer token")
	timeout := fs.Duration("timeout", 30*time.Second, "how long to wait for the answer")
	fs.Usage = func() {
		fmt.Fprintf(stdio.Err, "Usage: %s ctl COMMAND [ARGS] [flags]\n\nCommands:\n"+
			"  loglevel LEVEL   set the log level (debug, info, warn, error)\n"+
			"  reload           reload configuration (as SIGHUP)\n"+
			"  stop             stop gracefully (as SIGTERM)\n"+
			"  health           print /healthz and /readyz; exit 1 unless ready\n"+
			"  NAME [ARGS]      a command of this daemon, POSTed to /admin/NAME\n\nFlags:\n%s", spec.Name, fs.FlagUsages())
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return ExitOK
		}
		return ExitUsage
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return ExitUsage
	}
	if !fs.Changed("addr") {
		if v, ok := env("OPSKIT_ADDR"); ok {
			*addr = v
		}
	}
	tok := *token
	if *tokenFile != "" {
		b, err := os.ReadFile(*tokenFile)
		if err != nil {
			fmt.Fprintf(stdio.Err, "%s ctl: %v\n", spec.Name, err)
			return ExitUsage
		}
		tok = strings.TrimSpace(string(b))
	} else if tok == "" {
		tok, _ = env("OPSKIT_ADMIN_TOKEN")
	}
	base := *addr
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	client := &http.Client{}

	cmd, rest := fs.Arg(0), fs.Args()[1:]
	switch cmd {
	case "health":
		code := ExitOK
		for _, path := range []string{"/healthz", "/readyz"} {
			status, body, err := ctlDo(ctx, client, http.MethodGet, base+path, "", nil)
			if err != nil {
				fmt.Fprintf(stdio.Err, "%s ctl: %v\n", spec.Name, err)
				return ExitFailure
			}
			fmt.Fprintf(stdio.Out, "%s %d %s\n", path, status, strings.TrimSpace(body))
			if status != http.StatusOK {
				code = ExitFailure
			}
		}
		return code
	case "loglevel":
		if len(rest) != 1 {
			fmt.Fprintf(stdio.Err, "%s ctl loglevel: give one level: debug, info, warn or error\n", spec.Name)
			return ExitUsage
		}
	case "reload", "stop":
		if len(rest) != 0 {
			fmt.Fprintf(stdio.Err, "%s ctl %s takes no arguments\n", spec.Name, cmd)
			return ExitUsage
		}
	}
	form := url.Values{"arg": rest}
	status, body, err := ctlDo(ctx, client, http.MethodPost, base+"/admin/"+url.PathEscape(cmd), tok, form)
	if err != nil {
		fmt.Fprintf(stdio.Err, "%s ctl: %v\n", spec.Name, err)
		return ExitFailure
	}
	if status/100 != 2 {
		fmt.Fprintf(stdio.Err, "%s ctl %s: %d %s\n", spec.Name, cmd, status, strings.TrimSpace(body))
		return ExitFailure
	}
	io.WriteString(stdio.Out, body)
	return ExitOK
}

func ctlDo(ctx context.Context, c *http.Client, method, u, token string, form url.Values) (int, string, error) {
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return 0, "", err
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	return resp.StatusCode, string(b), err
}
