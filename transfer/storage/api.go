// Package storage is transfer's local metrics store: one round-robin
// database (RRD) per series with several archives, each keeping AVERAGE, MAX
// and MIN, packed as fixed-size slots into large slab files, with a
// write-ahead log so that every acknowledged point survives kill -9.
//
// See README.md in this folder for the on-disk layout, the disk formula, the
// durability promise and how the arithmetic compares with rrdtool.
package storage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/opskit/opskit/internal/metric"
)

// CF is a consolidation function: how the primary slots of an archive are
// combined into one of its rows.
type CF uint8

const (
	// Average is the mean of the known primary values.
	Average CF = iota
	// Max is the largest known value.
	Max
	// Min is the smallest known value.
	Min

	numCF = 3
)

// String returns the rrdtool spelling (AVERAGE, MAX, MIN).
func (cf CF) String() string {
	switch cf {
	case Average:
		return "AVERAGE"
	case Max:
		return "MAX"
	case Min:
		return "MIN"
	}
	return fmt.Sprintf("CF(%d)", uint8(cf))
}

// ParseCF accepts "average"/"avg", "max" and "min" in any case.
func ParseCF(s string) (CF, error) {
	switch strings.ToLower(s) {
	case "average", "avg":
		return Average, nil
	case "max":
		return Max, nil
	case "min":
		return Min, nil
	}
	return Average, fmt.Errorf("unknown consolidation function %q (want average, max or min)", s)
}

// SeriesRef names one stored series.
type SeriesRef struct {
	ID     uint64
	Labels metric.Labels
}

// FetchResult is a run of consecutive slots of one archive.
//
// Timestamp convention: Values[i] is the slot stamped Start+i*Step (Unix
// seconds), and a slot is stamped with the END of the interval it covers,
// exactly as `rrdtool fetch` prints it: the slot stamped T holds the points
// with T-Step < time <= T. NaN means unknown.
type FetchResult struct {
	Start, Step int64
	Values      []float64
}

// PointError says why one point of a batch was refused.
type PointError struct {
	Index int // position in the batch given to Append
	Err   error
}

func (e PointError) Error() string { return fmt.Sprintf("point %d: %v", e.Index, e.Err) }

// Result is what Append did with a batch.
type Result struct {
	// Values[i] is what was stored for points[i]: the value itself for a
	// gauge, the per-second rate for a counter or derive. It is NaN when the
	// stored value is unknown (the first point of a counter, a reset, a
	// counter point further than the heartbeat from the previous one) or the
	// point was refused.
	Values []float64
	// Rejected lists the refused points; the others were accepted.
	Rejected []PointError
	// walSeq is the WAL position that makes this batch durable.
	walSeq uint64
}

// Accepted is the number of points of the batch that were accepted.
func (r Result) Accepted() int { return len(r.Values) - len(r.Rejected) }

// Errors returned by the engine.
var (
	ErrClosed        = errors.New("storage: engine closed")
	ErrNoMatchers    = errors.New("storage: select needs at least one matcher")
	ErrUnknownSeries = errors.New("storage: unknown series")
	ErrNoName        = errors.New("point without a metric name")
	ErrBadTime       = errors.New("point with a timestamp out of range")
	ErrBadValue      = errors.New("point with a non-numeric value")
	ErrTooOld        = errors.New("point not newer than the series' last update")
	ErrSeriesLimit   = errors.New("new series refused: the series limit is reached")

	// Refusals of late points (LateMerge); each wraps ErrTooOld.
	ErrLateCounter  = fmt.Errorf("%w: a late counter value has no stored neighbour to take a rate from", ErrTooOld)
	ErrLateOpenSlot = fmt.Errorf("%w: inside the series' still-open primary slot", ErrTooOld)
	ErrLateTooOld   = fmt.Errorf("%w: its slot has left the finest archive's retention", ErrTooOld)
)

// LatePolicy says what Append does with a point not newer than its series'
// last update.
type LatePolicy uint8

const (
	// LateRefuse refuses it with ErrTooOld, as rrdtool does.
	LateRefuse LatePolicy = iota
	// LateMerge stores a late gauge value in the primary slot that holds
	// its time, as whisper stores a past timestamp, and consolidates the
	// coarser archives' slots containing it again; see README.md "Late
	// points". Counters, points inside the open primary slot and points
	// older than the finest archive's retention are still refused.
	LateMerge
)

