package api

import (
	"crypto/subtle"
	"fmt"
	"os"

	"github.com/opskit/opskit/internal/kit"
)

// Roles, each allowing what the ones before it allow.
const (
	RoleReader   = "reader"   // read deploys, queue, history, audit
	RoleDeployer = "deployer" // submit, cancel, retry, promote
	RoleOperator = "operator" // abort, rollback
)

func roleRank(r string) int {
	switch r {
	case RoleReader:
		return 1
	case RoleDeployer:
		return 2
	case RoleOperator:
		return 3
	}
	return 0
}

// Token is one caller's credential and its role per app ("*": any app).
type Token struct {
	Name  string            `yaml:"name"`
	Token string            `yaml:"token"`
	Roles map[string]string `yaml:"roles"`
}

// Tokens is the tokens file:
//
//	tokens:
//	  - name: ci
//	    token: 6f1c...        # sent as Authorization: Bearer 6f1c...
//	    roles: {web: deployer, "*": reader}
type Tokens struct {
	Tokens []Token `yaml:"tokens"`
}

// ParseTokens reads a tokens file's content.
func ParseTokens(name string, data []byte) (*Tokens, error) {
	var t Tokens
	if err := kit.ParseStrict(name, data, &t); err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for i, tk := range t.Tokens {
		if tk.Name == "" || len(tk.Token) < 8 {
			return nil, fmt.Errorf("%s: tokens[%d]: want a name and a token of at least 8 characters", name, i)
		}
		if seen[tk.Token] {
			return nil, fmt.Errorf("%s: tokens[%d] (%s): token used twice", name, i, tk.Name)
		}
		seen[tk.Token] = true
		for app, role := range tk.Roles {
			if roleRank(role) == 0 {
				return nil, fmt.Errorf("%s: %s: role %q for %s: want reader, deployer or operator", name, tk.Name, role, app)
			}
		}
	}
	return &t, nil
}

// LoadTokens reads a tokens file.
func LoadTokens(path string) (*Tokens, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tokens file: %w", err)
	}
	return ParseTokens(path, data)
}

// find returns the token whose secret is secret.
func (t *Tokens) find(secret string) (Token, bool) {
	if t == nil {
		return Token{}, false
	}
	for _, tk := range t.Tokens {
		if subtle.ConstantTimeCompare([]byte(tk.Token), []byte(secret)) == 1 {
			return tk, true
		}
	}
	return Token{}, false
}

// Caller is who sent a request.
type Caller struct {
	Name string
	// All is a loopback caller without a token: every role on every app.
	All   bool
	Roles map[string]string
}

// Can says whether the caller has at least role on app.
func (c Caller) Can(role, app string) bool {
	if c.All {
		return true
	}
	have := c.Roles[app]
	if app == "" || roleRank(c.Roles["*"]) > roleRank(have) {
		have = c.Roles["*"]
	}
	if app == "" {
		// Lists: any role on some app lets one list what one may read.
		for _, r := range c.Roles {
			if roleRank(r) >= roleRank(role) {
				return true
			}
		}
	}
	return roleRank(have) >= roleRank(role)
}
