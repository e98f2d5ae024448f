// Command filefly sends a file to every host of an app, relayed host to
// host: `filefly` (or `filefly server`) runs the server, `filefly agent`
// (or `filefly --mode agent`) runs the per-host agent, and `filefly send`
// starts a transfer. See filefly/README.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/opskit/opskit/configd/client"
	"github.com/opskit/opskit/filefly/agent"
	"github.com/opskit/opskit/filefly/confine"
	"github.com/opskit/opskit/filefly/send"
	"github.com/opskit/opskit/filefly/server"
	"github.com/opskit/opskit/filefly/throttle"
	"github.com/opskit/opskit/internal/kit"
)

const (
	roleServer = "server"
	roleAgent  = "agent"
)

func main() {
	args, role := pickRole(os.Args[1:], os.LookupEnv)
	var spec kit.Spec
	if role == roleAgent {
		var c agentConfig
		spec = c.spec()
	} else {
		var c serverConfig
		spec = c.spec()
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := kit.Run(ctx, spec, args, kit.IO{In: os.Stdin, Out: os.Stdout, Err: os.Stderr}, os.LookupEnv, cancel)
	cancel()
	os.Exit(code)
}

// pickRole finds the role: a leading `server` or `agent` word (removed),
// else --mode, else OPSKIT_MODE; the server by default. Subcommands
// (send, status, ctl) are the server's.
func pickRole(args []string, env func(string) (string, bool)) ([]string, string) {
	if len(args) > 0 && (args[0] == roleServer || args[0] == roleAgent) {
		return args[1:], args[0]
	}
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		return args, roleServer // a subcommand such as send, whose --mode is the file mode
	}
	for i, a := range args {
		if a == "--" {
			break
		}
		if v, ok := strings.CutPrefix(a, "--mode="); ok {
			return args, v
		}
		if a == "--mode" && i+1 < len(args) {
			return args, args[i+1]
		}
	}
	if v, ok := env("OPSKIT_MODE"); ok && v != "" {
		return args, v
	}
	return args, roleServer
}

func modeFlag(fs *pflag.FlagSet, role string) {
	fs.String("mode", role, "what this process runs: server (default port 7180) or agent (7181); 'filefly agent' is the same as --mode agent")
}

func checkMode(fs *pflag.FlagSet, want string) error {
	if got, _ := fs.GetString("mode"); got != want {
		return fmt.Errorf("--mode %q: want server or agent", got)
	}
	return nil
}

func readToken(file string) ([]byte, error) {
	if file == "" {
		return nil, nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return nil, fmt.Errorf("%s is empty", file)
	}
	return []byte(tok), nil
}

type serverConfig struct {
	fs             *pflag.FlagSet
	url            string
	configd        []string
	configdToken   string
	agentPort      int
	agentTokenFile string
	egressRate     string
	defaultTimeout time.Duration
	lostAfter      time.Duration
}

func (c *serverConfig) spec() kit.Spec {
	return kit.Spec{
		Name:    "filefly",
		Listen:  "127.0.0.1:7180",
		Summary: "file distribution to every host of an app, relayed host to host (this is the server; `filefly agent` runs the agent)",
		Flags: func(fs *pflag.FlagSet) {
			c.fs = fs
			modeFlag(fs, roleServer)
			fs.StringVar(&c.url, "url", "", "base URL agents reach this server at (default http://<listen address>)")
			fs.StringSliceVar(&c.configd, "configd", nil, "configd servers (host:port,...) whose naming service lists an app's hosts for send --app")
			fs.StringVar(&c.configdToken, "configd-token-file", "", "file holding a bearer token for configd")
			fs.IntVar(&c.agentPort, "agent-port", 7181, "agent port added to hosts given without one")
			fs.StringVar(&c.agentTokenFile, "agent-token-file", "", "file holding the agents' shared token: jobs are signed with it (HMAC-SHA256) and agents must present it")
			fs.StringVar(&c.egressRate, "egress-rate", "", "cap of the server's piece uploads, e.g. 100MB/s (empty = none)")
			fs.DurationVar(&c.lostAfter, "lost-after", 30*time.Second, "a running host silent this long is probed; if its agent does not answer it is reported failed (lost)")
			fs.DurationVar(&c.defaultTimeout, "default-timeout", time.Hour, "deadline of a transfer whose send names none")
		},
		Start: c.start,
		Commands: []kit.Command{
			{Name: "send", Summary: "send FILE to hosts (--app or --hosts) at --dest; --wait follows it (JSON lines, final table, exit 1 on any failure)",
				Run: func(ctx context.Context, args []string, io kit.IO) int { return send.Main(ctx, args, io.Out, io.Err) }},
			{Name: "status", Summary: "status [ID]: a transfer (or all) as JSON lines, with the per-host table on stderr",
				Run: func(ctx context.Context, args []string, io kit.IO) int { return send.Status(ctx, args, io.Out, io.Err) }},
		},
	}
}

