package sdk

import (
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Condition is a compiled targeting condition in GrowthBook's MongoDB-like
// syntax, e.g. {"country": {"$in": ["US", "CA"]}, "age": {"$gte": 18}}.
// Paths are dot-separated into nested attribute maps. Evaluation follows
// the JavaScript SDK's coercions (a missing attribute is null, "8" > 5).
type Condition struct {
	clauses []clause
}

type clauseKind uint8

const (
	clausePath clauseKind = iota
	clauseOr
	clauseNor
	clauseAnd
	clauseNot
)

type clause struct {
	kind  clauseKind
	path  []string     // clausePath
	value valueMatcher // clausePath
	subs  []Condition  // or, nor, and; not holds one
}

type valueKind uint8

const (
	matchString valueKind = iota
	matchNumber
	matchBool
	matchNull
	matchJSON
	matchOps
)

// valueMatcher is the condition on one attribute value.
type valueMatcher struct {
	kind valueKind
	str  string
	num  float64
	b    bool
	ops  []operator
}

type operator struct {
	name     string
	arg      any // normalized JSON value
	argNum   float64
	argStr   string
	isArray  bool
	list     []any
	re       *regexp.Regexp
	value    *valueMatcher  // $not, $size, $elemMatch on values
	cond     *Condition     // $elemMatch on objects
	matchers []valueMatcher // $all, $alli
	group    string         // $inGroup, $notInGroup
}

// SavedGroups are named lists of attribute values for $inGroup / $notInGroup.
type SavedGroups map[string][]any

// CompileCondition compiles a condition decoded from JSON or YAML (maps,
// lists, strings, numbers, booleans, nil). A nil or empty condition always
// passes.
func CompileCondition(raw any) (Condition, error) {
	m, ok := normalize(raw).(map[string]any)
	if raw == nil {
		return Condition{}, nil
	}
	if !ok {
		return Condition{}, fmt.Errorf("condition must be an object, got %T", raw)
	}
	return compileObject(m)
}

func compileObject(m map[string]any) (Condition, error) {
	var c Condition
	for _, k := range sortedKeys(m) {
		v := m[k]
		switch k {
		case "$or", "$nor", "$and":
			list, ok := v.([]any)
			if !ok {
				return c, fmt.Errorf("%s needs a list of conditions", k)
			}
			cl := clause{kind: map[string]clauseKind{"$or": clauseOr, "$nor": clauseNor, "$and": clauseAnd}[k]}
			for _, item := range list {
				obj, ok := item.(map[string]any)
				if !ok {
					return c, fmt.Errorf("%s: each item must be an object", k)
				}
				sub, err := compileObject(obj)
				if err != nil {
					return c, err
				}
				cl.subs = append(cl.subs, sub)
			}
			c.clauses = append(c.clauses, cl)
		case "$not":
			obj, ok := v.(map[string]any)
			if !ok {
				return c, fmt.Errorf("$not needs a condition object")
			}
			sub, err := compileObject(obj)
			if err != nil {
				return c, err
			}
			c.clauses = append(c.clauses, clause{kind: clauseNot, subs: []Condition{sub}})
		default:
			vm, err := compileValue(v)
			if err != nil {
				return c, fmt.Errorf("%s: %w", k, err)
			}
			c.clauses = append(c.clauses, clause{kind: clausePath, path: strings.Split(k, "."), value: vm})
		}
	}
	return c, nil
}

func compileValue(v any) (valueMatcher, error) {
	switch x := v.(type) {
	case string:
		return valueMatcher{kind: matchString, str: x}, nil
	case float64:
		return valueMatcher{kind: matchNumber, num: x}, nil
	case bool:
		return valueMatcher{kind: matchBool, b: x}, nil
	case nil:
		return valueMatcher{kind: matchNull}, nil
	case map[string]any:
		if isOperatorObject(x) {
			vm := valueMatcher{kind: matchOps}
			for _, name := range sortedKeys(x) {
				op, err := compileOperator(name, x[name])
				if err != nil {
					return vm, err
				}
				vm.ops = append(vm.ops, op)
			}
			return vm, nil
		}
	}
	return valueMatcher{kind: matchJSON, str: jsonString(v)}, nil
}

func compileOperator(name string, arg any) (operator, error) {
	op := operator{name: name, arg: arg}
	op.argNum, op.argStr = jsNumber(arg), jsString(arg)
	op.list, op.isArray = arg.([]any)
	switch name {
	case "$veq", "$vne", "$vgt", "$vgte", "$vlt", "$vlte":
		op.argStr = paddedVersion(arg)
	case "$regex", "$regexi":
		pattern, _ := arg.(string)
		if name == "$regexi" {
			pattern = "(?i)" + pattern
		}
		// A pattern Go cannot compile never matches, as the JavaScript SDK
		// treats a pattern that throws.
		op.re, _ = regexp.Compile(pattern)
	case "$not", "$size":
		vm, err := compileValue(arg)
		if err != nil {
			return op, err
		}
		op.value = &vm
	case "$elemMatch":
		obj, ok := arg.(map[string]any)
		if !ok {
			return op, fmt.Errorf("$elemMatch needs an object")
		}
		if isOperatorObject(obj) {
			vm, err := compileValue(obj)
			if err != nil {
				return op, err
			}
			op.value = &vm
		} else {
			c, err := compileObject(obj)
			if err != nil {
				return op, err
			}
			op.cond = &c
		}
	case "$all", "$alli":
		for _, item := range op.list {
			if s, ok := item.(string); ok && name == "$alli" {
				item = strings.ToLower(s)
			}
			vm, err := compileValue(item)
			if err != nil {
				return op, err
			}
			op.matchers = append(op.matchers, vm)
		}
	case "$inGroup", "$notInGroup":
		op.group, _ = arg.(string)
	case "$ini", "$nini":
		folded := make([]any, len(op.list))
		for i, item := range op.list {
			folded[i] = caseFold(item)
		}
		op.list = folded
	}
	return op, nil
}

// Eval reports whether attrs satisfy the condition.
func (c *Condition) Eval(attrs map[string]any, groups SavedGroups) bool {
	return c.evalObject(attrs, groups, "")
}

// EvalUnit is Eval on the unit's attributes, where the attribute "id" is
// the unit's id unless the attributes hold one.
func (c *Condition) EvalUnit(u Unit, groups SavedGroups) bool {
	return c.evalObject(u.Attributes, groups, u.ID)
}

// Empty reports whether the condition has no clause (it always passes).
func (c *Condition) Empty() bool { return len(c.clauses) == 0 }

// evalObject evaluates the condition on obj; id, when not empty, stands
// for a missing top-level "id" attribute.
func (c *Condition) evalObject(obj any, groups SavedGroups, id string) bool {
	for i := range c.clauses {
		cl := &c.clauses[i]
		switch cl.kind {
		case clauseOr:
			if !anyPasses(cl.subs, obj, groups, id) {
				return false
			}
		case clauseNor:
			if len(cl.subs) > 0 && anyPasses(cl.subs, obj, groups, id) {
				return false
			}
		case clauseAnd:
			for j := range cl.subs {
				if !cl.subs[j].evalObject(obj, groups, id) {
					return false
				}
			}
		case clauseNot:
			if cl.subs[0].evalObject(obj, groups, id) {
				return false
			}
		default:
			v := lookupPath(obj, cl.path)
			if v == nil && id != "" && len(cl.path) == 1 && cl.path[0] == "id" {
				v = id
			}
			if !cl.value.match(v, groups, false) {
				return false
			}
		}
	}
	return true
}

// anyPasses is $or: an empty list passes.
func anyPasses(subs []Condition, obj any, groups SavedGroups, id string) bool {
	if len(subs) == 0 {
		return true
	}
	for j := range subs {
		if subs[j].evalObject(obj, groups, id) {
			return true
		}
	}
	return false
}

func lookupPath(obj any, path []string) any {
	cur := obj
	for _, p := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		if cur, ok = m[p]; !ok {
			return nil
		}
	}
	return cur
}

