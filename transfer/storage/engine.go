package storage

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/opskit/opskit/internal/metric"
	"github.com/opskit/opskit/transfer/storage/wal"
)

const (
	keyShards   = 64
	applyShards = 16
	// shardRun is how many neighbouring slots of a slab share an apply
	// shard. Runs of neighbouring slots keep a batch's writes in the address
	// order it arrived in (series created together sit together), which
	// matters more than anything else on this path: hashing series to
	// shards instead scattered the writes and cost more than it saved.
	shardRun = 64
)

// Engine is the store. All methods are safe for concurrent use.
//
// Writers apply batches in parallel, split by apply shard (a function of the
// series' slot, see shardRun): the points of one shard are applied and their
// WAL record appended in one critical section under that shard's lock, so
// the WAL holds
// the points of each series in the order they were applied and a replay
// repeats exactly what happened (series are independent of one another, so
// the order between shards does not matter). New series are created first,
// in batch order under createMu, so a creation record precedes every point
// of its series.
// applyMu is held shared by every Append and exclusively by what needs all
// writers stopped (the checkpoint's WAL cut and state copy, expiry, Close).
// Everything else (validation, series lookup, encoding, the fsync) happens
// outside these locks. Readers lock only the stripe of the series they read.
type Engine struct {
	dir  string
	opts Options
	log  *slog.Logger
	seed maphash.Seed

	shards [keyShards]keyShard

	idMu sync.RWMutex
	byID map[uint64]*series

	index *postings

	applyMu sync.RWMutex // shared by Append, exclusive to stop every writer
	shardMu [applyShards]paddedMutex
	// createMu guards slot allocation, nextID, layouts and the order of
	// creation records; taken under applyMu (shared or exclusive), never
	// together with a shard lock.
	createMu sync.Mutex
	// stripes guard each series' slot between a writer (which also holds
	// its shard lock) and readers, so reads do not queue behind whole batches.
	stripes  [64]sync.RWMutex
	slabs    *slabStore
	nextID   uint64
	layouts  map[string]*layout
	wal      *wal.Log
	replayed uint64

	checkpointMu sync.Mutex
	scratch      sync.Pool

	lockFile  *os.File // flock on <dir>/LOCK: one engine per directory
	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
	stop      chan struct{}
	loopDone  chan struct{}

	seriesLive     atomic.Int64
	seriesCreated  atomic.Uint64
	seriesExpired  atomic.Uint64
	pointsAppended atomic.Uint64
	pointsRejected atomic.Uint64
	checkpoints    atomic.Uint64
	late           [numLateOutcomes]atomic.Uint64
}

type keyShard struct {
	mu sync.RWMutex
	m  map[string]*series
}

// paddedMutex keeps each shard lock on its own cache line, so two cores
// taking neighbouring locks do not bounce one line between them.
type paddedMutex struct {
	sync.Mutex
	_ [64 - 8]byte
}

// series is the in-memory handle of one stored series.
type series struct {
	id       uint64
	key      string
	labels   metric.Labels
	lay      *layout
	size     int64
	start    int64
	ref      slotRef
	view     rrdView
	lastSeen atomic.Int64 // wall clock (Unix s) of the newest append
	dead     bool         // expired; written under applyMu held exclusively
	shard    uint8        // apply shard, from the slot
}

// appendScratch is reused between Append calls to avoid per-point allocation.
type appendScratch struct {
	key    []byte
	refs   []*series
	shards []uint8 // apply shard of each point; noShard when refused
	order  []int32 // point indexes grouped by shard, batch order within each
	rec    []byte
}

const noShard = applyShards

const checkpointFile = "index.ckpt"

