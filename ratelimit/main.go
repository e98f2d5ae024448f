// Command ratelimit is opskit's rate-limiting gateway: a reverse proxy that
// holds requests to nginx limit_req or token-bucket quotas and protects
// upstreams with adaptive concurrency; and a pipe throttle for shell
// scripts. See ratelimit/README.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/spf13/pflag"

	"github.com/opskit/opskit/internal/hop"
	"github.com/opskit/opskit/internal/kit"
	"github.com/opskit/opskit/ratelimit/cluster"
	"github.com/opskit/opskit/ratelimit/gateway"
	"github.com/opskit/opskit/ratelimit/pipe"
)

type config struct {
	proxyListen   string
	routes        string
	watchInterval time.Duration
	accessLog     bool
	readTimeout   time.Duration
	idleTimeout   time.Duration
	drainTimeout  time.Duration
	fastHTTP      bool
	maxHeader     int
	maxFields     int

	clusterPeers    string
	clusterInterval time.Duration
	clusterTimeout  time.Duration
}

func main() {
	var c config
	kit.Main(kit.Spec{
		Name:    "ratelimit",
		Listen:  "127.0.0.1:7150",
		Summary: "rate-limiting and adaptive-concurrency HTTP gateway, and a pipe throttle",
		Flags:   func(fs *pflag.FlagSet) { c.flags(fs) },
		Start:   func(ctx context.Context, d *kit.Daemon) error { return c.start(ctx, d) },
		Commands: []kit.Command{
			{
				Name:    "pipe",
				Summary: "copy stdin lines to stdout no faster than --rate (per --key-field)",
				Run: func(ctx context.Context, args []string, io kit.IO) int {
					return pipe.Main(ctx, args, io.In, io.Out, io.Err)
				},
			},
			{
				Name:    "exec",
				Summary: "run a command per stdin line at --rate: ratelimit exec --rate 5/s -- CMD {}",
				Run: func(ctx context.Context, args []string, io kit.IO) int {
					return pipe.ExecMain(ctx, args, io.In, io.Out, io.Err)
				},
			},
		},
	})
}

func (c *config) flags(fs *pflag.FlagSet) {
	fs.StringVar(&c.proxyListen, "proxy-listen", "127.0.0.1:7151", "address the gateway proxies on")
	fs.StringVar(&c.routes, "routes", "", "routes file (zones, upstreams, routes; see README); reread on SIGHUP and when it changes")
	fs.DurationVar(&c.watchInterval, "routes-watch-interval", time.Second, "how often the routes file is checked for changes (0 = only on SIGHUP)")
	fs.BoolVar(&c.accessLog, "access-log", false, "log every proxied request with its limit status (dyed requests are always logged)")
	fs.DurationVar(&c.readTimeout, "proxy-read-header-timeout", 10*time.Second, "longest a client may take to send request headers")
	fs.DurationVar(&c.idleTimeout, "proxy-idle-timeout", 2*time.Minute, "close a client's keep-alive connection idle this long")
	fs.StringVar(&c.clusterPeers, "cluster-peers", "", "admin addresses (host:port,...) of the other gateways enforcing the same rates; each live gateway enforces its share")
	fs.DurationVar(&c.clusterInterval, "cluster-interval", time.Second, "how often the peers' /readyz are polled")
	fs.DurationVar(&c.clusterTimeout, "cluster-timeout", 500*time.Millisecond, "a peer not ready within this long counts as gone")
	fs.BoolVar(&c.fastHTTP, "fast-http", true, "serve HTTP/1.x proxy connections with the gateway's own loop (false: net/http's server for all)")
	fs.IntVar(&c.maxHeader, "proxy-max-header-bytes", http.DefaultMaxHeaderBytes, "longest request line and header accepted (431 beyond)")
	fs.IntVar(&c.maxFields, "proxy-max-header-fields", 200, "most header lines a request may have (431 beyond; --fast-http only)")
	fs.DurationVar(&c.drainTimeout, "proxy-drain-timeout", 5*time.Second, "on stop, how long requests in flight may take to finish (keep below --shutdown-timeout)")
}

