package server

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"

	"github.com/opskit/opskit/internal/kit"
)

// Roles, in the spirit of an admin console's user levels.
const (
	RoleAdmin     = "admin"     // everything
	RolePublisher = "publisher" // read; put, publish, roll back, gray, settings of its apps
	RoleReader    = "reader"    // read; register hosts and report applies (what agents need)
)

// TokenConfig is one entry of the tokens file.
type TokenConfig struct {
	Name  string   `yaml:"name"`
	Token string   `yaml:"token"`
	Role  string   `yaml:"role"`
	Apps  []string `yaml:"apps"` // publisher only; "*" for all
}

type tokensFile struct {
	Tokens []TokenConfig `yaml:"tokens"`
}

// Identity is who made a request.
type Identity struct {
	Name string
	Role string
	Apps []string
}

// CanRead reports whether the identity may read configuration.
func (id Identity) CanRead() bool { return id.Role != "" }

// CanWrite reports whether the identity may change namespaces of app.
func (id Identity) CanWrite(app string) bool {
	switch id.Role {
	case RoleAdmin:
		return true
	case RolePublisher:
		return slices.Contains(id.Apps, "*") || slices.Contains(id.Apps, app)
	}
	return false
}

// Auth maps bearer tokens to identities. With no tokens configured it is
// open: every caller is an admin named by its X-Opskit-User header.
type Auth struct {
	tokens map[[32]byte]TokenConfig
}

// LoadTokens reads a tokens file (YAML: `tokens: [{name, token, role,
// apps}]`); "" gives an open Auth.
func LoadTokens(path string) (*Auth, error) {
	a := &Auth{}
	if path == "" {
		return a, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tokens: %w", err)
	}
	var f tokensFile
	if err := kit.ParseStrict(path, data, &f); err != nil {
		return nil, fmt.Errorf("tokens: %w", err)
	}
	a.tokens = map[[32]byte]TokenConfig{}
	for i, t := range f.Tokens {
		switch {
		case t.Name == "":
			return nil, fmt.Errorf("tokens %s: entry %d has no name", path, i+1)
		case len(t.Token) < 16:
			return nil, fmt.Errorf("tokens %s: %s: token must be at least 16 characters", path, t.Name)
		case t.Role != RoleAdmin && t.Role != RolePublisher && t.Role != RoleReader:
			return nil, fmt.Errorf("tokens %s: %s: role %q: want admin, publisher or reader", path, t.Name, t.Role)
		}
		key := sha256.Sum256([]byte(t.Token))
		if _, dup := a.tokens[key]; dup {
			return nil, fmt.Errorf("tokens %s: %s: token repeats another entry's", path, t.Name)
		}
		a.tokens[key] = t
	}
	if len(a.tokens) == 0 {
		return nil, fmt.Errorf("tokens %s: no tokens (omit --tokens-file to run without auth)", path)
	}
	return a, nil
}

// Open reports whether no tokens are configured.
func (a *Auth) Open() bool { return len(a.tokens) == 0 }

// Identify returns the caller's identity; ok is false for a missing or
// unknown token when tokens are configured.
func (a *Auth) Identify(r *http.Request) (Identity, bool) {
	if a.Open() {
		name := r.Header.Get("X-Opskit-User")
		if name == "" {
			name = "anonymous"
		}
		return Identity{Name: name, Role: RoleAdmin}, true
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return Identity{}, false
	}
	key := sha256.Sum256([]byte(got))
	// The map lookup is by digest; compare again in constant time so the
	// lookup's timing cannot leak through a near-collision path.
	t, found := a.tokens[key]
	if !found {
		return Identity{}, false
	}
	want := sha256.Sum256([]byte(t.Token))
	if subtle.ConstantTimeCompare(key[:], want[:]) != 1 {
		return Identity{}, false
	}
	return Identity{Name: t.Name, Role: t.Role, Apps: t.Apps}, true
}
