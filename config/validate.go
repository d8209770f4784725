package config

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net"
	"os"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits on names.
const (
	// MaxRegionNameLen is the longest region name, so that a home_column
	// can be a VARCHAR(32).
	MaxRegionNameLen = 32
	// maxTopicLen is Kafka's limit on a topic name.
	maxTopicLen = 249
)

// Validate checks the config and reports every problem at once, as an *Error
// wrapping ErrInvalid, one line per problem naming its key path and how to
// fix it. It reads no environment and applies no defaults, but it does check
// that the Kafka TLS files exist. A zero Kafka.Partitions is accepted as
// "default".
func (c *Config) Validate() error {
	problems := c.validate()
	if len(problems) == 0 {
		return nil
	}
	return &Error{Problems: redactProblems(problems, c)}
}

// checker collects problems.
type checker struct{ problems []Problem }

func (ch *checker) add(key, format string, args ...any) {
	ch.problems = append(ch.problems, Problem{Key: key, Message: fmt.Sprintf(format, args...)})
}

func (c *Config) validate() []Problem {
	if c == nil {
		return []Problem{{Message: "no config"}}
	}
	var ch checker
	c.checkRegions(&ch)
	c.checkTables(&ch)
	if c.TombstoneRetention.Duration < 0 {
		ch.add("tombstone_retention", "%s is negative; use a duration of 0 or more, like 168h", c.TombstoneRetention)
	}
	if c.Kafka != nil {
		c.checkKafka(&ch)
		if c.StateDir == "" {
			ch.add("kafka", "needs state_dir: each region's Kafka pipeline keeps the position Kafka acknowledged there; add a local directory, like state_dir: /var/lib/regiond")
		}
	}
	if c.MetricsAddr != "" {
		if !validHostPort(c.MetricsAddr, false) {
			ch.add("metrics_addr", "%s is not host:port with a port from 1 to 65535; write it like 127.0.0.1:9464 (or :9464 for every interface)", quote(c.MetricsAddr))
		}
	}
	switch c.LogLevel {
	case "", "debug", "info", "warn", "error":
	default:
		ch.add("log_level", "%s is not a log level; use debug, info, warn or error", quote(c.LogLevel))
	}
	return ch.problems
}

func (c *Config) checkRegions(ch *checker) {
	if len(c.Regions) == 0 {
		ch.add("regions", "at least one region is required; add one like - {name: east, engine: mysql, dsn: mysql://user:password@host:3306/app}")
		return
	}
	names := map[string]int{}
	serverIDs := map[uint32]int{}
	for i, r := range c.Regions {
		key := fmt.Sprintf("regions[%d]", i)
		if msg := checkRegionName(r.Name); msg != "" {
			ch.add(key+".name", "%s", msg)
		} else if j, dup := names[r.Name]; dup {
			ch.add(key+".name", "%s is already the name of regions[%d]; region names must be unique", quote(r.Name), j)
		} else {
			names[r.Name] = i
		}

		switch r.Engine {
		case EngineMySQL, EnginePostgres:
		case "":
			ch.add(key+".engine", "required; use mysql (MySQL or MariaDB) or postgres")
		default:
			ch.add(key+".engine", "%s is not supported; use mysql or postgres", quote(r.Engine))
		}

		switch {
		case r.DSN == "" && r.Engine == EnginePostgres:
			ch.add(key+".dsn", "required; write it like postgres://user:password@host:5432/database")
		case r.DSN == "":
			ch.add(key+".dsn", "required; write it like mysql://user:password@host:3306/database")
		case r.Engine == EngineMySQL:
			if _, err := ParseMySQLDSN(r.DSN); err != nil {
				ch.add(key+".dsn", "%v", err)
			}
		case r.Engine == EnginePostgres:
			if err := checkPostgresDSN(r.DSN); err != nil {
				ch.add(key+".dsn", "%v", err)
			}
		}

		if r.Flavor != "" {
			switch {
			case r.Engine == EnginePostgres:
				ch.add(key+".flavor", "only for engine mysql; remove it")
			case r.Flavor != FlavorMySQL && r.Flavor != FlavorMariaDB:
				ch.add(key+".flavor", "%s is not a flavor; use mysql or mariadb, or leave it out to detect it when connecting", quote(r.Flavor))
			}
		}

		if r.Schema != "" {
			switch {
			case r.Engine == EngineMySQL:
				ch.add(key+".schema", "only for engine postgres; a mysql region's tables live in the DSN's database")
			default:
				if msg := checkIdentifier(r.Schema); msg != "" {
					ch.add(key+".schema", "%s %s", quote(r.Schema), msg)
				}
			}
		}

		if r.ApplyConnections < 0 || r.ApplyConnections > MaxApplyConnections {
			ch.add(key+".apply_connections", "%d is out of range: use 1 to %d (or leave it out for the engine's default)", r.ApplyConnections, MaxApplyConnections)
		}

		if r.ServerID != 0 {
			switch {
			case r.Engine == EnginePostgres:
				ch.add(key+".server_id", "only for engine mysql (it is the replica server id for reading the binlog); remove it")
			default:
				if j, dup := serverIDs[r.ServerID]; dup {
					ch.add(key+".server_id", "%d is already the server_id of regions[%d]; server ids must be unique (or leave server_id out to derive one)", r.ServerID, j)
				} else {
					serverIDs[r.ServerID] = i
				}
			}
		}
	}
}

