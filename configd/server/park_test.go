package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/opskit/opskit/configd/api"
	"github.com/opskit/opskit/configd/client"
	"github.com/opskit/opskit/configd/store"
)

func TestParseRewatch(t *testing.T) {
	tests := []struct {
		name, head string
		fast       bool
	}{
		{"plain watch", "GET /v1/watch?ns=a/b/c:1&host=h HTTP/1.1\r\nHost: x\r\n\r\n", true},
		{"with token", "GET /v1/watch?ns=a/b/c:1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\n\r\n", true},
		{"connection close", "GET /v1/watch?ns=a/b/c:1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", true},
		{"HTTP/1.0", "GET /v1/watch?ns=a/b/c:1 HTTP/1.0\r\nHost: x\r\n\r\n", false},
		{"no host", "GET /v1/watch?ns=a/b/c:1 HTTP/1.1\r\n\r\n", false},
		{"other path", "GET /v1/watchers?ns=a/b/c:1 HTTP/1.1\r\nHost: x\r\n\r\n", false},
		{"post", "POST /v1/watch?ns=a/b/c:1 HTTP/1.1\r\nHost: x\r\n\r\n", false},
		{"body", "GET /v1/watch?ns=a/b/c:1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n", false},
		{"chunked", "GET /v1/watch?ns=a/b/c:1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", false},
		{"expect", "GET /v1/watch?ns=a/b/c:1 HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n", false},
		{"garbage", "GET /v1/watch?\r\n\r\n", false},
		{"bad header", "GET /v1/watch?ns=a/b/c:1 HTTP/1.1\r\nHost x\r\n\r\n", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := parseRewatch([]byte(tt.head)) != nil; got != tt.fast {
				t.Fatalf("parsed for the fast path: %v, want %v", got, tt.fast)
			}
		})
	}
}

