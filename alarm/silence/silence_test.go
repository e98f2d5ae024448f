package silence

import (
	"errors"
	"testing"
	"time"

	"github.com/opskit/opskit/alarm/alert"
	"github.com/opskit/opskit/alarm/store"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func open(t *testing.T, dir string, c *clock) (*Silences, *store.DB) {
	t.Helper()
	db, err := store.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(db, c.now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return s, db
}

func sil(start, end time.Time, ms ...Matcher) Silence {
	return Silence{Matchers: ms, StartsAt: start, EndsAt: end, CreatedBy: "me", Comment: "test"}
}

func eq(n, v string) Matcher { return Matcher{Name: n, Value: v} }

func TestLifecycleAndPersistence(t *testing.T) {
	c := &clock{time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	dir := t.TempDir()
	s, db := open(t, dir, c)
	id, err := s.Set(sil(c.t, c.t.Add(time.Hour), eq("instance", "web01")))
	if err != nil {
		t.Fatal(err)
	}
	web01 := alert.Labels{"alertname": "Down", "instance": "web01"}
	if got := s.MutedBy(web01); len(got) != 1 || got[0] != id {
		t.Fatalf("MutedBy = %v", got)
	}
	if got := s.MutedBy(alert.Labels{"instance": "web02"}); len(got) != 0 {
		t.Fatalf("web02 muted by %v", got)
	}
	// Extending the end keeps the ID.
	upd, _ := s.Get(id)
	upd.EndsAt = c.t.Add(2 * time.Hour)
	if id2, err := s.Set(upd); err != nil || id2 != id {
		t.Fatalf("extend: %s %v", id2, err)
	}
	// Changing matchers of an active silence expires it and makes a new one.
	c.t = c.t.Add(time.Minute)
	upd.Matchers = []Matcher{eq("instance", "web02")}
	id3, err := s.Set(upd)
	if err != nil || id3 == id {
		t.Fatalf("matcher change: %s %v", id3, err)
	}
	if old, _ := s.Get(id); old.State(c.t) != StateExpired {
		t.Fatalf("old silence state %s", old.State(c.t))
	}
	// Restart: both are there.
	db.Close()
	s, db = open(t, dir, c)
	defer db.Close()
	if got := s.MutedBy(alert.Labels{"instance": "web02"}); len(got) != 1 || got[0] != id3 {
		t.Fatalf("after reopen: %v", got)
	}
	if err := s.Expire(id3); err != nil {
		t.Fatal(err)
	}
	if err := s.Expire(id3); !errors.Is(err, ErrInvalid) {
		t.Fatalf("second expire: %v", err)
	}
	if got := s.MutedBy(alert.Labels{"instance": "web02"}); len(got) != 0 {
		t.Fatalf("expired silence still mutes: %v", got)
	}
	if len(s.List()) != 2 {
		t.Fatalf("List = %v", s.List())
	}
	c.t = c.t.Add(2 * time.Hour)
	if n, err := s.GC(); err != nil || n != 2 {
		t.Fatalf("GC = %d, %v", n, err)
	}
}

func TestPendingSilence(t *testing.T) {
	c := &clock{time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	s, db := open(t, t.TempDir(), c)
	defer db.Close()
	id, err := s.Set(sil(c.t.Add(time.Hour), c.t.Add(2*time.Hour), eq("a", "b")))
	if err != nil {
		t.Fatal(err)
	}
	if len(s.MutedBy(alert.Labels{"a": "b"})) != 0 {
		t.Fatal("pending silence mutes")
	}
	c.t = c.t.Add(90 * time.Minute)
	if len(s.MutedBy(alert.Labels{"a": "b"})) != 1 {
		t.Fatal("silence inactive in its window")
	}
	if err := s.Expire(id); err != nil {
		t.Fatal(err)
	}
}

func TestInvalid(t *testing.T) {
	c := &clock{time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	s, db := open(t, t.TempDir(), c)
	defer db.Close()
	yes := true
	tests := []struct {
		name string
		in   Silence
		want error
	}{
		{"no matchers", sil(c.t, c.t.Add(time.Hour)), ErrInvalid},
		{"matches everything", sil(c.t, c.t.Add(time.Hour), Matcher{Name: "a", Value: ".*", IsRegex: true, IsEqual: &yes}), ErrInvalid},
		{"bad regexp", sil(c.t, c.t.Add(time.Hour), Matcher{Name: "a", Value: "(", IsRegex: true}), ErrInvalid},
		{"ends before start", sil(c.t, c.t.Add(-time.Hour), eq("a", "b")), ErrInvalid},
		{"unknown id", Silence{ID: "nope", Matchers: []Matcher{eq("a", "b")}, StartsAt: c.t, EndsAt: c.t.Add(time.Hour)}, ErrNotFound},
	}
	for _, tt := range tests {
		if _, err := s.Set(tt.in); !errors.Is(err, tt.want) {
			t.Errorf("%s: err %v, want %v", tt.name, err, tt.want)
		}
	}
}

func TestNegativeMatchers(t *testing.T) {
	no := false
	ms := []Matcher{{Name: "env", Value: "prod", IsEqual: &no}, {Name: "job", Value: "api.*", IsRegex: true}}
	c := &clock{time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	s, db := open(t, t.TempDir(), c)
	defer db.Close()
	if _, err := s.Set(sil(c.t, c.t.Add(time.Hour), ms...)); err != nil {
		t.Fatal(err)
	}
	if len(s.MutedBy(alert.Labels{"env": "prod", "job": "api1"})) != 0 || len(s.MutedBy(alert.Labels{"env": "dev", "job": "api1"})) != 1 {
		t.Fatal("!= and =~ from the API form not applied")
	}
}
