package format

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	schema, err := ParseSchema(`{"type":"object","required":["port"],"properties":{"port":{"type":"integer","minimum":1,"maximum":65535},"mode":{"enum":["a","b"]}}}`)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, file, content string
		rules               Rules
		wantErr             string
	}{
		{"plain text", "motd", "hello", Rules{}, ""},
		{"empty refused", "app.conf", " \n", Rules{}, "empty"},
		{"empty allowed", "app.conf", "", Rules{AllowEmpty: true}, ""},
		{"bad json", "a.json", `{"a":`, Rules{}, "invalid JSON"},
		{"json trailing data", "a.json", `{} {}`, Rules{}, "after the document"},
		{"good json", "a.json", `{"a":1}`, Rules{}, ""},
		{"bad yaml", "a.yaml", "a: [1\n", Rules{}, "invalid YAML"},
		{"good yml", "a.yml", "a: 1\n", Rules{}, ""},
		{"not utf8", "a.txt", "\xff\xfe", Rules{}, "UTF-8"},
		{"properties bad escape", "a.properties", `k=\uZZZZ`, Rules{}, "escape"},
		{"schema ok json", "a.json", `{"port":80,"mode":"a"}`, Rules{Schema: schema}, ""},
		{"schema missing key", "a.json", `{"mode":"a"}`, Rules{Schema: schema}, `required key "port"`},
		{"schema wrong type yaml", "a.yaml", "port: eighty\n", Rules{Schema: schema}, "want integer"},
		{"schema above max", "a.yaml", "port: 70000\n", Rules{Schema: schema}, "maximum"},
		{"schema enum", "a.json", `{"port":1,"mode":"c"}`, Rules{Schema: schema}, "not one of"},
		{"schema ignores text", "notes.txt", "anything", Rules{Schema: schema}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Check(tt.file, []byte(tt.content), tt.rules)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
	if err := Check("x", nil, Rules{}); !errors.Is(err, ErrEmpty) {
		t.Fatalf("empty file: %v, want ErrEmpty", err)
	}
}

func TestParseSchemaRefusesUnknownKeywords(t *testing.T) {
	for _, s := range []string{`{"typ":"object"}`, `{"type":"obj"}`, `{"properties":{"a":{"type":"x"}}}`, `[`} {
		if _, err := ParseSchema(s); err == nil {
			t.Errorf("ParseSchema(%s) accepted", s)
		}
	}
}

func TestParseProperties(t *testing.T) {
	in := "# comment\n! also\nport=8080\nhost : example.org\nname value with spaces\nmulti = a,\\\n    b\nesc\\=key = tab\\there\\u0041\n\nempty=\n"
	got, err := ParseProperties([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"port": "8080", "host": "example.org", "name": "value with spaces", "multi": "a,b", "esc=key": "tab\thereA", "empty": ""}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q\nwant %q", got, want)
	}
}

func FuzzCheck(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/seed/*")
	for _, s := range seeds {
		b, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(filepath.Base(s), b)
	}
	schema, err := ParseSchema(`{"type":"object","required":["a"],"properties":{"a":{"type":"array","items":{"type":"number","minimum":0}}}}`)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, name string, content []byte) {
		_ = Check(name, content, Rules{Schema: schema})
		_ = Check(name, content, Rules{AllowEmpty: true})
		if _, err := ParseProperties(content); err == nil && KindOf(name) == Properties {
			if err := Check(name, content, Rules{AllowEmpty: true}); err != nil && !strings.Contains(err.Error(), "UTF-8") {
				t.Fatalf("ParseProperties accepted what Check refused: %v", err)
			}
		}
	})
}

func FuzzParseSchema(f *testing.F) {
	f.Add(`{"type":"object","required":["a"],"properties":{"a":{"enum":[1,"x",null]}}}`, `{"a":1}`)
	f.Add(`{"items":{"type":"integer"}}`, `[1,2.5]`)
	f.Fuzz(func(t *testing.T, schema, doc string) {
		s, err := ParseSchema(schema)
		if err != nil || s == nil {
			return
		}
		_ = Check("doc.json", []byte(doc), Rules{Schema: s})
		_ = Check("doc.yaml", []byte(doc), Rules{Schema: s})
	})
}
