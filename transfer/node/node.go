// Package node assembles one transfer node: the storage engine, the intake
// protocols feeding it and the query APIs reading it. The write path goes
// through Node.Append, where the cluster (ring, forwarding, judge and sink
// fan-out) hooks in when Config.Cluster is set.
package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/VictoriaMetrics/metrics"

	"github.com/opskit/opskit/internal/dye"
	"github.com/opskit/opskit/internal/metric"
	"github.com/opskit/opskit/transfer/cluster"
	"github.com/opskit/opskit/transfer/intake"
	"github.com/opskit/opskit/transfer/intake/falcon"
	"github.com/opskit/opskit/transfer/intake/graphite"
	"github.com/opskit/opskit/transfer/intake/remotewrite"
	"github.com/opskit/opskit/transfer/query"
	"github.com/opskit/opskit/transfer/storage"
)

// Config is everything a node needs besides its logger and metrics.
type Config struct {
	DataDir  string
	Storage  storage.Options
	Limits   intake.Limits
	Graphite graphite.Config
	Query    query.Options
	// ExpiryInterval is how often idle series are looked for (when
	// Storage.IdleExpiry is set). Default 1h.
	ExpiryInterval time.Duration
	// Cluster, when set, makes this node a member of a ring: points are
	// routed to their owners, judges and sinks, and queries span every
	// node. Its Dir defaults to DataDir/spool.
	Cluster *cluster.Config
	// Dye traces dyed points at intake, with the time they took to become
	// durable.
	Dye *dye.Tracer
}

// Node is one running transfer node.
type Node struct {
	cfg      Config
	log      *slog.Logger
	engine   *storage.Engine
	rec      *intake.Recorder
	api      *query.API
	graphite *graphite.Server
	cluster  *cluster.Cluster
	peerAPI  *cluster.Server
}

// Open opens the storage (replaying its WAL) and prepares the intake and
// query handlers. Metrics are registered on set.
func Open(cfg Config, set *metrics.Set, log *slog.Logger) (*Node, error) {
	if cfg.Storage.Logger == nil {
		cfg.Storage.Logger = log
	}
	if cfg.ExpiryInterval <= 0 {
		cfg.ExpiryInterval = time.Hour
	}
	eng, err := storage.Open(cfg.DataDir, cfg.Storage)
	if err != nil {
		return nil, fmt.Errorf("open storage: %w", err)
	}
	n := &Node{cfg: cfg, log: log, engine: eng, rec: intake.NewRecorder(set, log)}
	if cfg.Query.Schemas == nil {
		cfg.Query.Schemas = cfg.Storage.Schemas
	}
	if cfg.Query.Logger == nil {
		cfg.Query.Logger = log
	}
	if cfg.Query.Metrics == nil {
		cfg.Query.Metrics = set
	}
	var reader query.Reader = eng
	if cfg.Cluster != nil {
		cc := *cfg.Cluster
		if cc.Dir == "" {
			cc.Dir = filepath.Join(cfg.DataDir, "spool")
		}
		if cc.Metrics == nil {
			cc.Metrics = set
		}
		if cc.Logger == nil {
			cc.Logger = log
		}
		c, err := cluster.New(cc, intake.AppenderFunc(n.appendLocal))
		if err != nil {
			eng.Close()
			return nil, err
		}
		n.cluster = c
		n.peerAPI = cluster.NewServer(c, eng)
		reader = cluster.NewReader(c, eng)
	}
	n.api = query.NewAPI(reader, cfg.Query)
	n.graphite = graphite.NewServer(n, n.rec, cfg.Limits, cfg.Graphite)
	n.registerMetrics(set)
	return n, nil
}

// Engine is the node's storage engine.
func (n *Node) Engine() *storage.Engine { return n.engine }

// Cluster is the node's cluster, nil for a single node.
func (n *Node) Cluster() *cluster.Cluster { return n.cluster }

// Append is the write path every intake protocol feeds: it returns once the
// points are durable, in the WAL for a single node, and for a cluster node
// as cluster.Cluster.Append promises. Points refused by storage (e.g. not
// newer than their series' last update) are reported as an
// *intake.PartialError, the others are stored.
func (n *Node) Append(ctx context.Context, pts []metric.Point) error {
	start := time.Now()
	var err error
	if n.cluster != nil {
		err = n.cluster.Append(ctx, pts)
	} else {
		err = n.appendLocal(ctx, pts)
	}
	if n.cfg.Dye.Active() {
		took := time.Since(start)
		n.cfg.Dye.Points("intake", pts, func(*metric.Point) time.Duration { return took })
	}
	return err
}

