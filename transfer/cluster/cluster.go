// Package cluster turns transfer nodes into a ring: it routes every
// accepted point to the nodes that own its series (and to the judge node
// that owns it on a second ring), through per-destination disk spools, and
// answers queries by asking every node and merging.
//
// # Durability promise
//
// Cluster.Append returns nil only once every share of the points is
// durable: the node's own share in its write-ahead log (storage), each
// other owner's share fsynced in that owner's spool on this node, and each
// judge's share in its spool. The spools are delivered in order, in
// batches, retried with backoff while a destination is away, and survive
// kill -9. Only a full spool drops points: the oldest first, counted in
// opskit_transfer_forward_points_dropped_total{reason="full"} and logged.
//
// # Rebalancing
//
// A change of --peers moves about 1/N of the series to new owners. History
// already stored stays where it was written: nothing is copied. Queries
// still find it, because they ask every node of the current list and merge
// the copies of a series slot by slot; a node that leaves the list takes
// its history out of queries (keep it in the list, or let it age out of
// the archives, until then).
package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/opskit/opskit/internal/dye"
	"github.com/opskit/opskit/internal/hop"
	"github.com/opskit/opskit/internal/metric"
	"github.com/opskit/opskit/internal/spool"
	"github.com/opskit/opskit/transfer/intake"
	"github.com/opskit/opskit/transfer/ring"
)

// Config describes this node's place in the cluster.
type Config struct {
	// Self is this node's name; it must be one of Nodes.
	Self string
	// Nodes are the ring's members (this node included). Every node must
	// be given the same list.
	Nodes []ring.Node
	// Replicas is how many distinct nodes store each series (default 1).
	Replicas int
	// VirtualNodes per member (default ring.DefaultVirtualNodes).
	VirtualNodes int
	// Judges are the judge nodes; each point goes to the one owning its
	// series on their own ring. Empty disables judge routing.
	Judges []ring.Node
	// Sinks receive every point accepted by this node from a client (not
	// the points forwarded to it), each through its own spool.
	Sinks []Sink
	// Dir holds the spools, one sub-directory per destination.
	Dir string
	// Outbox is the template for every destination's outbox (batching,
	// backoff, spool bound); Kind, Name, Dir, Metrics and Logger are set
	// per destination.
	Outbox OutboxOptions
	// Client sends forwarded points and queries to peers. Default: a
	// client keeping connections to each peer alive.
	Client *http.Client
	// QueryTimeout bounds one remote query call (default 30s).
	QueryTimeout time.Duration
	// Dye traces dyed points as each destination acknowledges them.
	Dye     *dye.Tracer
	Metrics *metrics.Set
	Logger  *slog.Logger
}

// Sink is a scale-out destination (Kafka, ClickHouse) fed through an
// outbox: Deliver gets batches of encoded blocks (DecodeBlock reads them).
type Sink struct {
	Kind, Name string
	// Addr labels the sink's hop statistics: kafka://FIRSTBROKER or the
	// ClickHouse host:port.
	Addr      string
	Deliverer Deliverer
}

// Cluster routes points and queries; see the package documentation.
type Cluster struct {
	cfg   Config
	local intake.Appender
	log   *slog.Logger

	mu       sync.RWMutex
	peers    *ring.Ring
	judges   *ring.Ring
	addrs    map[string]string  // last known address of every peer ever listed
	outboxes map[string]*Outbox // by destination key, e.g. "peer/n2"
	sinks    []*Outbox
	runCtx   context.Context
	runWG    sync.WaitGroup
	closed   bool
}

// New builds the rings and opens (recovering) every destination's spool.
// local stores this node's own share. Call Run to start delivering.
func New(cfg Config, local intake.Appender) (*Cluster, error) {
	if cfg.Replicas <= 0 {
		cfg.Replicas = 1
	}
	if cfg.Client == nil {
		// No client-wide timeout: every call carries a context bounded by
		// Outbox.Timeout or QueryTimeout.
		cfg.Client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16, IdleConnTimeout: 90 * time.Second}}
	}
	if cfg.QueryTimeout <= 0 {
		cfg.QueryTimeout = 30 * time.Second
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.NewSet()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Cluster{cfg: cfg, local: local, log: cfg.Logger, addrs: map[string]string{}, outboxes: map[string]*Outbox{}}
	if err := c.SetNodes(cfg.Nodes); err != nil {
		return nil, err
	}
	jr, err := ring.New(cfg.Judges, cfg.VirtualNodes)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("--judge: %w", err)
	}
	c.judges = jr
	for _, j := range cfg.Judges {
		if _, err := c.outbox("judge", j.Name, hop.Addr(j.Addr), &judgeDeliverer{c: c, addr: j.Addr}); err != nil {
			c.Close()
			return nil, err
		}
	}
	c.warnStrandedSpools()
	for _, s := range cfg.Sinks {
		o, err := c.outbox(s.Kind, s.Name, s.Addr, s.Deliverer)
		if err != nil {
			c.Close()
			return nil, err
		}
		c.sinks = append(c.sinks, o)
	}
	return c, nil
}

