package main

import (
	"reflect"
	"testing"
)

func TestPickRole(t *testing.T) {
	noEnv := func(string) (string, bool) { return "", false }
	agentEnv := func(k string) (string, bool) { return "agent", k == "OPSKIT_MODE" }
	tests := []struct {
		args     []string
		env      func(string) (string, bool)
		wantArgs []string
		wantRole string
	}{
		{nil, noEnv, nil, "server"},
		{[]string{"agent", "--allow-root", "/srv"}, noEnv, []string{"--allow-root", "/srv"}, "agent"},
		{[]string{"server", "--listen", ":1"}, agentEnv, []string{"--listen", ":1"}, "server"},
		{[]string{"--listen", ":1", "--mode", "agent"}, noEnv, []string{"--listen", ":1", "--mode", "agent"}, "agent"},
		{[]string{"--mode=agent"}, noEnv, []string{"--mode=agent"}, "agent"},
		{[]string{"--listen", ":1"}, agentEnv, []string{"--listen", ":1"}, "agent"},
		{[]string{"send", "f", "--mode", "0644"}, noEnv, []string{"send", "f", "--mode", "0644"}, "server"},
	}
	for _, tt := range tests {
		args, role := pickRole(tt.args, tt.env)
		if !reflect.DeepEqual(args, tt.wantArgs) || role != tt.wantRole {
			t.Errorf("pickRole(%q) = %q, %s; want %q, %s", tt.args, args, role, tt.wantArgs, tt.wantRole)
		}
	}
}
