package storage

import (
	"math"
	"unsafe"

	"github.com/opskit/opskit/internal/metric"
)

// A series slot in a slab file is laid out as
//
//	state    pdpState             48 bytes: last update, last raw value, open primary slot
//	cdps     [archives]cdpState   32 bytes each: open consolidated slot per archive
//	rows     archive 0 rows, archive 1 rows, ...   32 bytes each (row)
//
// so its size is 48 + 32·A + 32·Σ rows (slotSize). Everything is
// little-endian fixed-width numbers with no pointers, accessed in place.

const (
	stateSize = int64(unsafe.Sizeof(pdpState{}))
	cdpSize   = int64(unsafe.Sizeof(cdpState{}))
	rowSize   = int64(unsafe.Sizeof(row{}))
)

// pdpState is the rrdtool "live head" and "PDP prep" of a series.
type pdpState struct {
	LastUpdate int64   // time of the newest accepted point
	LastRaw    float64 // previous raw value of a counter; NaN unknown
	PDPSum     float64 // Σ rate·seconds in the open primary slot; NaN none
	PDPUnknown int64   // unknown seconds in the open primary slot
	PDPMax     float64 // largest rate in the open primary slot
	PDPMin     float64 // smallest rate in the open primary slot
}

// cdpState is the open consolidated slot of one archive (rrdtool "CDP prep").
type cdpState struct {
	Sum     float64 // Σ primary values (AVERAGE)
	Max     float64
	Min     float64
	Unknown int64 // unknown primary slots so far
}

// row is one slot of an archive. Slot and Owner say which slot time
// (end/step) and which series (low 32 bits of its id) wrote it, so a row left
// over from an older lap of the ring or from a previous owner of the slot
// reads as unknown without ever clearing the file.
type row struct {
	Slot  uint32
	Owner uint32
	Avg   float64
	Max   float64
	Min   float64
}

// layout is the shape of one series' RRD, fixed at creation.
type layout struct {
	archives  []Retention
	heartbeat int64
	xff       float64
	kind      metric.CounterType

	// Derived by prepare (never persisted), so the per-point update does
	// not recompute them: the finest step, each archive's primary slots
	// per row, xff limit in primary slots, and the byte offset of its rows.
	step      int64
	perRow    []int64
	xffLimit  []float64
	rowOffset []int64
}

// prepare fills the derived fields from archives and xff.
func (l *layout) prepare() {
	l.step = l.archives[0].Step
	l.perRow = make([]int64, len(l.archives))
	l.xffLimit = make([]float64, len(l.archives))
	l.rowOffset = make([]int64, len(l.archives))
	off := stateSize + cdpSize*int64(len(l.archives))
	for a, ar := range l.archives {
		l.perRow[a] = ar.Step / l.step
		l.xffLimit[a] = float64(l.perRow[a]) * l.xff
		l.rowOffset[a] = off
		off += rowSize * ar.Rows
	}
}

// SlotSize returns the bytes one series with these retentions occupies on
// disk: 48 + 32·len(archives) + 32·Σ rows.
func SlotSize(archives []Retention) int64 {
	size := stateSize + cdpSize*int64(len(archives))
	for _, a := range archives {
		size += rowSize * a.Rows
	}
	return size
}

// rrdView is a series' RRD over its slot bytes.
type rrdView struct {
	lay   *layout
	owner uint32
	buf   []byte // exactly SlotSize bytes, 8-byte aligned
}

func (v rrdView) state() *pdpState { return (*pdpState)(unsafe.Pointer(&v.buf[0])) }

func (v rrdView) cdp(a int) *cdpState {
	return (*cdpState)(unsafe.Pointer(&v.buf[stateSize+cdpSize*int64(a)]))
}

func (v rrdView) rowsOf(a int) []row {
	return unsafe.Slice((*row)(unsafe.Pointer(&v.buf[v.lay.rowOffset[a]])), v.lay.archives[a].Rows)
}

// init sets up the state as `rrdtool create --start start` does: nothing
// known, the seconds and primary slots before start counted as unknown.
func (v rrdView) init(start int64) {
	step := v.lay.archives[0].Step
	st := v.state()
	*st = pdpState{
		LastUpdate: start,
		LastRaw:    math.NaN(),
		PDPSum:     math.NaN(),
		PDPUnknown: mod(start, step),
		PDPMax:     math.Inf(-1),
		PDPMin:     math.Inf(1),
	}
	pdpStart := start - mod(start, step)
	for a, ar := range v.lay.archives {
		*v.cdp(a) = cdpState{
			Max:     math.Inf(-1),
			Min:     math.Inf(1),
			Unknown: mod(pdpStart, ar.Step) / step,
		}
	}
}

