// Command judge: streaming evaluation of alert strategies with nodata detection.
package main

import "github.com/opskit/opskit/internal/kit"

func main() {
	kit.Main(kit.Spec{
		Name:    "judge",
		Listen:  "127.0.0.1:7130",
		Summary: "streaming evaluation of alert strategies with nodata detection",
		Pending: "the judge issue",
	})
}
