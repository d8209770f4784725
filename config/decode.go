package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// expand replaces ${NAME} in the raw text with the variable's value and $$
// with $, leaving any other $ and full-line comments as they are. It reports
// every unset variable once, at its first line.
func expand(data []byte, getenv func(string) (string, bool)) ([]byte, []Problem) {
	var (
		out      bytes.Buffer
		problems []Problem
		reported = map[string]bool{}
	)
	out.Grow(len(data))
	for i, l := range bytes.SplitAfter(data, []byte("\n")) {
		line := i + 1
		if isCommentLine(l) {
			out.Write(l)
			continue
		}
		for j := 0; j < len(l); {
			if l[j] != '$' || j+1 == len(l) {
				out.WriteByte(l[j])
				j++
				continue
			}
			switch l[j+1] {
			case '$':
				out.WriteByte('$')
				j += 2
			case '{':
				end := bytes.IndexByte(l[j+2:], '}')
				if end < 0 {
					problems = append(problems, Problem{Line: line, Message: `"${" has no closing "}"; write ${NAME} for a variable, or $$ for a literal $`})
					out.Write(l[j:])
					j = len(l)
					continue
				}
				name := string(l[j+2 : j+2+end])
				ref := l[j : j+3+end]
				j += 3 + end
				if !validVarName(name) {
					problems = append(problems, Problem{Line: line, Message: quote(string(ref)) + " is not a variable reference; a name has letters, digits and _ and does not start with a digit (write $$ for a literal $)"})
					out.Write(ref)
					continue
				}
				v, ok := getenv(name)
				switch {
				case !ok:
					if !reported[name] {
						reported[name] = true
						problems = append(problems, Problem{Line: line, Message: "${" + name + "} is not set in the environment; set it (it may be empty), or write $${" + name + "} for the literal text"})
					}
				case strings.ContainsAny(v, "\r\n"):
					if !reported[name] {
						reported[name] = true
						problems = append(problems, Problem{Line: line, Message: "${" + name + "} contains a line break; config values must fit on one line"})
					}
				default:
					out.WriteString(v)
				}
			default:
				out.WriteByte('$')
				j++
			}
		}
	}
	return out.Bytes(), problems
}

// isCommentLine reports whether line holds only a YAML comment.
func isCommentLine(line []byte) bool {
	t := bytes.TrimLeft(line, " \t")
	return len(t) > 0 && t[0] == '#'
}

func validVarName(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		switch {
		case r == '_', 'a' <= r && r <= 'z', 'A' <= r && r <= 'Z':
		case i > 0 && '0' <= r && r <= '9':
		default:
			return false
		}
	}
	return true
}

// decode decodes text strictly into a Config and indexes its nodes, so
// problems can name a key path and a line. The Config may be partly decoded
// when there are problems, and is nil when decoding did not start.
func decode(text []byte) (c *Config, idx *nodeIndex, problems []Problem) {
	defer func() {
		// yaml.v3 is robust, but a config loader must never take the
		// process down on bad input.
		if r := recover(); r != nil {
			c, idx, problems = nil, nil, []Problem{{Message: fmt.Sprintf("invalid YAML: %v", r)}}
		}
	}()

	var root yaml.Node
	if err := yaml.Unmarshal(text, &root); err != nil {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return nil, nil, []Problem{syntaxProblem(err)}
		}
	}
	if isEmptyDocument(&root) {
		return nil, nil, []Problem{{Message: "the config is empty; it needs at least regions: and tables:"}}
	}
	idx = newNodeIndex(&root)

	dec := yaml.NewDecoder(bytes.NewReader(text))
	dec.KnownFields(true)
	c = new(Config)
	err := dec.Decode(c)
	var te *yaml.TypeError
	switch {
	case errors.As(err, &te):
		for _, s := range te.Errors {
			problems = append(problems, idx.typeProblem(s))
		}
	case errors.Is(err, io.EOF):
		return nil, nil, []Problem{{Message: "the config is empty; it needs at least regions: and tables:"}}
	case err != nil:
		return nil, nil, []Problem{syntaxProblem(err)}
	}
	var next yaml.Node
	if err := dec.Decode(&next); !errors.Is(err, io.EOF) {
		p := Problem{Message: "more than one YAML document (---); put the whole config in one document"}
		if err == nil {
			p.Line = next.Line
		}
		problems = append(problems, p)
	}
	// c is returned even with problems: its passwords are what the
	// messages must not show.
	return c, idx, problems
}

