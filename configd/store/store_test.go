package store

import (
	"errors"
	"testing"

	"github.com/opskit/opskit/configd/api"
)

func open(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestPublishRollbackAndReopen(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	const ns = "web/prod/app"
	if _, err := s.PutDraft(ns, "app.json", []byte(`{"port":80}`)); err != nil {
		t.Fatal(err)
	}
	r1, head, err := s.Publish(ns, PublishInput{Author: "ann", Comment: "first"})
	if err != nil {
		t.Fatal(err)
	}
	if r1.Version != 1 || head.Current != 1 || r1.Files[0].SHA256 != api.Digest(`{"port":80}`) {
		t.Fatalf("release %+v head %+v", r1, head)
	}
	r2, _, err := s.Publish(ns, PublishInput{Author: "bob", Files: []api.File{{Name: "app.json", Content: `{"port":81}`}, {Name: "extra.txt", Content: "x"}}})
	if err != nil || r2.Version != 2 {
		t.Fatalf("publish 2: %+v %v", r2, err)
	}
	r3, head, err := s.Rollback(ns, 1, "carol", "")
	if err != nil || r3.Version != 3 || r3.RollbackOf != 1 || head.Current != 3 || len(r3.Files) != 1 {
		t.Fatalf("rollback: %+v %+v %v", r3, head, err)
	}
	if _, _, err := s.Rollback(ns, 9, "carol", ""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("rollback to a missing release: %v", err)
	}
	s.Close()

	s = open(t, dir)
	rels, err := s.Releases(ns, 0, 0, false)
	if err != nil || len(rels) != 3 || rels[1].Files[1].Content != "" || rels[1].Files[1].SHA256 == "" {
		t.Fatalf("releases after reopen: %+v %v", rels, err)
	}
	full, err := s.Release(ns, 2)
	if err != nil || full.Files[0].Content != `{"port":81}` || full.Author != "bob" {
		t.Fatalf("release 2: %+v %v", full, err)
	}
	hist, _ := s.History(ns)
	if len(hist) != 3 || hist[0].Action != "publish" || hist[2].Action != "rollback" {
		t.Fatalf("history %+v", hist)
	}
	rev, _ := s.Rev()
	if _, changed, _ := s.ChangedSince(rev - 1); len(changed) != 1 || changed[0] != ns {
		t.Fatalf("ChangedSince = %v", changed)
	}
}

func TestPublishValidation(t *testing.T) {
	s := open(t, t.TempDir())
	tests := []struct {
		name  string
		ns    string
		files []api.File
		want  error
	}{
		{"bad namespace", "web/prod", []api.File{api.NewFile("a", "x")}, ErrInvalid},
		{"bad json", "a/b/c", []api.File{api.NewFile("a.json", "{")}, ErrInvalid},
		{"empty file", "a/b/c", []api.File{api.NewFile("a.txt", "")}, ErrInvalid},
		{"dot file", "a/b/c", []api.File{api.NewFile(".manifest", "x")}, ErrInvalid},
		{"path in name", "a/b/c", []api.File{api.NewFile("../x", "x")}, ErrInvalid},
		{"twice", "a/b/c", []api.File{api.NewFile("a", "x"), api.NewFile("a", "y")}, ErrInvalid},
		{"nothing", "a/b/d", nil, ErrInvalid},
		{"good", "a/b/c", []api.File{api.NewFile("a.yaml", "k: v")}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := s.Publish(tt.ns, PublishInput{Author: "x", Files: tt.files})
			if !errors.Is(err, tt.want) {
				t.Fatalf("err %v, want %v", err, tt.want)
			}
		})
	}
	if _, err := s.SetSettings("a/b/c", api.Settings{AllowEmpty: true, Schema: `{"type":"object","required":["k"]}`}, "x"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Publish("a/b/c", PublishInput{Files: []api.File{api.NewFile("e.txt", "")}}); err != nil {
		t.Fatalf("empty file in a namespace allowing them: %v", err)
	}
	if _, _, err := s.Publish("a/b/c", PublishInput{Files: []api.File{api.NewFile("a.yaml", "j: v")}}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("schema violation: %v", err)
	}
	if _, err := s.SetSettings("a/b/c", api.Settings{Schema: `{"typo":1}`}, "x"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad schema accepted: %v", err)
	}
}

func TestGrayPromoteAbandon(t *testing.T) {
	s := open(t, t.TempDir())
	const ns = "a/b/c"
	if _, _, err := s.Publish(ns, PublishInput{Files: []api.File{api.NewFile("f", "1")}, Gray: &api.Gray{Percent: 10}}); !errors.Is(err, ErrConflict) {
		t.Fatalf("gray with no current release: %v", err)
	}
	s.Publish(ns, PublishInput{Files: []api.File{api.NewFile("f", "1")}})
	_, head, err := s.Publish(ns, PublishInput{Files: []api.File{api.NewFile("f", "2")}, Gray: &api.Gray{Labels: map[string]string{"zone": "a"}}})
	if err != nil || head.Current != 1 || head.Gray == nil || head.Gray.Version != 2 {
		t.Fatalf("gray publish: %+v %v", head, err)
	}
	if v := head.VersionFor("h1", map[string]string{"zone": "a"}); v != 2 {
		t.Fatalf("labelled host gets %d", v)
	}
	if v := head.VersionFor("h2", map[string]string{"zone": "b"}); v != 1 {
		t.Fatalf("other host gets %d", v)
	}
	head, err = s.Abandon(ns, "x")
	if err != nil || head.Gray != nil || head.Current != 1 || head.Draft[0].Content != "1" {
		t.Fatalf("abandon: %+v %v", head, err)
	}
	s.Publish(ns, PublishInput{Files: []api.File{api.NewFile("f", "3")}, Gray: &api.Gray{Percent: 50}})
	head, err = s.Promote(ns, "x")
	if err != nil || head.Current != 3 || head.Gray != nil {
		t.Fatalf("promote: %+v %v", head, err)
	}
	if _, err := s.Promote(ns, "x"); !errors.Is(err, ErrConflict) {
		t.Fatalf("second promote: %v", err)
	}
}

func TestGraySelectsByStickyPercentage(t *testing.T) {
	g := &api.Gray{Percent: 30}
	picked := 0
	for i := range 1000 {
		host := "host-" + string(rune('a'+i%26)) + string(rune('0'+i/26%10)) + string(rune('0'+i/260))
		a := g.Selects("ns/x/y", host, nil)
		if a != g.Selects("ns/x/y", host, map[string]string{"any": "label"}) {
			t.Fatal("choice not sticky")
		}
		if a {
			picked++
		}
	}
	if picked < 220 || picked > 380 {
		t.Fatalf("30%% picked %d of 1000 hosts", picked)
	}
	if (&api.Gray{Percent: 100}).Selects("n", "h", nil) != true {
		t.Fatal("100% must select every host")
	}
}

func TestAuditAndMembership(t *testing.T) {
	s := open(t, t.TempDir())
	for _, a := range []string{"publish", "rollback", "promote"} {
		if err := s.Audit(api.AuditEntry{Who: "ann", Action: a, Target: "a/b/c", OK: true}); err != nil {
			t.Fatal(err)
		}
	}
	log, _ := s.AuditLog(2)
	if len(log) != 2 || log[0].Action != "rollback" || log[1].Seq != 3 {
		t.Fatalf("audit %+v", log)
	}
	for i := 1; i <= 5; i++ {
		s.SaveHost(api.Host{Host: "h1", State: api.HostUp}, []api.MemberEvent{{Seq: int64(i), Type: "join", Host: "h1"}})
	}
	s.PruneMemberEvents(2)
	ev, _ := s.MemberEvents(10)
	hosts, _ := s.Hosts()
	if len(ev) != 2 || ev[0].Seq != 4 || len(hosts) != 1 {
		t.Fatalf("events %+v hosts %+v", ev, hosts)
	}
}
