// Package kit is the daemon kit every opskit binary is built on: flags (also
// from OPSKIT_<FLAG> variables and a strict YAML config file), logging, the
// HTTP server with /metrics, /healthz, /readyz and /admin/*, signals,
// graceful shutdown and the `ctl` subcommand.
//
// A daemon's main.go describes itself with a Spec and calls Main:
//
//	func main() {
//		var cfg config
//		kit.Main(kit.Spec{
//			Name: "transfer", Listen: "127.0.0.1:7120",
//			Summary: "metrics intake, storage and query",
//			Flags: func(fs *pflag.FlagSet) { fs.StringVar(&cfg.Retention, "retention", ...) },
//			Start: func(ctx context.Context, d *kit.Daemon) error { ... },
//		})
//	}
package kit

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/spf13/pflag"

	"github.com/opskit/opskit/internal/buildinfo"
	"github.com/opskit/opskit/internal/dye"
)

// Exit codes shared by every binary and subcommand.
const (
	ExitOK      = 0
	ExitFailure = 1
	ExitUsage   = 2
)

// Spec describes one daemon binary.
type Spec struct {
	// Name is the binary and daemon name, e.g. "transfer".
	Name string
	// Kind names the daemon in configd's fleet view when one binary runs
	// several roles (e.g. "filefly-agent"); empty means Name.
	Kind string
	// Listen is the default HTTP listen address, e.g. "127.0.0.1:7120".
	// Defaults are loopback so that a daemon started with no flags exposes
	// nothing and needs no admin token.
	Listen string
	// Summary is one line saying what the daemon does.
	Summary string
	// Pending, when set, says the daemon's own function is not built yet:
	// it then serves only the kit's endpoints, and --help says so.
	Pending string
	// Flags registers the daemon's own flags.
	Flags func(fs *pflag.FlagSet)
	// Sections names top-level config-file keys the daemon reads itself
	// with DecodeSection (they are not flags).
	Sections []string
	// Start wires the daemon once flags are parsed. It must not block:
	// background work goes in d.Go. The ctx ends when the daemon stops.
	Start func(ctx context.Context, d *Daemon) error
	// Commands are subcommands besides `ctl`, e.g. `transfer push`.
	Commands []Command
}

// Command is a subcommand: `<binary> NAME args...`. Run gets the arguments
// after NAME and returns the exit code (ExitOK, ExitFailure, ExitUsage).
type Command struct {
	Name    string
	Summary string
	Run     func(ctx context.Context, args []string, stdio IO) int
}

// IO is a subcommand's standard streams.
type IO struct {
	In  io.Reader
	Out io.Writer
	Err io.Writer
}

// Main runs the binary described by spec with os.Args and exits.
func Main(spec Spec) {
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// Subcommands get a context that ends on Ctrl-C; the daemon handles its
	// own signals and so resets these.
	code := Run(ctx, spec, os.Args[1:], IO{In: os.Stdin, Out: os.Stdout, Err: os.Stderr}, os.LookupEnv, cancel)
	cancel()
	os.Exit(code)
}

// Run is Main without the process exit, for tests. release is called when a
// daemon takes over signal handling (it may be nil).
func Run(ctx context.Context, spec Spec, args []string, stdio IO, env func(string) (string, bool), release func()) int {
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		if args[0] == "ctl" {
			return runCtl(ctx, spec, args[1:], stdio, env)
		}
		for _, c := range spec.Commands {
			if c.Name == args[0] {
				return c.Run(ctx, args[1:], stdio)
			}
		}
		if args[0] != "help" {
			fmt.Fprintf(stdio.Err, "%s: unknown command %q (see %s --help)\n", spec.Name, args[0], spec.Name)
			return ExitUsage
		}
		args = []string{"--help"}
	}
	opts, fs, err := parseFlags(spec, args, env, stdio)
	if errors.Is(err, pflag.ErrHelp) {
		return ExitOK
	}
	if err != nil {
		fmt.Fprintf(stdio.Err, "%s: %v\n", spec.Name, err)
		return ExitUsage
	}
	if opts.version {
		fmt.Fprintln(stdio.Out, buildinfo.String(spec.Name))
		return ExitOK
	}
	_ = fs
	if release != nil {
		release()
	}
	return runDaemon(spec, opts, stdio)
}

// options are the kit's own flags.
type options struct {
	listen          string
	dataDir         string
	configFile      string
	logLevel        string
	logFormat       string
	adminToken      string
	adminTokenFile  string
	shutdownTimeout time.Duration
	pprof           bool
	version         bool
	fleet           fleetOptions
}