// isEmptyDocument reports whether the first document holds nothing: no
// document at all (only comments), or a null.
func isEmptyDocument(root *yaml.Node) bool {
	if root.Kind == 0 || len(root.Content) == 0 {
		return true
	}
	n := root.Content[0]
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

var syntaxErrorRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

func syntaxProblem(err error) Problem {
	msg := err.Error()
	if m := syntaxErrorRE.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return Problem{Line: line, Message: "invalid YAML: " + m[2]}
	}
	return Problem{Message: "invalid YAML: " + strings.TrimPrefix(msg, "yaml: ")}
}

// nodeIndex maps key paths such as "regions[1].engine" to the nodes of the
// first document.
type nodeIndex struct {
	lines  map[string]int        // line of each key, or of each sequence item
	values map[string]*yaml.Node // value at each path
	keys   map[int][]pathNode    // mapping keys by line, in document order
	all    map[int][]pathNode    // values by line, in document order
}

type pathNode struct {
	path string
	node *yaml.Node
}

func newNodeIndex(root *yaml.Node) *nodeIndex {
	x := &nodeIndex{
		lines:  map[string]int{},
		values: map[string]*yaml.Node{},
		keys:   map[int][]pathNode{},
		all:    map[int][]pathNode{},
	}
	if root.Kind == yaml.DocumentNode && len(root.Content) > 0 {
		x.addValue("", root.Content[0])
		x.walk(root.Content[0], "")
	}
	return x
}

func (x *nodeIndex) walk(n *yaml.Node, path string) {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := k.Value
			if path != "" {
				p = path + "." + k.Value
			}
			x.keys[k.Line] = append(x.keys[k.Line], pathNode{p, k})
			x.addValue(p, v)
			if _, seen := x.lines[p]; !seen {
				x.lines[p] = k.Line
				x.values[p] = v
			}
			x.walk(v, p)
		}
	case yaml.SequenceNode:
		for i, v := range n.Content {
			p := path + "[" + strconv.Itoa(i) + "]"
			x.addValue(p, v)
			x.lines[p] = v.Line
			x.values[p] = v
			x.walk(v, p)
		}
	}
	// Aliases are not followed: their target is indexed where it stands.
}

func (x *nodeIndex) addValue(path string, n *yaml.Node) {
	x.all[n.Line] = append(x.all[n.Line], pathNode{path, n})
}

// has reports whether path holds a non-null value.
func (x *nodeIndex) has(path string) bool {
	if x == nil {
		return false
	}
	n, ok := x.values[path]
	return ok && n.ShortTag() != "!!null"
}

// line returns the line of path, or of its nearest ancestor in the file (a
// missing key is reported at its parent), or 0.
func (x *nodeIndex) line(path string) int {
	if x == nil {
		return 0
	}
	for path != "" {
		if l, ok := x.lines[path]; ok {
			return l
		}
		cut := strings.LastIndexAny(path, ".[")
		if cut < 0 {
			break
		}
		path = path[:cut]
	}
	return 0
}

var (
	typeErrorLineRE = regexp.MustCompile(`(?s)^line (\d+): (.*)$`)
	unknownFieldRE  = regexp.MustCompile(`(?s)^field (.*) not found in type (\S+)$`)
	cannotDecodeRE  = regexp.MustCompile("(?s)^cannot unmarshal (\\S+)(?: `(.*)`)? into (.+)$")
	duplicateKeyRE  = regexp.MustCompile(`(?s)^mapping key (".*") already defined at line (\d+)$`)
	backtickedRE    = regexp.MustCompile("`[^`]*`")
)

