package send

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestParseHosts(t *testing.T) {
	file := filepath.Join(t.TempDir(), "hosts")
	os.WriteFile(file, []byte("# web tier\nweb1\nweb2:7181, web3 # the new one\n\n"), 0o644)
	tests := []struct {
		in   string
		want []string
	}{
		{"a,b:1", []string{"a", "b:1"}},
		{" a b\tc ", []string{"a", "b", "c"}},
		{"@" + file, []string{"web1", "web2:7181", "web3"}},
		{file, []string{"web1", "web2:7181", "web3"}},
		{"", nil},
	}
	for _, tt := range tests {
		got, err := ParseHosts(tt.in)
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ParseHosts(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
	if _, err := ParseHosts("@/no/such/file"); err == nil {
		t.Error("missing @file accepted")
	}
}

func FuzzParseHosts(f *testing.F) {
	f.Add("a,b:7181 c\n# x\nd")
	f.Fuzz(func(t *testing.T, s string) {
		if len(s) > 0 && (s[0] == '@' || s[0] == '/' || s[0] == '.') {
			return // names a file
		}
		hosts, _ := ParseHosts(s)
		for _, h := range hosts {
			if h == "" {
				t.Fatal("empty host")
			}
		}
	})
}