// checkRegionName returns what is wrong with a region name, or "".
func checkRegionName(name string) string {
	switch {
	case name == "":
		return "required; name the region, like east"
	case name == ReservedRegionName:
		return quote(name) + " is reserved for the Kafka pipeline target; choose another name"
	case len(name) > MaxRegionNameLen:
		return fmt.Sprintf("%s is %d characters long; use at most %d", quote(name), len(name), MaxRegionNameLen)
	}
	for _, r := range name {
		if !('a' <= r && r <= 'z' || '0' <= r && r <= '9' || r == '_' || r == '-') {
			msg := quote(name) + " is not a valid region name; use only lowercase letters, digits, _ and -"
			if lower := strings.ToLower(name); lower != name && checkRegionName(lower) == "" {
				msg += " (" + quote(lower) + "?)"
			}
			return msg
		}
	}
	if name[0] == '_' || name[0] == '-' {
		return quote(name) + " must start with a lowercase letter or a digit"
	}
	return ""
}

func (c *Config) checkTables(ch *checker) {
	if len(c.Tables) == 0 {
		ch.add("tables", "at least one table is required; list each table to replicate, like accounts: {} (for apply_remote)")
		return
	}
	for _, name := range c.TableNames() {
		t := c.Tables[name]
		key := "tables." + name
		switch msg := checkIdentifier(name); {
		case name == "":
			ch.add(key, "a table name cannot be empty")
		case msg != "":
			ch.add(key, "table name %s %s", quote(name), msg)
		case strings.HasPrefix(strings.ToLower(name), ReservedTablePrefix):
			ch.add(key, "table name %s starts with %s, which is reserved for regiond's own tables; they are never replicated as user tables", quote(name), ReservedTablePrefix)
		}

		rule := t.Rule()
		known := false
		for _, r := range Rules {
			known = known || r == rule
		}
		switch {
		case !known:
			ch.add(key+".conflict", "%s is not a rule; valid rules: %s", quote(t.Conflict), strings.Join(Rules, ", "))
		case !Implemented[rule]:
			ch.add(key+".conflict", "%s is not available in this version of regiond yet; use %s", rule, implementedRules())
		}
		if !known {
			continue // which columns belong is unknowable
		}

		switch {
		case rule == RuleLastWriterWins && t.VersionColumn == "":
			ch.add(key+".version_column", "required by last_writer_wins; name the column holding the row version (DATETIME(6), TIMESTAMP(6) or BIGINT, increasing on every write)")
		case rule != RuleLastWriterWins && t.VersionColumn != "":
			ch.add(key+".version_column", "only used by last_writer_wins, but the rule is %s; remove it or set conflict: last_writer_wins", rule)
		case t.VersionColumn != "":
			if msg := checkIdentifier(t.VersionColumn); msg != "" {
				ch.add(key+".version_column", "column name %s %s", quote(t.VersionColumn), msg)
			}
		}
		switch {
		case rule == RuleHomeRegion && t.HomeColumn == "":
			ch.add(key+".home_column", "required by home_region; name the column holding the name of the row's home region")
		case rule != RuleHomeRegion && t.HomeColumn != "":
			ch.add(key+".home_column", "only used by home_region, but the rule is %s; remove it or set conflict: home_region", rule)
		case t.HomeColumn != "":
			if msg := checkIdentifier(t.HomeColumn); msg != "" {
				ch.add(key+".home_column", "column name %s %s", quote(t.HomeColumn), msg)
			}
		}
	}
}

// implementedRules lists the rules this build implements, for "use ..." hints.
func implementedRules() string {
	var names []string
	for _, r := range Rules {
		if Implemented[r] {
			names = append(names, r)
		}
	}
	if len(names) == 0 {
		return "a rule this build implements"
	}
	return strings.Join(names, " or ")
}

// checkIdentifier returns what is wrong with a bare table, column or schema
// name, or "". regiond quotes identifiers itself, so quotes and qualified
// names (with dots) are mistakes.
func checkIdentifier(s string) string {
	if s == "" {
		return "is empty"
	}
	if !utf8.ValidString(s) {
		return "is not valid UTF-8"
	}
	for _, r := range s {
		switch {
		case r == '.':
			return "contains a dot; give the bare name, without a schema or database"
		case r == '"' || r == '\'' || r == '`':
			return "contains a quote; give the bare name, without quotes"
		case unicode.IsSpace(r):
			return "contains whitespace"
		case unicode.IsControl(r) || !unicode.IsPrint(r):
			return "contains a control character"
		}
	}
	return ""
}