// Open opens or creates the store in dir and replays its WAL.
func Open(dir string, opts Options) (*Engine, error) {
	if len(opts.Schemas) == 0 {
		opts.Schemas = DefaultSchemas()
	}
	walInterval := opts.SyncInterval
	switch {
	case walInterval == 0:
		walInterval = 10 * time.Millisecond
	case walInterval < 0:
		walInterval = 0 // fsync as soon as the previous one is done
	}
	if opts.SyncBytes <= 0 {
		opts.SyncBytes = 4 << 20
	}
	if opts.CheckpointInterval <= 0 {
		opts.CheckpointInterval = 5 * time.Minute
	}
	if opts.CheckpointWALBytes <= 0 {
		opts.CheckpointWALBytes = 1 << 30
	}
	if opts.SeriesPerSlab <= 0 {
		opts.SeriesPerSlab = 4096
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	for i := range opts.Schemas {
		if len(opts.Schemas[i].Retentions) == 0 {
			return nil, fmt.Errorf("storage: schema %q has no retentions", opts.Schemas[i].Name)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("storage: %w", err)
	}
	lockFile, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	e := &Engine{
		lockFile: lockFile,
		dir:      dir,
		opts:     opts,
		log:      opts.Logger,
		seed:     maphash.MakeSeed(),
		byID:     map[uint64]*series{},
		index:    newPostings(),
		nextID:   1,
		layouts:  map[string]*layout{},
		stop:     make(chan struct{}),
		loopDone: make(chan struct{}),
	}
	for i := range e.shards {
		e.shards[i].m = map[string]*series{}
	}
	e.scratch.New = func() any { return &appendScratch{} }
	slabs, err := openSlabStore(filepath.Join(dir, "data"), int64(opts.SeriesPerSlab))
	if err != nil {
		lockFile.Close()
		return nil, err
	}
	e.slabs = slabs
	if err := e.recover(); err != nil {
		slabs.close()
		lockFile.Close()
		return nil, err
	}
	w, err := wal.Create(filepath.Join(dir, "wal"), wal.Options{SyncInterval: walInterval, SyncBytes: opts.SyncBytes})
	if err != nil {
		slabs.close()
		lockFile.Close()
		return nil, err
	}
	e.wal = w
	go e.loop()
	return e, nil
}

// lockDir takes an exclusive flock on dir/LOCK, so a second engine (or a
// second daemon) on the same directory fails at Open instead of corrupting
// it. The kernel drops the lock when the process dies.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, "LOCK"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("storage: lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("storage: %s is in use by another engine: %w", dir, err)
	}
	return f, nil
}

// recover loads the checkpoint, then replays the WAL segments written after it.
func (e *Engine) recover() error {
	walDir := filepath.Join(e.dir, "wal")
	from, err := e.loadCheckpoint()
	if err != nil {
		return err
	}
	e.slabs.buildFree()
	segs, err := wal.Segments(walDir)
	if err != nil {
		return err
	}
	var rec walRecord
	for _, n := range segs {
		if n < from {
			// Already in the checkpoint; left behind by a crash before removal.
			if err := os.Remove(filepath.Join(walDir, wal.SegmentName(n))); err != nil {
				return fmt.Errorf("storage: remove old wal segment: %w", err)
			}
			continue
		}
		cut, err := wal.ReplaySegment(walDir, n, func(payload []byte) error {
			if err := decodeRecord(payload, &rec); err != nil {
				// A checksummed record that does not decode is a bug, not a
				// torn write: report it rather than guess.
				return err
			}
			e.replayed++
			return e.applyRecord(&rec)
		})
		if err != nil {
			return fmt.Errorf("storage: replay segment %d: %w", n, err)
		}
		if cut > 0 {
			e.log.Warn("cut torn tail of the WAL", "segment", n, "bytes", cut)
		}
	}
	if e.replayed > 0 {
		e.log.Info("replayed WAL", "records", e.replayed, "series", len(e.byID))
	}
	return nil
}

