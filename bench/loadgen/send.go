package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
)

// chunk is one write, POST body or BATCH: its bytes and how many points
// they carry.
type chunk struct {
	data   []byte
	points int
}

// encoding turns the workload into a target's wire format.
type encoding struct {
	begin, sep, end string
	item            func(buf []byte, w Workload, i, j int) []byte
}

var (
	graphiteEncoding = encoding{item: AppendGraphiteLine}
	falconEncoding   = encoding{begin: "[", sep: ",", end: "]", item: AppendFalconItem}
	rrdEncoding      = encoding{item: AppendRRDUpdate}
)

// buildChunks encodes, ahead of the clock, what connection conn of conns
// sends: its series' points in time order (all of them at the first
// timestamp, then all at the next, ...), batch points per chunk.
func buildChunks(w Workload, conn, conns, batch int, enc encoding) []chunk {
	series := ShardSeries(w, conn, conns)
	var chunks []chunk
	var buf []byte
	n := 0
	flush := func() {
		if n == 0 {
			return
		}
		buf = append(buf, enc.end...)
		chunks = append(chunks, chunk{data: buf, points: n})
		buf, n = nil, 0
	}
	for j := 0; j < w.Points; j++ {
		for _, i := range series {
			if n == 0 {
				buf = append(make([]byte, 0, 64*batch), enc.begin...)
			} else {
				buf = append(buf, enc.sep...)
			}
			buf = enc.item(buf, w, i, j)
			n++
			if n == batch {
				flush()
			}
		}
	}
	flush()
	return chunks
}

// forEachConn runs fn for connections 0..conns-1 at once and returns the
// first error; an error cancels the others' context.
func forEachConn(ctx context.Context, conns int, fn func(ctx context.Context, conn int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	for conn := range conns {
		wg.Go(func() {
			if err := fn(ctx, conn); err != nil {
				once.Do(func() { first = err; cancel() })
			}
		})
	}
	wg.Wait()
	return first
}

// sendGraphite writes chunks over one TCP connection, then half-closes it
// and waits for the server to close its side: a server that reads to the
// end before closing (carbon, transfer) has then taken every line.
func sendGraphite(ctx context.Context, addr string, chunks []chunk) (int64, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return 0, fmt.Errorf("graphite: %w", err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	var sent int64
	for _, c := range chunks {
		if _, err := conn.Write(c.data); err != nil {
			return sent, fmt.Errorf("graphite write to %s: %w", addr, errors.Join(err, ctx.Err()))
		}
		sent += int64(c.points)
	}
	if tcp, ok := conn.(*net.TCPConn); ok {
		if err := tcp.CloseWrite(); err != nil {
			return sent, fmt.Errorf("graphite: half-closing %s: %w", addr, err)
		}
	}
	if _, err := io.Copy(io.Discard, conn); err != nil && !errors.Is(err, net.ErrClosed) {
		return sent, fmt.Errorf("graphite: waiting for %s to close: %w", addr, errors.Join(err, ctx.Err()))
	}
	return sent, ctx.Err()
}

// falconAnswer is the part of transfer's /api/push answer counted here.
type falconAnswer struct {
	Accepted int    `json:"accepted"`
	Error    string `json:"error"`
}

// sendFalcon POSTs each chunk to url in turn and adds up the accepted counts
// of the answers. A refused request stops the connection with an error.
func sendFalcon(ctx context.Context, client *http.Client, url string, chunks []chunk) (int64, error) {
	var accepted int64
	for _, c := range chunks {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(c.data))
		if err != nil {
			return accepted, fmt.Errorf("falcon: %w", err)
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return accepted, fmt.Errorf("falcon: %w", err)
		}
		body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		if err != nil {
			return accepted, fmt.Errorf("falcon: reading answer: %w", err)
		}
		var ans falconAnswer
		if err := json.Unmarshal(body, &ans); err != nil {
			return accepted, fmt.Errorf("falcon: answer %s %q: %w", resp.Status, truncate(string(body)), err)
		}
		accepted += int64(ans.Accepted)
		if resp.StatusCode != http.StatusOK {
			return accepted, fmt.Errorf("falcon: %s: %s", resp.Status, ans.Error)
		}
		if ans.Accepted != c.points {
			return accepted, fmt.Errorf("falcon: %d of %d items accepted: %s", ans.Accepted, c.points, truncate(string(body)))
		}
	}
	return accepted, nil
}

// sendRRD sends each chunk of UPDATE commands as one BATCH over a single
// rrdcached connection; accepted counts the updates rrdcached did not
// refuse. A refused update is an error, with rrdcached's first message.
func sendRRD(ctx context.Context, addr string, chunks []chunk) (int64, error) {
	c, err := dialRRDCached(ctx, addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	var accepted int64
	for _, ch := range chunks {
		refused, first, err := c.batch(ch.data)
		if err != nil {
			return accepted, errors.Join(err, ctx.Err())
		}
		accepted += int64(ch.points - refused)
		if refused > 0 {
			return accepted, fmt.Errorf("rrdcached refused %d of %d updates: %s", refused, ch.points, first)
		}
	}
	return accepted, nil
}

// sendAll runs send for every connection's chunks at once and adds up what
// was accepted.
func sendAll(ctx context.Context, perConn [][]chunk, send func(ctx context.Context, chunks []chunk) (int64, error)) (int64, error) {
	var total atomic.Int64
	err := forEachConn(ctx, len(perConn), func(ctx context.Context, conn int) error {
		n, err := send(ctx, perConn[conn])
		total.Add(n)
		return err
	})
	return total.Load(), err
}
