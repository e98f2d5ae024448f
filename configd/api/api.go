// Package api holds the JSON types configd's server, agent, CLI and client
// exchange over HTTP. They are the wire format: add fields, never rename.
package api

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"sort"
	"strings"
	"time"
)

// File is one file of a namespace.
type File struct {
	Name    string `json:"name"`
	Content string `json:"content,omitempty"`
	SHA256  string `json:"sha256"`
}

// NewFile returns a file with its digest filled in.
func NewFile(name, content string) File {
	return File{Name: name, Content: content, SHA256: Digest(content)}
}

// Digest is the hex sha256 of content.
func Digest(content string) string {
	sum := sha256.Sum256([]byte(content))
	return hex.EncodeToString(sum[:])
}

// Release is an immutable, numbered set of files of one namespace.
type Release struct {
	Namespace string    `json:"namespace"`
	Version   int64     `json:"version"`
	Author    string    `json:"author"`
	Comment   string    `json:"comment,omitempty"`
	Time      time.Time `json:"time"`
	// RollbackOf is the earlier version this release copies, when it was
	// made by a rollback.
	RollbackOf int64  `json:"rollback_of,omitempty"`
	Files      []File `json:"files"`
}

// Summary is a release without file contents.
func (r Release) Summary() Release {
	out := r
	out.Files = make([]File, len(r.Files))
	for i, f := range r.Files {
		out.Files[i] = File{Name: f.Name, SHA256: f.SHA256}
	}
	return out
}

// Settings are a namespace's publish rules.
type Settings struct {
	// AllowEmpty lets a file be published (and written by agents) empty.
	AllowEmpty bool `json:"allow_empty"`
	// Schema, when set, is a JSON schema subset every JSON or YAML file
	// must satisfy (see package validate).
	Schema string `json:"schema,omitempty"`
}

// Gray is a release offered only to some hosts until promoted or abandoned.
type Gray struct {
	Version int64             `json:"version"`
	Labels  map[string]string `json:"labels,omitempty"`
	// Percent of hosts, chosen by a sticky hash of the host name.
	Percent int       `json:"percent,omitempty"`
	Author  string    `json:"author"`
	Started time.Time `json:"started"`
}

// Selects reports whether the gray release targets this host: every label
// must match, and the host must fall in the percentage (when one is given).
func (g *Gray) Selects(namespace, host string, labels map[string]string) bool {
	if g == nil || host == "" {
		return false
	}
	for k, v := range g.Labels {
		if labels[k] != v {
			return false
		}
	}
	if g.Percent > 0 && g.Percent < 100 {
		return HostBucket(namespace, host) < g.Percent
	}
	return len(g.Labels) > 0 || g.Percent >= 100
}

// HostBucket places a host in 0..99 by a hash of the namespace and host
// name. The name, not the address, keeps the choice stable when a host
// changes IP; the namespace salts it so one unlucky host is not in every
// gray release.
func HostBucket(namespace, host string) int {
	h := fnv.New32a()
	h.Write([]byte(namespace))
	h.Write([]byte{0})
	h.Write([]byte(host))
	return int(h.Sum32() % 100)
}

// Namespace is the head of a namespace: its current release, an optional
// gray release, its settings and its draft (files put but not published).
type Namespace struct {
	Name     string   `json:"namespace"`
	Current  int64    `json:"current"`
	Latest   int64    `json:"latest"`
	Gray     *Gray    `json:"gray,omitempty"`
	Settings Settings `json:"settings"`
	Draft    []File   `json:"draft,omitempty"`
	// Rev is the server-wide change counter at this namespace's last change.
	Rev     int64     `json:"rev"`
	Updated time.Time `json:"updated"`
}

// VersionFor is the release a host should hold.
func (n Namespace) VersionFor(host string, labels map[string]string) int64 {
	if n.Gray != nil && n.Gray.Selects(n.Name, host, labels) {
		return n.Gray.Version
	}
	return n.Current
}

// HistoryEntry is one change of a namespace's head.
type HistoryEntry struct {
	Time    time.Time `json:"time"`
	Action  string    `json:"action"` // publish, rollback, gray, promote, abandon, settings
	Version int64     `json:"version,omitempty"`
	Author  string    `json:"author"`
	Comment string    `json:"comment,omitempty"`
}

// AuditEntry records one mutation: who, what, when.
type AuditEntry struct {
	Seq    int64     `json:"seq"`
	Time   time.Time `json:"time"`
	Who    string    `json:"who"`
	Role   string    `json:"role"`
	Action string    `json:"action"`
	Target string    `json:"target"`
	Detail string    `json:"detail,omitempty"`
	Remote string    `json:"remote,omitempty"`
	OK     bool      `json:"ok"`
}