func parseFlags(spec Spec, args []string, env func(string) (string, bool), stdio IO) (*options, *pflag.FlagSet, error) {
	o := &options{}
	fs := pflag.NewFlagSet(spec.Name, pflag.ContinueOnError)
	fs.SetOutput(stdio.Err)
	fs.SortFlags = false
	fs.StringVar(&o.listen, "listen", spec.Listen, "HTTP listen address (metrics, health, admin and the daemon's API)")
	fs.StringVar(&o.dataDir, "data-dir", filepath.Join("var", spec.Name), "directory for everything the daemon keeps on disk")
	fs.StringVar(&o.configFile, "config", "", "YAML config file; its keys are flag names (and the daemon's own sections)")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn, error (changeable at run time with ctl loglevel)")
	fs.StringVar(&o.logFormat, "log-format", "text", "log format on stderr: text or json")
	fs.StringVar(&o.adminToken, "admin-token", "", "bearer token for /admin/* (required when --listen is not loopback); prefer --admin-token-file")
	fs.StringVar(&o.adminTokenFile, "admin-token-file", "", "file holding the admin bearer token")
	fs.DurationVar(&o.shutdownTimeout, "shutdown-timeout", 10*time.Second, "deadline for a graceful stop (flushes and closes)")
	fs.BoolVar(&o.pprof, "pprof", false, "serve /debug/pprof/ (behind the admin token)")
	fs.BoolVar(&o.version, "version", false, "print version, commit and Go version, then exit")
	if spec.Flags != nil {
		spec.Flags(fs)
	}
	addFleetFlags(fs, &o.fleet)
	// Help that was asked for goes to stdout; help after a usage error to stderr.
	helpOut := stdio.Err
	for _, a := range args {
		if a == "-h" || a == "--help" {
			helpOut = stdio.Out
		}
	}
	fs.Usage = func() { usage(spec, fs, helpOut) }
	if err := fs.Parse(args); err != nil {
		return nil, nil, err
	}
	if fs.NArg() > 0 {
		return nil, nil, fmt.Errorf("unexpected argument %q (flags only; see --help)", fs.Arg(0))
	}
	fromCmdline := map[string]bool{}
	fs.Visit(func(f *pflag.Flag) { fromCmdline[f.Name] = true })
	if !fromCmdline["config"] {
		if v, ok := env(EnvName("config")); ok {
			o.configFile = v
		}
	}
	if o.configFile != "" {
		root, err := readConfigFile(o.configFile)
		if err != nil {
			return nil, nil, err
		}
		sections := map[string]bool{}
		for _, s := range spec.Sections {
			sections[s] = true
		}
		if err := applyConfig(fs, o.configFile, root, fromCmdline, sections); err != nil {
			return nil, nil, err
		}
	}
	if err := applyEnv(fs, fromCmdline, env); err != nil {
		return nil, nil, err
	}
	if err := o.fleet.resolve(); err != nil {
		return nil, nil, err
	}
	if _, err := parseLevel(o.logLevel); err != nil {
		return nil, nil, fmt.Errorf("--log-level: %w", err)
	}
	if o.logFormat != "text" && o.logFormat != "json" {
		return nil, nil, fmt.Errorf("--log-format %q: want text or json", o.logFormat)
	}
	if o.adminTokenFile != "" {
		b, err := os.ReadFile(o.adminTokenFile)
		if err != nil {
			return nil, nil, fmt.Errorf("--admin-token-file: %w", err)
		}
		o.adminToken = strings.TrimSpace(string(b))
		if o.adminToken == "" {
			return nil, nil, fmt.Errorf("--admin-token-file %s is empty", o.adminTokenFile)
		}
	}
	return o, fs, nil
}

func usage(spec Spec, fs *pflag.FlagSet, w io.Writer) {
	fmt.Fprintf(w, "%s: %s\n", spec.Name, spec.Summary)
	if spec.Pending != "" {
		fmt.Fprintf(w, "\nNOT BUILT YET: %s. Until then this daemon serves only the kit's endpoints\n(/metrics, /healthz, /readyz, /admin/*).\n", spec.Pending)
	}
	fmt.Fprintf(w, "\nUsage:\n  %s %-19s  run the daemon\n", spec.Name, "[flags]")
	fmt.Fprintf(w, "  %s %-19s  send an admin command: loglevel LEVEL, reload, stop, health, or a daemon command\n", spec.Name, "ctl COMMAND [flags]")
	for _, c := range spec.Commands {
		fmt.Fprintf(w, "  %s %-19s  %s\n", spec.Name, c.Name+" [flags]", c.Summary)
	}
	fmt.Fprintf(w, "\nFlags (each also settable as OPSKIT_<FLAG>, e.g. OPSKIT_LISTEN, or as a key in --config):\n%s", fs.FlagUsages())
}