// applyRecord repeats one WAL record at replay. In-order points not newer
// than their series' last update were already applied (the checkpoint holds
// them) and are skipped, which makes replay idempotent. Late points are
// merged again: a merge overwrites a primary slot and consolidates the
// coarser slots from the finest archive's rows, so repeating it, and every
// later merge after it, ends in the same rows.
func (e *Engine) applyRecord(rec *walRecord) error {
	now := e.opts.Now().Unix()
	switch rec.Kind {
	case recCreate:
		c := &rec.Create
		if _, ok := e.byID[c.ID]; ok {
			return nil
		}
		lay := e.internLayout(c.Layout)
		if _, err := e.createLocked(c.ID, c.Labels, lay, c.Start, now); err != nil {
			return err
		}
		e.nextID = max(e.nextID, c.ID+1)
	case recPoints, recLate:
		for _, p := range rec.Points {
			s := e.byID[p.ID]
			if s == nil {
				continue // expired later, or created before a lost checkpoint entry
			}
			stripe := e.stripe(s.id)
			stripe.Lock()
			if rec.Kind == recLate {
				// Accepted when it was appended, so merged whatever the
				// policy is now.
				s.view.mergeLate(p.Time, p.Value)
			} else {
				s.view.update(p.Time, p.Value)
			}
			stripe.Unlock()
			s.lastSeen.Store(now)
		}
	case recExpire:
		if s := e.byID[rec.Expire]; s != nil {
			e.removeLocked(s)
		}
	}
	return nil
}

func (e *Engine) internLayout(l layout) *layout {
	key := fmt.Sprint(l.archives, l.heartbeat, l.xff, l.kind)
	if p := e.layouts[key]; p != nil {
		return p
	}
	p := &l
	p.prepare()
	e.layouts[key] = p
	return p
}

func (e *Engine) lookup(key []byte) *series {
	sh := &e.shards[maphash.Bytes(e.seed, key)%keyShards]
	sh.mu.RLock()
	s := sh.m[string(key)]
	sh.mu.RUnlock()
	return s
}

// createLocked allocates a slot for a new series and registers it. createMu
// or applyMu (exclusively) must be held, or Open be running.
func (e *Engine) createLocked(id uint64, labels metric.Labels, lay *layout, start, now int64) (*series, error) {
	size := SlotSize(lay.archives)
	ref, buf, err := e.slabs.alloc(size)
	if err != nil {
		return nil, err
	}
	s := &series{
		id:     id,
		key:    labels.Key(),
		labels: labels,
		lay:    lay,
		size:   size,
		start:  start,
		ref:    ref,
		view:   rrdView{lay: lay, owner: uint32(id), buf: buf},
		shard:  e.applyShardOf(ref),
	}
	s.view.init(start)
	s.lastSeen.Store(now)
	e.register(s)
	e.seriesCreated.Add(1)
	return s, nil
}

// applyShardOf maps a slot to its apply shard: runs of shardRun neighbouring
// slots share one.
func (e *Engine) applyShardOf(ref slotRef) uint8 {
	n := int64(ref.Slab)*e.slabs.slotsPer + int64(ref.Slot)
	return uint8(n / shardRun % applyShards)
}

func (e *Engine) register(s *series) {
	sh := &e.shards[maphash.String(e.seed, s.key)%keyShards]
	sh.mu.Lock()
	sh.m[s.key] = s
	sh.mu.Unlock()
	e.idMu.Lock()
	e.byID[s.id] = s
	e.idMu.Unlock()
	e.index.add(s.id, s.labels)
	e.seriesLive.Add(1)
}

// removeLocked drops a series and frees its slot. applyMu must be held
// exclusively (or Open be running).
func (e *Engine) removeLocked(s *series) {
	sh := &e.shards[maphash.String(e.seed, s.key)%keyShards]
	sh.mu.Lock()
	if sh.m[s.key] == s {
		delete(sh.m, s.key)
	}
	sh.mu.Unlock()
	e.idMu.Lock()
	delete(e.byID, s.id)
	e.idMu.Unlock()
	e.index.remove(s.id, s.labels)
	stripe := e.stripe(s.id)
	stripe.Lock()
	s.dead = true
	stripe.Unlock()
	e.slabs.release(s.size, s.ref)
	e.seriesLive.Add(-1)
}

