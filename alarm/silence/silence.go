// Package silence keeps silences, with Alertmanager's rules: a silence mutes
// the alerts its matchers all accept between startsAt and endsAt; updating a
// silence in place is allowed only when that cannot change what it muted in
// the past, otherwise the old one is expired and a new one (new ID) made.
// Every change is on disk before it is acknowledged.
package silence

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/opskit/opskit/alarm/alert"
	"github.com/opskit/opskit/alarm/store"
	"github.com/opskit/opskit/internal/metric"
)

// States of a silence.
const (
	StatePending = "pending"
	StateActive  = "active"
	StateExpired = "expired"
)

// Matcher is a silence matcher in the v2 API's JSON form.
type Matcher struct {
	Name    string `json:"name"`
	Value   string `json:"value"`
	IsRegex bool   `json:"isRegex"`
	IsEqual *bool  `json:"isEqual,omitempty"` // absent means true
}

func (m Matcher) equal() bool { return m.IsEqual == nil || *m.IsEqual }

// Compile turns m into the shared matcher type.
func (m Matcher) Compile() (*metric.Matcher, error) {
	t := metric.MatchEqual
	switch {
	case m.IsRegex && m.equal():
		t = metric.MatchRegexp
	case m.IsRegex:
		t = metric.MatchNotRegexp
	case !m.equal():
		t = metric.MatchNotEqual
	}
	return metric.NewMatcher(t, m.Name, m.Value)
}

// FromMetric converts a parsed matcher to the API form.
func FromMetric(m *metric.Matcher) Matcher {
	eq := m.Type == metric.MatchEqual || m.Type == metric.MatchRegexp
	return Matcher{Name: m.Name, Value: m.Value, IsRegex: m.Type == metric.MatchRegexp || m.Type == metric.MatchNotRegexp, IsEqual: &eq}
}

// Silence is one silence.
type Silence struct {
	ID        string    `json:"id"`
	Matchers  []Matcher `json:"matchers"`
	StartsAt  time.Time `json:"startsAt"`
	EndsAt    time.Time `json:"endsAt"`
	UpdatedAt time.Time `json:"updatedAt"`
	CreatedBy string    `json:"createdBy"`
	Comment   string    `json:"comment"`
}

// State is the silence's state at now.
func (s *Silence) State(now time.Time) string {
	switch {
	case now.Before(s.StartsAt):
		return StatePending
	case !now.Before(s.EndsAt):
		return StateExpired
	}
	return StateActive
}

// Errors the API maps to status codes.
var (
	ErrNotFound = errors.New("silence not found")
	ErrInvalid  = errors.New("invalid silence")
)

type entry struct {
	s  Silence
	ms []*metric.Matcher
}

// Silences is the set of silences.
type Silences struct {
	db        *store.DB
	now       func() time.Time
	retention time.Duration

	mu sync.RWMutex
	m  map[string]*entry
}

// Open loads the silences kept in db. Expired silences are kept for
// retention (for the API and history), then dropped.
func Open(db *store.DB, now func() time.Time, retention time.Duration) (*Silences, error) {
	s := &Silences{db: db, now: now, retention: retention, m: map[string]*entry{}}
	err := db.ForEach(store.Silences, nil, func(k, v []byte) error {
		var sil Silence
		if err := json.Unmarshal(v, &sil); err != nil {
			return fmt.Errorf("silence %s: %w", k, err)
		}
		e, err := compile(sil)
		if err != nil {
			return fmt.Errorf("silence %s: %w", k, err)
		}
		s.m[sil.ID] = e
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load silences: %w", err)
	}
	return s, nil
}

func compile(s Silence) (*entry, error) {
	e := &entry{s: s}
	for _, m := range s.Matchers {
		cm, err := m.Compile()
		if err != nil {
			return nil, err
		}
		e.ms = append(e.ms, cm)
	}
	return e, nil
}

func validate(s *Silence) (*entry, error) {
	if len(s.Matchers) == 0 {
		return nil, fmt.Errorf("%w: at least one matcher required", ErrInvalid)
	}
	e, err := compile(*s)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	allMatchEmpty := true
	for _, m := range e.ms {
		if m.Name == "" {
			return nil, fmt.Errorf("%w: empty label name", ErrInvalid)
		}
		if !m.Matches("") {
			allMatchEmpty = false
		}
	}
	if allMatchEmpty {
		return nil, fmt.Errorf("%w: at least one matcher must not match the empty string (it would silence everything)", ErrInvalid)
	}
	if s.StartsAt.IsZero() || s.EndsAt.IsZero() {
		return nil, fmt.Errorf("%w: startsAt and endsAt are required", ErrInvalid)
	}
	if !s.EndsAt.After(s.StartsAt) {
		return nil, fmt.Errorf("%w: end time must be after start time", ErrInvalid)
	}
	return e, nil
}

func newID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func (s *Silences) persist(sils ...*Silence) error {
	kvs := make([]store.KV, 0, len(sils))
	for _, sil := range sils {
		v, err := json.Marshal(sil)
		if err != nil {
			return err
		}
		kvs = append(kvs, store.KV{Key: []byte(sil.ID), Value: v})
	}
	return s.db.Write(store.Silences, kvs)
}

// Set creates a silence (empty ID) or updates one, and returns the ID of
// the silence now in force: the same ID when updated in place, a new one
// when the change needed the old silence expired.
func (s *Silences) Set(in Silence) (string, error) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	var old *entry
	if in.ID != "" {
		old = s.m[in.ID]
		if old == nil {
			return "", fmt.Errorf("%w: %s", ErrNotFound, in.ID)
		}
	}
	if in.StartsAt.IsZero() {
		in.StartsAt = now
	}
	if old == nil && in.EndsAt.Before(now) {
		return "", fmt.Errorf("%w: end time is in the past", ErrInvalid)
	}
	e, err := validate(&in)
	if err != nil {
		return "", err
	}
	in.UpdatedAt = now
	if old != nil && canUpdate(&old.s, &in, now) {
		e.s = in
		if err := s.persist(&e.s); err != nil {
			return "", err
		}
		s.m[in.ID] = e
		return in.ID, nil
	}
	var changed []*Silence
	var expired *entry
	if old != nil && old.s.State(now) != StateExpired {
		cp := *old
		expireAt(&cp.s, now)
		expired = &cp
		changed = append(changed, &cp.s)
	}
	if in.StartsAt.Before(now) {
		in.StartsAt = now
	}
	if !in.EndsAt.After(in.StartsAt) {
		return "", fmt.Errorf("%w: end time must be after start time", ErrInvalid)
	}
	in.ID = newID()
	e.s = in
	changed = append(changed, &e.s)
	if err := s.persist(changed...); err != nil {
		return "", err
	}
	if expired != nil {
		s.m[expired.s.ID] = expired
	}
	s.m[in.ID] = e
	return in.ID, nil
}