// typeProblem turns one of yaml.v3's TypeError lines into a Problem that
// names the key path, says how to fix it, and never repeats a string value
// (it could be a password in the wrong place).
func (x *nodeIndex) typeProblem(s string) Problem {
	m := typeErrorLineRE.FindStringSubmatch(s)
	if m == nil {
		return Problem{Message: backtickedRE.ReplaceAllString(s, "")}
	}
	line, _ := strconv.Atoi(m[1])
	msg := m[2]
	p := Problem{Line: line}
	if m := unknownFieldRE.FindStringSubmatch(msg); m != nil {
		name, typ := m[1], m[2]
		p.Key = x.keyAt(line, name)
		valid := knownKeys[typ]
		p.Message = "unknown key " + quote(name)
		if p.Key != "" {
			p.Message = "unknown key"
		}
		if len(valid) > 0 {
			p.Message += "; valid keys here: " + strings.Join(valid, ", ")
			if s := closest(name, valid); s != "" {
				p.Message += " (did you mean " + s + "?)"
			}
		}
		return p
	}
	if m := duplicateKeyRE.FindStringSubmatch(msg); m != nil {
		name, _ := strconv.Unquote(m[1])
		first, _ := strconv.Atoi(m[2])
		p.Key = x.keyAt(line, name)
		p.Message = fmt.Sprintf("key %s appears twice (first at line %d); keep one", quote(name), first)
		if p.Key != "" {
			p.Message = fmt.Sprintf("appears twice (first at line %d); keep one", first)
		}
		return p
	}
	if m := cannotDecodeRE.FindStringSubmatch(msg); m != nil {
		tag, target := m[1], m[3]
		n := x.valueAt(line, tag, target)
		if n != nil {
			p.Key = n.path
		}
		if target == "config.Config" {
			p.Message = "the config must be a mapping of keys such as regions: and tables:, not " + describeTag(tag)
			return p
		}
		got := describeTag(tag)
		switch {
		case n != nil && target == "config.Duration" && n.node.Kind == yaml.ScalarNode:
			got = quote(n.node.Value)
			if tag == "!!int" || tag == "!!float" {
				got += " (a number needs a unit)"
			}
		case n != nil && (tag == "!!int" || tag == "!!float" || tag == "!!bool"):
			got += " " + n.node.Value
		}
		p.Message = "expected " + describeType(target) + ", got " + got
		return p
	}
	p.Message = backtickedRE.ReplaceAllString(msg, "")
	return p
}

// keyAt finds the path of the mapping key name at line.
func (x *nodeIndex) keyAt(line int, name string) string {
	for _, k := range x.keys[line] {
		if k.node.Value == name {
			return k.path
		}
	}
	return ""
}

// valueAt finds the value at line with the given short tag, preferring one
// under a key whose field has the target Go type (flow mappings put several
// values on one line).
func (x *nodeIndex) valueAt(line int, tag, target string) *pathNode {
	var first *pathNode
	values := x.all[line]
	for i, v := range values {
		if v.node.ShortTag() != tag {
			continue
		}
		if first == nil {
			first = &values[i]
		}
		if keysOfType[target][v.path[strings.LastIndex(v.path, ".")+1:]] {
			return &values[i]
		}
	}
	return first
}

func describeTag(tag string) string {
	switch tag {
	case "!!str":
		return "a string"
	case "!!int", "!!float":
		return "the number"
	case "!!bool":
		return "the boolean"
	case "!!seq":
		return "a list"
	case "!!map":
		return "a mapping"
	case "!!null":
		return "nothing"
	case "!!timestamp":
		return "a timestamp"
	case "!!binary":
		return "binary data"
	}
	return "a value tagged " + quote(tag)
}

func describeType(t string) string {
	switch t {
	case "string":
		return "a single value"
	case "uint32":
		return "a whole number from 0 to 4294967295"
	case "int":
		return "a whole number"
	case "bool":
		return "true or false"
	case "[]string":
		return "a list, like [10.2.0.9:9092]"
	case "[]config.Region":
		return "a list of regions, each starting with - name:"
	case "config.Region":
		return "a mapping with name, engine and dsn"
	case "map[string]config.Table":
		return "a mapping from table names to rules, like accounts: {}"
	case "config.Table":
		return "a mapping like {conflict: apply_remote}, or {}"
	case "config.Kafka":
		return "a mapping with brokers and topic_prefix"
	case "config.TLS", "config.SASL":
		return "a mapping"
	case "config.Duration":
		return "a duration such as 168h or 90m"
	}
	return t
}