// validate checks what storage itself needs of a point.
func validate(p *metric.Point) error {
	if p.Labels.Name() == "" {
		return ErrNoName
	}
	if p.Time <= 0 || p.Time > 1<<40 {
		return ErrBadTime
	}
	if math.IsInf(p.Value, 0) {
		return ErrBadValue
	}
	if p.Type > metric.Derive {
		return fmt.Errorf("unknown counter type %d", p.Type)
	}
	return nil
}

// MaxBatch is the most points one Append takes (its WAL records must stay
// well under the WAL's record size limit).
const MaxBatch = 1 << 20

// Append validates the points, applies them to their series (creating new
// series with the first matching schema), and appends the batch's WAL
// records (one per apply shard it touches). It returns before the WAL fsync: pass the Result to Wait, or use
// AppendWait, to learn when the batch is durable. Refused points are listed
// in Result.Rejected; the error is only for a failure of the whole engine.
//
// A point must be newer than its series' last accepted point (ErrTooOld),
// unless Options.LatePoints is LateMerge and it is a gauge whose primary
// slot is closed and still in the finest archive (see mergeLate). The
// counter type and step of a series are those of its first point.
func (e *Engine) Append(points []metric.Point) (Result, error) {
	if e.closed.Load() {
		return Result{}, ErrClosed
	}
	if len(points) > MaxBatch {
		return Result{}, fmt.Errorf("storage: batch of %d points exceeds %d", len(points), MaxBatch)
	}
	res := Result{Values: make([]float64, len(points))}
	sc := e.scratch.Get().(*appendScratch)
	defer e.scratch.Put(sc)
	refs := sc.refs[:0]
	shards := sc.shards[:0]
	var counts [applyShards + 1]int32
	for i := range points {
		p := &points[i]
		if err := validate(p); err != nil {
			res.Rejected = append(res.Rejected, PointError{Index: i, Err: err})
			res.Values[i] = math.NaN()
			refs = append(refs, nil)
			shards = append(shards, noShard)
			continue
		}
		sc.key = p.Labels.AppendKey(sc.key[:0])
		refs = append(refs, e.lookup(sc.key))
		shards = append(shards, 0) // set below, once the series exists
	}
	sc.refs, sc.shards = refs, shards
	now := e.opts.Now().Unix()
	rejectedBefore := len(res.Rejected)

	e.applyMu.RLock()
	defer e.applyMu.RUnlock()
	if e.closed.Load() {
		return Result{}, ErrClosed
	}
	// New series are created first, in batch order, so that the series limit
	// refuses the last of them whatever their shards, and each creation
	// record precedes every point of its series in the WAL. applyMu held
	// shared keeps expiry out, so a series found alive stays alive.
	for i, s := range refs {
		if shards[i] == noShard {
			continue
		}
		if s == nil || s.dead {
			var err error
			s, err = e.seriesFor(&points[i], now, sc)
			if errors.Is(err, ErrSeriesLimit) {
				res.Values[i] = math.NaN()
				res.Rejected = append(res.Rejected, PointError{Index: i, Err: err})
				shards[i] = noShard
				continue
			}
			if err != nil {
				return Result{}, err
			}
			refs[i] = s
		}
		shards[i] = s.shard
		counts[s.shard]++
	}
	// Group the point indexes by shard (a counting sort, stable).
	var next [applyShards + 1]int32
	for sh := 1; sh <= applyShards; sh++ {
		next[sh] = next[sh-1] + counts[sh-1]
	}
	order := slices.Grow(sc.order[:0], len(points))[:next[applyShards]]
	for i, sh := range shards {
		if sh != noShard {
			order[next[sh]] = int32(i)
			next[sh]++
		}
	}
	sc.order = order
	accepted := 0
	for sh, from := 0, int32(0); sh < applyShards; sh++ {
		group := order[from : from+counts[sh]]
		from += counts[sh]
		if len(group) == 0 {
			continue
		}
		n, seq, err := e.applyShard(sh, points, group, refs, &res, now, &sc.rec)
		if err != nil {
			return Result{}, err
		}
		accepted += n
		res.walSeq = max(res.walSeq, seq)
	}
	if len(res.Rejected) > rejectedBefore {
		slices.SortFunc(res.Rejected, func(a, b PointError) int { return a.Index - b.Index })
	}
	e.pointsAppended.Add(uint64(accepted))
	e.pointsRejected.Add(uint64(len(res.Rejected)))
	return res, nil
}