// Change is one namespace's new version, as a watch returns it.
type Change struct {
	Namespace string `json:"namespace"`
	Version   int64  `json:"version"`
	// Release is the full release (a Release in JSON) when the watch asked
	// for content=1, saving the watcher a second request.
	Release json.RawMessage `json:"release,omitempty"`
}

// RevChanges answers a replica's watch: the namespaces changed after a rev.
type RevChanges struct {
	Rev        int64    `json:"rev"`
	Namespaces []string `json:"namespaces"`
}

// Host is a member of the fleet as agents register it.
type Host struct {
	Host     string            `json:"host"`
	Addr     string            `json:"addr,omitempty"`
	Apps     []string          `json:"apps"`
	Labels   map[string]string `json:"labels,omitempty"`
	State    string            `json:"state"` // up or down
	LastSeen time.Time         `json:"last_seen"`
	Joined   time.Time         `json:"joined"`
}

// Host states.
const (
	HostUp   = "up"
	HostDown = "down"
)

// MemberEvent is a change of membership.
type MemberEvent struct {
	Seq  int64     `json:"seq"`
	Time time.Time `json:"time"`
	Type string    `json:"type"` // join, leave, rejoin
	App  string    `json:"app"`
	Host string    `json:"host"`
	Addr string    `json:"addr,omitempty"`
}

// Report is what an agent tells the server after applying (or failing to
// apply) a release.
type Report struct {
	Host      string    `json:"host"`
	Namespace string    `json:"namespace"`
	Version   int64     `json:"version"`
	OK        bool      `json:"ok"`
	Error     string    `json:"error,omitempty"`
	Applied   int64     `json:"applied"` // the version in force after the attempt
	Files     []File    `json:"files,omitempty"`
	Time      time.Time `json:"time"`
}

// Convergence is the per-release view of which hosts hold it.
type Convergence struct {
	Namespace string   `json:"namespace"`
	Version   int64    `json:"version"`
	Applied   []string `json:"applied"`
	Failed    []string `json:"failed"`
	Other     []string `json:"other"`
	// P50 and P99 are seconds from publish to applied.
	P50 float64 `json:"p50_seconds"`
	P99 float64 `json:"p99_seconds"`
}

// ValidateNamespace checks a name of the form app/env/name.
func ValidateNamespace(ns string) error {
	parts := strings.Split(ns, "/")
	if len(parts) != 3 {
		return fmt.Errorf("namespace %q: want app/env/name", ns)
	}
	for _, p := range parts {
		if err := validSegment(p); err != nil {
			return fmt.Errorf("namespace %q: %w", ns, err)
		}
	}
	return nil
}

// ValidateFileName checks a file name inside a namespace: one path segment.
func ValidateFileName(name string) error {
	if err := validSegment(name); err != nil {
		return fmt.Errorf("file name %q: %w", name, err)
	}
	if strings.HasPrefix(name, ".") {
		return fmt.Errorf("file name %q: must not start with a dot (reserved for the manifest)", name)
	}
	return nil
}

func validSegment(s string) error {
	if s == "" || len(s) > 128 {
		return fmt.Errorf("segment %q must be 1 to 128 characters", s)
	}
	if s == "." || s == ".." {
		return fmt.Errorf("segment %q is not allowed", s)
	}
	for _, r := range s {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.'
		if !ok {
			return fmt.Errorf("segment %q: only letters, digits, '-', '_' and '.' are allowed", s)
		}
	}
	return nil
}

// SortFiles orders files by name.
func SortFiles(files []File) {
	sort.Slice(files, func(i, j int) bool { return files[i].Name < files[j].Name })
}

// PublishRequest is the body of POST .../publish.
type PublishRequest struct {
	Comment string `json:"comment"`
	// Files to publish; absent publishes the draft.
	Files []File `json:"files,omitempty"`
	// Gray makes it a gray release for the hosts it selects.
	Gray *Gray `json:"gray,omitempty"`
}

// RollbackRequest is the body of POST .../rollback.
type RollbackRequest struct {
	To      int64  `json:"to"`
	Comment string `json:"comment"`
}

// EventsResponse answers a membership watch.
type EventsResponse struct {
	// Last is the newest event's sequence number: pass it as ?after next.
	Last   int64         `json:"last"`
	Events []MemberEvent `json:"events"`
	// Gone says events after ?after were already pruned; re-list the hosts.
	Gone bool `json:"gone,omitempty"`
}