func (vm *valueMatcher) match(v any, groups SavedGroups, insensitive bool) bool {
	switch vm.kind {
	case matchString:
		if s, ok := v.(string); ok { // the common case, without allocating
			if insensitive {
				return strings.EqualFold(s, vm.str)
			}
			return s == vm.str
		}
		if insensitive {
			return strings.EqualFold(jsString(v), vm.str)
		}
		return jsString(v) == vm.str
	case matchNumber:
		return jsNumber(v) == vm.num
	case matchBool:
		return v != nil && truthy(v) == vm.b
	case matchNull:
		return v == nil
	case matchJSON:
		return jsonString(v) == vm.str
	}
	for i := range vm.ops {
		if !vm.ops[i].eval(v, groups) {
			return false
		}
	}
	return true
}

func (op *operator) eval(actual any, groups SavedGroups) bool {
	switch op.name {
	case "$veq":
		return paddedVersion(actual) == op.argStr
	case "$vne":
		return paddedVersion(actual) != op.argStr
	case "$vgt":
		return paddedVersion(actual) > op.argStr
	case "$vgte":
		return paddedVersion(actual) >= op.argStr
	case "$vlt":
		return paddedVersion(actual) < op.argStr
	case "$vlte":
		return paddedVersion(actual) <= op.argStr
	case "$eq":
		return strictEqual(actual, op.arg)
	case "$ne":
		return !strictEqual(actual, op.arg)
	case "$lt", "$lte", "$gt", "$gte":
		return compare(op.name, actual, op.arg)
	case "$exists":
		if truthy(op.arg) {
			return actual != nil
		}
		return actual == nil
	case "$in":
		return op.isArray && isIn(actual, op.list, false)
	case "$nin":
		return op.isArray && !isIn(actual, op.list, false)
	case "$ini":
		return op.isArray && isIn(actual, op.list, true)
	case "$nini":
		return op.isArray && !isIn(actual, op.list, true)
	case "$inGroup":
		return isIn(actual, groups[op.group], false)
	case "$notInGroup":
		return !isIn(actual, groups[op.group], false)
	case "$not":
		return !op.value.match(actual, groups, false)
	case "$size":
		list, ok := actual.([]any)
		return ok && op.value.match(float64(len(list)), groups, false)
	case "$elemMatch":
		list, ok := actual.([]any)
		if !ok {
			return false
		}
		for _, item := range list {
			if !truthy(item) {
				continue
			}
			if op.value != nil && op.value.match(item, groups, false) {
				return true
			}
			if op.cond != nil && op.cond.evalObject(item, groups, "") {
				return true
			}
		}
		return false
	case "$all", "$alli":
		list, ok := actual.([]any)
		if !ok || !op.isArray {
			return false
		}
		for i := range op.matchers {
			found := false
			for _, item := range list {
				if op.matchers[i].match(item, groups, op.name == "$alli") {
					found = true
					break
				}
			}
			if !found {
				return false
			}
		}
		return true
	case "$regex", "$regexi":
		return op.re != nil && op.re.MatchString(jsString(actual))
	case "$type":
		return jsType(actual) == op.arg
	}
	return false // an unknown operator never matches
}