func (c *config) start(ctx context.Context, d *kit.Daemon) error {
	g := gateway.New(gateway.Options{Log: d.Log, Metrics: d.Metrics, AccessLog: c.accessLog, Hops: hop.NewSet(d.Metrics), Dye: d.Dye})
	if c.routes != "" {
		if err := g.LoadFile(c.routes); err != nil {
			return err
		}
		d.OnReload(func(context.Context) error { return g.LoadFile(c.routes) })
		if c.watchInterval > 0 {
			d.Go(ctx, "routes watch", func(ctx context.Context) error {
				watchFile(ctx, c.routes, c.watchInterval, func() {
					if err := g.LoadFile(c.routes); err != nil {
						d.Log.Error("routes file changed but is not valid; the rules in force stay", "file", c.routes, "err", err)
						return
					}
					d.Log.Info("routes file changed; reloaded", "file", c.routes)
				})
				return nil
			})
		}
	} else {
		d.Log.Warn("no --routes file: every request gets 404")
	}

	if c.clusterPeers != "" {
		peers, err := cluster.ParsePeers(c.clusterPeers)
		if err != nil {
			g.Close()
			return fmt.Errorf("--cluster-peers: %w", err)
		}
		members := cluster.New(peers, c.clusterInterval, c.clusterTimeout, d.Log)
		d.Go(ctx, "cluster", func(ctx context.Context) error {
			members.Run(ctx, g.SetShare)
			return nil
		})
		d.Metrics.NewGauge("opskit_ratelimit_cluster_live_gateways", func() float64 { return float64(members.Live()) })
	}

	ln, err := net.Listen("tcp", c.proxyListen)
	if err != nil {
		g.Close()
		return fmt.Errorf("--proxy-listen: %w", err)
	}
	var srv proxyServer
	if c.fastHTTP {
		srv = gateway.NewServer(g, gateway.ServerConfig{ReadHeaderTimeout: c.readTimeout, IdleTimeout: c.idleTimeout,
			MaxHeaderBytes: c.maxHeader, MaxHeaderFields: c.maxFields, Log: d.Log, Metrics: d.Metrics})
	} else {
		hs := &http.Server{Handler: g, ReadHeaderTimeout: c.readTimeout, IdleTimeout: c.idleTimeout, MaxHeaderBytes: c.maxHeader}
		// HTTP/2 without TLS (prior knowledge) as well as HTTP/1.1.
		hs.Protocols = new(http.Protocols)
		hs.Protocols.SetHTTP1(true)
		hs.Protocols.SetUnencryptedHTTP2(true)
		srv = hs
	}
	d.Log.Info("proxy listening", "proxy_listen", ln.Addr().String(), "fast_http", c.fastHTTP)
	// The kit waits for this to return before its stop hooks: the proxy
	// drains here when the daemon stops.
	d.Go(ctx, "proxy", func(ctx context.Context) error {
		served := make(chan error, 1)
		go func() { served <- srv.Serve(ln) }()
		select {
		case err := <-served:
			g.Close()
			return err
		case <-ctx.Done():
		}
		sctx, cancel := context.WithTimeout(context.Background(), c.drainTimeout)
		defer cancel()
		err := srv.Shutdown(sctx)
		g.Close()
		if err != nil {
			d.Log.Warn("proxy connections still open at the drain deadline", "err", err)
			srv.Close()
		}
		return nil
	})

	d.HandleAdmin("limits", func(_ context.Context, args []string) (any, error) {
		switch len(args) {
		case 0:
			return g.Limits("", ""), nil
		case 2:
			return g.Limits(args[0], args[1]), nil
		}
		return nil, errors.New("limits takes no arguments, or ZONE KEY")
	})
	d.Mux.HandleFunc("GET /limits", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, g.Limits(r.URL.Query().Get("zone"), r.URL.Query().Get("key")))
	})
	return nil
}

// proxyServer is what serves the proxy listener: the gateway's own loop
// or net/http's server.
type proxyServer interface {
	Serve(net.Listener) error
	Shutdown(context.Context) error
	Close() error
}

// watchFile calls changed when the file's size or modification time has
// moved and then held still for one interval, so that a file being written
// in place is not read half written.
func watchFile(ctx context.Context, path string, every time.Duration, changed func()) {
	stamp := func() string {
		fi, err := os.Stat(path)
		if err != nil {
			return "missing"
		}
		return fmt.Sprint(fi.Size(), fi.ModTime().UnixNano())
	}
	loaded := stamp()
	seen := loaded
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s := stamp()
		if s == seen && s != loaded {
			loaded = s
			changed()
		}
		seen = s
	}
}