// applyShard applies the points of one apply shard (group, in batch order)
// and appends their WAL records, under the shard's lock so that record order
// equals apply order for each series. In-order points go in recPoints
// records and merged late points in recLate records, one record per run of
// the same kind, so a replay repeats them in the order they were applied.
// It returns the points accepted and the last record's WAL sequence number
// (0 when none was accepted). applyMu must be held shared, and every point
// of group have its live series in refs.
func (e *Engine) applyShard(shard int, points []metric.Point, group []int32, refs []*series, res *Result, now int64, scratch *[]byte) (int, uint64, error) {
	mu := &e.shardMu[shard]
	mu.Lock()
	defer mu.Unlock()
	rec := pointsHeader((*scratch)[:0], recPoints)
	inRec, accepted := 0, 0
	var seq uint64
	for _, i := range group {
		p := &points[i]
		s := refs[i]
		stripe := e.stripe(s.id)
		stripe.Lock()
		v, ok := s.view.update(p.Time, p.Value)
		kind := recPoints
		if !ok {
			outcome := lateRefused
			if e.opts.LatePoints == LateMerge {
				outcome = s.view.mergeLate(p.Time, p.Value)
			}
			e.late[outcome].Add(1)
			if outcome == lateMerged {
				v, kind = p.Value, recLate
			} else {
				stripe.Unlock()
				res.Values[i] = v
				res.Rejected = append(res.Rejected, PointError{Index: int(i), Err: outcome.err()})
				continue
			}
		}
		stripe.Unlock()
		res.Values[i] = v
		if s.lastSeen.Load() != now {
			s.lastSeen.Store(now)
		}
		if kind != rec[0] {
			if inRec > 0 {
				finishPoints(rec, inRec)
				var err error
				if seq, err = e.wal.Append(rec); err != nil {
					return 0, 0, fmt.Errorf("storage: %w", err)
				}
			}
			rec, inRec = pointsHeader(rec[:0], kind), 0
		}
		rec = appendPoint(rec, s.id, p.Time, p.Value)
		inRec++
		accepted++
	}
	*scratch = rec
	if inRec == 0 {
		return accepted, seq, nil
	}
	finishPoints(rec, inRec)
	seq, err := e.wal.Append(rec)
	if err != nil {
		return 0, 0, fmt.Errorf("storage: %w", err)
	}
	return accepted, seq, nil
}

// seriesFor finds or creates the series of p. applyMu must be held shared.
// The lookup is repeated under createMu, so two writers never create the
// same key.
func (e *Engine) seriesFor(p *metric.Point, now int64, sc *appendScratch) (*series, error) {
	sc.key = p.Labels.AppendKey(sc.key[:0])
	e.createMu.Lock()
	defer e.createMu.Unlock()
	if s := e.lookup(sc.key); s != nil {
		return s, nil
	}
	// The limit applies to new series from clients only; replay recreates
	// acknowledged series through createLocked whatever the limit.
	if e.opts.MaxSeries > 0 && e.seriesLive.Load() >= int64(e.opts.MaxSeries) {
		return nil, ErrSeriesLimit
	}
	schema := MatchSchema(e.opts.Schemas, p.Labels.Name())
	step := schema.Retentions[0].Step
	if int64(p.Step) > step {
		step = int64(p.Step)
	}
	heartbeat := schema.Heartbeat
	if heartbeat <= 0 {
		heartbeat = 2 * step
	}
	xff := schema.XFF
	if xff < 0 {
		xff = DefaultXFF
	}
	lay := e.internLayout(layout{archives: schema.Retentions, heartbeat: heartbeat, xff: xff, kind: p.Type})
	labels := slices.Clone(p.Labels)
	id := e.nextID
	// The series starts one step before its first point, so that point's
	// value covers the step it closes (a counter's first point only primes).
	start := p.Time - step
	c := createRecord{ID: id, Start: start, Layout: *lay, Labels: labels}
	if _, err := e.wal.Append(appendCreate(nil, &c)); err != nil {
		return nil, fmt.Errorf("storage: %w", err)
	}
	e.nextID++
	return e.createLocked(id, labels, lay, start, now)
}

