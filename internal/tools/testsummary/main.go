// Command testsummary reads `go test -json` on stdin and prints what a person
// wants from a full run: one line per package as go test prints it, the
// output of every failed test, and a closing "N passed, N failed, N skipped"
// line. It exits 1 if any test or package failed.
//
//	go test -json ./... | go run ./internal/tools/testsummary
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
)

type event struct {
	Action  string
	Package string
	Test    string
	Output  string
	Elapsed float64
}

func main() {
	var passed, failed, skipped, badPackages int
	output := map[string]*strings.Builder{} // package/test -> output
	var failedTests []string
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var e event
		if err := json.Unmarshal(line, &e); err != nil || e.Action == "" {
			// Build errors and other non-JSON lines come through as they are.
			fmt.Println(string(line))
			continue
		}
		key := e.Package + " " + e.Test
		switch e.Action {
		case "output":
			b := output[key]
			if b == nil {
				b = &strings.Builder{}
				output[key] = b
			}
			if b.Len() < 256<<10 {
				b.WriteString(e.Output)
			}
		case "pass", "fail", "skip":
			if e.Test == "" {
				word := map[string]string{"pass": "ok  ", "fail": "FAIL", "skip": "?   "}[e.Action]
				note := fmt.Sprintf("%.3fs", e.Elapsed)
				if e.Action == "skip" {
					note = "[no test files]"
				}
				fmt.Printf("%s\t%s\t%s\n", word, e.Package, note)
				if e.Action == "fail" {
					badPackages++
					if b := output[key]; b != nil && !strings.Contains(b.String(), "--- FAIL") {
						fmt.Print(indent(b.String()))
					}
				}
				delete(output, key)
				continue
			}
			if strings.Contains(e.Test, "/") {
				delete(output, key) // counted through its parent
				if e.Action == "fail" {
					failedTests = append(failedTests, key)
				}
				continue
			}
			switch e.Action {
			case "pass":
				passed++
				delete(output, key)
			case "skip":
				skipped++
				delete(output, key)
			case "fail":
				failed++
				failedTests = append(failedTests, key)
			}
		}
	}
	sort.Strings(failedTests)
	for _, k := range failedTests {
		if b := output[k]; b != nil {
			fmt.Printf("\n--- FAIL: %s\n%s", k, indent(b.String()))
		}
	}
	if len(failedTests) > 0 {
		fmt.Println("\nFailed tests:")
		for _, k := range failedTests {
			fmt.Println("  " + k)
		}
	}
	fmt.Printf("\n%d passed, %d failed, %d skipped\n", passed, failed, skipped)
	if failed > 0 || badPackages > 0 {
		os.Exit(1)
	}
}

func indent(s string) string {
	lines := strings.SplitAfter(s, "\n")
	var b strings.Builder
	for _, l := range lines {
		if l != "" {
			b.WriteString("    " + l)
		}
	}
	return b.String()
}