// knownKeys maps the Go type names in yaml.v3's errors to the YAML keys the
// type accepts, for "valid keys here" hints; keysOfType maps them to the
// keys whose values have that type.
var knownKeys, keysOfType = func() (map[string][]string, map[string]map[string]bool) {
	known := map[string][]string{}
	ofType := map[string]map[string]bool{}
	for _, v := range []any{Config{}, Region{}, Table{}, Kafka{}, TLS{}, SASL{}} {
		t := reflect.TypeOf(v)
		var keys []string
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if tag == "" || tag == "-" {
				continue
			}
			keys = append(keys, tag)
			ft := strings.TrimPrefix(f.Type.String(), "*")
			if ofType[ft] == nil {
				ofType[ft] = map[string]bool{}
			}
			ofType[ft][tag] = true
		}
		known[t.String()] = keys
	}
	return known, ofType
}()

// closest returns the candidate nearest to s by edit distance, if it is
// near enough to be a likely typo.
func closest(s string, candidates []string) string {
	best, bestDist := "", len(s)/3+2
	for _, c := range candidates {
		if d := editDistance(strings.ToLower(s), c); d < bestDist {
			best, bestDist = c, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return max(len(a), len(b))
	}
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

// redactProblems removes every password from the problems: URL passwords
// and password parameters anywhere, and the config's known secrets (DSN and
// SASL passwords) wherever they appear.
func redactProblems(problems []Problem, c *Config) []Problem {
	secrets := knownSecrets(c)
	for i := range problems {
		problems[i].Key = redactText(printable(problems[i].Key), secrets)
		problems[i].Message = redactText(printable(problems[i].Message), secrets)
	}
	return problems
}

// printable escapes what would garble a one-line message, such as a line
// break in a table name.
func printable(s string) string {
	if !strings.ContainsFunc(s, func(r rune) bool { return !unicode.IsPrint(r) && r != ' ' }) && utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if unicode.IsPrint(r) && r != utf8.RuneError || r == ' ' {
			b.WriteRune(r)
		} else {
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		}
	}
	return b.String()
}

// minSecretLen is the shortest known secret redacted wherever it appears;
// shorter ones would garble messages (and are only redacted where they sit
// in a DSN).
const minSecretLen = 4

func knownSecrets(c *Config) []string {
	if c == nil {
		return nil
	}
	var secrets []string
	add := func(s string) {
		if len(s) >= minSecretLen {
			secrets = append(secrets, s)
			if q := strconv.Quote(s); q[1:len(q)-1] != s {
				secrets = append(secrets, q[1:len(q)-1])
			}
		}
	}
	for _, r := range c.Regions {
		if _, rest, ok := strings.Cut(r.DSN, "://"); ok {
			if at := strings.LastIndex(rest, "@"); at >= 0 {
				if _, raw, ok := strings.Cut(rest[:at], ":"); ok {
					add(raw)
				}
			}
		}
		if u, err := url.Parse(r.DSN); err == nil {
			if p, ok := u.User.Password(); ok {
				add(p)
			}
			for k, vs := range u.Query() {
				if isSecretParam(k) {
					for _, v := range vs {
						add(v)
					}
				}
			}
		}
	}
	if c.Kafka != nil {
		add(c.Kafka.SASL.Password)
	}
	// Longest first, so a secret containing another is removed whole.
	sort.Slice(secrets, func(i, j int) bool { return len(secrets[i]) > len(secrets[j]) })
	return secrets
}

// redactText redacts a finished message. User values in it went through
// quote, which scrubbed them already; this catches URL passwords elsewhere
// and the known secrets in any letter case (messages may lowercase a value).
func redactText(s string, secrets []string) string {
	s = scrubURLPasswords(s)
	for _, secret := range secrets {
		s = regexp.MustCompile("(?i)"+regexp.QuoteMeta(secret)).ReplaceAllLiteralString(s, redactedPassword)
	}
	return s
}