// Daemon is what a daemon's Start gets: its logger, metrics, HTTP mux, data
// directory and the hooks it registers.
type Daemon struct {
	Name string
	// Kind is the daemon's kind in the fleet view (Spec.Kind, else Name).
	Kind    string
	DataDir string
	Log     *slog.Logger
	// Metrics is the daemon's own metric set, served on /metrics with the
	// Go runtime and process metrics.
	Metrics *metrics.Set
	// Mux serves the daemon's API beside the kit's endpoints.
	Mux *http.ServeMux
	// ConfigFile is the --config path, "" if none.
	ConfigFile string
	// Dye holds the dye rules and trace records (see internal/dye).
	Dye *dye.Tracer

	level    *slog.LevelVar
	addr     net.Addr
	token    string
	loopback bool

	mu        sync.Mutex
	notReady  map[string]string
	reloaders []func(context.Context) error
	stoppers  []stopHook
	commands  map[string]AdminFunc
	listeners map[string]string // AdvertiseListener's, for configd
	stopCh    chan stopRequest
	wg        sync.WaitGroup
}

type stopHook struct {
	name string
	fn   func(context.Context) error
}

type stopRequest struct {
	reason string
	err    error
}

// AdminFunc runs a daemon-specific admin command. args are the words after
// the command given to `ctl` (also the form values "arg"). The result is sent
// back as JSON.
type AdminFunc func(ctx context.Context, args []string) (any, error)

// Addr is the address the HTTP server listens on.
func (d *Daemon) Addr() net.Addr { return d.addr }

// SetNotReady makes /readyz answer 503 with reason until SetReady(key).
func (d *Daemon) SetNotReady(key, reason string) {
	d.mu.Lock()
	d.notReady[key] = reason
	d.mu.Unlock()
}

// SetReady clears a SetNotReady.
func (d *Daemon) SetReady(key string) {
	d.mu.Lock()
	delete(d.notReady, key)
	d.mu.Unlock()
}

// OnReload registers a hook run on SIGHUP and /admin/reload.
func (d *Daemon) OnReload(fn func(ctx context.Context) error) {
	d.mu.Lock()
	d.reloaders = append(d.reloaders, fn)
	d.mu.Unlock()
}

// OnStop registers a flush/close hook. Hooks run in reverse order of
// registration, after the HTTP server has stopped taking requests and the
// work started with Go has returned, within --shutdown-timeout.
func (d *Daemon) OnStop(name string, fn func(ctx context.Context) error) {
	d.mu.Lock()
	d.stoppers = append(d.stoppers, stopHook{name, fn})
	d.mu.Unlock()
}

// HandleAdmin registers a daemon command served on POST /admin/NAME and
// reachable with `<binary> ctl NAME`.
func (d *Daemon) HandleAdmin(name string, fn AdminFunc) {
	d.mu.Lock()
	d.commands[name] = fn
	d.mu.Unlock()
}

// Go runs fn in the background until the daemon stops. If fn returns an
// error while the daemon runs, the daemon stops and exits 1.
func (d *Daemon) Go(ctx context.Context, name string, fn func(ctx context.Context) error) {
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		if err := fn(ctx); err != nil && ctx.Err() == nil {
			d.Fail(fmt.Errorf("%s: %w", name, err))
		}
	}()
}

// Fail stops the daemon because of err; it will exit 1.
func (d *Daemon) Fail(err error) {
	select {
	case d.stopCh <- stopRequest{reason: "failure", err: err}:
	default:
	}
}

// Stop asks the daemon to stop gracefully.
func (d *Daemon) Stop(reason string) {
	select {
	case d.stopCh <- stopRequest{reason: reason}:
	default:
	}
}

// Reload runs the reload hooks, returning the first error.
func (d *Daemon) Reload(ctx context.Context) error {
	d.mu.Lock()
	hooks := append([]func(context.Context) error(nil), d.reloaders...)
	d.mu.Unlock()
	var errs []error
	for _, h := range hooks {
		if err := h(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	err := errors.Join(errs...)
	if err != nil {
		d.Log.Error("reload failed; the previous configuration stays in force", "err", err)
	} else {
		d.Log.Info("reloaded")
	}
	return err
}

func (d *Daemon) readiness() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]string, 0, len(d.notReady))
	for k, v := range d.notReady {
		out = append(out, k+": "+v)
	}
	sort.Strings(out)
	return out
}

