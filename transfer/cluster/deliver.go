package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"

	"github.com/opskit/opskit/internal/metric"
)

// Paths of the node-to-node API. They are served by every clustered node
// and are not meant for clients.
const (
	PathWrite  = "/cluster/v1/write"
	PathSelect = "/cluster/v1/select"
	PathLabels = "/cluster/v1/labels"
	PathFetch  = "/cluster/v1/fetch"
	PathLast   = "/cluster/v1/last"
	PathStatus = "/cluster/v1/status"
)

// Headers of forwarded writes.
const (
	HeaderWire = "X-Opskit-Cluster-Wire"
	HeaderFrom = "X-Opskit-Cluster-From"
)

// peerDeliverer posts spooled blocks to a peer's PathWrite; the peer
// answers 200 once they are in its write-ahead log.
type peerDeliverer struct {
	c    *Cluster
	name string
}

func (d *peerDeliverer) Deliver(ctx context.Context, blocks [][]byte, points int) error {
	addr := d.c.addr(d.name)
	if addr == "" {
		return fmt.Errorf("no address for peer %s", d.name)
	}
	var body []byte
	for _, b := range blocks {
		body = AppendFrame(body, b)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+PathWrite, bytes.NewReader(body))
	if err != nil {
		return &PermanentError{err}
	}
	req.Header.Set("Content-Type", "application/x-opskit-points")
	req.Header.Set(HeaderWire, WireVersion)
	req.Header.Set(HeaderFrom, d.c.cfg.Self)
	return postOutcome(d.c.cfg.Client.Do(req))
}

// postOutcome classifies an HTTP answer: 2xx delivered; 400, 413 and 415
// permanent (the body itself is refused); anything else retried.
func postOutcome(resp *http.Response, err error) error {
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	switch {
	case resp.StatusCode/100 == 2:
		return nil
	case resp.StatusCode == http.StatusBadRequest || resp.StatusCode == http.StatusRequestEntityTooLarge || resp.StatusCode == http.StatusUnsupportedMediaType:
		return &PermanentError{fmt.Errorf("HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(msg))}
	default:
		return fmt.Errorf("HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(msg))
	}
}

// FalconItem is one point in open-falcon's push JSON, as sent to judge.
type FalconItem struct {
	Endpoint    string  `json:"endpoint"`
	Metric      string  `json:"metric"`
	Tags        string  `json:"tags"`
	Timestamp   int64   `json:"timestamp"`
	Step        int32   `json:"step"`
	Value       float64 `json:"value"`
	CounterType string  `json:"counterType"`
}

// ToFalcon converts a point to open-falcon's push item: the endpoint label,
// the metric name and the other labels as tags "k=v,...".
func ToFalcon(p metric.Point) FalconItem {
	step := p.Step
	if step <= 0 {
		// Graphite and remote_write points carry no step, and open-falcon
		// JSON requires one; judge's windows count points, so the default
		// finest archive step serves.
		step = defaultJudgeStep
	}
	return FalconItem{
		Endpoint: p.Labels.Get(metric.EndpointLabel), Metric: p.Labels.Name(), Tags: p.Labels.FormatTags(),
		Timestamp: p.Time, Step: step, Value: p.Value, CounterType: p.Type.String(),
	}
}

// defaultJudgeStep is the step sent to judge for points that have none.
const defaultJudgeStep = 60

// judgeDeliverer posts open-falcon JSON to a judge node's /api/push.
type judgeDeliverer struct {
	c    *Cluster
	addr string
}

func (d *judgeDeliverer) Deliver(ctx context.Context, blocks [][]byte, points int) error {
	items := make([]FalconItem, 0, points)
	for _, b := range blocks {
		pts, err := DecodeBlock(nil, b)
		if err != nil {
			return &PermanentError{err}
		}
		for _, p := range pts {
			if math.IsNaN(p.Value) || math.IsInf(p.Value, 0) {
				continue
			}
			items = append(items, ToFalcon(p))
		}
	}
	body, err := json.Marshal(items)
	if err != nil {
		return &PermanentError{err}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+d.addr+"/api/push", bytes.NewReader(body))
	if err != nil {
		return &PermanentError{err}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(HeaderFrom, d.c.cfg.Self)
	req.Header.Set("X-Opskit-Points", strconv.Itoa(len(items)))
	return postOutcome(d.c.cfg.Client.Do(req))
}