// canUpdate reports whether b may replace a in place: same matchers, and the
// change does not rewrite the part of the silence already in the past.
func canUpdate(a, b *Silence, now time.Time) bool {
	if len(a.Matchers) != len(b.Matchers) {
		return false
	}
	for i := range a.Matchers {
		x, y := a.Matchers[i], b.Matchers[i]
		if x.Name != y.Name || x.Value != y.Value || x.IsRegex != y.IsRegex || x.equal() != y.equal() {
			return false
		}
	}
	switch a.State(now) {
	case StateActive:
		return b.StartsAt.Equal(a.StartsAt) && !b.EndsAt.Before(now)
	case StatePending:
		return !b.StartsAt.Before(now)
	}
	return false
}

func expireAt(s *Silence, now time.Time) {
	if now.Before(s.StartsAt) {
		s.StartsAt = now
	}
	s.EndsAt = now
	s.UpdatedAt = now
}

// Expire ends a silence now.
func (s *Silences) Expire(id string) error {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.m[id]
	if e == nil {
		return fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if e.s.State(now) == StateExpired {
		return fmt.Errorf("%w: silence %s already expired", ErrInvalid, id)
	}
	cp := *e
	expireAt(&cp.s, now)
	if err := s.persist(&cp.s); err != nil {
		return err
	}
	s.m[id] = &cp
	return nil
}

// Get returns one silence.
func (s *Silences) Get(id string) (Silence, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	e := s.m[id]
	if e == nil {
		return Silence{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return e.s, nil
}

// List returns every silence, active first, then pending, then expired,
// each by end time.
func (s *Silences) List() []Silence {
	now := s.now()
	s.mu.RLock()
	out := make([]Silence, 0, len(s.m))
	for _, e := range s.m {
		out = append(out, e.s)
	}
	s.mu.RUnlock()
	rank := map[string]int{StateActive: 0, StatePending: 1, StateExpired: 2}
	sort.Slice(out, func(i, j int) bool {
		ri, rj := rank[out[i].State(now)], rank[out[j].State(now)]
		if ri != rj {
			return ri < rj
		}
		if !out[i].EndsAt.Equal(out[j].EndsAt) {
			return out[i].EndsAt.Before(out[j].EndsAt)
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// MutedBy returns the IDs of the active silences that mute ls, sorted.
func (s *Silences) MutedBy(ls alert.Labels) []string {
	now := s.now()
	var out []string
	s.mu.RLock()
	defer s.mu.RUnlock()
	for id, e := range s.m {
		if e.s.State(now) != StateActive {
			continue
		}
		ok := true
		for _, m := range e.ms {
			if !m.Matches(ls[m.Name]) {
				ok = false
				break
			}
		}
		if ok {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

// Matches reports whether every matcher of sil accepts ls (used by API filters).
func Matches(ms []*metric.Matcher, ls alert.Labels) bool {
	for _, m := range ms {
		if !m.Matches(ls[m.Name]) {
			return false
		}
	}
	return true
}

// GC drops silences expired for longer than the retention and returns how many.
func (s *Silences) GC() (int, error) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	var kvs []store.KV
	for id, e := range s.m {
		if e.s.State(now) == StateExpired && now.Sub(e.s.EndsAt) > s.retention {
			kvs = append(kvs, store.KV{Key: []byte(id)})
		}
	}
	if err := s.db.Write(store.Silences, kvs); err != nil {
		return 0, err
	}
	for _, kv := range kvs {
		delete(s.m, string(kv.Key))
	}
	return len(kvs), nil
}
