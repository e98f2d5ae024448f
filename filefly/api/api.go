// Package api holds filefly's wire types: what the server, the agents and
// the send command exchange as JSON over HTTP.
package api

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strconv"
	"strings"
	"time"

	"github.com/opskit/opskit/filefly/piece"
)

// Host states, as the server reports them.
const (
	StatePending     = "pending"     // not yet handed to its agent
	StateUnreachable = "unreachable" // the agent did not take the job yet; retried until the deadline
	StateRunning     = "running"
	StateDone        = "done"
	StateSkipped     = "skipped" // the destination already held the file
	StateFailed      = "failed"
	StateLate        = "late" // not finished by the transfer's deadline
)

// Terminal reports whether a host state is final.
func Terminal(state string) bool {
	switch state {
	case StateDone, StateSkipped, StateFailed, StateLate:
		return true
	}
	return false
}

// OK reports whether a final host state is a success.
func OK(state string) bool { return state == StateDone || state == StateSkipped }

// Topologies of the relay.
const (
	// TopologyTree is a striped tree: even and odd pieces each travel down
	// their own tree, and a host relays (has children) in one of them only.
	TopologyTree = "tree"
	// TopologyTree1 is a single tree: every piece takes the same path, and
	// the leaves upload nothing.
	TopologyTree1 = "tree1"
	TopologyChain = "chain"
	TopologyStar  = "star"
)

// SendRequest asks the server to start a transfer of a blob it holds.
type SendRequest struct {
	SHA256         string   `json:"sha256"`
	Dest           string   `json:"dest"`
	Mode           uint32   `json:"mode,omitempty"` // 0 = 0644
	Owner          string   `json:"owner,omitempty"`
	PostCmd        string   `json:"post_cmd,omitempty"`
	PostCmdTimeout Duration `json:"post_cmd_timeout,omitempty"`
	App            string   `json:"app,omitempty"`
	Env            string   `json:"env,omitempty"`
	Hosts          []string `json:"hosts,omitempty"`
	Topology       string   `json:"topology,omitempty"`
	Fanout         int      `json:"fanout,omitempty"`
	Timeout        Duration `json:"timeout,omitempty"`
	Rate           int64    `json:"rate,omitempty"` // bytes/s each host may take for this transfer, 0 = no cap
}

// Job is what the server hands one agent: the file, where it goes, and
// whom to fetch pieces from.
type Job struct {
	ID             string         `json:"id"`
	Host           string         `json:"host"` // the agent's name in the transfer
	Manifest       piece.Manifest `json:"manifest"`
	Dest           string         `json:"dest"`
	Mode           uint32         `json:"mode,omitempty"`
	Owner          string         `json:"owner,omitempty"`
	PostCmd        string         `json:"post_cmd,omitempty"`
	PostCmdTimeout Duration       `json:"post_cmd_timeout,omitempty"`
	Rate           int64          `json:"rate,omitempty"`
	// Sources are base URLs holding (or about to hold) the pieces, best
	// first: the parent, its ancestors, the server last. A child that
	// loses its parent re-attaches to the next.
	Sources []string `json:"sources"`
	// StripeSources, when it has more than one list, splits the pieces:
	// piece n is fetched from StripeSources[n mod len], a list ordered like
	// Sources. Sources is then the first stripe's list.
	StripeSources [][]string `json:"stripe_sources,omitempty"`
	// Server is the base URL reports go to.
	Server string `json:"server"`
	// Signature is the server's HMAC-SHA256 of the job's content under the
	// agents' token; agents refuse unsigned jobs when they have a token.
	Signature string `json:"signature,omitempty"`
}

// Sign returns the HMAC-SHA256 of the job's content (all but Signature)
// under key.
func (j Job) Sign(key []byte) string {
	j.Signature = ""
	b, _ := json.Marshal(j)
	mac := hmac.New(sha256.New, key)
	mac.Write(b)
	return hex.EncodeToString(mac.Sum(nil))
}

// Verify reports whether the job carries a valid signature under key.
func (j Job) Verify(key []byte) bool {
	want := j.Sign(key)
	return hmac.Equal([]byte(want), []byte(j.Signature))
}

// Report is what an agent tells the server about one job.
type Report struct {
	Host           string    `json:"host"`
	State          string    `json:"state"`
	Bytes          int64     `json:"bytes"`         // bytes of the file held
	BytesFetched   int64     `json:"bytes_fetched"` // bytes moved over the network for it
	Pieces         int       `json:"pieces"`
	Source         string    `json:"source,omitempty"` // whom it fetches from now
	SHA256Verified bool      `json:"sha256_verified"`
	PostCmdExit    *int      `json:"post_cmd_exit,omitempty"`
	Error          string    `json:"error,omitempty"`
	Started        time.Time `json:"started"`
	Finished       time.Time `json:"finished,omitzero"`
	CorruptPieces  int       `json:"corrupt_pieces,omitempty"`
	Reattached     int       `json:"reattached,omitempty"`
}

// HostStatus is the server's view of one host of a transfer.
type HostStatus struct {
	Report
	Parent string    `json:"parent,omitempty"`
	Rate   float64   `json:"rate"`          // bytes/s since start
	ETA    float64   `json:"eta,omitempty"` // seconds, while running
	Update time.Time `json:"updated"`
}

// Transfer is a transfer's status.
type Transfer struct {
	ID       string         `json:"id"`
	Request  SendRequest    `json:"request"`
	Manifest piece.Manifest `json:"manifest"`
	Created  time.Time      `json:"created"`
	Deadline time.Time      `json:"deadline"`
	Done     bool           `json:"done"`
	Hosts    []HostStatus   `json:"hosts"`
}

// Duration is a time.Duration written as a Go duration string in JSON.
type Duration time.Duration

// MarshalJSON writes d as "1m30s".
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads "1m30s" or a number of nanoseconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		var n int64
		if err2 := json.Unmarshal(b, &n); err2 != nil {
			return err
		}
		*d = Duration(n)
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// ParseRangeFrom reads the one form of the Range header that piece
// endpoints serve, "bytes=N-" (the rest of a piece from byte N on, used to
// resume a piece whose body ended early). An empty header means from 0;
// any other form is refused (ok false).
func ParseRangeFrom(h string) (from int64, ok bool) {
	if h == "" {
		return 0, true
	}
	rest, found := strings.CutPrefix(h, "bytes=")
	if !found {
		return 0, false
	}
	num, found := strings.CutSuffix(rest, "-")
	if !found || num == "" || len(num) > 18 {
		return 0, false
	}
	for _, c := range num {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	from, err := strconv.ParseInt(num, 10, 64)
	return from, err == nil
}
