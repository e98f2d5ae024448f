// Package examples holds example configurations; the test checks that they
// load and that every template renders valid JSON.
package examples

import (
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/opskit/opskit/alarm/config"
)

func TestChatReceiversRender(t *testing.T) {
	text, err := os.ReadFile("chat-receivers.yml")
	if err != nil {
		t.Fatal(err)
	}
	// The chat URLs are not contacted: they only have to be valid.
	local := string(text)
	for _, u := range []string{"https://hooks.slack.com/services/T000/B000/XXXX", "https://oapi.dingtalk.com/robot/send?access_token=XXXX",
		"https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=XXXX", "https://open.feishu.cn/open-apis/bot/v2/hook/XXXX"} {
		if !strings.Contains(local, u) {
			t.Fatalf("example lacks %s", u)
		}
	}
	cfg, err := config.Parse("chat-receivers.yml", []byte(local), http.DefaultClient)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Receivers) != 4 {
		t.Fatalf("%d receivers", len(cfg.Receivers))
	}
	checkRendered(t, cfg)
}

func checkRendered(t *testing.T, cfg *config.Config) {
	t.Helper()
	now := time.Now()
	for _, r := range cfg.Receivers {
		body, err := RenderSample(r, now)
		if err != nil {
			t.Fatalf("%s: %v", r.Name, err)
		}
		if !json.Valid(body) {
			t.Fatalf("%s renders invalid JSON:\n%s", r.Name, body)
		}
		if r.Name == "feishu" && !strings.Contains(string(body), `web01 recovered after 1h30m0s (value 42)`) {
			t.Fatalf("feishu recovery text:\n%s", body)
		}
	}
}
