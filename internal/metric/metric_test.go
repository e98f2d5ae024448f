package metric

import "testing"

func TestNewSortsDedupsAndDropsEmpty(t *testing.T) {
	ls := New(Label{"z", "1"}, Label{NameLabel, "cpu.idle"}, Label{"a", ""}, Label{"z", "2"}, Label{"endpoint", "h1"})
	want := Labels{{NameLabel, "cpu.idle"}, {"endpoint", "h1"}, {"z", "2"}}
	if !ls.Equal(want) {
		t.Fatalf("New = %v; want %v", ls, want)
	}
	if ls.Get("z") != "2" || ls.Get("a") != "" || ls.Name() != "cpu.idle" {
		t.Fatalf("Get wrong: %v", ls)
	}
	if got := ls.String(); got != `cpu.idle{endpoint="h1",z="2"}` {
		t.Fatalf("String = %s", got)
	}
	if got := ls.FormatTags(); got != "z=2" {
		t.Fatalf("FormatTags = %q", got)
	}
}

func TestKeyIsIdentity(t *testing.T) {
	a := New(Label{NameLabel, "m"}, Label{"a", "b"}, Label{"c", "d"})
	b := New(Label{"c", "d"}, Label{NameLabel, "m"}, Label{"a", "b"})
	c := New(Label{NameLabel, "m"}, Label{"a", "bc"}, Label{"", "d"})
	if a.Key() != b.Key() {
		t.Fatal("same labels in another order give another key")
	}
	if a.Key() == c.Key() {
		t.Fatal("different labels give the same key")
	}
	// Shifting a byte between name and value must change the key.
	x := New(Label{"ab", "c"})
	y := New(Label{"a", "bc"})
	if x.Key() == y.Key() {
		t.Fatal("key is ambiguous across the name/value boundary")
	}
}

func TestParseTags(t *testing.T) {
	cases := []struct {
		in   string
		want []Label
		bad  bool
	}{
		{"", nil, false},
		{"mount=/", []Label{{"mount", "/"}}, false},
		{" a = 1 , b=2,", []Label{{"a", "1"}, {"b", "2"}}, false},
		{"a=b=c", []Label{{"a", "b=c"}}, false},
		{"novalue", nil, true},
		{"=v", nil, true},
	}
	for _, c := range cases {
		got, err := ParseTags(nil, c.in)
		if (err != nil) != c.bad {
			t.Errorf("ParseTags(%q) err = %v; bad = %v", c.in, err, c.bad)
			continue
		}
		if !c.bad && !Labels(got).Equal(Labels(c.want)) && !(len(got) == 0 && len(c.want) == 0) {
			t.Errorf("ParseTags(%q) = %v; want %v", c.in, got, c.want)
		}
	}
}

func TestCounterType(t *testing.T) {
	for s, want := range map[string]CounterType{"": Gauge, "gauge": Gauge, "COUNTER": Counter, "Derive": Derive} {
		got, err := ParseCounterType(s)
		if err != nil || got != want {
			t.Errorf("ParseCounterType(%q) = %v, %v", s, got, err)
		}
	}
	if _, err := ParseCounterType("ABSOLUTE"); err == nil {
		t.Error("ABSOLUTE accepted")
	}
	if Gauge.IsRate() || !Counter.IsRate() || !Derive.IsRate() {
		t.Error("IsRate wrong")
	}
}

func TestMatchers(t *testing.T) {
	ls := New(Label{NameLabel, "df.bytes.free.percent"}, Label{"mount", "/var"}, Label{"endpoint", "web-1"})
	cases := []struct {
		m    *Matcher
		want bool
	}{
		{MustMatcher(MatchEqual, NameLabel, "df.bytes.free.percent"), true},
		{MustMatcher(MatchNotEqual, "mount", "/"), true},
		{MustMatcher(MatchRegexp, "endpoint", "web-.*"), true},
		{MustMatcher(MatchRegexp, "endpoint", "web"), false}, // anchored
		{MustMatcher(MatchNotRegexp, "endpoint", "db-.*"), true},
		{MustMatcher(MatchEqual, "absent", ""), true},
		{MustMatcher(MatchRegexp, "absent", ".+"), false},
	}
	for _, c := range cases {
		if got := MatchesLabels(ls, []*Matcher{c.m}); got != c.want {
			t.Errorf("%v on %v = %v; want %v", c.m, ls, got, c.want)
		}
	}
	if _, err := NewMatcher(MatchRegexp, "a", "("); err == nil {
		t.Error("bad regexp accepted")
	}
}

func BenchmarkAppendKey(b *testing.B) {
	ls := New(Label{NameLabel, "net.if.in.bytes"}, Label{"endpoint", "host-0001"}, Label{"iface", "eth0"})
	buf := make([]byte, 0, 128)
	for i := 0; i < b.N; i++ {
		buf = ls.AppendKey(buf[:0])
	}
}