func isIn(actual any, expected []any, insensitive bool) bool {
	if list, ok := actual.([]any); ok {
		for _, a := range list {
			if containsStrict(expected, a, insensitive) {
				return true
			}
		}
		return false
	}
	return containsStrict(expected, actual, insensitive)
}

func containsStrict(list []any, v any, insensitive bool) bool {
	if insensitive {
		v = caseFold(v)
	}
	for _, e := range list {
		if strictEqual(e, v) {
			return true
		}
	}
	return false
}

func caseFold(v any) any {
	if s, ok := v.(string); ok {
		return strings.ToLower(s)
	}
	return v
}

// strictEqual is JavaScript's === on JSON values: objects and arrays are
// never equal (they would be distinct references).
func strictEqual(a, b any) bool {
	switch x := a.(type) {
	case string:
		y, ok := b.(string)
		return ok && x == y
	case bool:
		y, ok := b.(bool)
		return ok && x == y
	case nil:
		return b == nil
	case []any, map[string]any:
		return false
	}
	if !isNumber(a) || !isNumber(b) {
		return false
	}
	return jsNumber(a) == jsNumber(b)
}

// compare is JavaScript's relational operators: two strings compare as
// strings, anything else as numbers (NaN compares false).
func compare(op string, a, b any) bool {
	as, aStr := primitiveString(a)
	bs, bStr := primitiveString(b)
	if aStr && bStr {
		switch op {
		case "$lt":
			return as < bs
		case "$lte":
			return as <= bs
		case "$gt":
			return as > bs
		}
		return as >= bs
	}
	x, y := jsNumber(a), jsNumber(b)
	switch op {
	case "$lt":
		return x < y
	case "$lte":
		return x <= y
	case "$gt":
		return x > y
	}
	return x >= y
}

