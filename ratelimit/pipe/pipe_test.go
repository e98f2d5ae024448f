package pipe

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// fakeTime advances only when the throttle sleeps.
type fakeTime struct {
	t      time.Time
	slept  []time.Duration
	starts []time.Time
}

func (f *fakeTime) now() time.Time { return f.t }
func (f *fakeTime) sleep(_ context.Context, d time.Duration) error {
	f.slept = append(f.slept, d)
	f.t = f.t.Add(d)
	return nil
}

func TestCopyPacesLines(t *testing.T) {
	ft := &fakeTime{t: time.Unix(1000, 0)}
	var out bytes.Buffer
	st, err := copyLines(context.Background(), strings.NewReader("a\nb\nc\nd\n"), &out, Options{Rate: 4, Burst: 2}, ft.now, ft.sleep)
	if err != nil {
		t.Fatal(err)
	}
	if out.String() != "a\nb\nc\nd\n" || st.Passed != 4 || st.Dropped != 0 {
		t.Fatalf("out %q stats %+v", out.String(), st)
	}
	// Two at once (burst), then one every 250 ms.
	if len(ft.slept) != 2 || ft.slept[0] != 250*time.Millisecond || ft.slept[1] != 250*time.Millisecond {
		t.Fatalf("slept %v", ft.slept)
	}
}

func TestCopyPerKeyAndDrop(t *testing.T) {
	in := `{"user":"a","n":1}
{"user":"a","n":2}
{"user":"b","n":3}
{"user":"a","n":4}
not json
`
	ft := &fakeTime{t: time.Unix(1000, 0)}
	var out bytes.Buffer
	st, err := copyLines(context.Background(), strings.NewReader(in), &out, Options{Rate: 1, Burst: 1, KeyField: "user", Drop: true}, ft.now, ft.sleep)
	if err != nil {
		t.Fatal(err)
	}
	want := "{\"user\":\"a\",\"n\":1}\n{\"user\":\"b\",\"n\":3}\nnot json\n"
	if out.String() != want || st.Dropped != 2 || len(ft.slept) != 0 {
		t.Fatalf("out %q stats %+v", out.String(), st)
	}
}

func TestFieldOf(t *testing.T) {
	tests := []struct{ line, field, want string }{
		{`{"k":"v"}`, "k", "v"},
		{`{"k":7}`, "k", "7"},
		{`{"k":7}`, "x", ""},
		{`a b  c`, "2", "b"},
		{`a b`, "3", ""},
		{`[1]`, "k", ""},
	}
	for _, tc := range tests {
		if got := fieldOf([]byte(tc.line), tc.field); got != tc.want {
			t.Errorf("fieldOf(%q, %q) = %q, want %q", tc.line, tc.field, got, tc.want)
		}
	}
}

func TestCheck(t *testing.T) {
	for _, o := range []Options{{Rate: 0, Burst: 1}, {Rate: 1, Burst: 0}, {Rate: -1, Burst: 1}} {
		if err := o.Check(); err == nil {
			t.Errorf("%+v accepted", o)
		}
	}
}

func TestExec(t *testing.T) {
	var out, errs bytes.Buffer
	st, failed, err := Exec(context.Background(), strings.NewReader("one\ntwo\n"), &out, &errs, []string{"sh", "-c", `echo "got $0"; [ "$0" = one ]`, "{}"}, Options{Rate: 1000, Burst: 10})
	if err != nil {
		t.Fatal(err)
	}
	if out.String() != "got one\ngot two\n" || st.Passed != 2 {
		t.Fatalf("out %q", out.String())
	}
	if len(failed) != 1 || failed[0].Line != "two" || failed[0].ExitCode != 1 {
		t.Fatalf("failed %+v", failed)
	}
	out.Reset()
	_, _, err = Exec(context.Background(), strings.NewReader("x\n"), &out, &errs, []string{"cat"}, Options{Rate: 1000, Burst: 1})
	if err != nil || out.String() != "x\n" {
		t.Fatalf("stdin mode: %q %v", out.String(), err)
	}
}

func FuzzFieldOf(f *testing.F) {
	f.Fuzz(func(t *testing.T, line, field string) {
		fieldOf([]byte(line), field)
	})
}
