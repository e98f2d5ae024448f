package kit

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/VictoriaMetrics/metrics"
	"github.com/spf13/pflag"

	"github.com/opskit/opskit/configd/api"
	"github.com/opskit/opskit/internal/buildinfo"
)

// fleetOptions are the flags that register a daemon with configd's fleet
// view. A daemon that already has a --configd flag of its own (naming the
// same configd servers) keeps it; the kit reads its value.
type fleetOptions struct {
	urlFlag   *pflag.Flag
	token     string
	tokenFile *pflag.Flag
	heartbeat time.Duration

	// Resolved after parsing.
	servers []string
}

func addFleetFlags(fs *pflag.FlagSet, o *fleetOptions) {
	if fs.Lookup("configd") == nil {
		fs.String("configd", "", "configd server URL(s), comma-separated: register this daemon with its fleet view and heartbeat (env OPSKIT_CONFIGD)")
	}
	if fs.Lookup("configd-token-file") == nil {
		fs.String("configd-token-file", "", "file holding the bearer token sent to configd (any role may register)")
	}
	fs.StringVar(&o.token, "configd-token", "", "bearer token sent to configd; prefer --configd-token-file")
	fs.DurationVar(&o.heartbeat, "configd-heartbeat", 5*time.Second, "how often a daemon registered with --configd heartbeats")
	o.urlFlag, o.tokenFile = fs.Lookup("configd"), fs.Lookup("configd-token-file")
}

// resolve reads the parsed flags: the server list and the token.
func (o *fleetOptions) resolve() error {
	var list []string
	if sv, ok := o.urlFlag.Value.(pflag.SliceValue); ok {
		list = sv.GetSlice()
	} else {
		list = strings.Split(o.urlFlag.Value.String(), ",")
	}
	o.servers = nil
	for _, s := range list {
		s = strings.TrimRight(strings.TrimSpace(s), "/")
		if s == "" {
			continue
		}
		if !strings.Contains(s, "://") {
			s = "http://" + s
		}
		if u, err := url.Parse(s); err != nil || u.Host == "" {
			return fmt.Errorf("--configd %q: want a URL such as http://configd:7160", s)
		}
		o.servers = append(o.servers, s)
	}
	if path := o.tokenFile.Value.String(); path != "" && o.token == "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("--configd-token-file: %w", err)
		}
		o.token = strings.TrimSpace(string(b))
	}
	if len(o.servers) > 0 && o.heartbeat <= 0 {
		return fmt.Errorf("--configd-heartbeat %v: want a positive interval", o.heartbeat)
	}
	return nil
}

// AdvertiseListener records one more listener of the daemon (besides the
// kit's --listen), e.g. AdvertiseListener("graphite", ln.Addr().String()).
// It is sent to configd with the next heartbeat, so the fleet topology can
// tell which daemon a sender's downstream address belongs to.
func (d *Daemon) AdvertiseListener(name, addr string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.listeners == nil {
		d.listeners = map[string]string{}
	}
	d.listeners[name] = addr
}

// registration builds what the daemon tells configd.
func (d *Daemon) registration(host string, started time.Time, heartbeat time.Duration) api.DaemonRegistration {
	addr := advertisedAddr(d.addr.String(), host)
	reg := api.DaemonRegistration{
		ID: addr, Kind: d.Kind, Host: host, Version: buildinfo.Version, PID: os.Getpid(),
		Addr: addr, Started: started, HeartbeatSeconds: heartbeat.Seconds(),
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.listeners) > 0 {
		reg.Listeners = make(map[string]string, len(d.listeners))
		for name, a := range d.listeners {
			reg.Listeners[name] = advertisedAddr(a, host)
		}
	}
	return reg
}

// advertisedAddr makes a listen address reachable from elsewhere: a
// wildcard host (":7120", "0.0.0.0:7120") becomes the host name.
func advertisedAddr(addr, host string) string {
	h, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(h); h == "" || (ip != nil && ip.IsUnspecified()) {
		return net.JoinHostPort(host, port)
	}
	return addr
}