// primitiveString is JavaScript's ToPrimitive when it yields a string.
func primitiveString(v any) (string, bool) {
	switch v.(type) {
	case string, []any, map[string]any:
		return jsString(v), true
	}
	return "", false
}

func isNumber(v any) bool {
	switch v.(type) {
	case float64, float32, int, int64, int32, uint, uint64, uint32:
		return true
	}
	return false
}

// jsNumber is JavaScript's Number(v).
func jsNumber(v any) float64 {
	switch x := v.(type) {
	case nil:
		return 0
	case bool:
		if x {
			return 1
		}
		return 0
	case float64:
		return x
	case float32:
		return float64(x)
	case int:
		return float64(x)
	case int64:
		return float64(x)
	case int32:
		return float64(x)
	case uint:
		return float64(x)
	case uint64:
		return float64(x)
	case uint32:
		return float64(x)
	case string:
		s := strings.TrimSpace(x)
		if s == "" {
			return 0
		}
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return math.NaN()
		}
		return f
	case []any, map[string]any:
		return jsNumber(jsString(v))
	}
	return math.NaN()
}

// jsString is JavaScript's String(v).
func jsString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case nil:
		return "null"
	case bool:
		return strconv.FormatBool(x)
	case []any:
		parts := make([]string, len(x))
		for i, item := range x {
			if item != nil {
				parts[i] = jsString(item)
			}
		}
		return strings.Join(parts, ",")
	case map[string]any:
		return "[object Object]"
	}
	if isNumber(v) {
		f := jsNumber(v)
		if f == math.Trunc(f) && math.Abs(f) < 1e21 {
			return strconv.FormatFloat(f, 'f', -1, 64)
		}
		return strconv.FormatFloat(f, 'g', -1, 64)
	}
	return fmt.Sprint(v)
}

func truthy(v any) bool {
	switch x := v.(type) {
	case nil:
		return false
	case bool:
		return x
	case string:
		return x != ""
	case []any, map[string]any:
		return true
	}
	f := jsNumber(v)
	return f != 0 && !math.IsNaN(f)
}

func jsType(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case []any:
		return "array"
	case string:
		return "string"
	case bool:
		return "boolean"
	case map[string]any:
		return "object"
	}
	if isNumber(v) {
		return "number"
	}
	return "unknown"
}

func jsonString(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return ""
	}
	return string(b)
}

func isOperatorObject(m map[string]any) bool {
	if len(m) == 0 {
		return false
	}
	for k := range m {
		if !strings.HasPrefix(k, "$") {
			return false
		}
	}
	return true
}

var versionSeparators = regexp.MustCompile(`[-.]`)

// paddedVersion makes version strings comparable as strings, the way
// GrowthBook does: drop a leading "v" and "+build", split on "-" and ".",
// mark a release without pre-release tag with "~" (sorts after any tag) and
// left-pad numeric parts to 5 characters.
func paddedVersion(v any) string {
	var s string
	switch x := v.(type) {
	case string:
		s = x
	default:
		if isNumber(v) {
			s = jsString(v)
		}
	}
	if s == "" {
		s = "0"
	}
	s = strings.TrimPrefix(s, "v")
	if i := strings.IndexByte(s, '+'); i >= 0 {
		s = s[:i]
	}
	parts := versionSeparators.Split(s, -1)
	if len(parts) == 3 {
		parts = append(parts, "~")
	}
	for i, p := range parts {
		if isDigits(p) && len(p) < 5 {
			parts[i] = strings.Repeat(" ", 5-len(p)) + p
		}
	}
	return strings.Join(parts, "-")
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// normalize turns YAML/JSON decoded values into JSON's shapes: numbers as
// float64, maps keyed by string.
func normalize(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, item := range x {
			out[k] = normalize(item)
		}
		return out
	case map[any]any:
		out := make(map[string]any, len(x))
		for k, item := range x {
			out[fmt.Sprint(k)] = normalize(item)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, item := range x {
			out[i] = normalize(item)
		}
		return out
	}
	if isNumber(v) {
		return jsNumber(v)
	}
	return v
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
