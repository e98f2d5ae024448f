package api

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestJobSignature(t *testing.T) {
	j := Job{ID: "abc", Host: "h:7181", Dest: "/srv/f", Sources: []string{"http://s"}}
	key := []byte("secret")
	j.Signature = j.Sign(key)
	if !j.Verify(key) {
		t.Fatal("signed job does not verify")
	}
	if j.Verify([]byte("other")) {
		t.Error("verifies under another key")
	}
	// Each field an attacker would change is covered.
	for name, mutate := range map[string]func(*Job){
		"dest":     func(j *Job) { j.Dest = "/etc/passwd" },
		"post-cmd": func(j *Job) { j.PostCmd = "rm -rf /" },
		"sources":  func(j *Job) { j.Sources = []string{"http://evil"} },
		"sha256":   func(j *Job) { j.Manifest.SHA256 = "00" },
	} {
		c := j
		mutate(&c)
		if c.Verify(key) {
			t.Errorf("%s changed: still verifies", name)
		}
	}
	// It survives the JSON round trip the wire applies.
	b, _ := json.Marshal(j)
	var back Job
	json.Unmarshal(b, &back)
	if !back.Verify(key) {
		t.Error("does not verify after a JSON round trip")
	}
}

func TestDurationJSON(t *testing.T) {
	var d Duration
	for in, want := range map[string]time.Duration{`"1m30s"`: 90 * time.Second, `1000`: 1000} {
		if err := json.Unmarshal([]byte(in), &d); err != nil || time.Duration(d) != want {
			t.Errorf("%s: %v %v", in, time.Duration(d), err)
		}
	}
	if json.Unmarshal([]byte(`"soon"`), &d) == nil {
		t.Error("bad duration accepted")
	}
}

func FuzzJob(f *testing.F) {
	j := Job{ID: "abc", Host: "h:7181", Dest: "/srv/f", Sources: []string{"http://s"}, PostCmdTimeout: Duration(time.Second)}
	b, _ := json.Marshal(j)
	f.Add(b)
	f.Add([]byte(`{"post_cmd_timeout":5}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var j Job
		if json.Unmarshal(b, &j) != nil {
			return
		}
		j.Signature = j.Sign([]byte("k"))
		if !j.Verify([]byte("k")) {
			t.Fatal("a decoded job signed and verified in turn fails")
		}
	})
}

func TestParseRangeFrom(t *testing.T) {
	tests := []struct {
		header string
		from   int64
		ok     bool
	}{
		{"", 0, true},
		{"bytes=0-", 0, true},
		{"bytes=262144-", 262144, true},
		{"bytes=10-20", 0, false},
		{"bytes=-10", 0, false},
		{"bytes=-", 0, false},
		{"bytes=+5-", 0, false},
		{"bytes=1-,5-", 0, false},
		{"items=5-", 0, false},
		{"bytes=99999999999999999999-", 0, false},
	}
	for _, tt := range tests {
		from, ok := ParseRangeFrom(tt.header)
		if from != tt.from || ok != tt.ok {
			t.Errorf("ParseRangeFrom(%q) = %d, %v; want %d, %v", tt.header, from, ok, tt.from, tt.ok)
		}
	}
}

func FuzzParseRangeFrom(f *testing.F) {
	f.Add("bytes=5-")
	f.Add("bytes=1-2")
	f.Fuzz(func(t *testing.T, h string) {
		from, ok := ParseRangeFrom(h)
		if !ok || h == "" {
			return
		}
		// Accepted means exactly "bytes=" digits "-", and the digits are from.
		digits := strings.TrimSuffix(strings.TrimPrefix(h, "bytes="), "-")
		if from < 0 || h != "bytes="+digits+"-" || strings.TrimLeft(digits, "0") != strings.TrimLeft(strconv.FormatInt(from, 10), "0") {
			t.Fatalf("%q accepted as %d", h, from)
		}
	})
}
