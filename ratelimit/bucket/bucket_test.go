package bucket

import (
	"testing"
	"time"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func newClock() *clock { return &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

func TestValidation(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{"rate 0", Config{Rate: 0, Burst: 1, MaxKeys: 1}},
		{"negative rate", Config{Rate: -1, Burst: 1, MaxKeys: 1}},
		{"burst 0", Config{Rate: 1, Burst: 0, MaxKeys: 1}},
		{"no keys", Config{Rate: 1, Burst: 1}},
		{"huge rate", Config{Rate: 2e9, Burst: 1, MaxKeys: 1}},
	}
	for _, tc := range tests {
		if _, err := NewZone(tc.cfg, nil); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
}

func TestParseRate(t *testing.T) {
	tests := []struct {
		in   string
		want float64
		err  bool
	}{
		{"100/s", 100, false},
		{"10r/s", 10, false},
		{"30r/m", 0.5, false},
		{"0.5/s", 0.5, false},
		{"3600/h", 1, false},
		{"0/s", 0, true},
		{"Inf/s", 0, true},
		{"NaN/s", 0, true},
		{"-3/s", 0, true},
		{"5/d", 0, true},
		{"5", 0, true},
	}
	for _, tc := range tests {
		got, err := ParseRate(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("ParseRate(%q) = %v, %v; want %v error %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestBucketNanosecondRefill(t *testing.T) {
	c := newClock()
	z, err := NewZone(Config{Name: "z", Rate: 3, Burst: 2, MaxKeys: 10}, c.now)
	if err != nil {
		t.Fatal(err)
	}
	set, _ := NewSet([]*Zone{z})
	for i, want := range []int64{1, 0} {
		if d := set.Decide([]string{"a"}); !d.Allowed || d.Remaining != want {
			t.Fatalf("request %d: %+v", i, d)
		}
	}
	d := set.Decide([]string{"a"})
	// One token at 3/s takes 333.333333ms.
	if d.Allowed || d.RetryAfter != 333333333*time.Nanosecond {
		t.Fatalf("refusal %+v", d)
	}
	c.t = c.t.Add(333333332 * time.Nanosecond)
	if set.Decide([]string{"a"}).Allowed {
		t.Fatal("allowed a nanosecond early")
	}
	c.t = c.t.Add(time.Nanosecond)
	if !set.Decide([]string{"a"}).Allowed {
		t.Fatal("refused at Retry-After")
	}
}

func TestRefusedRequestCostsNothing(t *testing.T) {
	c := newClock()
	perKey, _ := NewZone(Config{Name: "key", Rate: 1, Burst: 1, MaxKeys: 10}, c.now)
	global, _ := NewZone(Config{Name: "all", Rate: 1, Burst: 2, MaxKeys: 10}, c.now)
	set, _ := NewSet([]*Zone{global, perKey})
	if !set.Decide([]string{"all", "a"}).Allowed {
		t.Fatal("first refused")
	}
	// a's own bucket is empty: refused, and the global token is returned.
	if d := set.Decide([]string{"all", "a"}); d.Allowed || d.Zone != 1 {
		t.Fatalf("second: %+v", d)
	}
	if tok, _ := global.Tokens("all"); tok != 1 {
		t.Fatalf("global tokens %v, want 1 (the refused request's returned)", tok)
	}
	if !set.Decide([]string{"all", "b"}).Allowed {
		t.Fatal("b refused though the global bucket has a token")
	}
	if d := set.Decide([]string{"", ""}); !d.Allowed || d.Counted {
		t.Fatalf("empty keys: %+v", d)
	}
}

func TestEvictionAndIdleExpiry(t *testing.T) {
	c := newClock()
	z, _ := NewZone(Config{Name: "z", Rate: 1, Burst: 1, MaxKeys: 2, IdleExpiry: time.Minute}, c.now)
	set, _ := NewSet([]*Zone{z})
	for _, k := range []string{"a", "b", "c"} {
		set.Decide([]string{k})
	}
	if st := z.Stats(); st.Keys != 2 || st.Evicted != 1 {
		t.Fatalf("%+v", st)
	}
	c.t = c.t.Add(2 * time.Minute)
	set.Decide([]string{"d"})
	if st := z.Stats(); st.Keys != 1 || st.Expired != 2 {
		t.Fatalf("after idle: %+v", st)
	}
}

func FuzzParseRate(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRate(s)
		if err == nil && checkRate(r) != nil {
			t.Fatalf("%q parsed to %v", s, r)
		}
	})
}

func TestSetRateKeepsTokens(t *testing.T) {
	c := newClock()
	z, _ := NewZone(Config{Name: "z", Rate: 10, Burst: 2, MaxKeys: 10}, c.now)
	set, _ := NewSet([]*Zone{z})
	set.Decide([]string{"a"})
	set.Decide([]string{"a"})
	if err := z.SetRate(1); err != nil {
		t.Fatal(err)
	}
	if err := z.SetRate(0); err == nil {
		t.Fatal("rate 0 accepted")
	}
	if d := set.Decide([]string{"a"}); d.Allowed || d.RetryAfter != time.Second {
		t.Fatalf("after SetRate(1): %+v", d)
	}
	if d := set.Decide([]string{"b"}); !d.Allowed || d.Remaining != 1 {
		t.Fatalf("new key: %+v", d)
	}
}