// fleetRegistrar heartbeats a daemon's registration to configd and
// deregisters it on a graceful stop. Failures are logged and counted and
// never stop the daemon.
type fleetRegistrar struct {
	d       *Daemon
	opts    fleetOptions
	host    string
	started time.Time
	client  *http.Client
	next    int // index of the server to try first
	failing bool

	ok, failed *metrics.Counter
}

func (d *Daemon) startFleetRegistration(ctx context.Context, o fleetOptions) {
	if len(o.servers) == 0 {
		return
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	r := &fleetRegistrar{
		d: d, opts: o, host: host, started: time.Now().UTC(),
		client: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 1}},
		ok:     d.Metrics.NewCounter(`opskit_fleet_heartbeats_total{result="ok"}`),
		failed: d.Metrics.NewCounter(`opskit_fleet_heartbeats_total{result="failed"}`),
	}
	d.Go(ctx, "configd registration", r.run)
}

func (r *fleetRegistrar) run(ctx context.Context) error {
	t := time.NewTicker(r.opts.heartbeat)
	defer t.Stop()
	for {
		r.heartbeat(ctx)
		select {
		case <-ctx.Done():
			r.leave()
			return nil
		case <-t.C:
		}
	}
}

func (r *fleetRegistrar) heartbeat(ctx context.Context) {
	reg := r.d.registration(r.host, r.started, r.opts.heartbeat)
	body, err := json.Marshal(reg)
	if err != nil {
		r.d.Log.Error("configd registration", "err", err)
		return
	}
	server, err := r.send(ctx, http.MethodPost, "/v1/fleet/daemons", body)
	if ctx.Err() != nil {
		return
	}
	if err != nil {
		r.failed.Inc()
		// Warn once per outage; the counter says how long it lasted.
		if !r.failing {
			r.d.Log.Warn("cannot register with configd; retrying at every heartbeat", "configd", strings.Join(r.opts.servers, ","), "err", err)
		} else {
			r.d.Log.Debug("configd registration failed", "err", err)
		}
		r.failing = true
		return
	}
	r.ok.Inc()
	if r.failing || r.ok.Get() == 1 {
		r.d.Log.Info("registered with configd", "configd", server, "id", reg.ID)
	}
	r.failing = false
}

// leave deregisters, bounded so a gone configd cannot hold up the stop.
func (r *fleetRegistrar) leave() {
	if r.registersWithItself() {
		// configd registered with itself: its HTTP server is stopping too.
		// Restarted, it heartbeats again within its TTL.
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	id := advertisedAddr(r.d.addr.String(), r.host)
	if _, err := r.send(ctx, http.MethodDelete, "/v1/fleet/daemons/"+url.PathEscape(id), nil); err != nil {
		r.d.Log.Warn("cannot deregister from configd; it will mark this daemon down when its heartbeats stop", "err", err)
		return
	}
	r.d.Log.Info("deregistered from configd")
}

func (r *fleetRegistrar) registersWithItself() bool {
	for _, s := range r.opts.servers {
		if u, err := url.Parse(s); err != nil || u.Host != r.d.addr.String() {
			return false
		}
	}
	return true
}

// send tries the servers in turn, starting with the last one that answered.
func (r *fleetRegistrar) send(ctx context.Context, method, path string, body []byte) (string, error) {
	var errs []string
	for i := range r.opts.servers {
		idx := (r.next + i) % len(r.opts.servers)
		server := r.opts.servers[idx]
		err := r.once(ctx, method, server+path, body)
		if err == nil {
			r.next = idx
			return server, nil
		}
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		errs = append(errs, err.Error())
	}
	sort.Strings(errs)
	return "", fmt.Errorf("%s", strings.Join(errs, "; "))
}

func (r *fleetRegistrar) once(ctx context.Context, method, u string, body []byte) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if r.opts.token != "" {
		req.Header.Set("Authorization", "Bearer "+r.opts.token)
	}
	req.Header.Set("X-Opskit-User", r.d.Name)
	resp, err := r.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	// A daemon configd already forgot is not a failed leave.
	if resp.StatusCode/100 != 2 && !(method == http.MethodDelete && resp.StatusCode == http.StatusNotFound) {
		return fmt.Errorf("%s: %d %s", u, resp.StatusCode, strings.TrimSpace(string(msg)))
	}
	return nil
}