func (c *Config) checkKafka(ch *checker) {
	k := c.Kafka
	if len(k.Brokers) == 0 {
		ch.add("kafka.brokers", "at least one broker is required, like brokers: [10.2.0.9:9092]")
	}
	for i, b := range k.Brokers {
		if !validHostPort(b, true) {
			ch.add(fmt.Sprintf("kafka.brokers[%d]", i), "%s is not host:port with a port from 1 to 65535; write it like 10.2.0.9:9092", quote(b))
		}
	}

	prefixOK := false
	switch {
	case k.TopicPrefix == "":
		ch.add("kafka.topic_prefix", "required; topics are named <topic_prefix>.<table>, so write something like topic_prefix: regiond")
	case !validTopicChars(k.TopicPrefix):
		ch.add("kafka.topic_prefix", "%s is not a valid Kafka topic prefix; use only letters, digits, ., _ and -", quote(k.TopicPrefix))
	case len(k.TopicPrefix) >= maxTopicLen-1:
		ch.add("kafka.topic_prefix", "is %d characters long; Kafka topic names have at most %d, so use a shorter prefix", len(k.TopicPrefix), maxTopicLen)
	default:
		prefixOK = true
	}
	if prefixOK {
		for _, name := range c.TableNames() {
			if name == "" || checkIdentifier(name) != "" {
				continue // reported as a table name
			}
			topic := k.TopicPrefix + "." + name
			switch {
			case !validTopicChars(name):
				ch.add("tables."+name, "the Kafka topic %s would not be valid: Kafka topics allow only letters, digits, ., _ and -; rename the table or leave Kafka out", quote(topic))
			case len(topic) > maxTopicLen:
				ch.add("tables."+name, "the Kafka topic %s would be %d characters long, more than Kafka's %d; use a shorter kafka.topic_prefix", quote(topic), len(topic), maxTopicLen)
			}
		}
	}

	switch {
	case k.Partitions < 0:
		ch.add("kafka.partitions", "%d is negative; use 1 or more (or leave it out for %d)", k.Partitions, DefaultPartitions)
	case k.Partitions > math.MaxInt32:
		ch.add("kafka.partitions", "%d is more than Kafka allows; use a number from 1 to %d", k.Partitions, math.MaxInt32)
	}

	tls := k.TLS
	if !tls.Enabled && (tls.CAFile != "" || tls.CertFile != "" || tls.KeyFile != "" || tls.InsecureSkipVerify) {
		ch.add("kafka.tls.enabled", "is false, but other tls settings are given; set enabled: true, or remove them")
	}
	for _, f := range []struct{ key, path string }{
		{"kafka.tls.ca_file", tls.CAFile},
		{"kafka.tls.cert_file", tls.CertFile},
		{"kafka.tls.key_file", tls.KeyFile},
	} {
		if f.path == "" {
			continue
		}
		if msg := checkFile(f.path); msg != "" {
			ch.add(f.key, "%s; give the path of a PEM file", msg)
		}
	}
	switch {
	case tls.CertFile != "" && tls.KeyFile == "":
		ch.add("kafka.tls.key_file", "required with cert_file; give the client certificate's private key")
	case tls.KeyFile != "" && tls.CertFile == "":
		ch.add("kafka.tls.cert_file", "required with key_file; give the client certificate")
	}

	sasl := k.SASL
	switch sasl.Mechanism {
	case "":
		if sasl.Username != "" || sasl.Password != "" {
			ch.add("kafka.sasl.mechanism", "required with a username or password; use plain, scram-sha-256 or scram-sha-512")
		}
	case SASLPlain, SASLScramSHA256, SASLScramSHA512:
		if sasl.Username == "" {
			ch.add("kafka.sasl.username", "required with mechanism %s", sasl.Mechanism)
		}
		if sasl.Password == "" {
			ch.add("kafka.sasl.password", "required with mechanism %s; write it as ${VAR} to keep it out of the file", sasl.Mechanism)
		}
	default:
		ch.add("kafka.sasl.mechanism", "%s is not a SASL mechanism; use plain, scram-sha-256 or scram-sha-512", quote(sasl.Mechanism))
	}
}

// checkFile returns what keeps path from being read as a file, or "".
func checkFile(path string) string {
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return quote(path) + " does not exist"
	case err != nil:
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return fmt.Sprintf("cannot read %s: %v", quote(path), err)
	case fi.IsDir():
		return quote(path) + " is a directory"
	}
	return ""
}

// validHostPort reports whether s is host:port with a numeric port from 1 to
// 65535, and a host unless the host may be empty.
func validHostPort(s string, needHost bool) bool {
	host, port, err := net.SplitHostPort(s)
	if err != nil || needHost && host == "" || strings.ContainsAny(host, " \t/@") {
		return false
	}
	n, err := strconv.Atoi(port)
	return err == nil && n >= 1 && n <= 65535 && port[0] != '+'
}

func validTopicChars(s string) bool {
	for _, r := range s {
		if !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '.' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

// maxQuoted is the longest value quoted in a message, in runes.
const maxQuoted = 64

// quote quotes a user-given value for a message: passwords scrubbed,
// shortened, and escaped so control characters cannot garble the output.
func quote(s string) string {
	s = scrubPasswords(s)
	if utf8.RuneCountInString(s) > maxQuoted {
		s = string([]rune(s)[:maxQuoted-3]) + "..."
	}
	return strconv.Quote(s)
}
