package query

import (
	"slices"
	"time"

	"github.com/opskit/opskit/transfer/storage"
)

// archive is one resolution of a storage schema: a slot every step, kept
// for retention.
type archive struct {
	step      time.Duration
	retention time.Duration
}

// newArchivePlan describes the storage schemas. A name no schema matches gets
// storage.DefaultSchema, so it joins the plan unless a schema matches all.
func newArchivePlan(schemas []storage.Schema) archivePlan {
	if len(schemas) == 0 {
		schemas = storage.DefaultSchemas()
	}
	if !slices.ContainsFunc(schemas, func(s storage.Schema) bool { return s.Pattern == nil }) {
		schemas = append(slices.Clip(schemas), storage.DefaultSchema())
	}
	var p archivePlan
	for _, s := range schemas {
		var as []archive
		for _, r := range s.Retentions {
			step := time.Duration(r.Step) * time.Second
			as = append(as, archive{step: step, retention: time.Duration(r.Span()) * time.Second})
		}
		if len(as) > 0 {
			p.schemas = append(p.schemas, as)
		}
	}
	return p
}

// archivePlan answers the two questions the query layer asks about the
// storage schemas: which minStep to pass to Fetch for a wanted resolution,
// and which lookback delta a query needs.
type archivePlan struct {
	// schemas each hold archives sorted finest first.
	schemas [][]archive
}

// minLookback is PromQL's default lookback delta; the finest archives keep it.
const minLookback = 5 * time.Minute

// stepForAge is the step of the archive the storage reads when a fetch starts
// age before now: the finest archive whose retention covers it. With several
// schemas the coarsest answer wins, because a query may touch any of them.
func (p archivePlan) stepForAge(age time.Duration) time.Duration {
	var coarsest time.Duration
	for _, archives := range p.schemas {
		step := archives[len(archives)-1].step
		for _, a := range archives {
			if a.retention >= age {
				step = a.step
				break
			}
		}
		coarsest = max(coarsest, step)
	}
	return coarsest
}

// minStepFor returns the Fetch minStep, in seconds, for a wanted resolution:
// the step of the coarsest archive that is still at least as fine as want, so
// a query stepping every 10 minutes reads the 5-minute archive rather than
// the 1-minute one, and never one coarser than its own step. Zero (the
// finest archive covering the start) when want is 0 or finer than every
// archive. With several schemas the finest candidate wins, so no schema is
// read coarser than wanted.
func (p archivePlan) minStepFor(want time.Duration) int64 {
	if want <= 0 {
		return 0
	}
	var best time.Duration = -1
	for _, archives := range p.schemas {
		var s time.Duration
		for _, a := range archives {
			if a.step <= want {
				s = a.step
			}
		}
		if best < 0 || s < best {
			best = s
		}
	}
	if best <= 0 {
		return 0
	}
	return int64(best / time.Second)
}

// coarsestStepUpTo is the largest archive step not above want, over all
// schemas: the resolution a fetch with minStepFor(want) may get at most
// (before age forces a coarser one).
func (p archivePlan) coarsestStepUpTo(want time.Duration) time.Duration {
	var coarsest time.Duration
	for _, archives := range p.schemas {
		for _, a := range archives {
			if a.step <= want {
				coarsest = max(coarsest, a.step)
			}
		}
	}
	return coarsest
}

// lookback returns the lookback delta for a query whose oldest evaluation
// time is oldest (the query start, less the longest range and offset in the
// expression), evaluated at now with resolution step.
//
// Why it grows with the archive: PromQL takes, at each evaluation time, the
// newest sample no older than the lookback delta. A coarse archive has one
// sample per step (5 m, 20 m, 3 h ...) and its newest slot is only written
// once its interval has ended, so at any instant the newest known sample can
// be almost two steps old. With the default 5 m lookback, a range over the
// 20-minute archive would show a value for 5 minutes after each sample and
// nothing for the next 15. Two steps of the coarsest archive the query can
// read bridge exactly that, and no more: a slot that is really unknown still
// leaves a gap once its neighbour is two steps old. The finest archives keep
// Prometheus's 5 m default.
//
// The archive read depends on how far back the fetch starts, which itself
// moves back by the lookback, so the answer is iterated to a fixed point
// (at most once per archive).
func (p archivePlan) lookback(now, oldest time.Time, step time.Duration) time.Duration {
	lb := minLookback
	for range 16 {
		s := p.stepForAge(now.Sub(oldest.Add(-lb)))
		s = max(s, p.coarsestStepUpTo(step))
		next := max(minLookback, 2*s)
		if next <= lb {
			return lb
		}
		lb = next
	}
	return lb
}

// longestReach is how far back any archive reaches, plus one coarsest step
// for the slot that straddles its edge.
func (p archivePlan) longestReach() time.Duration {
	var reach time.Duration
	for _, archives := range p.schemas {
		last := archives[len(archives)-1]
		reach = max(reach, last.retention+last.step)
	}
	return reach
}
