// Package diff produces unified diffs of text files, as `diff -u` prints
// them, for comparing two releases.
package diff

import (
	"fmt"
	"strings"
)

// maxCells bounds the longest-common-subsequence table (lines × lines) so a
// diff of two huge files cannot exhaust memory.
const maxCells = 16 << 20

// Unified returns the unified diff of a and b with `context` lines of
// context, labelled with the two names; "" when they are equal.
func Unified(nameA, nameB, a, b string, context int) string {
	if a == b {
		return ""
	}
	la, lb := splitLines(a), splitLines(b)
	var sb strings.Builder
	fmt.Fprintf(&sb, "--- %s\n+++ %s\n", nameA, nameB)
	if (len(la)+1)*(len(lb)+1) > maxCells {
		fmt.Fprintf(&sb, "@@ files differ (%d and %d lines: too large to diff line by line) @@\n", len(la), len(lb))
		return sb.String()
	}
	ops := script(la, lb)
	writeHunks(&sb, ops, context)
	return sb.String()
}

type op struct {
	kind byte // ' ', '-', '+'
	text string
	a, b int // line numbers (0-based) in a and b before this op
}

func splitLines(s string) []string {
	if s == "" {
		return nil
	}
	lines := strings.SplitAfter(s, "\n")
	if lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	return lines
}

// script computes an edit script from the LCS table.
func script(a, b []string) []op {
	n, m := len(a), len(b)
	lcs := make([][]int32, n+1)
	for i := range lcs {
		lcs[i] = make([]int32, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if a[i] == b[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var ops []op
	i, j := 0, 0
	for i < n || j < m {
		switch {
		case i < n && j < m && a[i] == b[j]:
			ops = append(ops, op{' ', a[i], i, j})
			i++
			j++
		case i < n && (j == m || lcs[i+1][j] >= lcs[i][j+1]):
			ops = append(ops, op{'-', a[i], i, j})
			i++
		default:
			ops = append(ops, op{'+', b[j], i, j})
			j++
		}
	}
	return ops
}

func writeHunks(sb *strings.Builder, ops []op, context int) {
	for start := 0; start < len(ops); {
		// Find the next change.
		first := start
		for first < len(ops) && ops[first].kind == ' ' {
			first++
		}
		if first == len(ops) {
			return
		}
		lo := max(first-context, 0)
		// Extend the hunk while changes are within 2*context of each other.
		hi := first
		for k := first; k < len(ops); k++ {
			if ops[k].kind != ' ' {
				hi = k
			} else if k-hi > 2*context {
				break
			}
		}
		hi = min(hi+context, len(ops)-1)
		var aCount, bCount int
		for _, o := range ops[lo : hi+1] {
			if o.kind != '+' {
				aCount++
			}
			if o.kind != '-' {
				bCount++
			}
		}
		fmt.Fprintf(sb, "@@ -%s +%s @@\n", rangeOf(ops[lo].a, aCount), rangeOf(ops[lo].b, bCount))
		for _, o := range ops[lo : hi+1] {
			sb.WriteByte(o.kind)
			sb.WriteString(o.text)
			if !strings.HasSuffix(o.text, "\n") {
				sb.WriteString("\n\\ No newline at end of file\n")
			}
		}
		start = hi + 1
	}
}

func rangeOf(start, count int) string {
	if count == 0 {
		return fmt.Sprintf("%d,0", start)
	}
	if count == 1 {
		return fmt.Sprintf("%d", start+1)
	}
	return fmt.Sprintf("%d,%d", start+1, count)
}