// warnStrandedSpools logs the spools of peers no longer listed: their points
// wait on disk until the peer is listed again.
func (c *Cluster) warnStrandedSpools() {
	entries, err := os.ReadDir(c.cfg.Dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		escaped, ok := strings.CutPrefix(e.Name(), "peer-")
		if !e.IsDir() || !ok {
			continue
		}
		name, err := url.QueryUnescape(escaped)
		if err != nil {
			continue
		}
		if _, listed := c.peers.Node(name); listed {
			continue
		}
		dir := filepath.Join(c.cfg.Dir, e.Name())
		sp, err := spool.Open(spool.Options{Dir: dir, MaxBytes: c.cfg.Outbox.MaxBytes})
		if err != nil {
			continue
		}
		if n := sp.Stats().Count; n > 0 {
			c.log.Warn("spool of a peer no longer in --peers: its points wait on disk until the peer is listed again", "peer", name, "points", n, "dir", dir)
		}
		sp.Close()
	}
}

// Self is this node's name.
func (c *Cluster) Self() string { return c.cfg.Self }

// Replicas is the number of copies of each series.
func (c *Cluster) Replicas() int { return c.cfg.Replicas }

// Ring returns the current peer ring.
func (c *Cluster) Ring() *ring.Ring {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.peers
}

// SetNodes replaces the peer list (a --peers reload). The list must name
// this node. Peers that left keep their spool draining to their last
// address; new peers get an outbox.
func (c *Cluster) SetNodes(nodes []ring.Node) error {
	r, err := ring.New(nodes, c.cfg.VirtualNodes)
	if err != nil {
		return fmt.Errorf("--peers: %w", err)
	}
	if _, ok := r.Node(c.cfg.Self); !ok {
		return fmt.Errorf("--peers does not list this node's name %q (--node-name)", c.cfg.Self)
	}
	for _, n := range nodes {
		if n.Name == c.cfg.Self {
			continue
		}
		if _, err := c.outbox("peer", n.Name, hop.Addr(n.Addr), &peerDeliverer{c: c, name: n.Name}); err != nil {
			return err
		}
	}
	c.mu.Lock()
	for _, n := range nodes {
		c.addrs[n.Name] = n.Addr
	}
	old := c.peers
	c.peers = r
	c.mu.Unlock()
	if old != nil {
		c.log.Info("peer list changed", "nodes", len(nodes), "ring", ring.Version)
	}
	return nil
}

// addr returns the last known address of a peer.
func (c *Cluster) addr(name string) string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.addrs[name]
}

// outbox returns the outbox of a destination, opening it (and starting its
// delivery when Run has been called) the first time. to labels its hop
// statistics.
func (c *Cluster) outbox(kind, name, to string, d Deliverer) (*Outbox, error) {
	key := kind + "/" + name
	c.mu.Lock()
	defer c.mu.Unlock()
	if o, ok := c.outboxes[key]; ok {
		return o, nil
	}
	if c.closed {
		return nil, errors.New("cluster closed")
	}
	opts := c.cfg.Outbox
	opts.Kind, opts.Name = kind, name
	opts.Dir = filepath.Join(c.cfg.Dir, kind+"-"+safeName(name))
	opts.Metrics, opts.Logger = c.cfg.Metrics, c.log
	opts.To, opts.Dye = to, c.cfg.Dye
	o, err := OpenOutbox(opts, d)
	if err != nil {
		return nil, err
	}
	c.outboxes[key] = o
	if c.runCtx != nil {
		c.start(o)
	}
	return o, nil
}

// safeName keeps a destination name usable in a directory name (which
// starts with the kind, so "." and ".." are harmless).
func safeName(s string) string { return url.QueryEscape(s) }

