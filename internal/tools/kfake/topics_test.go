package main

import (
	"slices"
	"strings"
	"testing"
)

func TestParseTopics(t *testing.T) {
	tests := []struct {
		spec    string
		want    []topicSpec
		wantErr string
	}{
		{spec: "", want: nil},
		{spec: "  ", want: nil},
		{spec: "logs:3,metrics:1", want: []topicSpec{{"logs", 3}, {"metrics", 1}}},
		{spec: " logs:3 , metrics ", want: []topicSpec{{"logs", 3}, {"metrics", 1}}},
		{spec: "a.b_c-D9:10000", want: []topicSpec{{"a.b_c-D9", 10000}}},
		{spec: "logs:0", wantErr: "partitions must be"},
		{spec: "logs:-1", wantErr: "partitions must be"},
		{spec: "logs:10001", wantErr: "partitions must be"},
		{spec: "logs:x", wantErr: "partitions must be"},
		{spec: "logs:", wantErr: "partitions must be"},
		{spec: "logs:1:2", wantErr: "partitions must be"},
		{spec: ":3", wantErr: "empty name"},
		{spec: "logs,", wantErr: "empty name"},
		{spec: "logs,logs:2", wantErr: "listed twice"},
		{spec: "bad/name", wantErr: "not allowed"},
		{spec: "é", wantErr: "not allowed"},
		{spec: "..", wantErr: "reserved"},
		{spec: strings.Repeat("x", 250), wantErr: "longer than 249"},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			got, err := parseTopics(tt.spec)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseTopics(%q) error %v, want one containing %q", tt.spec, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseTopics(%q): %v", tt.spec, err)
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("parseTopics(%q) = %v, want %v", tt.spec, got, tt.want)
			}
		})
	}
}

// FuzzParseTopics checks that the parser never panics and that whatever it
// accepts is valid and survives a format/parse round trip.
func FuzzParseTopics(f *testing.F) {
	for _, seed := range []string{"logs:3,metrics:1", "a", "", "x:0", "a,a", "..:1", "t:2147483648"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		topics, err := parseTopics(spec)
		if err != nil {
			return
		}
		for _, topic := range topics {
			if validateTopicName(topic.name) != nil || topic.partitions < 1 || topic.partitions > maxPartitions {
				t.Fatalf("parseTopics(%q) accepted invalid topic %+v", spec, topic)
			}
		}
		again, err := parseTopics(formatTopics(topics))
		if err != nil || !slices.Equal(again, topics) {
			t.Fatalf("round trip of %q: got %v, %v; want %v", spec, again, err, topics)
		}
	})
}
