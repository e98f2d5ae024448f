package main

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/opskit/opskit/internal/metric"
	"github.com/opskit/opskit/transfer/intake"
	"github.com/opskit/opskit/transfer/intake/falcon"
	"github.com/opskit/opskit/transfer/intake/intaketest"
)

// TestSendGraphiteWaitsForTheServerToClose checks that a connection counts
// as done only once the server has read to the end and closed.
func TestSendGraphiteWaitsForTheServerToClose(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const delay = 100 * time.Millisecond
	lines := make(chan int, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		n := 0
		sc := bufio.NewScanner(conn)
		for sc.Scan() {
			n++
		}
		time.Sleep(delay) // a server still storing after the last line
		conn.Close()
		lines <- n
	}()
	w := testWorkload
	chunks := buildChunks(w, 0, 1, 64, graphiteEncoding)
	start := time.Now()
	sent, err := sendGraphite(context.Background(), ln.Addr().String(), chunks)
	if err != nil {
		t.Fatal(err)
	}
	if sent != w.Total() {
		t.Fatalf("sent %d, want %d", sent, w.Total())
	}
	if took := time.Since(start); took < delay {
		t.Fatalf("sendGraphite returned after %v, before the server closed", took)
	}
	if got := <-lines; int64(got) != w.Total() {
		t.Fatalf("server read %d lines, want %d", got, w.Total())
	}
}

// TestSendFalconToTransferHandler posts the workload to transfer's own
// /api/push handler and checks every point arrived.
func TestSendFalconToTransferHandler(t *testing.T) {
	app := intaketest.NewAppender()
	srv := httptest.NewServer(falcon.NewHandler(app, nil, intake.Limits{}))
	defer srv.Close()
	w := testWorkload
	const conns = 2
	perConn := make([][]chunk, conns)
	for conn := range perConn {
		perConn[conn] = buildChunks(w, conn, conns, 100, falconEncoding)
	}
	accepted, err := sendAll(context.Background(), perConn, func(ctx context.Context, c []chunk) (int64, error) {
		return sendFalcon(ctx, srv.Client(), srv.URL+"/api/push", c)
	})
	if err != nil {
		t.Fatal(err)
	}
	if accepted != w.Total() {
		t.Fatalf("accepted %d, want %d", accepted, w.Total())
	}
	pts := app.Points()
	if int64(len(pts)) != w.Total() {
		t.Fatalf("handler stored %d points, want %d", len(pts), w.Total())
	}
	seen := map[string]int{}
	for _, p := range pts {
		seen[p.Labels.Get(metric.NameLabel)+"@"+p.Labels.Get("endpoint")+"@"+p.Labels.Get("group")]++
	}
	if len(seen) != w.Series {
		t.Fatalf("%d distinct series stored, want %d", len(seen), w.Series)
	}
}

func TestSendFalconReportsRefusals(t *testing.T) {
	tests := []struct {
		name   string
		status int
		body   string
		want   string
	}{
		{"storage failed", http.StatusServiceUnavailable, `{"accepted":0,"rejected":[],"error":"disk full"}`, "disk full"},
		{"some items refused", http.StatusOK, `{"accepted":3,"rejected":[{"index":1,"reason":"x"}]}`, "3 of"},
		{"not json", http.StatusBadGateway, `<html>`, "502"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tt.status)
				w.Write([]byte(tt.body))
			}))
			defer srv.Close()
			chunks := buildChunks(testWorkload, 0, 1, 10, falconEncoding)
			_, err := sendFalcon(context.Background(), srv.Client(), srv.URL, chunks)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("sendFalcon = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}