func mod(a, b int64) int64 {
	m := a % b
	if m < 0 {
		m += b
	}
	return m
}

// floorDiv is a/b rounded down (b > 0), so floorDiv(a, b)*b == a - mod(a, b).
// The quotient and remainder come from one division instruction.
func floorDiv(a, b int64) int64 {
	q, r := a/b, a%b
	if r < 0 {
		q--
	}
	return q
}

// update applies one point at time t with raw value raw, with rrdtool's
// arithmetic. It returns the rate that applies to (last update, t] — the
// value itself for a gauge — or NaN when unknown, and false when t is not
// after the last update (the point is refused, as rrdtool refuses it).
func (v rrdView) update(t int64, raw float64) (float64, bool) {
	st := v.state()
	if t <= st.LastUpdate {
		return math.NaN(), false
	}
	interval := t - st.LastUpdate
	rate := raw
	if v.lay.kind.IsRate() {
		rate = math.NaN()
		if !math.IsNaN(st.LastRaw) && !math.IsNaN(raw) {
			rate = (raw - st.LastRaw) / float64(interval)
			if rate < 0 { // a reset: unknown, not a spike
				rate = math.NaN()
			}
		}
		st.LastRaw = raw
	}
	if interval > v.lay.heartbeat {
		rate = math.NaN()
	}
	returned := rate
	if !v.lay.kind.IsRate() {
		returned = raw
	}

	step := v.lay.step
	procPDP := floorDiv(st.LastUpdate, step)
	occuPDP := floorDiv(t, step)
	procStart, occuStart := procPDP*step, occuPDP*step
	if occuStart == procStart {
		// Still inside the open primary slot.
		if math.IsNaN(rate) {
			st.PDPUnknown += interval
		} else {
			st.addRate(rate, interval)
		}
		st.LastUpdate = t
		return returned, true
	}

	// The primary slot that was open closes with the part of this interval
	// before its end; it is unknown when more than half of it was unknown
	// before this point (what this point adds unknown does not count, as in
	// rrdtool 1.7).
	firstPart := procStart + step - st.LastUpdate
	var firstUnknown int64
	if math.IsNaN(rate) {
		firstUnknown = firstPart
	} else {
		st.addRate(rate, firstPart)
	}
	pdp, pmax, pmin := math.NaN(), math.NaN(), math.NaN()
	if 2*st.PDPUnknown <= step {
		pdp = st.PDPSum / float64(step-st.PDPUnknown-firstUnknown)
		if math.IsNaN(pdp) || math.IsInf(pdp, 0) {
			pdp = math.NaN()
		} else {
			pmax, pmin = st.PDPMax, st.PDPMin
		}
	}
	elapsed := occuPDP - procPDP
	v.addPDPs(procPDP, 1, pdp, pmax, pmin)
	if elapsed > 1 {
		// Whole primary slots inside the interval take its rate.
		v.addPDPs(procPDP+1, elapsed-1, rate, rate, rate)
	}
	// Reopen the primary slot with what lies after its start.
	postInt := t - occuStart
	st.PDPMax, st.PDPMin = math.Inf(-1), math.Inf(1)
	if math.IsNaN(rate) {
		st.PDPUnknown = postInt
		st.PDPSum = math.NaN()
	} else {
		st.PDPUnknown = 0
		st.PDPSum = rate * float64(postInt)
		if postInt > 0 {
			st.PDPMax, st.PDPMin = rate, rate
		}
	}
	st.LastUpdate = t
	return returned, true
}

func (st *pdpState) addRate(rate float64, seconds int64) {
	if math.IsNaN(st.PDPSum) {
		st.PDPSum = 0
	}
	st.PDPSum += rate * float64(seconds)
	if seconds > 0 {
		// The builtins equal math.Max/Min (NaN and ±0 alike) but are inlined.
		st.PDPMax = max(st.PDPMax, rate)
		st.PDPMin = min(st.PDPMin, rate)
	}
}