// String returns the flag spelling (refuse, merge).
func (p LatePolicy) String() string {
	if p == LateMerge {
		return "merge"
	}
	return "refuse"
}

// ParseLatePolicy accepts "merge" and "refuse".
func ParseLatePolicy(s string) (LatePolicy, error) {
	switch s {
	case "merge":
		return LateMerge, nil
	case "refuse":
		return LateRefuse, nil
	}
	return LateRefuse, fmt.Errorf("unknown late-point policy %q (want merge or refuse)", s)
}

// Options tune an Engine. The zero value is usable: every zero field takes
// the default written beside it.
type Options struct {
	// Schemas choose the archives of a new series by its metric name; the
	// first match wins. Default: DefaultSchemas().
	Schemas []Schema
	// SyncInterval is the longest a written WAL record waits for its fsync:
	// one fsync covers every append of that window (group commit).
	// Default 10ms; negative means fsync as soon as the previous one ends.
	SyncInterval time.Duration
	// SyncBytes starts the fsync early once this many bytes wait. Default 4 MiB.
	SyncBytes int
	// CheckpointInterval is how often data files are flushed, the index and
	// series state persisted and the WAL truncated; it bounds replay time.
	// Default 5m.
	CheckpointInterval time.Duration
	// CheckpointWALBytes starts a checkpoint early once the WAL holds this
	// many bytes, which bounds replay time and WAL disk under heavy load.
	// Default 1 GiB.
	CheckpointWALBytes int64
	// IdleExpiry removes a series with no point for this long (by its newest
	// point time compared with Now). 0 never expires.
	IdleExpiry time.Duration
	// MaxSeries bounds the live series: a point of a new series beyond it is
	// refused with ErrSeriesLimit (points of existing series still go in).
	// It bounds memory and disk under a flood of new series. 0 = no limit.
	MaxSeries int
	// SeriesPerSlab is how many series slots one slab file holds. Default 4096.
	SeriesPerSlab int
	// LatePoints is what happens to a point not newer than its series'
	// last update. Default LateRefuse (rrdtool's strict order).
	LatePoints LatePolicy
	// Logger receives checkpoint, replay and expiry messages. Default: discard.
	Logger *slog.Logger
	// Now is the clock used for expiry. Default time.Now.
	Now func() time.Time
}

// Stats are counters for /metrics; every field is a snapshot.
type Stats struct {
	Series          int64  // live series
	SeriesCreated   uint64 // series created since Open
	SeriesExpired   uint64 // series removed by idle expiry since Open
	PointsAppended  uint64 // points accepted since Open
	PointsRejected  uint64 // points refused since Open
	WALBytes        int64  // bytes in the WAL now (replay work at a crash)
	WALSyncs        uint64 // fsyncs of the WAL since Open
	Checkpoints     uint64 // checkpoints completed since Open
	ReplayedRecords uint64 // WAL records replayed at Open
	DiskBytes       int64  // bytes of the slab files
	Late            LateStats
}

// LateStats count the points not newer than their series' last update,
// since Open, by what became of them (replay not included).
type LateStats struct {
	Merged          uint64 // stored in their primary slot (LateMerge)
	RefusedCounter  uint64 // COUNTER or DERIVE (ErrLateCounter)
	RefusedOpenSlot uint64 // inside the still-open primary slot (ErrLateOpenSlot)
	TooOld          uint64 // slot beyond the finest archive (ErrLateTooOld)
	Refused         uint64 // refused by LateRefuse (ErrTooOld)
}

// Compile-time shape of the Engine method set, written down for the query
// layer; the bodies live in engine.go and checkpoint.go.
var _ interface {
	Append(points []metric.Point) (Result, error)
	Wait(ctx context.Context, r Result) error
	AppendWait(ctx context.Context, points []metric.Point) (Result, error)
	Select(ms []*metric.Matcher) ([]SeriesRef, error)
	LabelNames(ms []*metric.Matcher) ([]string, error)
	LabelValues(name string, ms []*metric.Matcher) ([]string, error)
	Fetch(id uint64, cf CF, start, end, minStep int64) (FetchResult, error)
	Last(id uint64) (t int64, v float64, ok bool)
	Checkpoint() error
	ExpireIdle() (int, error)
	Stats() Stats
	Close() error
} = (*Engine)(nil)
