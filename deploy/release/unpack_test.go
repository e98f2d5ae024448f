package release

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// entry is one archive member for the test builders.
type entry struct {
	name, body, link string
	typ              byte // tar type; 0 = regular file
	mode             int64
}

func tarBytes(t testing.TB, entries []entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Linkname: e.link, Mode: e.mode}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			tw.Write([]byte(e.body))
		}
	}
	tw.Close()
	return buf.Bytes()
}

func tgz(t testing.TB, entries []entry) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(tarBytes(t, entries))
	zw.Close()
	return buf.Bytes()
}

func tzst(t testing.TB, entries []entry) []byte {
	var buf bytes.Buffer
	zw, _ := zstd.NewWriter(&buf)
	zw.Write(tarBytes(t, entries))
	zw.Close()
	return buf.Bytes()
}

func zipBytes(t testing.TB, entries []entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range entries {
		h := &zip.FileHeader{Name: e.name, Method: zip.Deflate}
		switch e.typ {
		case tar.TypeSymlink:
			h.SetMode(os.ModeSymlink | 0o777)
			e.body = e.link
		case tar.TypeDir:
			h.SetMode(os.ModeDir | 0o755)
		default:
			h.SetMode(0o644)
		}
		w, err := zw.CreateHeader(h)
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte(e.body))
	}
	zw.Close()
	return buf.Bytes()
}