// Wait blocks until the batch behind r is durable in the WAL (fsynced), the
// context ends or the engine fails.
func (e *Engine) Wait(ctx context.Context, r Result) error {
	if r.walSeq == 0 {
		return nil
	}
	if err := e.wal.Wait(ctx, r.walSeq); err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	return nil
}

// AppendWait is Append followed by Wait: when it returns nil, every accepted
// point of the batch survives kill -9 and power loss.
func (e *Engine) AppendWait(ctx context.Context, points []metric.Point) (Result, error) {
	r, err := e.Append(points)
	if err != nil {
		return r, err
	}
	return r, e.Wait(ctx, r)
}

func (e *Engine) stripe(id uint64) *sync.RWMutex { return &e.stripes[id%uint64(len(e.stripes))] }

func (e *Engine) seriesByID(id uint64) *series {
	e.idMu.RLock()
	s := e.byID[id]
	e.idMu.RUnlock()
	return s
}

// Select returns the series matching every matcher, by the inverted index,
// sorted by labels. At least one matcher is required (ErrNoMatchers).
func (e *Engine) Select(ms []*metric.Matcher) ([]SeriesRef, error) {
	if len(ms) == 0 {
		return nil, ErrNoMatchers
	}
	ids, all := e.index.candidates(ms)
	var out []SeriesRef
	e.idMu.RLock()
	if all {
		for id, s := range e.byID {
			if metric.MatchesLabels(s.labels, ms) {
				out = append(out, SeriesRef{ID: id, Labels: s.labels})
			}
		}
	} else {
		for _, id := range ids {
			if s := e.byID[id]; s != nil && metric.MatchesLabels(s.labels, ms) {
				out = append(out, SeriesRef{ID: id, Labels: s.labels})
			}
		}
	}
	e.idMu.RUnlock()
	slices.SortFunc(out, func(a, b SeriesRef) int { return compareLabels(a.Labels, b.Labels) })
	return out, nil
}

// LabelNames returns the sorted label names of the series matching ms (all
// series when ms is empty).
func (e *Engine) LabelNames(ms []*metric.Matcher) ([]string, error) {
	if len(ms) == 0 {
		return e.index.names(), nil
	}
	refs, err := e.Select(ms)
	if err != nil {
		return nil, err
	}
	set := map[string]struct{}{}
	for _, r := range refs {
		for _, l := range r.Labels {
			set[l.Name] = struct{}{}
		}
	}
	return sortedKeys(set), nil
}

// LabelValues returns the sorted values of label name among the series
// matching ms (all series when ms is empty).
func (e *Engine) LabelValues(name string, ms []*metric.Matcher) ([]string, error) {
	if len(ms) == 0 {
		return e.index.values(name), nil
	}
	refs, err := e.Select(ms)
	if err != nil {
		return nil, err
	}
	set := map[string]struct{}{}
	for _, r := range refs {
		if v := r.Labels.Get(name); v != "" {
			set[v] = struct{}{}
		}
	}
	return sortedKeys(set), nil
}

