package agent_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opskit/opskit/filefly/api"
	"github.com/opskit/opskit/filefly/piece"
)

// TestAgentRelaysPiecesAsTheyArrive: an agent forwards a piece's bytes to
// a child while the piece is still arriving (cut-through). Its source
// sends the first half of piece 0, then pauses: the child gets that half
// before the rest exists, a pause longer than ?wait ends the child's body
// cleanly, a Range request resumes where it ended, and once the source
// finishes, the piece is held and served from any offset.
func TestAgentRelaysPiecesAsTheyArrive(t *testing.T) {
	data := make([]byte, 2*piece.MinSize)
	rand.Read(data)
	r := newRig(t, 1, nil, false)
	sum := r.upload(t, data)
	tr, err := r.server.Create(context.Background(), api.SendRequest{SHA256: sum, Dest: "/srv/x", Hosts: []string{"127.0.0.1:1"}, Timeout: api.Duration(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	half := piece.MinSize / 2
	release := make(chan struct{})
	// The agent's source: piece 0 in two halves with a pause between
	// them, the other pieces straight from the server.
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if !strings.HasSuffix(req.URL.Path, "/pieces/0") || req.Header.Get("Range") != "" {
			resp, err := http.DefaultClient.Do(mustRequest(t, r.srvURL+req.URL.Path, req.Header.Get("Range")))
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadGateway)
				return
			}
			defer resp.Body.Close()
			for k, v := range resp.Header {
				w.Header()[k] = v
			}
			w.WriteHeader(resp.StatusCode)
			io.Copy(w, resp.Body)
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(piece.MinSize))
		w.Write(data[:half])
		w.(http.Flusher).Flush()
		select {
		case <-release:
			w.Write(data[half:piece.MinSize])
		case <-req.Context().Done():
		}
	}))
	t.Cleanup(slow.Close)
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	r.jobOn(t, 0, api.Job{ID: tr.ID, Host: "127.0.0.1:1", Manifest: tr.Manifest, Dest: "/srv/relayed.bin",
		Sources: []string{slow.URL, r.srvURL}, Server: r.srvURL})

	pieceURL := fmt.Sprintf("%s/v1/transfers/%s/pieces/0?wait=300ms", r.agents[0].URL, tr.ID)
	// The first half arrives while the source holds back the rest; the
	// body then ends cleanly after a pause of ?wait.
	resp, err := http.DefaultClient.Do(mustRequest(t, pieceURL, ""))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("relayed body: %s, %v", resp.Status, err)
	}
	if len(got) != half || !bytes.Equal(got, data[:len(got)]) {
		t.Fatalf("got %d bytes before the source sent the rest, want the first %d", len(got), half)
	}
	// Resume from where the body ended; the rest arrives once released.
	close(release)
	resp, err = http.DefaultClient.Do(mustRequest(t, pieceURL, fmt.Sprintf("bytes=%d-", half)))
	if err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusPartialContent || !strings.HasPrefix(resp.Header.Get("Content-Range"), fmt.Sprintf("bytes %d-", half)) {
		t.Fatalf("resumed body: %s %q, %v", resp.Status, resp.Header.Get("Content-Range"), err)
	}
	if !bytes.Equal(append(got, rest...), data[:piece.MinSize]) {
		t.Fatalf("relayed piece differs (%d+%d bytes)", len(got), len(rest))
	}
	rep := r.jobReport(t, 0, tr.ID, 10*time.Second)
	if rep.State != api.StateDone || rep.Reattached != 0 || rep.CorruptPieces != 0 {
		t.Fatalf("report %+v", rep)
	}
	// Held now: served whole, or from an offset.
	for _, tt := range []struct {
		rangeHeader string
		status      int
		want        []byte
	}{
		{"", http.StatusOK, data[:piece.MinSize]},
		{"bytes=1000-", http.StatusPartialContent, data[1000:piece.MinSize]},
		{"bytes=1-2", http.StatusRequestedRangeNotSatisfiable, nil},
		{fmt.Sprintf("bytes=%d-", piece.MinSize), http.StatusRequestedRangeNotSatisfiable, nil},
	} {
		resp, err := http.DefaultClient.Do(mustRequest(t, pieceURL, tt.rangeHeader))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.status || tt.want != nil && !bytes.Equal(body, tt.want) {
			t.Errorf("Range %q: %s, %d bytes", tt.rangeHeader, resp.Status, len(body))
		}
	}
}

func mustRequest(t *testing.T, url, rangeHeader string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rangeHeader != "" {
		req.Header.Set("Range", rangeHeader)
	}
	return req
}