func (c *serverConfig) start(ctx context.Context, d *kit.Daemon) error {
	if err := checkMode(c.fs, roleServer); err != nil {
		return err
	}
	token, err := readToken(c.agentTokenFile)
	if err != nil {
		return fmt.Errorf("--agent-token-file: %w", err)
	}
	rate, err := throttle.ParseRate(c.egressRate)
	if err != nil {
		return fmt.Errorf("--egress-rate: %w", err)
	}
	url := c.url
	if url == "" {
		url = "http://" + d.Addr().String()
	}
	opts := server.Options{
		DataDir: d.DataDir, URL: strings.TrimRight(url, "/"), Token: token, AgentPort: c.agentPort,
		EgressRate: rate, DefaultTimeout: c.defaultTimeout, LostAfter: c.lostAfter, Log: d.Log, Metrics: d.Metrics,
	}
	if len(c.configd) > 0 {
		ctoken, err := readToken(c.configdToken)
		if err != nil {
			return fmt.Errorf("--configd-token-file: %w", err)
		}
		remote, err := client.NewRemote(c.configd, client.RemoteOptions{Token: string(ctoken), User: "filefly",
			HTTPClient: &http.Client{Timeout: 10 * time.Second}})
		if err != nil {
			return fmt.Errorf("--configd: %w", err)
		}
		opts.Hosts = server.ConfigdHosts{Remote: remote}
	}
	s := server.New(opts)
	if err := s.Start(ctx); err != nil {
		return err
	}
	s.Register(d.Mux)
	d.OnStop("transfers", func(context.Context) error { s.Wait(); return nil })
	return nil
}

type agentConfig struct {
	fs             *pflag.FlagSet
	roots          []string
	destPrefix     string
	tokenFile      string
	stall          time.Duration
	reportInterval time.Duration
	ingress        string
	egress         string
	corruptPiece   int
}

func (c *agentConfig) spec() kit.Spec {
	return kit.Spec{
		Name:    "filefly",
		Kind:    "filefly-agent",
		Listen:  "127.0.0.1:7181",
		Summary: "file distribution relayed host to host (this is the agent; `filefly` alone runs the server)",
		Flags: func(fs *pflag.FlagSet) {
			c.fs = fs
			modeFlag(fs, roleAgent)
			fs.StringSliceVar(&c.roots, "allow-root", nil, "directory destinations must lie under, after resolving symlinks (repeatable; required)")
			fs.StringVar(&c.destPrefix, "dest-prefix", "", "directory prepended to every destination before the --allow-root check (several agents on one machine, or a mounted tree)")
			fs.StringVar(&c.tokenFile, "token-file", "", "file holding the agents' shared token (the server's --agent-token-file): jobs must be signed with it")
			fs.DurationVar(&c.stall, "stall-timeout", 5*time.Second, "a source silent this long mid-piece (or with no progress for 3× this) is routed around")
			fs.DurationVar(&c.reportInterval, "report-interval", time.Second, "how often progress goes to the server")
			fs.StringVar(&c.ingress, "ingress-rate", "", "cap of this agent's downloads, e.g. 50MB/s (empty = none)")
			fs.StringVar(&c.egress, "egress-rate", "", "cap of this agent's uploads to its children, e.g. 50MB/s (empty = none)")
			fs.IntVar(&c.corruptPiece, "test-corrupt-piece", -1, "test hook: serve this piece corrupted once per transfer")
			fs.MarkHidden("test-corrupt-piece")
		},
		Start: c.start,
	}
}

func (c *agentConfig) start(ctx context.Context, d *kit.Daemon) error {
	if err := checkMode(c.fs, roleAgent); err != nil {
		return err
	}
	if len(c.roots) == 0 {
		return errors.New("--allow-root is required: give the directories files may be written under")
	}
	roots, err := confine.NewRoots(c.roots)
	if err != nil {
		return err
	}
	token, err := readToken(c.tokenFile)
	if err != nil {
		return fmt.Errorf("--token-file: %w", err)
	}
	in, err := throttle.ParseRate(c.ingress)
	if err != nil {
		return fmt.Errorf("--ingress-rate: %w", err)
	}
	out, err := throttle.ParseRate(c.egress)
	if err != nil {
		return fmt.Errorf("--egress-rate: %w", err)
	}
	a := agent.New(agent.Options{
		DataDir: d.DataDir, Roots: roots, DestPrefix: c.destPrefix, Token: token, StallTimeout: c.stall, ReportInterval: c.reportInterval,
		IngressRate: in, EgressRate: out, CorruptPiece: c.corruptPiece, Log: d.Log, Metrics: d.Metrics,
	})
	if err := a.Start(ctx); err != nil {
		return err
	}
	a.Register(ctx, d.Mux)
	d.OnStop("jobs", func(context.Context) error { a.Wait(); return nil })
	return nil
}
