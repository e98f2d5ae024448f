package main

import (
	"fmt"
	"strconv"
	"strings"
)

// topicSpec is one topic to create at startup.
type topicSpec struct {
	name       string
	partitions int32
}

// maxPartitions bounds one topic's partitions; the fake keeps every
// partition in memory.
const maxPartitions = 10000

// parseTopics reads "name[:partitions],..." such as "logs:3,metrics:1". A
// topic without a count gets one partition; an empty spec means no topics.
func parseTopics(spec string) ([]topicSpec, error) {
	if strings.TrimSpace(spec) == "" {
		return nil, nil
	}
	var topics []topicSpec
	seen := map[string]bool{}
	for _, entry := range strings.Split(spec, ",") {
		entry = strings.TrimSpace(entry)
		name, count, hasCount := strings.Cut(entry, ":")
		if err := validateTopicName(name); err != nil {
			return nil, fmt.Errorf("topic %q: %w", entry, err)
		}
		partitions := int64(1)
		if hasCount {
			var err error
			partitions, err = strconv.ParseInt(count, 10, 32)
			if err != nil || partitions < 1 || partitions > maxPartitions {
				return nil, fmt.Errorf("topic %q: partitions must be a number from 1 to %d", entry, maxPartitions)
			}
		}
		if seen[name] {
			return nil, fmt.Errorf("topic %q listed twice", name)
		}
		seen[name] = true
		topics = append(topics, topicSpec{name: name, partitions: int32(partitions)})
	}
	return topics, nil
}

// validateTopicName applies Kafka's rules: 1 to 249 characters from
// [a-zA-Z0-9._-], and not "." or "..".
func validateTopicName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("empty name")
	case len(name) > 249:
		return fmt.Errorf("name longer than 249 characters")
	case name == "." || name == "..":
		return fmt.Errorf("name %q is reserved", name)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return fmt.Errorf("character %q not allowed, use a-z A-Z 0-9 . _ -", r)
		}
	}
	return nil
}

// formatTopics is the inverse of parseTopics.
func formatTopics(topics []topicSpec) string {
	entries := make([]string, len(topics))
	for i, topic := range topics {
		entries[i] = topic.name + ":" + strconv.Itoa(int(topic.partitions))
	}
	return strings.Join(entries, ",")
}