// addPDPs feeds elapsed completed primary slots, all with the same value,
// into every archive; procPDP is the number (time/step) of the slot that was
// open before.
func (v rrdView) addPDPs(procPDP, elapsed int64, pdp, pmax, pmin float64) {
	lay := v.lay
	known := !math.IsNaN(pdp)
	for a, ar := range lay.archives {
		perRow := lay.perRow[a]
		if perRow == 1 {
			// Slot numbers of the finest archive are primary slot numbers.
			n := min(elapsed, ar.Rows)
			v.writeRows(v.rowsOf(a), ar, procPDP+elapsed-n+1, n, pdp, pmax, pmin)
			continue
		}
		c := v.cdp(a)
		startOffset := perRow - procPDP%perRow
		if startOffset > elapsed {
			if known {
				c.Sum += pdp * float64(elapsed)
				c.Max = max(c.Max, pmax)
				c.Min = min(c.Min, pmin)
			} else {
				c.Unknown += elapsed
			}
			continue
		}
		rows := v.rowsOf(a)
		steps := (elapsed-startOffset)/perRow + 1
		if !known {
			c.Unknown += startOffset
		}
		first := (procPDP + startOffset) * lay.step
		firstSlot := first / ar.Step
		if float64(c.Unknown) > lay.xffLimit[a] {
			v.writeRows(rows, ar, firstSlot, 1, math.NaN(), math.NaN(), math.NaN())
		} else {
			avg := c.Sum
			mx, mn := c.Max, c.Min
			if known {
				avg += pdp * float64(startOffset)
				mx, mn = max(mx, pmax), min(mn, pmin)
			}
			v.writeRows(rows, ar, firstSlot, 1, avg/float64(perRow-c.Unknown), mx, mn)
		}
		if steps > 1 {
			fill := min(steps-1, ar.Rows)
			v.writeRows(rows, ar, firstSlot+steps-fill, fill, pdp, pmax, pmin)
		}
		carry := (elapsed - startOffset) % perRow
		*c = cdpState{Max: math.Inf(-1), Min: math.Inf(1)}
		if !known {
			c.Unknown = carry
		} else if carry > 0 {
			c.Sum = pdp * float64(carry)
			c.Max, c.Min = pmax, pmin
		}
	}
}

// writeRows writes n consecutive slots, numbered (end time / step) from
// firstSlot on, with the same values (unknown ones too: they overwrite
// whatever the ring held). It walks the ring instead of dividing per row.
func (v rrdView) writeRows(rows []row, ar Retention, firstSlot int64, n int64, avg, mx, mn float64) {
	idx := mod(firstSlot, ar.Rows)
	for slot := firstSlot; slot < firstSlot+n; slot++ {
		rows[idx] = row{Slot: uint32(slot), Owner: v.owner, Avg: avg, Max: mx, Min: mn}
		if idx++; idx == ar.Rows {
			idx = 0
		}
	}
}

// value returns the slot of archive a that ends at t, NaN when unknown.
func (v rrdView) value(a int, cf CF, t int64, rows []row) float64 {
	ar := v.lay.archives[a]
	slot := t / ar.Step
	r := &rows[mod(slot, ar.Rows)]
	if r.Slot != uint32(slot) || r.Owner != v.owner {
		return math.NaN()
	}
	switch cf {
	case Max:
		return r.Max
	case Min:
		return r.Min
	}
	return r.Avg
}

// lateOutcome says what became of a point not newer than its series' last
// update (a late point).
type lateOutcome uint8

const (
	lateMerged          lateOutcome = iota // written into its primary slot
	lateRefusedCounter                     // COUNTER or DERIVE: no neighbour to take a rate from
	lateRefusedOpenSlot                    // inside the still-open primary slot
	lateTooOld                             // its primary slot has left the finest archive
	lateRefused                            // the engine keeps rrdtool's strict order (LateRefuse)
	numLateOutcomes
)

// err is the refusal reason of an outcome; nil for lateMerged.
func (o lateOutcome) err() error {
	switch o {
	case lateRefusedCounter:
		return ErrLateCounter
	case lateRefusedOpenSlot:
		return ErrLateOpenSlot
	case lateTooOld:
		return ErrLateTooOld
	case lateRefused:
		return ErrTooOld
	}
	return nil
}