func sortedKeys(set map[string]struct{}) []string {
	out := make([]string, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// maxFetchSlots bounds one Fetch answer.
const maxFetchSlots = 10_000_000

// Fetch returns the slots of series id between start and end from one
// archive, chosen like rrdtool fetch: the finest whose retention, counted
// back from the series' newest update, reaches start and whose step is at
// least minStep; if no archive has a step >= minStep, the coarsest; if none
// reaches start, the one reaching furthest back. Like rrdtool fetch, the
// answer runs from the slot stamped start-start%step+step to the one stamped
// end-end%step+step. Every accepted point is visible at once; the slot still
// open (not yet closed by a point at or after its end) is not, as in rrdtool.
func (e *Engine) Fetch(id uint64, cf CF, start, end, minStep int64) (FetchResult, error) {
	if cf > Min {
		return FetchResult{}, fmt.Errorf("storage: unknown consolidation function %d", cf)
	}
	if end < start {
		return FetchResult{}, fmt.Errorf("storage: fetch end %d before start %d", end, start)
	}
	s := e.seriesByID(id)
	if s == nil {
		return FetchResult{}, ErrUnknownSeries
	}
	stripe := e.stripe(id)
	stripe.RLock()
	defer stripe.RUnlock()
	if e.closed.Load() {
		return FetchResult{}, ErrClosed
	}
	if s.dead {
		return FetchResult{}, ErrUnknownSeries
	}
	last := s.view.state().LastUpdate
	a := chooseArchive(s.lay.archives, last, start, minStep)
	ar := s.lay.archives[a]
	first := start - mod(start, ar.Step) + ar.Step
	stop := end - mod(end, ar.Step) + ar.Step
	n := (stop-first)/ar.Step + 1
	if n > maxFetchSlots {
		return FetchResult{}, fmt.Errorf("storage: fetch of %d slots exceeds %d", n, maxFetchSlots)
	}
	calEnd := last - mod(last, ar.Step)
	calStart := calEnd - ar.Span()
	rows := s.view.rowsOf(a)
	out := FetchResult{Start: first, Step: ar.Step, Values: make([]float64, n)}
	// Walk the ring from the first slot's row instead of dividing per slot.
	slot := first / ar.Step
	idx := mod(slot, ar.Rows)
	for i := range out.Values {
		t := first + int64(i)*ar.Step
		v := math.NaN()
		if r := &rows[idx]; t > calStart && t <= calEnd && r.Slot == uint32(slot) && r.Owner == s.view.owner {
			switch cf {
			case Average:
				v = r.Avg
			case Max:
				v = r.Max
			case Min:
				v = r.Min
			}
		}
		out.Values[i] = v
		slot++
		if idx++; idx == ar.Rows {
			idx = 0
		}
	}
	return out, nil
}

// chooseArchive picks the archive for a fetch (see Fetch).
func chooseArchive(archives []Retention, last, start, minStep int64) int {
	lo := len(archives) - 1 // no step >= minStep: the coarsest
	for i, a := range archives {
		if a.Step >= minStep {
			lo = i
			break
		}
	}
	for i := lo; i < len(archives); i++ {
		a := archives[i]
		calEnd := last - mod(last, a.Step)
		if calEnd-a.Span() <= start {
			return i
		}
	}
	return len(archives) - 1
}

// Last returns the newest known AVERAGE slot of the finest archive: its
// time (the end of the slot) and value.
func (e *Engine) Last(id uint64) (t int64, v float64, ok bool) {
	s := e.seriesByID(id)
	if s == nil {
		return 0, 0, false
	}
	stripe := e.stripe(id)
	stripe.RLock()
	defer stripe.RUnlock()
	if s.dead || e.closed.Load() {
		return 0, 0, false
	}
	ar := s.lay.archives[0]
	last := s.view.state().LastUpdate
	calEnd := last - mod(last, ar.Step)
	rows := s.view.rowsOf(0)
	for i := int64(0); i < ar.Rows; i++ {
		t := calEnd - i*ar.Step
		if v := s.view.value(0, Average, t, rows); !math.IsNaN(v) {
			return t, v, true
		}
	}
	return 0, 0, false
}

// ExpireIdle removes the series that received no point for longer than
// Options.IdleExpiry (by the wall clock of their newest append) and returns
// how many it removed. Their slots are reused by new series. It also runs
// before each periodic checkpoint.
func (e *Engine) ExpireIdle() (int, error) {
	if e.opts.IdleExpiry <= 0 {
		return 0, nil
	}
	if e.closed.Load() {
		return 0, ErrClosed
	}
	cutoff := e.opts.Now().Add(-e.opts.IdleExpiry).Unix()
	var idle []*series
	for i := range e.shards {
		sh := &e.shards[i]
		sh.mu.RLock()
		for _, s := range sh.m {
			if s.lastSeen.Load() < cutoff {
				idle = append(idle, s)
			}
		}
		sh.mu.RUnlock()
	}
	removed := 0
	for len(idle) > 0 {
		chunk := idle[:min(len(idle), 1024)]
		idle = idle[len(chunk):]
		e.applyMu.Lock()
		e.createMu.Lock() // the slab store's lock, for release
		for _, s := range chunk {
			if s.dead || s.lastSeen.Load() >= cutoff {
				continue
			}
			if _, err := e.wal.Append(appendExpire(nil, s.id)); err != nil {
				e.createMu.Unlock()
				e.applyMu.Unlock()
				return removed, fmt.Errorf("storage: %w", err)
			}
			e.removeLocked(s)
			removed++
		}
		e.createMu.Unlock()
		e.applyMu.Unlock()
	}
	e.seriesExpired.Add(uint64(removed))
	if removed > 0 {
		e.log.Info("expired idle series", "count", removed)
	}
	return removed, nil
}

// Stats returns the engine's counters.
func (e *Engine) Stats() Stats {
	st := Stats{
		Series:          e.seriesLive.Load(),
		SeriesCreated:   e.seriesCreated.Load(),
		SeriesExpired:   e.seriesExpired.Load(),
		PointsAppended:  e.pointsAppended.Load(),
		PointsRejected:  e.pointsRejected.Load(),
		Checkpoints:     e.checkpoints.Load(),
		ReplayedRecords: e.replayed,
		Late: LateStats{
			Merged:          e.late[lateMerged].Load(),
			RefusedCounter:  e.late[lateRefusedCounter].Load(),
			RefusedOpenSlot: e.late[lateRefusedOpenSlot].Load(),
			TooOld:          e.late[lateTooOld].Load(),
			Refused:         e.late[lateRefused].Load(),
		},
	}
	if e.wal != nil {
		st.WALBytes = e.wal.Size()
		st.WALSyncs = e.wal.Syncs()
	}
	e.createMu.Lock()
	st.DiskBytes = e.slabs.diskBytes()
	e.createMu.Unlock()
	return st
}

func (e *Engine) loop() {
	defer close(e.loopDone)
	tick := min(time.Second, e.opts.CheckpointInterval)
	ticker := time.NewTicker(tick)
	defer ticker.Stop()
	lastCheckpoint := time.Now()
	for {
		select {
		case <-e.stop:
			return
		case <-ticker.C:
		}
		if time.Since(lastCheckpoint) < e.opts.CheckpointInterval && e.wal.Size() < e.opts.CheckpointWALBytes {
			continue
		}
		if _, err := e.ExpireIdle(); err != nil {
			e.log.Error("expiry failed", "err", err)
		}
		if err := e.Checkpoint(); err != nil {
			e.log.Error("checkpoint failed", "err", err)
		}
		lastCheckpoint = time.Now()
	}
}

// Close stops the background work, checkpoints (flushing the data files and
// truncating the WAL) and releases the files. Later calls return the first
// call's result.
func (e *Engine) Close() error {
	e.closeOnce.Do(func() {
		close(e.stop)
		<-e.loopDone
		err := e.Checkpoint()
		e.applyMu.Lock()
		e.closed.Store(true)
		e.applyMu.Unlock()
		if werr := e.wal.Close(); err == nil {
			err = werr
		}
		// Wait for reads in progress before unmapping.
		for i := range e.stripes {
			e.stripes[i].Lock()
		}
		if serr := e.slabs.close(); err == nil {
			err = serr
		}
		for i := range e.stripes {
			e.stripes[i].Unlock()
		}
		if lerr := e.lockFile.Close(); err == nil {
			err = lerr
		}
		e.closeErr = err
	})
	return e.closeErr
}
