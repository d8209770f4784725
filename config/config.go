// Package config loads and validates regiond's YAML configuration, the only
// way to configure a pipeline.
//
// Load and Parse go through the same steps: ${VAR} expansion on the raw
// text, strict YAML decoding (unknown keys, wrong types, an empty file and
// more than one document are errors), defaults, then Validate. Every error
// they return is an *Error listing every problem found, one per line, each
// naming the key (and line, when known) and how to fix it, and every such
// error wraps ErrInvalid. No error message ever contains a password.
//
// The YAML key names are a public interface: new keys may be added, existing
// ones keep their meaning.
package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Conflict rules, the values of a table's conflict key.
const (
	// RuleApplyRemote applies every incoming change as it is; the default.
	RuleApplyRemote = "apply_remote"
	// RuleLastWriterWins keeps the row with the higher version_column.
	RuleLastWriterWins = "last_writer_wins"
	// RuleHomeRegion replicates only writes made in the row's home region,
	// named by home_column.
	RuleHomeRegion = "home_region"
)

// Engines, the values of a region's engine key.
const (
	// EngineMySQL is MySQL or MariaDB; see Region.Flavor.
	EngineMySQL = "mysql"
	// EnginePostgres is PostgreSQL.
	EnginePostgres = "postgres"
)

// Flavors of EngineMySQL, the values of a region's flavor key. An empty
// flavor means the reader detects it when it connects.
const (
	FlavorMySQL   = "mysql"
	FlavorMariaDB = "mariadb"
)

// SASL mechanisms, the values of kafka.sasl.mechanism.
const (
	SASLPlain       = "plain"
	SASLScramSHA256 = "scram-sha-256"
	SASLScramSHA512 = "scram-sha-512"
)

// Defaults that Parse and Load fill in for keys the file leaves out.
const (
	// DefaultTombstoneRetention applies when tombstone_retention is absent.
	// An explicit 0 is kept: tombstones are then pruned as soon as every
	// pipeline into the region has passed them.
	DefaultTombstoneRetention = 168 * time.Hour
	// DefaultPartitions applies when kafka.partitions is absent or 0.
	DefaultPartitions = 1
	// DefaultPostgresSchema applies to a postgres region without schema.
	DefaultPostgresSchema = "public"
)

// ReservedRegionName cannot name a region: it names the Kafka pipeline
// target (e.g. backfill --to kafka).
const ReservedRegionName = "kafka"

// ReservedTablePrefix starts the names of regiond's own tables, which cannot
// be replicated as user tables. It is compared case-insensitively.
const ReservedTablePrefix = "regiond_"

// ErrInvalid is wrapped by every error from Load, Parse, Validate and
// ParseMySQLDSN, so the CLI can map it to exit code 2.
var ErrInvalid = errors.New("invalid config")

// Implemented holds the conflict rules this build of regiond can apply.
// Validate rejects a table whose rule is known but not in Implemented. A
// release that implements a rule turns it on here; tests may too.
var Implemented = map[string]bool{RuleApplyRemote: true, RuleLastWriterWins: true, RuleHomeRegion: true}

// Rules lists every known conflict rule name, in the order messages show them.
var Rules = []string{RuleApplyRemote, RuleLastWriterWins, RuleHomeRegion}

// Config is regiond's configuration.
type Config struct {
	// Regions lists the database regions; at least one.
	Regions []Region `yaml:"regions"`
	// Tables maps each replicated table's bare name to its conflict rule;
	// at least one.
	Tables map[string]Table `yaml:"tables"`
	// TombstoneRetention is how long last_writer_wins delete tombstones are
	// kept at least. Parse defaults it to DefaultTombstoneRetention.
	TombstoneRetention Duration `yaml:"tombstone_retention"`
	// Kafka, when not nil, publishes every change to Kafka.
	Kafka *Kafka `yaml:"kafka"`
	// MetricsAddr is the host:port serving /metrics and /healthz; empty
	// for none.
	MetricsAddr string `yaml:"metrics_addr"`
	// StateDir holds regiond's local state (e.g. Kafka positions); empty
	// for none.
	StateDir string `yaml:"state_dir"`
	// LogLevel is debug, info (the default when empty), warn or error.
	// `regiond run` applies a change on SIGHUP without a restart.
	LogLevel string `yaml:"log_level"`
}

