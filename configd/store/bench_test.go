package store

import (
	"fmt"
	"testing"

	"github.com/opskit/opskit/configd/api"
)

// BenchmarkPublish measures one publish: validation, one bbolt transaction
// and its fsync.
func BenchmarkPublish(b *testing.B) {
	s, err := Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	files := []api.File{api.NewFile("app.properties", "port=8080\npool=32\n"), api.NewFile("features.json", `{"x":true,"limits":[1,2,3]}`)}
	b.ResetTimer()
	for i := range b.N {
		files[0].Content = fmt.Sprintf("port=8080\ngeneration=%d\n", i)
		if _, _, err := s.Publish("bench/prod/app", PublishInput{Author: "bench", Files: files}); err != nil {
			b.Fatal(err)
		}
	}
}
