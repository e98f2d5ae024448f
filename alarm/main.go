// Command alarm: Alertmanager-compatible alert intake, grouping, silences and webhook notification.
package main

import "github.com/opskit/opskit/internal/kit"

func main() {
	kit.Main(kit.Spec{
		Name:    "alarm",
		Listen:  "127.0.0.1:7140",
		Summary: "Alertmanager-compatible alert intake, grouping, silences and webhook notification",
		Pending: "the alarm issue",
	})
}