func (c *Cluster) start(o *Outbox) {
	c.runWG.Add(1)
	go func() {
		defer c.runWG.Done()
		if err := o.Run(c.runCtx); err != nil {
			c.log.Error("outbox stopped", "kind", o.opts.Kind, "dest", o.opts.Name, "err", err)
		}
	}()
}

// Run delivers every outbox until ctx ends.
func (c *Cluster) Run(ctx context.Context) error {
	c.mu.Lock()
	c.runCtx = ctx
	for _, o := range c.outboxes {
		c.start(o)
	}
	c.mu.Unlock()
	<-ctx.Done()
	c.runWG.Wait()
	return nil
}

// Close closes every spool; what was not delivered stays on disk. Call it
// after Run has returned.
func (c *Cluster) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	var errs []error
	for _, o := range c.outboxes {
		errs = append(errs, o.Close())
	}
	return errors.Join(errs...)
}

// Status lists every destination's state, sorted by kind and name.
func (c *Cluster) Status() []OutboxStatus {
	c.mu.RLock()
	out := make([]OutboxStatus, 0, len(c.outboxes))
	for _, o := range c.outboxes {
		out = append(out, o.Status())
	}
	c.mu.RUnlock()
	slices.SortFunc(out, func(a, b OutboxStatus) int {
		return strings.Compare(a.Kind+"/"+a.Name, b.Kind+"/"+b.Name)
	})
	return out
}

// Append routes points accepted from a client: this node's share to local,
// the others' to their spools, every point to its judge and to the sinks.
// It returns once all of that is durable (see the package documentation).
// Points refused by local storage are reported as an *intake.PartialError
// with their indexes in pts.
func (c *Cluster) Append(ctx context.Context, pts []metric.Point) error {
	c.mu.RLock()
	peers, judges := c.peers, c.judges
	c.mu.RUnlock()

	var localIdx []int
	shares := map[string][]metric.Point{}
	var owners []string
	var key []byte
	for i := range pts {
		key = pts[i].Labels.AppendKey(key[:0])
		owners = peers.Owners(owners[:0], key, c.cfg.Replicas)
		for _, o := range owners {
			if o == c.cfg.Self {
				localIdx = append(localIdx, i)
			} else {
				shares["peer/"+o] = append(shares["peer/"+o], pts[i])
			}
		}
		if j := judges.Primary(key); j != "" {
			shares["judge/"+j] = append(shares["judge/"+j], pts[i])
		}
	}

	var wg sync.WaitGroup
	errs := make(chan error, len(shares)+len(c.sinks)+1)
	spoolShare := func(o *Outbox, share []metric.Point) {
		defer wg.Done()
		if err := o.Add(ctx, EncodeBlock(share), len(share)); err != nil {
			errs <- fmt.Errorf("spooling for %s %s: %w", o.opts.Kind, o.opts.Name, err)
		}
	}
	c.mu.RLock()
	for dest, share := range shares {
		o := c.outboxes[dest]
		if o == nil {
			c.mu.RUnlock()
			return fmt.Errorf("no outbox for %s", dest)
		}
		wg.Add(1)
		go spoolShare(o, share)
	}
	c.mu.RUnlock()
	if len(c.sinks) > 0 && len(pts) > 0 {
		block := EncodeBlock(pts)
		for _, o := range c.sinks {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := o.Add(ctx, block, len(pts)); err != nil {
					errs <- fmt.Errorf("spooling for %s %s: %w", o.opts.Kind, o.opts.Name, err)
				}
			}()
		}
	}

	var localErr error
	if len(localIdx) > 0 {
		local := pts
		if len(localIdx) < len(pts) {
			local = make([]metric.Point, len(localIdx))
			for k, i := range localIdx {
				local[k] = pts[i]
			}
		}
		localErr = c.local.Append(ctx, local)
	}
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	partial, err := intake.SplitAppendError(localErr)
	if err != nil {
		all = append(all, err)
	}
	if len(all) > 0 {
		return errors.Join(all...)
	}
	if partial != nil && len(localIdx) < len(pts) {
		for k := range partial.Rejected {
			if r := &partial.Rejected[k]; r.Index >= 0 && r.Index < len(localIdx) {
				r.Index = localIdx[r.Index]
			}
		}
	}
	if partial != nil {
		return partial
	}
	return nil
}
