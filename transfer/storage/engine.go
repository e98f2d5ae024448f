package storage

import (
	"context"
	"errors"

	"github.com/opskit/opskit/internal/metric"
)

var errNotYet = errors.New("storage: not implemented yet")

// Engine is the store. All methods are safe for concurrent use.
type Engine struct{}

// Open opens or creates the store in dir and replays its WAL.
func Open(dir string, opts Options) (*Engine, error) { return nil, errNotYet }

// Append validates the points, logs them to the WAL and applies them to the
// archives. It returns before the WAL fsync: pass the Result to Wait, or use
// AppendWait, to learn when the batch is durable.
func (e *Engine) Append(points []metric.Point) (Result, error) { return Result{}, errNotYet }

// Wait blocks until the batch behind r is durable in the WAL (fsynced), the
// context ends or the engine fails.
func (e *Engine) Wait(ctx context.Context, r Result) error { return errNotYet }

// AppendWait is Append followed by Wait.
func (e *Engine) AppendWait(ctx context.Context, points []metric.Point) (Result, error) {
	return Result{}, errNotYet
}

// Select returns the series matching every matcher, by the inverted index.
// At least one matcher is required (ErrNoMatchers).
func (e *Engine) Select(ms []*metric.Matcher) ([]SeriesRef, error) { return nil, errNotYet }

// LabelNames returns the sorted label names of the series matching ms (all
// series when ms is empty).
func (e *Engine) LabelNames(ms []*metric.Matcher) ([]string, error) { return nil, errNotYet }

// LabelValues returns the sorted values of label name among the series
// matching ms (all series when ms is empty).
func (e *Engine) LabelValues(name string, ms []*metric.Matcher) ([]string, error) {
	return nil, errNotYet
}

// Fetch returns the slots of series id for the time range [start, end] from
// one archive, chosen like rrdtool fetch: the finest whose retention, counted
// back from the series' newest update, reaches start and whose step is at
// least minStep; if no archive has a step >= minStep, the coarsest. Points
// acknowledged but not yet in the data files are included.
func (e *Engine) Fetch(id uint64, cf CF, start, end, minStep int64) (FetchResult, error) {
	return FetchResult{}, errNotYet
}

// Last returns the newest known stored value of the finest archive (AVERAGE)
// and its slot time.
func (e *Engine) Last(id uint64) (t int64, v float64, ok bool) { return 0, 0, false }

// Checkpoint flushes the data files, persists the index and the series
// state, and truncates the WAL. It also runs periodically.
func (e *Engine) Checkpoint() error { return errNotYet }

// ExpireIdle removes the series idle for longer than Options.IdleExpiry and
// returns how many it removed. It also runs with each checkpoint.
func (e *Engine) ExpireIdle() (int, error) { return 0, errNotYet }

// Stats returns the engine's counters.
func (e *Engine) Stats() Stats { return Stats{} }

// Close flushes, checkpoints and releases the files.
func (e *Engine) Close() error { return errNotYet }