func writeTemp(t testing.TB, b []byte) string {
	p := filepath.Join(t.TempDir(), "pkg")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestUnpackFormatsKeepContentAndModes(t *testing.T) {
	entries := []entry{
		{name: "bin/", typ: tar.TypeDir, mode: 0o755},
		{name: "bin/run", body: "#!/bin/sh\necho hi\n", mode: 0o755},
		{name: "conf/app.conf", body: "port=1\n"},
		{name: "conf/link.conf", typ: tar.TypeSymlink, link: "app.conf"},
		{name: "bin/hard", typ: tar.TypeLink, link: "bin/run"},
	}
	for _, tc := range []struct {
		name string
		pkg  []byte
		zip  bool
	}{
		{"tar.gz", tgz(t, entries), false},
		{"tar.zst", tzst(t, entries), false},
		{"zip", zipBytes(t, entries[:4]), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dest := filepath.Join(t.TempDir(), "r")
			st, err := UnpackFile(writeTemp(t, tc.pkg), dest, Limits{})
			if err != nil {
				t.Fatal(err)
			}
			if b, _ := os.ReadFile(filepath.Join(dest, "conf/link.conf")); string(b) != "port=1\n" {
				t.Errorf("symlinked conf = %q", b)
			}
			info, err := os.Stat(filepath.Join(dest, "bin/run"))
			if err != nil {
				t.Fatal(err)
			}
			if !tc.zip && info.Mode().Perm() != 0o755 {
				t.Errorf("bin/run mode %v, want 0755", info.Mode().Perm())
			}
			if !tc.zip {
				if b, _ := os.ReadFile(filepath.Join(dest, "bin/hard")); !strings.Contains(string(b), "echo hi") {
					t.Errorf("hard link content %q", b)
				}
			}
			if st.Files == 0 || st.Bytes == 0 {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

func TestUnpackRefusesMaliciousArchives(t *testing.T) {
	outside := t.TempDir()
	bomb := strings.Repeat("0", 1<<20)
	cases := []struct {
		name    string
		entries []entry
		lim     Limits
		want    string
	}{
		{"dot-dot path", []entry{{name: "../evil", body: "x"}}, Limits{}, "path traversal"},
		{"dot-dot inside", []entry{{name: "a/../../evil", body: "x"}}, Limits{}, "path traversal"},
		{"absolute path", []entry{{name: filepath.Join(outside, "evil"), body: "x"}}, Limits{}, "absolute path"},
		{"symlink to absolute", []entry{{name: "l", typ: tar.TypeSymlink, link: outside}}, Limits{}, "points outside"},
		{"symlink up", []entry{{name: "a/l", typ: tar.TypeSymlink, link: "../../x"}}, Limits{}, "points outside"},
		{"write through symlink dir", []entry{
			{name: "d", typ: tar.TypeDir},
			{name: "d/l", typ: tar.TypeSymlink, link: ".."},
			{name: "d/l/l2", typ: tar.TypeSymlink, link: ".."},
			{name: "d/l/l2/evil", body: "x"},
		}, Limits{}, "unsafe archive"},
		{"symlink made through a symlink dir", []entry{
			{name: "d", typ: tar.TypeDir},
			{name: "d/l", typ: tar.TypeSymlink, link: ".."},
			{name: "d/l/l2", typ: tar.TypeSymlink, link: ".."},
		}, Limits{}, "goes through"},
		{"file through file", []entry{{name: "f", body: "x"}, {name: "f/g", body: "y"}}, Limits{}, "goes through"},
		{"hard link out", []entry{{name: "h", typ: tar.TypeLink, link: "../../etc/passwd"}}, Limits{}, "hard link"},
		{"hard link absolute", []entry{{name: "h", typ: tar.TypeLink, link: "/etc/passwd"}}, Limits{}, "hard link"},
		{"device", []entry{{name: "dev", typ: tar.TypeChar}}, Limits{}, "devices"},
		{"bomb bytes", []entry{{name: "a", body: bomb}, {name: "b", body: bomb}}, Limits{MaxBytes: 1<<20 + 10}, "more than"},
		{"too many files", []entry{{name: "a", body: "1"}, {name: "b", body: "2"}, {name: "c", body: "3"}}, Limits{MaxFiles: 2}, "more than 2 entries"},
		{"duplicate overwrite", []entry{{name: "a", body: "1"}, {name: "a", body: "2"}}, Limits{}, "unsafe archive"},
	}
	for _, tc := range cases {
		for _, format := range []string{"tar.gz", "zip"} {
			if format == "zip" && (tc.entries[len(tc.entries)-1].typ == tar.TypeLink || tc.entries[0].typ == tar.TypeChar) {
				continue // zip has no hard links or devices
			}
			t.Run(tc.name+"/"+format, func(t *testing.T) {
				pkg := tgz(t, tc.entries)
				if format == "zip" {
					pkg = zipBytes(t, tc.entries)
				}
				dest := filepath.Join(t.TempDir(), "r")
				_, err := UnpackFile(writeTemp(t, pkg), dest, tc.lim)
				if err == nil || !errors.Is(err, ErrUnsafeArchive) || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("err = %v, want ErrUnsafeArchive with %q", err, tc.want)
				}
				if ents, _ := os.ReadDir(outside); len(ents) != 0 {
					t.Fatalf("something was written outside: %v", ents)
				}
				if _, err := os.Stat(filepath.Join(filepath.Dir(dest), "evil")); err == nil {
					t.Fatal("evil written beside the release")
				}
			})
		}
	}
}

func TestUnpackRefusesUnknownFormat(t *testing.T) {
	_, err := UnpackFile(writeTemp(t, []byte("plain text")), filepath.Join(t.TempDir(), "r"), Limits{})
	if err == nil || !strings.Contains(err.Error(), "unknown package format") {
		t.Fatalf("err = %v", err)
	}
}

func FuzzUnpack(f *testing.F) {
	f.Add(tgz(f, []entry{{name: "a", body: "x"}, {name: "l", typ: tar.TypeSymlink, link: "a"}}))
	f.Add(zipBytes(f, []entry{{name: "d/", typ: tar.TypeDir}, {name: "d/a", body: "x"}}))
	f.Add(tzst(f, []entry{{name: "../x", body: "x"}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		base := t.TempDir()
		dest := filepath.Join(base, "r")
		_, _ = UnpackFile(writeTemp(t, b), dest, Limits{MaxBytes: 1 << 20, MaxFiles: 100})
		ents, _ := os.ReadDir(base)
		for _, e := range ents {
			if e.Name() != "r" && e.Name() != "pkg" {
				t.Fatalf("wrote %s outside the release", e.Name())
			}
		}
	})
}
