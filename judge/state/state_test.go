package state

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opskit/opskit/judge/engine"
)

func TestSaveLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "alerts.json")
	if got, err := Load(path); err != nil || got != nil {
		t.Fatalf("missing file: %v %v", got, err)
	}
	at := time.Unix(1_700_000_000, 0).UTC()
	in := []engine.Alert{{Key: "k", Strategy: "s", Kind: engine.KindCondition, State: engine.StateFiring,
		Labels: map[string]string{"alertname": "s"}, Series: map[string]string{"__name__": "m"}, Value: 1.5, StartsAt: at, Notified: 2}}
	if err := Save(path, in); err != nil {
		t.Fatal(err)
	}
	out, err := Load(path)
	if err != nil || len(out) != 1 || out[0].Strategy != "s" || !out[0].StartsAt.Equal(at) || out[0].Value != 1.5 || out[0].Notified != 2 {
		t.Fatalf("loaded %+v %v", out, err)
	}
	os.WriteFile(path, []byte(`{"version":9}`), 0o600)
	if _, err := Load(path); err == nil || !strings.Contains(err.Error(), "version 9") {
		t.Fatalf("future version: %v", err)
	}
	os.WriteFile(path, []byte(`{`), 0o600)
	if _, err := Load(path); err == nil {
		t.Fatal("damaged file accepted")
	}
}
