package graphite

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/opskit/opskit/internal/metric"
	"github.com/opskit/opskit/transfer/intake"
)

// Config tunes the TCP server. Zero fields take the defaults named below.
type Config struct {
	// MaxConns bounds concurrent connections; one more is accepted and
	// closed at once, and counted. Default 1000.
	MaxConns int
	// MaxLineBytes is the longest line read; a longer one is rejected
	// (too_long) and skipped up to its newline. Default 32 KiB.
	MaxLineBytes int
	// IdleTimeout closes a connection that sent nothing for this long.
	// Default 5 minutes.
	IdleTimeout time.Duration
	// BatchSize is how many points are gathered before an Append. Default
	// 5000.
	BatchSize int
	// FlushInterval is how long the first point of a partial batch may
	// wait before an Append. Default 100 ms.
	FlushInterval time.Duration
	// ShutdownTimeout bounds the final Append of each connection when the
	// server stops. Default 10 s.
	ShutdownTimeout time.Duration
	// CacheSize is how many paths each connection's parser remembers.
	// Default DefaultCacheSize.
	CacheSize int
}

func (c Config) withDefaults() Config {
	if c.MaxConns <= 0 {
		c.MaxConns = 1000
	}
	if c.MaxLineBytes <= 0 {
		c.MaxLineBytes = 32 << 10
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 5 * time.Minute
	}
	if c.BatchSize <= 0 {
		c.BatchSize = 5000
	}
	if c.FlushInterval <= 0 {
		c.FlushInterval = 100 * time.Millisecond
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = 10 * time.Second
	}
	return c
}

// Server accepts Graphite plaintext over TCP and appends the points in
// batches. Graphite has no acknowledgement: a bad line is counted and logged
// and the connection goes on; a failed Append is counted and logged and the
// connection is closed, so the client notices and can resend.
type Server struct {
	app intake.Appender
	rec *intake.Recorder
	lim intake.Limits
	cfg Config
}

// NewServer returns a server storing into app. rec may be nil.
func NewServer(app intake.Appender, rec *intake.Recorder, lim intake.Limits, cfg Config) *Server {
	rec.Register(Proto)
	rec.Counter(`opskit_transfer_graphite_connections_refused_total`)
	return &Server{app: app, rec: rec, lim: lim.WithDefaults(), cfg: cfg.withDefaults()}
}

// Serve accepts connections on ln until ctx is done, then closes ln, stops
// reading, appends what every connection had read and returns once all
// connections are closed. It returns nil after ctx is done, or the error
// that stopped accepting.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	// Appends outlive ctx, so what was read when the stop came is still
	// stored, but only for ShutdownTimeout after it.
	appendCtx, cancelAppends := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelAppends()
	stopAccept := context.AfterFunc(ctx, func() {
		ln.Close()
		time.AfterFunc(s.cfg.ShutdownTimeout, cancelAppends)
	})
	defer stopAccept()

	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		active int
	)
	defer wg.Wait()
	refused := s.rec.Counter(`opskit_transfer_graphite_connections_refused_total`)
	log := s.rec.Logger()
	backoff := time.Duration(0)
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("graphite accept: %w", err)
			}
			// E.g. out of file descriptors: wait for connections to end.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			log.Warn("graphite accept failed, retrying", "err", err, "in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		mu.Lock()
		if active >= s.cfg.MaxConns {
			mu.Unlock()
			refused.Inc()
			log.Warn("graphite connection refused: too many connections", "peer", conn.RemoteAddr().String(), "max", s.cfg.MaxConns)
			conn.Close()
			continue
		}
		active++
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				mu.Lock()
				active--
				mu.Unlock()
			}()
			s.serveConn(ctx, appendCtx, conn)
		}()
	}
}

// connState is one client connection's state.
type connState struct {
	s          *Server
	conn       net.Conn
	peer       string
	parser     *Parser
	batch      []metric.Point
	batchStart time.Time
	line       int
}