// Region is one region's database.
type Region struct {
	// Name identifies the region everywhere: CLI, checkpoints, home_column
	// values, metrics, Kafka. Lowercase letters, digits, _ and -, at most 32
	// characters, starting with a letter or digit.
	Name string `yaml:"name"`
	// Engine is EngineMySQL or EnginePostgres.
	Engine string `yaml:"engine"`
	// DSN is a mysql:// or postgres:// (postgresql://) URL. For MySQL, the
	// replicated tables live in its database; parse it with ParseMySQLDSN.
	// Print it only through RedactDSN.
	DSN string `yaml:"dsn"`
	// Flavor is FlavorMySQL, FlavorMariaDB, or empty to detect it at
	// connect time. MySQL engine only.
	Flavor string `yaml:"flavor"`
	// Schema holds the replicated tables. PostgreSQL only; Parse defaults
	// it to DefaultPostgresSchema.
	Schema string `yaml:"schema"`
	// ServerID is the replica server id regiond uses to read this region's
	// binlog; 0 means derived. MySQL engine only; unique when set.
	ServerID uint32 `yaml:"server_id"`
	// ApplyConnections is how many connections each pipeline into this
	// region applies batches on at once (0: the engine's default, 2; at
	// most MaxApplyConnections).
	ApplyConnections int `yaml:"apply_connections"`
}

// MaxApplyConnections bounds Region.ApplyConnections.
const MaxApplyConnections = 8

// Table is one replicated table's conflict handling.
type Table struct {
	// Conflict is the rule name; empty means RuleApplyRemote. Use Rule.
	Conflict string `yaml:"conflict"`
	// VersionColumn orders writes for RuleLastWriterWins.
	VersionColumn string `yaml:"version_column"`
	// HomeColumn names the owning region for RuleHomeRegion.
	HomeColumn string `yaml:"home_column"`
}

// Rule returns the table's conflict rule: Conflict, or RuleApplyRemote when
// Conflict is empty.
func (t Table) Rule() string {
	if t.Conflict == "" {
		return RuleApplyRemote
	}
	return t.Conflict
}

// Kafka configures publishing every change to Kafka, one topic per table
// named <TopicPrefix>.<table>.
type Kafka struct {
	// Brokers lists the bootstrap brokers as host:port.
	Brokers []string `yaml:"brokers"`
	// TopicPrefix starts every topic name; [a-zA-Z0-9._-] only.
	TopicPrefix string `yaml:"topic_prefix"`
	// Partitions is the partition count of topics regiond creates. Parse
	// defaults 0 to DefaultPartitions.
	Partitions int `yaml:"partitions"`
	// Tombstones sends a null-value message after each delete.
	Tombstones bool `yaml:"tombstones"`
	// TLS configures TLS to the brokers; the zero value is plain TCP.
	TLS TLS `yaml:"tls"`
	// SASL configures authentication; the zero value is none.
	SASL SASL `yaml:"sasl"`
}

// TLS configures TLS to the Kafka brokers. Relative file paths are relative
// to regiond's working directory.
type TLS struct {
	// Enabled turns TLS on; the other settings require it.
	Enabled bool `yaml:"enabled"`
	// CAFile is a PEM bundle of CAs to trust; empty for the system pool.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are a PEM client certificate and key, both or
	// neither.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// InsecureSkipVerify accepts any broker certificate: for tests only.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// SASL configures SASL authentication to the Kafka brokers. Mechanism empty
// means no SASL.
type SASL struct {
	// Mechanism is SASLPlain, SASLScramSHA256 or SASLScramSHA512.
	Mechanism string `yaml:"mechanism"`
	// Username is required with a mechanism.
	Username string `yaml:"username"`
	// Password is a secret: never print or log it.
	Password string `yaml:"password"`
}

// Duration is a time.Duration written in YAML as a Go duration string such
// as "168h" or "90m".
type Duration struct{ time.Duration }

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: cannot unmarshal %s into config.Duration", n.Line, n.ShortTag())}}
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		// The raw value goes in full: a duration is not a secret, and the
		// user needs to see what was read.
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: cannot unmarshal %s `%s` into config.Duration", n.Line, n.ShortTag(), n.Value)}}
	}
	d.Duration = v
	return nil
}

// MarshalYAML implements yaml.Marshaler, writing the duration as "168h0m0s".
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// Region returns the region called name.
func (c *Config) Region(name string) (*Region, bool) {
	for i := range c.Regions {
		if c.Regions[i].Name == name {
			return &c.Regions[i], true
		}
	}
	return nil, false
}