func runDaemon(spec Spec, o *options, stdio IO) int {
	level := new(slog.LevelVar)
	lv, _ := parseLevel(o.logLevel)
	level.Set(lv)
	log := newLogger(stdio.Err, o.logFormat, level)

	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		log.Error("cannot listen", "listen", o.listen, "err", err)
		return ExitFailure
	}
	loopback := isLoopback(ln.Addr())
	if !loopback && o.adminToken == "" {
		ln.Close()
		fmt.Fprintf(stdio.Err, "%s: refusing to listen on %s without an admin token: anyone who can reach it could stop or reconfigure the daemon.\n"+
			"Fix: give --admin-token-file FILE (or OPSKIT_ADMIN_TOKEN), or listen on loopback, e.g. --listen 127.0.0.1:%s\n",
			spec.Name, ln.Addr(), portOf(o.listen))
		return ExitUsage
	}
	if err := os.MkdirAll(o.dataDir, 0o750); err != nil {
		ln.Close()
		log.Error("cannot create data dir", "data_dir", o.dataDir, "err", err)
		return ExitFailure
	}

	set := metrics.NewSet()
	d := &Daemon{
		Name: spec.Name, Kind: cmp.Or(spec.Kind, spec.Name), DataDir: o.dataDir, Log: log, Metrics: set,
		Mux: http.NewServeMux(), ConfigFile: o.configFile,
		level: level, addr: ln.Addr(), token: o.adminToken, loopback: loopback,
		notReady: map[string]string{"start": "starting"},
		commands: map[string]AdminFunc{},
		stopCh:   make(chan stopRequest, 1),
	}
	d.Dye = newDyeTracer(d)
	set.NewGauge(fmt.Sprintf(`opskit_build_info{daemon=%q,version=%q,commit=%q,goversion=%q}`,
		spec.Name, buildinfo.Version, buildinfo.Commit, goVersion()), func() float64 { return 1 })
	if spec.Pending != "" {
		d.Log.Warn("this daemon's function is not built yet; serving only the kit's endpoints", "pending", spec.Pending)
	}

	srv := &http.Server{
		Handler:           d.handler(o.pprof),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, os.Interrupt)
	defer signal.Stop(sigs)

	runCtx, cancelRun := context.WithCancel(context.Background())
	defer cancelRun()
	log.Info("starting", "version", buildinfo.Version, "listen", ln.Addr().String(), "data_dir", o.dataDir)
	if spec.Start != nil {
		if err := spec.Start(runCtx, d); err != nil {
			log.Error("start failed", "err", err)
			cancelRun()
			d.shutdown(srv, o.shutdownTimeout)
			return ExitFailure
		}
	}
	d.SetReady("start")
	log.Info("ready", "listen", ln.Addr().String())
	d.startFleetRegistration(runCtx, o.fleet)

	var req stopRequest
wait:
	for {
		select {
		case s := <-sigs:
			if s == syscall.SIGHUP {
				go d.Reload(runCtx)
				continue
			}
			req = stopRequest{reason: "signal " + s.String()}
			break wait
		case req = <-d.stopCh:
			break wait
		case err := <-serveErr:
			req = stopRequest{reason: "http server", err: err}
			break wait
		}
	}
	if req.err != nil {
		log.Error("stopping", "reason", req.reason, "err", req.err)
	} else {
		log.Info("stopping", "reason", req.reason)
	}
	// A second SIGTERM or Ctrl-C during the graceful stop exits at once;
	// one that arrives once the stop has finished changes nothing.
	var finished atomic.Bool
	go func() {
		for s := range sigs {
			if s != syscall.SIGHUP && !finished.Load() {
				log.Error("second stop signal; exiting without finishing the graceful stop")
				os.Exit(ExitFailure)
			}
		}
	}()
	cancelRun()
	clean := d.shutdown(srv, o.shutdownTimeout)
	finished.Store(true)
	if req.err != nil || !clean {
		return ExitFailure
	}
	log.Info("stopped")
	return ExitOK
}

// shutdown stops the HTTP server, waits for background work, then runs the
// stop hooks in reverse order, all within timeout. It reports whether everything finished cleanly.
func (d *Daemon) shutdown(srv *http.Server, timeout time.Duration) bool {
	d.SetNotReady("stop", "stopping")
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	clean := true
	if err := srv.Shutdown(ctx); err != nil {
		d.Log.Error("http shutdown", "err", err)
		clean = false
	}
	// Background work (d.Go) has seen its context end; let it finish
	// flushing into the components before their stop hooks close them.
	done := make(chan struct{})
	go func() { d.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		d.Log.Error("background work did not finish before --shutdown-timeout")
		clean = false
	}
	d.mu.Lock()
	hooks := append([]stopHook(nil), d.stoppers...)
	d.mu.Unlock()
	for i := len(hooks) - 1; i >= 0; i-- {
		if err := hooks[i].fn(ctx); err != nil {
			d.Log.Error("stop hook failed", "hook", hooks[i].name, "err", err)
			clean = false
		}
	}
	return clean
}

func isLoopback(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}

func portOf(addr string) string {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "PORT"
	}
	return p
}