// serveConn reads lines in large chunks, so a deadline is set once per read
// and not once per line: the deadline is the idle timeout, or the flush
// time of a partial batch when that comes first. ctx stops reading;
// appendCtx bounds the appends.
func (s *Server) serveConn(ctx, appendCtx context.Context, conn net.Conn) {
	defer conn.Close()
	c := &connState{
		s:      s,
		conn:   conn,
		peer:   conn.RemoteAddr().String(),
		parser: NewParser(s.lim, s.cfg.CacheSize),
		batch:  make([]metric.Point, 0, s.cfg.BatchSize),
	}
	stopRead := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Unix(1, 0)) })
	defer stopRead()

	bufSize := max(64<<10, s.cfg.MaxLineBytes+1)
	buf := make([]byte, bufSize)
	start, end := 0, 0
	discarding := false // inside a line already rejected as too long
	lastData := time.Now()
	for {
		if start > 0 {
			end = copy(buf, buf[start:end])
			start = 0
		}
		if end == len(buf) {
			// A full buffer without a newline: the line is too long.
			c.line++
			c.reject(intake.Rejectf(intake.ReasonTooLong, "line longer than %d bytes", s.cfg.MaxLineBytes))
			discarding = true
			end = 0
		}
		deadline := lastData.Add(s.cfg.IdleTimeout)
		if len(c.batch) > 0 {
			deadline = earliest(deadline, c.batchStart.Add(s.cfg.FlushInterval))
		}
		conn.SetReadDeadline(deadline)
		if ctx.Err() != nil {
			break // the stop may have raced with the deadline just set
		}
		n, err := conn.Read(buf[end:])
		now := time.Now()
		if n > 0 {
			lastData = now
		}
		end += n
		for {
			i := bytes.IndexByte(buf[start:end], '\n')
			if i < 0 {
				break
			}
			line := buf[start : start+i]
			start += i + 1
			if discarding {
				discarding = false
				continue
			}
			if !c.handleLine(appendCtx, line, now) {
				return
			}
		}
		if discarding {
			start = end
		}
		if len(c.batch) > 0 && now.Sub(c.batchStart) >= s.cfg.FlushInterval {
			if !c.flush(appendCtx) {
				return
			}
		}
		if err == nil {
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() && ctx.Err() == nil {
			if now.Sub(lastData) >= s.cfg.IdleTimeout {
				s.rec.Logger().Debug("graphite connection idle, closing", "peer", c.peer)
				break
			}
			continue
		}
		if ctx.Err() == nil && start < end && !discarding {
			// The client closed after a last line without "\n".
			if !c.handleLine(appendCtx, buf[start:end], now) {
				return
			}
		}
		break
	}
	// Stopping or closed: store what was read, even when ctx is done.
	c.flush(appendCtx)
}

// handleLine parses one line into the batch and appends a full batch. It
// returns false when the connection must close.
func (c *connState) handleLine(ctx context.Context, line []byte, now time.Time) bool {
	c.line++
	if len(line) > c.s.cfg.MaxLineBytes {
		c.reject(intake.Rejectf(intake.ReasonTooLong, "line longer than %d bytes", c.s.cfg.MaxLineBytes))
		return true
	}
	if IsBlank(line) {
		return true
	}
	pt, rej := c.parser.ParseLine(line, now.Unix())
	if rej != nil {
		c.reject(rej)
		return true
	}
	if len(c.batch) == 0 {
		c.batchStart = now
	}
	c.batch = append(c.batch, pt)
	if len(c.batch) >= c.s.cfg.BatchSize {
		return c.flush(ctx)
	}
	return true
}

func (c *connState) reject(rej *intake.Reject) {
	c.s.rec.Rejected(Proto, rej, c.peer+" line "+strconv.Itoa(c.line))
}

// flush appends the batch; it returns false when Append failed.
func (c *connState) flush(ctx context.Context) bool {
	if len(c.batch) == 0 {
		return true
	}
	n := len(c.batch)
	partial, err := intake.SplitAppendError(c.s.app.Append(ctx, c.batch))
	clear(c.batch) // drop label references held by the reused array
	c.batch = c.batch[:0]
	if err != nil {
		c.s.rec.AppendFailed(Proto, n, fmt.Errorf("from %s: %w", c.peer, err))
		return false
	}
	if partial != nil {
		// Refused by storage (e.g. out of order): counted like bad lines.
		for _, pr := range partial.Rejected {
			c.s.rec.Rejected(Proto, &intake.Reject{Reason: pr.Reason, Detail: pr.Detail}, c.peer)
		}
		n -= len(partial.Rejected)
	}
	c.s.rec.Received(Proto, n)
	return true
}

func earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