// appendLocal stores points in this node's engine.
func (n *Node) appendLocal(ctx context.Context, pts []metric.Point) error {
	res, err := n.engine.AppendWait(ctx, pts)
	if err != nil {
		return err
	}
	if len(res.Rejected) == 0 {
		return nil
	}
	pe := &intake.PartialError{Rejected: make([]intake.PointReject, 0, len(res.Rejected))}
	for _, r := range res.Rejected {
		reason := intake.ReasonRefused
		switch {
		case errors.Is(r.Err, storage.ErrTooOld):
			reason = intake.ReasonOutOfOrder
		case errors.Is(r.Err, storage.ErrSeriesLimit):
			reason = intake.ReasonSeriesLimit
		}
		pe.Rejected = append(pe.Rejected, intake.PointReject{Index: r.Index, Reason: reason, Detail: r.Err.Error()})
	}
	return pe
}

// Register mounts the intake and query endpoints on mux.
func (n *Node) Register(mux *http.ServeMux) {
	mux.Handle("POST /api/push", falcon.NewHandler(n, n.rec, n.cfg.Limits))
	mux.Handle("POST /api/graphite", graphite.NewHTTPHandler(n, n.rec, n.cfg.Limits))
	mux.Handle("POST /api/v1/write", remotewrite.NewHandler(n, n.rec, n.cfg.Limits))
	n.api.Register(mux)
	if n.peerAPI != nil {
		n.peerAPI.Register(mux)
	}
}

// RunCluster delivers the cluster's spools until ctx ends (nothing for a
// single node).
func (n *Node) RunCluster(ctx context.Context) error {
	if n.cluster == nil {
		return nil
	}
	return n.cluster.Run(ctx)
}

// ServeGraphite serves Graphite plaintext on ln until ctx ends, then flushes
// what each connection has read.
func (n *Node) ServeGraphite(ctx context.Context, ln net.Listener) error {
	return n.graphite.Serve(ctx, ln)
}

// RunExpiry removes idle series every ExpiryInterval until ctx ends.
func (n *Node) RunExpiry(ctx context.Context) error {
	if n.cfg.Storage.IdleExpiry <= 0 {
		return nil
	}
	t := time.NewTicker(n.cfg.ExpiryInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			removed, err := n.engine.ExpireIdle()
			if err != nil {
				n.log.Error("expiring idle series", "err", err)
				continue
			}
			if removed > 0 {
				n.log.Info("expired idle series", "removed", removed)
			}
		}
	}
}

// Close closes the cluster's spools and flushes and closes the storage (a
// final checkpoint). Call it once RunCluster has returned.
func (n *Node) Close() error {
	var cerr error
	if n.cluster != nil {
		cerr = n.cluster.Close()
	}
	return errors.Join(cerr, n.engine.Close())
}

func (n *Node) registerMetrics(set *metrics.Set) {
	stat := func(f func(s storage.Stats) float64) func() float64 {
		return func() float64 { return f(n.engine.Stats()) }
	}
	set.NewGauge("opskit_transfer_storage_series", stat(func(s storage.Stats) float64 { return float64(s.Series) }))
	set.NewGauge("opskit_transfer_storage_series_created_total", stat(func(s storage.Stats) float64 { return float64(s.SeriesCreated) }))
	set.NewGauge("opskit_transfer_storage_series_expired_total", stat(func(s storage.Stats) float64 { return float64(s.SeriesExpired) }))
	set.NewGauge("opskit_transfer_storage_points_appended_total", stat(func(s storage.Stats) float64 { return float64(s.PointsAppended) }))
	set.NewGauge("opskit_transfer_storage_points_rejected_total", stat(func(s storage.Stats) float64 { return float64(s.PointsRejected) }))
	set.NewGauge("opskit_transfer_storage_wal_bytes", stat(func(s storage.Stats) float64 { return float64(s.WALBytes) }))
	set.NewGauge("opskit_transfer_storage_wal_syncs_total", stat(func(s storage.Stats) float64 { return float64(s.WALSyncs) }))
	set.NewGauge("opskit_transfer_storage_checkpoints_total", stat(func(s storage.Stats) float64 { return float64(s.Checkpoints) }))
	set.NewGauge("opskit_transfer_storage_wal_replayed_records", stat(func(s storage.Stats) float64 { return float64(s.ReplayedRecords) }))
	set.NewGauge("opskit_transfer_storage_disk_bytes", stat(func(s storage.Stats) float64 { return float64(s.DiskBytes) }))
}
