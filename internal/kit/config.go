package kit

import (
	"bytes"
	"fmt"
	"os"
	"reflect"
	"sort"
	"strings"

	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"
)

// EnvName returns the environment variable that sets a flag:
// OPSKIT_ + the flag name upper-cased with dashes as underscores.
func EnvName(flag string) string {
	return "OPSKIT_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// readConfigFile parses a YAML config file into its top-level mapping.
// An empty file is an empty mapping.
func readConfigFile(path string) (*yaml.Node, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return &yaml.Node{Kind: yaml.MappingNode}, nil
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("config %s:%d: the file must be a mapping of keys to values", path, root.Line)
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k := root.Content[i]
		if prev, dup := seen[k.Value]; dup {
			return nil, fmt.Errorf("config %s:%d: key %q repeats the one on line %d", path, k.Line, k.Value, prev)
		}
		seen[k.Value] = k.Line
	}
	return root, nil
}

// applyConfig sets, from the file's top-level keys, every flag not given on
// the command line. A key that is neither a flag nor an allowed section is an
// error naming the key and its line.
func applyConfig(fs *pflag.FlagSet, path string, root *yaml.Node, fromCmdline map[string]bool, sections map[string]bool) error {
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		name := k.Value
		if sections[name] {
			continue
		}
		f := fs.Lookup(name)
		if f == nil || name == "config" || name == "help" || name == "version" {
			return fmt.Errorf("config %s:%d: unknown key %q%s", path, k.Line, name, suggest(fs, name))
		}
		if fromCmdline[name] {
			continue
		}
		switch v.Kind {
		case yaml.ScalarNode:
			if err := fs.Set(name, v.Value); err != nil {
				return fmt.Errorf("config %s:%d: key %q: %w", path, v.Line, name, err)
			}
		case yaml.SequenceNode:
			if !strings.Contains(f.Value.Type(), "Slice") && !strings.Contains(f.Value.Type(), "Array") {
				return fmt.Errorf("config %s:%d: key %q takes one %s value, not a list", path, v.Line, name, f.Value.Type())
			}
			for _, item := range v.Content {
				if item.Kind != yaml.ScalarNode {
					return fmt.Errorf("config %s:%d: key %q: list items must be plain values", path, item.Line, name)
				}
				if err := fs.Set(name, item.Value); err != nil {
					return fmt.Errorf("config %s:%d: key %q: %w", path, item.Line, name, err)
				}
			}
		default:
			return fmt.Errorf("config %s:%d: key %q takes a %s value, not a mapping", path, v.Line, name, f.Value.Type())
		}
	}
	return nil
}

// suggest names the closest flag to a misspelt key.
func suggest(fs *pflag.FlagSet, name string) string {
	best, bestDist := "", 3
	fs.VisitAll(func(f *pflag.Flag) {
		if d := editDistance(name, f.Name); d < bestDist {
			best, bestDist = f.Name, d
		}
	})
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// applyEnv sets every flag not given on the command line from its
// OPSKIT_<FLAG> variable, which overrides the config file.
func applyEnv(fs *pflag.FlagSet, fromCmdline map[string]bool, lookup func(string) (string, bool)) error {
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		if err != nil || fromCmdline[f.Name] || f.Name == "help" || f.Name == "version" {
			return
		}
		v, ok := lookup(EnvName(f.Name))
		if !ok {
			return
		}
		if e := fs.Set(f.Name, v); e != nil {
			err = fmt.Errorf("environment %s: %w", EnvName(f.Name), e)
		}
	})
	return err
}

// DecodeSection decodes the top-level key `section` of the YAML config file
// at path into out, strictly: a key that out's type does not have is an
// error naming the key and its line. A missing section leaves out as it is.
// Daemons call it at start and again on reload.
func DecodeSection(path, section string, out any) error {
	root, err := readConfigFile(path)
	if err != nil {
		return err
	}
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value != section {
			continue
		}
		return DecodeStrict(path, root.Content[i+1], out)
	}
	return nil
}

// DecodeStrict decodes node into out after checking that every mapping key
// in node is a field of out's type (by yaml tag or lower-cased name).
// `file` only labels errors.
func DecodeStrict(file string, node *yaml.Node, out any) error {
	if err := checkKeys(file, node, reflect.TypeOf(out)); err != nil {
		return err
	}
	if err := node.Decode(out); err != nil {
		return fmt.Errorf("config %s: %w", file, err)
	}
	return nil
}

// ParseStrict parses a whole YAML document strictly into out (for daemons'
// own files such as rules or routes).
func ParseStrict(file string, data []byte, out any) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(out); err != nil {
		if err.Error() == "EOF" {
			return nil
		}
		return fmt.Errorf("%s: %w", file, err)
	}
	return nil
}

var unmarshalerType = reflect.TypeOf((*yaml.Unmarshaler)(nil)).Elem()

func checkKeys(file string, n *yaml.Node, t reflect.Type) error {
	for t != nil && t.Kind() == reflect.Pointer {
		if t.Implements(unmarshalerType) {
			return nil
		}
		t = t.Elem()
	}
	if t == nil || reflect.PointerTo(t).Implements(unmarshalerType) || t.Implements(unmarshalerType) {
		return nil
	}
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return nil // node.Decode reports the type mismatch with its line
		}
		fields := structFields(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			ft, ok := fields[k.Value]
			if !ok {
				names := make([]string, 0, len(fields))
				for name := range fields {
					names = append(names, name)
				}
				sort.Strings(names)
				return fmt.Errorf("config %s:%d: unknown key %q (known: %s)", file, k.Line, k.Value, strings.Join(names, ", "))
			}
			if err := checkKeys(file, n.Content[i+1], ft); err != nil {
				return err
			}
		}
	case reflect.Slice, reflect.Array:
		if n.Kind == yaml.SequenceNode {
			for _, item := range n.Content {
				if err := checkKeys(file, item, t.Elem()); err != nil {
					return err
				}
			}
		}
	case reflect.Map:
		if n.Kind == yaml.MappingNode {
			for i := 1; i < len(n.Content); i += 2 {
				if err := checkKeys(file, n.Content[i], t.Elem()); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// structFields maps the YAML keys of a struct type to their field types,
// following yaml.v3's rules (tag name, else lower-cased field name; ",inline").
func structFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("yaml")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if strings.Contains(opts, "inline") {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				for k, v := range structFields(ft) {
					out[k] = v
				}
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		out[name] = f.Type
	}
	return out
}