// FuzzRewatchHead reads arbitrary bytes as the request after a watch's
// answer, a byte at a time, and checks that only a single complete, body-less
// HTTP/1.1 GET /v1/watch head is taken for the fast path.
func FuzzRewatchHead(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/rewatch/*")
	for _, s := range seeds {
		b, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		head, complete, err := readHead(iotest.OneByteReader(bytes.NewReader(data)), make([]byte, 0, 16), 0)
		if !bytes.HasPrefix(data, head) || len(head) > rewatchHeadMax {
			t.Fatalf("read %q of %q", head, data)
		}
		if !complete {
			return
		}
		if err != nil || !bytes.HasPrefix(head, []byte("GET /v1/watch?")) || bytes.Index(head, []byte("\r\n\r\n")) != len(head)-4 {
			t.Fatalf("complete head %q (%v)", head, err)
		}
		req := parseRewatch(head)
		if req == nil {
			return
		}
		if req.Method != http.MethodGet || req.URL.Path != "/v1/watch" || req.Proto != "HTTP/1.1" || req.Host == "" || req.ContentLength != 0 {
			t.Fatalf("took %q for the fast path: %+v", head, req)
		}
	})
}

func TestReadHead(t *testing.T) {
	watch := "GET /v1/watch?ns=a/b/c:1 HTTP/1.1\r\nHost: x\r\n\r\n"
	tests := []struct {
		name     string
		chunks   []string
		complete bool
		read     string // what readHead returns
		err      bool
	}{
		{"one write", []string{watch}, true, watch, false},
		{"split in the request line", []string{watch[:5], watch[5:]}, true, watch, false},
		{"split in the blank line", []string{watch[:len(watch)-1], watch[len(watch)-1:]}, true, watch, false},
		{"another endpoint stops at once", []string{"GET /v1/ns/a/b/c", "/config HTTP/1.1\r\n\r\n"}, false, "GET /v1/ns/a/b/c", false},
		{"pipelined", []string{watch + watch}, false, watch + watch, false},
		{"too long", []string{"GET /v1/watch?" + strings.Repeat("ns=a/b/c:1&", 300)}, false, ("GET /v1/watch?" + strings.Repeat("ns=a/b/c:1&", 300))[:rewatchHeadMax], false},
		{"closed midway", []string{watch[:10]}, false, watch[:10], true},
		{"stalled midway", []string{watch[:10], "stall"}, false, watch[:10], true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, server := net.Pipe()
			go func() {
				for _, c := range tt.chunks {
					if c == "stall" {
						time.Sleep(2 * time.Second) // past the header timeout
						return
					}
					if _, err := client.Write([]byte(c)); err != nil {
						return
					}
					time.Sleep(5 * time.Millisecond)
				}
				if tt.err {
					client.Close()
				}
			}()
			defer client.Close()
			head, complete, err := readHead(server, make([]byte, 0, 16), 200*time.Millisecond) // grown as needed
			if string(head) != tt.read || complete != tt.complete || (err != nil) != tt.err {
				t.Fatalf("read %q complete %v err %v; want %q %v err %v", head, complete, err, tt.read, tt.complete, tt.err)
			}
		})
	}
}

// TestRewatchOnHandedBackConnection sends a second request on a connection
// whose parked watch has just been answered (the connection an agent keeps
// alive) and checks it is served as net/http would serve it.
func TestRewatchOnHandedBackConnection(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "tokens.yaml")
	os.WriteFile(path, []byte(`tokens:
  - {name: root, token: admin-token-0123456789, role: admin}
  - {name: agent, token: reader-token-0123456789, role: reader}
`), 0o600)
	auth, err := LoadTokens(path)
	if err != nil {
		t.Fatal(err)
	}
	s := startServer(t, Config{Auth: auth, WatchTimeout: 10 * time.Second})
	ctx := context.Background()
	const ns = "a/b/c"
	admin := remote(t, s.url, client.RemoteOptions{Token: "admin-token-0123456789"})
	publish := func() int64 {
		t.Helper()
		rel, err := admin.Publish(ctx, ns, api.PublishRequest{Files: []api.File{api.NewFile("f", time.Now().String())}})
		if err != nil {
			t.Fatal(err)
		}
		return rel.Version
	}
	publish()
	addr := strings.TrimPrefix(s.url, "http://")
	const token = "Authorization: Bearer reader-token-0123456789\r\n"
	watchReq := func(held int64, extra string) string {
		return "GET /v1/watch?ns=" + ns + ":" + strconv.FormatInt(held, 10) + "&host=h&content=1 HTTP/1.1\r\nHost: configd\r\n" + token + extra + "\r\n"
	}
	longQuery := strings.Repeat("&label=k=v", 300)
	tests := []struct {
		name string
		// req is the second request (split at "|" into separate writes)
		// given the version the client holds.
		req func(held int64) string
		// publish a release once the second watch waits.
		publish    bool
		wantStatus int
		wantClosed bool // the server closes the connection after answering
	}{
		{"watch parks and answers the next change", func(v int64) string { return watchReq(v, "") }, true, 200, false},
		{"watch in two writes", func(v int64) string { r := watchReq(v, ""); return r[:20] + "|" + r[20:] }, true, 200, false},
		{"watch asking for close", func(v int64) string { return watchReq(v, "Connection: close\r\n") }, true, 200, true},
		{"watch of a longer head than read by hand", func(v int64) string {
			r := watchReq(v, "")
			return strings.Replace(r, "&host=h", "&host=h"+longQuery, 1)
		}, true, 200, false},
		{"watch behind the current version answers at once", func(v int64) string { return watchReq(v-1, "") }, false, 200, false},
		{"watch timing out", func(v int64) string {
			return strings.Replace(watchReq(v, ""), "content=1", "content=1&timeout=50ms", 1)
		}, false, 304, false},
		{"watch with an unknown token", func(v int64) string { return strings.Replace(watchReq(v, ""), "reader-token", "wrong-token", 1) }, false, 401, false},
		{"watch of a bad namespace", func(v int64) string { return strings.Replace(watchReq(v, ""), "ns="+ns, "ns=nope", 1) }, false, 400, false},
		{"another endpoint", func(int64) string {
			return "GET /v1/ns/" + ns + "/config HTTP/1.1\r\nHost: configd\r\n" + token + "\r\n"
		}, false, 200, false},
		{"two pipelined watches", func(v int64) string { return watchReq(v, "") + watchReq(v, "") }, false, 304, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			held := currentVersion(t, s, ns)
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(10 * time.Second))
			br := bufio.NewReader(conn)
			// First watch: parked through net/http, answered by a publish.
			io.WriteString(conn, watchReq(held, ""))
			waitWatchers(t, s, 1)
			held = publish()
			if resp := readResponse(t, br); resp.StatusCode != 200 || resp.Close {
				t.Fatalf("first watch: %s close %v", resp.Status, resp.Close)
			}
			waitWatchers(t, s, 0)
			for i, part := range strings.Split(tt.req(held), "|") {
				if i > 0 {
					time.Sleep(20 * time.Millisecond)
				}
				io.WriteString(conn, part)
			}
			if tt.publish {
				waitWatchers(t, s, 1)
				held = publish()
			}
			resp := readResponse(t, br)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("second request: %s %s, want %d", resp.Status, resp.body, tt.wantStatus)
			}
			if resp.StatusCode == 200 && strings.HasPrefix(tt.req(held), "GET /v1/watch") {
				var changes []api.Change
				if err := json.Unmarshal(resp.body, &changes); err != nil || len(changes) != 1 || changes[0].Version != held || changes[0].Release == nil {
					t.Fatalf("watch answer %s: %v", resp.body, err)
				}
			}
			if resp.Close != tt.wantClosed {
				t.Fatalf("Connection: close is %v, want %v", resp.Close, tt.wantClosed)
			}
			// A kept connection stays open and silent.
			wait := 100 * time.Millisecond
			if tt.wantClosed {
				wait = 2 * time.Second
			}
			conn.SetReadDeadline(time.Now().Add(wait))
			_, err = br.ReadByte()
			if closed := errors.Is(err, io.EOF); closed != tt.wantClosed || (!closed && !errors.Is(err, os.ErrDeadlineExceeded)) {
				t.Fatalf("after the answer: %v, want closed %v", err, tt.wantClosed)
			}
		})
	}
}

// TestShutdownClosesHandedBackConnections checks that a connection waiting
// for the request after its watch's answer is closed when the server stops.
func TestShutdownClosesHandedBackConnections(t *testing.T) {
	st, err := store.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	s, err := New(Config{WatchTimeout: 10 * time.Second}, st)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	s.Register(mux)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: mux}
	go hs.Serve(ln)
	defer hs.Close()
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(runCtx); close(done) }()
	defer func() { stop(); <-done }()
	const ns = "a/b/c"
	admin := remote(t, "http://"+ln.Addr().String(), client.RemoteOptions{})
	publish := func() {
		t.Helper()
		if _, err := admin.Publish(context.Background(), ns, api.PublishRequest{Files: []api.File{api.NewFile("f", time.Now().String())}}); err != nil {
			t.Fatal(err)
		}
	}
	publish()

	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(conn)
	io.WriteString(conn, "GET /v1/watch?ns="+ns+":0 HTTP/1.1\r\nHost: configd\r\n\r\n")
	if resp := readResponse(t, br); resp.StatusCode != 200 {
		t.Fatalf("watch: %s", resp.Status)
	}
	// Parked, then answered by a change: the connection waits for the
	// client's next request outside net/http.
	io.WriteString(conn, "GET /v1/watch?ns="+ns+":1 HTTP/1.1\r\nHost: configd\r\n\r\n")
	waitWatchers(t, &testServer{Server: s}, 1)
	publish()
	if resp := readResponse(t, br); resp.StatusCode != 200 {
		t.Fatalf("watch: %s", resp.Status)
	}
	stop()
	<-done
	conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("connection after the server stopped: %v, want EOF", err)
	}
}

type rawResponse struct {
	*http.Response
	body []byte
}

func readResponse(t *testing.T, br *bufio.Reader) rawResponse {
	t.Helper()
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return rawResponse{resp, body}
}

func waitWatchers(t *testing.T, s *testServer, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for s.hub.watchers() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d watchers waiting, want %d", s.hub.watchers(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func currentVersion(t *testing.T, s *testServer, ns string) int64 {
	t.Helper()
	h, ok := s.head(ns)
	if !ok {
		t.Fatalf("no namespace %s", ns)
	}
	return h.Current
}

// TestHandedBackConnectionClosedWhenIdle checks that a connection whose
// client sends nothing after its watch's answer is closed once idle.
func TestHandedBackConnectionClosedWhenIdle(t *testing.T) {
	s := startServer(t, Config{WatchTimeout: 10 * time.Second})
	s.rehome.idle = 100 * time.Millisecond // before the first watch starts the rehome server
	ctx := context.Background()
	const ns = "a/b/c"
	admin := remote(t, s.url, client.RemoteOptions{})
	admin.Publish(ctx, ns, api.PublishRequest{Files: []api.File{api.NewFile("f", "1")}})
	conn, err := net.Dial("tcp", strings.TrimPrefix(s.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(conn)
	io.WriteString(conn, "GET /v1/watch?ns="+ns+":1 HTTP/1.1\r\nHost: configd\r\n\r\n")
	waitWatchers(t, s, 1)
	admin.Publish(ctx, ns, api.PublishRequest{Files: []api.File{api.NewFile("f", "2")}})
	if resp := readResponse(t, br); resp.StatusCode != 200 {
		t.Fatalf("watch: %s", resp.Status)
	}
	start := time.Now()
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("idle connection: %v, want EOF", err)
	}
	if took := time.Since(start); took < 100*time.Millisecond || took > 2*time.Second {
		t.Fatalf("idle connection closed after %v, want about 100ms", took)
	}
}
