package route

import (
	"fmt"
	"testing"

	"github.com/opskit/opskit/alarm/alert"
)

func BenchmarkMatchAndGroupKey(b *testing.B) {
	receivers := map[string]bool{"root": true}
	var children []*Config
	for i := range 20 {
		receivers[fmt.Sprint("team", i)] = true
		children = append(children, &Config{Receiver: fmt.Sprint("team", i), Matchers: []string{fmt.Sprintf(`team=~"team%d|x.*"`, i)}})
	}
	root, err := Build(&Config{Receiver: "root", GroupBy: []string{"alertname", "cluster"}, Routes: children}, receivers, nil)
	if err != nil {
		b.Fatal(err)
	}
	ls := alert.Labels{"alertname": "DiskFull", "cluster": "eu1", "team": "team19", "instance": "web01"}
	b.ReportAllocs()
	for b.Loop() {
		rs := root.Match(ls)
		if len(rs) != 1 {
			b.Fatal(rs)
		}
		_ = rs[0].GroupKey(ls)
	}
}