// mergeLate stores a late gauge value, as whisper stores a past timestamp:
// the primary slot holding t (the slot stamped T with T-step < t <= T) is
// overwritten with avg = max = min = value, and the slots of the coarser
// archives that contain it are consolidated again (see reconsolidate). The
// series' update state (last update, open primary slot) is not touched, so
// the in-order arithmetic goes on exactly as before.
//
// A counter's late raw value is refused: its rate needs the raw values on
// both sides, which are not stored, and the rate across the gap is already in
// the slots. A point inside the still-open primary slot is refused too: that
// slot is a time-weighted sum of the intervals between consecutive points,
// and a point inside an interval already counted cannot be placed in it
// without its neighbours. A primary slot that has left the finest archive's
// ring is too old.
func (v rrdView) mergeLate(t int64, value float64) lateOutcome {
	lay := v.lay
	if lay.kind.IsRate() {
		return lateRefusedCounter
	}
	st := v.state()
	// Primary slots are numbered by end time / step; the newest closed one
	// is procPDP, the open one procPDP+1.
	procPDP := floorDiv(st.LastUpdate, lay.step)
	slot := -floorDiv(-t, lay.step) // the slot whose interval holds t
	if slot > procPDP {
		return lateRefusedOpenSlot
	}
	if slot <= procPDP-lay.archives[0].Rows {
		return lateTooOld
	}
	v.writeRows(v.rowsOf(0), lay.archives[0], slot, 1, value, value, value)
	for a := 1; a < len(lay.archives); a++ {
		v.reconsolidate(a, slot, procPDP, value)
	}
	return lateMerged
}

// reconsolidate brings the slot of archive a that contains primary slot
// `slot` up to date after that primary slot was overwritten with value.
//
// When the finest archive still holds every primary slot of it (counting a
// slot it never received as unknown, as the in-order update does), the slot
// is computed again from them exactly as the in-order update computes it: a
// closed row from scratch (unknown when more than xff of its primary slots
// are unknown), or, for the slot still open, its consolidation state. When
// it does not (the oldest primary slots have left the finest ring), the
// number of known primary slots behind the row is not stored, so AVERAGE and
// the unknown count cannot be corrected: they stay, and only MAX rises to
// value when value is higher and MIN falls to it when lower.
func (v rrdView) reconsolidate(a int, slot, procPDP int64, value float64) {
	lay := v.lay
	perRow := lay.perRow[a]
	coarse := -floorDiv(-slot, perRow) // archive a's slot number
	first, last := (coarse-1)*perRow+1, coarse*perRow
	open := last > procPDP
	if open {
		last = procPDP
	}
	if first > procPDP-lay.archives[0].Rows {
		if sum, mx, mn, unknown, ok := v.consolidate(first, last); ok {
			if open {
				*v.cdp(a) = cdpState{Sum: sum, Max: mx, Min: mn, Unknown: unknown}
				return
			}
			ar := lay.archives[a]
			if float64(unknown) > lay.xffLimit[a] {
				v.writeRows(v.rowsOf(a), ar, coarse, 1, math.NaN(), math.NaN(), math.NaN())
			} else {
				v.writeRows(v.rowsOf(a), ar, coarse, 1, sum/float64(perRow-unknown), mx, mn)
			}
			return
		}
	}
	if math.IsNaN(value) {
		return
	}
	if open {
		c := v.cdp(a)
		c.Max, c.Min = max(c.Max, value), min(c.Min, value)
		return
	}
	ar := lay.archives[a]
	r := &v.rowsOf(a)[mod(coarse, ar.Rows)]
	if r.Slot == uint32(coarse) && r.Owner == v.owner && !math.IsNaN(r.Avg) {
		r.Max, r.Min = max(r.Max, value), min(r.Min, value)
	}
}

// consolidate sums the finest archive's primary slots first..last (all
// inside its ring) in time order, as the in-order update accumulates them.
// It reports false when one of their rows was written by a later lap of
// the ring: that only happens while the WAL is replayed after a crash over
// rows that reached the disk ahead of the replay, and the value it replaced
// is gone.
func (v rrdView) consolidate(first, last int64) (sum, mx, mn float64, unknown int64, ok bool) {
	ar := v.lay.archives[0]
	rows := v.rowsOf(0)
	mx, mn = math.Inf(-1), math.Inf(1)
	idx := mod(first, ar.Rows)
	for slot := first; slot <= last; slot++ {
		r := &rows[idx]
		switch {
		case r.Owner == v.owner && int64(r.Slot) > slot:
			return 0, 0, 0, 0, false
		case r.Slot == uint32(slot) && r.Owner == v.owner && !math.IsNaN(r.Avg):
			sum += r.Avg
			mx, mn = max(mx, r.Max), min(mn, r.Min)
		default:
			unknown++
		}
		if idx++; idx == ar.Rows {
			idx = 0
		}
	}
	return sum, mx, mn, unknown, true
}