// TableNames returns the configured table names, sorted.
func (c *Config) TableNames() []string {
	names := make([]string, 0, len(c.Tables))
	for name := range c.Tables {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// Problem is one thing wrong with a configuration.
type Problem struct {
	// Line is the 1-based line in the file, or 0 when unknown (always 0 from
	// Validate, which sees no file).
	Line int `json:"line,omitempty"`
	// Key is the key path, such as "regions[1].engine" or
	// "tables.profiles.conflict"; empty for problems with the file as a whole.
	Key string `json:"key,omitempty"`
	// Message says what is wrong and how to fix it. It never contains a
	// password.
	Message string `json:"message"`
}

// String formats the problem as "line 7: tables.x.conflict: message",
// leaving out what is unknown.
func (p Problem) String() string {
	var b strings.Builder
	if p.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", p.Line)
	}
	if p.Key != "" {
		b.WriteString(p.Key)
		b.WriteString(": ")
	}
	b.WriteString(p.Message)
	return b.String()
}

// Error is the error Load, Parse and Validate return: every problem found.
// It wraps ErrInvalid, and, when the file could not be read, the os error.
type Error struct {
	// File is the path given to Load; empty from Parse and Validate.
	File string
	// Problems lists the problems in the order found; never empty.
	Problems []Problem
	cause    error
}

// Error returns one line per problem, each starting with the file name when
// known, like a compiler: "config.yaml:7: tables.x.conflict: message".
func (e *Error) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		switch {
		case e.File != "" && p.Line > 0:
			line := p.Line
			p.Line = 0
			lines[i] = fmt.Sprintf("%s:%d: %s", e.File, line, p)
		case e.File != "":
			lines[i] = e.File + ": " + p.String()
		default:
			lines[i] = p.String()
		}
	}
	return strings.Join(lines, "\n")
}

// Unwrap returns ErrInvalid and, for an unreadable file, the os error.
func (e *Error) Unwrap() []error {
	if e.cause != nil {
		return []error{ErrInvalid, e.cause}
	}
	return []error{ErrInvalid}
}

// Load reads the YAML config file at path and parses it as Parse does, with
// ${VAR} taken from the process environment. Every error is an *Error that
// names path and wraps ErrInvalid.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		msg := err.Error()
		var pe *fs.PathError
		if errors.As(err, &pe) {
			msg = pe.Err.Error()
		}
		return nil, &Error{File: path, Problems: []Problem{{Message: "cannot read the config file: " + msg}}, cause: err}
	}
	c, err := Parse(data, os.LookupEnv)
	if err != nil {
		var e *Error
		if errors.As(err, &e) {
			e.File = path
		}
		return nil, err
	}
	return c, nil
}

// Parse parses a YAML config: it expands ${VAR} in the raw text from getenv
// (os.LookupEnv when nil), decodes strictly, fills in defaults and
// validates. Every error is an *Error wrapping ErrInvalid, listing every
// problem it found.
//
// Expansion: ${NAME} is replaced by the variable's value, verbatim (quote the
// YAML value if it may contain YAML syntax; URL-escape passwords in DSNs);
// $$ is a literal $; any other $ stays as it is. A variable that is not set,
// or whose value contains a line break, is an error. Lines that are only a
// comment are left as they are, so commented-out settings need no variables.
func Parse(data []byte, getenv func(string) (string, bool)) (*Config, error) {
	if getenv == nil {
		getenv = os.LookupEnv
	}
	c, problems := parse(data, getenv)
	if len(problems) > 0 {
		// In file order; problems with the file as a whole first.
		sort.SliceStable(problems, func(i, j int) bool { return problems[i].Line < problems[j].Line })
		return nil, &Error{Problems: redactProblems(problems, c)}
	}
	return c, nil
}

// parse returns the config decoded so far (possibly nil) with the problems.
func parse(data []byte, getenv func(string) (string, bool)) (*Config, []Problem) {
	text, problems := expand(data, getenv)
	c, idx, decodeProblems := decode(text)
	problems = append(problems, decodeProblems...)
	if len(problems) > 0 || c == nil {
		return c, problems
	}
	applyDefaults(c, idx)
	problems = c.validate()
	for i := range problems {
		problems[i].Line = idx.line(problems[i].Key)
	}
	return c, problems
}

// applyDefaults fills in the defaults documented on each field. idx tells an
// absent tombstone_retention from an explicit 0.
func applyDefaults(c *Config, idx *nodeIndex) {
	if !idx.has("tombstone_retention") {
		c.TombstoneRetention.Duration = DefaultTombstoneRetention
	}
	for i := range c.Regions {
		if r := &c.Regions[i]; r.Engine == EnginePostgres && r.Schema == "" {
			r.Schema = DefaultPostgresSchema
		}
	}
	if c.Kafka != nil && c.Kafka.Partitions == 0 {
		c.Kafka.Partitions = DefaultPartitions
	}
}
