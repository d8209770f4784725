package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"gopkg.in/yaml.v3"
)

// Passwords the tests put in configs; no error message may contain them.
const (
	eastPassword     = "S3cr3t:p@ss/w0rd" // decoded
	eastPasswordEnv  = "S3cr3t%3Ap%40ss%2Fw0rd"
	westPassword     = "hunter2-Westpass"
	kafkaPassword    = "kafka-Pa55word!"
	inlinePassword   = "inl1ne-Secret"
	inlinePassword2  = "Another#secret/9"
	inlinePassword2E = "Another%23secret%2F9"
)

var testSecrets = []string{eastPassword, eastPasswordEnv, westPassword, kafkaPassword, inlinePassword, inlinePassword2, inlinePassword2E}

var testEnv = map[string]string{
	"EAST_PASSWORD":  eastPasswordEnv,
	"WEST_PASSWORD":  westPassword,
	"KAFKA_PASSWORD": kafkaPassword,
	"EMPTY":          "",
}

func lookup(env map[string]string) func(string) (string, bool) {
	return func(name string) (string, bool) {
		v, ok := env[name]
		return v, ok
	}
}

func setEnv(t *testing.T, env map[string]string) {
	t.Helper()
	for k, v := range env {
		t.Setenv(k, v)
	}
}

// withImplemented turns rules on for the rest of the test.
func withImplemented(t *testing.T, rules ...string) {
	t.Helper()
	saved := Implemented
	Implemented = map[string]bool{}
	for k, v := range saved {
		Implemented[k] = v
	}
	for _, r := range rules {
		Implemented[r] = true
	}
	t.Cleanup(func() { Implemented = saved })
}

// checkNoSecrets fails the test if msg contains any test password.
func checkNoSecrets(t *testing.T, msg string) {
	t.Helper()
	for _, s := range testSecrets {
		if strings.Contains(strings.ToLower(msg), strings.ToLower(s)) {
			t.Errorf("error message contains password %q:\n%s", s, msg)
		}
	}
}

func TestLoadValid(t *testing.T) {
	tests := []struct {
		file string
		want *Config
	}{
		{
			file: "testdata/minimal.yaml",
			want: &Config{
				Regions:            []Region{{Name: "east", Engine: EngineMySQL, DSN: "mysql://regiond@10.0.0.5/app"}},
				Tables:             map[string]Table{"audit_log": {}},
				TombstoneRetention: Duration{DefaultTombstoneRetention},
			},
		},
		{
			file: "testdata/full.yaml",
			want: &Config{
				Regions: []Region{
					{Name: "east", Engine: EngineMySQL, DSN: "mysql://regiond:" + eastPasswordEnv + "@10.0.0.5:3306/app?tls=preferred", Flavor: FlavorMariaDB, ServerID: 4242},
					{Name: "west", Engine: EnginePostgres, DSN: "postgres://regiond:" + westPassword + "@10.1.0.5:5432/app?sslmode=require", Schema: "shop"},
					{Name: "north-2", Engine: EngineMySQL, DSN: "mysql://regiond:" + eastPasswordEnv + "@[fd00::5]/app", Flavor: FlavorMySQL, ServerID: 4243},
				},
				Tables: map[string]Table{
					"accounts":  {},
					"profiles":  {Conflict: RuleApplyRemote},
					"audit_log": {},
				},
				TombstoneRetention: Duration{72*time.Hour + 30*time.Minute},
				Kafka: &Kafka{
					Brokers:     []string{"10.2.0.9:9092", "kafka-2.internal:9093"},
					TopicPrefix: "regiond.prod",
					Partitions:  6,
					Tombstones:  true,
					TLS: TLS{
						Enabled:  true,
						CAFile:   "testdata/tls/ca.pem",
						CertFile: "testdata/tls/client.pem",
						KeyFile:  "testdata/tls/client.key",
					},
					SASL: SASL{Mechanism: SASLScramSHA512, Username: "regiond", Password: kafkaPassword},
				},
				MetricsAddr: "127.0.0.1:9464",
				StateDir:    "/var/lib/regiond",
			},
		},
	}
	for _, tt := range tests {
		t.Run(filepath.Base(tt.file), func(t *testing.T) {
			setEnv(t, testEnv)
			got, err := Load(tt.file)
			if err != nil {
				t.Fatalf("Load(%q): %v", tt.file, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Load(%q) mismatch (-want +got):\n%s", tt.file, diff)
			}
		})
	}
}

func TestLoadDefaults(t *testing.T) {
	c, err := Parse([]byte(`
regions:
  - {name: east, engine: mysql, dsn: "mysql://u@h/app"}
  - {name: west, engine: postgres, dsn: "postgres://u@h/app"}
tables: {t: {}}
kafka: {brokers: ["k:9092"], topic_prefix: regiond}
state_dir: /var/lib/regiond
`), lookup(nil))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.TombstoneRetention.Duration, DefaultTombstoneRetention; got != want {
		t.Errorf("TombstoneRetention = %v, want %v", got, want)
	}
	if got, want := c.Kafka.Partitions, DefaultPartitions; got != want {
		t.Errorf("Kafka.Partitions = %d, want %d", got, want)
	}
	if got, want := c.Regions[1].Schema, DefaultPostgresSchema; got != want {
		t.Errorf("postgres Schema = %q, want %q", got, want)
	}
	if got := c.Regions[0].Schema; got != "" {
		t.Errorf("mysql Schema = %q, want empty", got)
	}
	if got := c.Regions[0].Flavor; got != "" {
		t.Errorf("Flavor = %q, want empty (detected at connect time)", got)
	}
}

func TestTombstoneRetentionExplicit(t *testing.T) {
	for _, tt := range []struct {
		value string
		want  time.Duration
	}{
		{"0", 0},
		{"0s", 0},
		{"30m", 30 * time.Minute},
		{"", DefaultTombstoneRetention}, // null: as if absent
		{"~", DefaultTombstoneRetention},
	} {
		c, err := Parse([]byte("regions: [{name: e, engine: mysql, dsn: 'mysql://u@h/db'}]\ntables: {t: {}}\ntombstone_retention: "+tt.value+"\n"), lookup(nil))
		if err != nil {
			t.Errorf("tombstone_retention: %s: %v", tt.value, err)
			continue
		}
		if got := c.TombstoneRetention.Duration; got != tt.want {
			t.Errorf("tombstone_retention: %s = %v, want %v", tt.value, got, tt.want)
		}
	}
}

func TestDesignExampleNeedsImplementedRules(t *testing.T) {
	setEnv(t, testEnv)
	saved := Implemented
	Implemented = map[string]bool{RuleApplyRemote: true, RuleLastWriterWins: true}
	t.Cleanup(func() { Implemented = saved })
	_, err := Load("testdata/design.yaml")
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("Load(design.yaml) = %v, want ErrInvalid while last_writer_wins and home_region are not implemented", err)
	}
	for _, want := range []string{
		"testdata/design.yaml:11: tables.accounts.conflict: home_region is not available in this version of regiond yet; use apply_remote",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q; got:\n%v", want, err)
		}
	}
	if n := len(err.(*Error).Problems); n != 1 {
		t.Errorf("got %d problems, want 1 (last_writer_wins is implemented):\n%v", n, err)
	}

	withImplemented(t, RuleLastWriterWins, RuleHomeRegion)
	c, err := Load("testdata/design.yaml")
	if err != nil {
		t.Fatalf("Load(design.yaml) with every rule implemented: %v", err)
	}
	want := map[string]Table{
		"accounts":  {Conflict: RuleHomeRegion, HomeColumn: "home"},
		"profiles":  {Conflict: RuleLastWriterWins, VersionColumn: "updated_at"},
		"audit_log": {},
	}
	if diff := cmp.Diff(want, c.Tables); diff != "" {
		t.Errorf("Tables mismatch (-want +got):\n%s", diff)
	}
}

// Building blocks for invalid configs.
const (
	regionsOK = `regions:
  - name: east
    engine: mysql
    dsn: mysql://regiond:${EAST_PASSWORD}@10.0.0.5:3306/app
  - name: west
    engine: postgres
    dsn: postgres://regiond:${WEST_PASSWORD}@10.1.0.5:5432/app
`
	tablesOK = "tables:\n  accounts: {}\n"
	kafkaOK  = "kafka:\n  brokers: [10.2.0.9:9092]\n  topic_prefix: regiond\n"
	// noStateDir ends a case's yaml that must keep kafka without state_dir.
	noStateDir = "# state_dir\n"
)

func region(fields string) string {
	return "regions:\n  - {" + fields + "}\n"
}

func TestParseInvalid(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		env  map[string]string // testEnv when nil
		// want holds one substring per expected problem line, in order.
		want []string
	}{
		// The file as a whole.
		{name: "empty", yaml: "", want: []string{"the config is empty"}},
		{name: "only comments", yaml: "# nothing\n\n# here\n", want: []string{"the config is empty"}},
		{name: "null document", yaml: "---\n~\n", want: []string{"the config is empty"}},
		{name: "two documents", yaml: regionsOK + tablesOK + "---\n" + regionsOK + tablesOK,
			want: []string{"line 10: more than one YAML document (---); put the whole config in one document"}},
		{name: "top-level list", yaml: "- regions\n", want: []string{"line 1: the config must be a mapping of keys such as regions: and tables:, not a list"}},
		{name: "syntax error", yaml: "regions:\n\t- name: east\n", want: []string{"line 2: invalid YAML: found character that cannot start any token"}},
		{name: "unclosed flow", yaml: "regions: [\n", want: []string{"invalid YAML"}},

		// Strict decoding.
		{name: "unknown top-level key", yaml: regionsOK + tablesOK + "regoins: []\n",
			want: []string{"line 10: regoins: unknown key; valid keys here: regions, tables, tombstone_retention, kafka, metrics_addr, state_dir, log_level (did you mean regions?)"}},
		{name: "unknown region key", yaml: "regions:\n  - name: east\n    enigne: mysql\n    dsn: mysql://u@h/db\n" + tablesOK,
			want: []string{"line 3: regions[0].enigne: unknown key; valid keys here: name, engine, dsn, flavor, schema, server_id, apply_connections (did you mean engine?)"}},
		{name: "unknown table key", yaml: regionsOK + "tables:\n  profiles: {conflict: apply_remote, version: v}\n",
			want: []string{"line 9: tables.profiles.version: unknown key; valid keys here: conflict, version_column, home_column"}},
		{name: "unknown kafka keys", yaml: regionsOK + tablesOK + kafkaOK + "  tls: {enable: true}\n  sasl: {user: u}\n",
			want: []string{
				"line 13: kafka.tls.enable: unknown key; valid keys here: enabled, ca_file, cert_file, key_file, insecure_skip_verify (did you mean enabled?)",
				"line 14: kafka.sasl.user: unknown key; valid keys here: mechanism, username, password",
			}},
		{name: "server_id not a number", yaml: region("name: east, engine: mysql, dsn: 'mysql://u:"+inlinePassword+"@h/db', server_id: "+inlinePassword) + tablesOK,
			want: []string{"line 2: regions[0].server_id: expected a whole number from 0 to 4294967295, got a string"}},
		{name: "apply_connections out of range", yaml: region("name: east, engine: mysql, dsn: 'mysql://u@h/db', apply_connections: 20") + tablesOK,
			want: []string{"regions[0].apply_connections: 20 is out of range: use 1 to 8 (or leave it out for the engine's default)"}},
		{name: "server_id too big", yaml: region("name: east, engine: mysql, dsn: 'mysql://u@h/db', server_id: 4294967296") + tablesOK,
			want: []string{"regions[0].server_id: expected a whole number from 0 to 4294967295, got the number 4294967296"}},
		{name: "partitions not a number", yaml: regionsOK + tablesOK + kafkaOK + "  partitions: six\n",
			want: []string{"line 13: kafka.partitions: expected a whole number, got a string"}},
		{name: "tombstones not a bool", yaml: regionsOK + tablesOK + kafkaOK + "  tombstones: maybe\n",
			want: []string{"line 13: kafka.tombstones: expected true or false, got a string"}},
		{name: "retention in days", yaml: regionsOK + tablesOK + "tombstone_retention: 7d\n",
			want: []string{`line 10: tombstone_retention: expected a duration such as 168h or 90m, got "7d"`}},
		{name: "retention without unit", yaml: regionsOK + tablesOK + "tombstone_retention: 3600\n",
			want: []string{`line 10: tombstone_retention: expected a duration such as 168h or 90m, got "3600" (a number needs a unit)`}},
		{name: "retention list", yaml: regionsOK + tablesOK + "tombstone_retention: [1h]\n",
			want: []string{"line 10: tombstone_retention: expected a duration such as 168h or 90m, got a list"}},
		{name: "regions as mapping", yaml: "regions:\n  east: {engine: mysql}\n" + tablesOK,
			want: []string{"line 2: regions: expected a list of regions, each starting with - name:, got a mapping"}},
		{name: "tables as list", yaml: regionsOK + "tables: [accounts]\n",
			want: []string{"line 8: tables: expected a mapping from table names to rules, like accounts: {}, got a list"}},
		{name: "table rule as string", yaml: regionsOK + "tables:\n  accounts: apply_remote\n",
			want: []string{`line 9: tables.accounts: expected a mapping like {conflict: apply_remote}, or {}, got a string`}},
		{name: "duplicate table", yaml: regionsOK + "tables:\n  accounts: {}\n  accounts: {}\n",
			want: []string{"line 10: tables.accounts: appears twice (first at line 9); keep one"}},
		{name: "dsn as list", yaml: region("name: east, engine: mysql, dsn: [mysql://u:"+inlinePassword+"@h/db]") + tablesOK,
			want: []string{"line 2: regions[0].dsn: expected a single value, got a list"}},

		// ${VAR} expansion.
		{name: "unset variable", yaml: regionsOK + tablesOK, env: map[string]string{"WEST_PASSWORD": westPassword},
			want: []string{"line 4: ${EAST_PASSWORD} is not set in the environment"}},
		{name: "unset variable reported once", yaml: regionsOK + tablesOK + "state_dir: /x/${WEST_PASSWORD}\n", env: map[string]string{},
			want: []string{
				"line 4: ${EAST_PASSWORD} is not set in the environment",
				"line 7: ${WEST_PASSWORD} is not set in the environment",
			}},
		{name: "unclosed variable", yaml: regionsOK + tablesOK + "state_dir: /x/${STATE\n",
			want: []string{`line 10: "${" has no closing "}"`}},
		{name: "bad variable name", yaml: regionsOK + tablesOK + "state_dir: /x/${1DIR}\n",
			want: []string{`line 10: "${1DIR}" is not a variable reference`}},
		{name: "variable with line break", yaml: regionsOK + tablesOK + "state_dir: ${DIR}\n", env: map[string]string{"EAST_PASSWORD": "x", "WEST_PASSWORD": "y", "DIR": "/a\nkafka: {}"},
			want: []string{"line 10: ${DIR} contains a line break"}},
		{name: "variable with unknown key", yaml: regionsOK + "${TABLES}", env: map[string]string{"EAST_PASSWORD": "x", "WEST_PASSWORD": "y", "TABLES": "tabels: {}"},
			want: []string{"line 8: tabels: unknown key"}},

		// Regions.
		{name: "no regions key", yaml: tablesOK, want: []string{"regions: at least one region is required"}},
		{name: "empty regions", yaml: "regions: []\n" + tablesOK, want: []string{"line 1: regions: at least one region is required; add one like"}},
		{name: "region name missing", yaml: region("engine: mysql, dsn: 'mysql://u@h/db'") + tablesOK,
			want: []string{"line 2: regions[0].name: required; name the region, like east"}},
		{name: "region name uppercase", yaml: region("name: East, engine: mysql, dsn: 'mysql://u@h/db'") + tablesOK,
			want: []string{`regions[0].name: "East" is not a valid region name; use only lowercase letters, digits, _ and - ("east"?)`}},
		{name: "region name with space", yaml: region("name: 'us east', engine: mysql, dsn: 'mysql://u@h/db'") + tablesOK,
			want: []string{`regions[0].name: "us east" is not a valid region name`}},
		{name: "region name with dot", yaml: region("name: us.east, engine: mysql, dsn: 'mysql://u@h/db'") + tablesOK,
			want: []string{`regions[0].name: "us.east" is not a valid region name`}},
		{name: "region name too long", yaml: region("name: "+strings.Repeat("e", 33)+", engine: mysql, dsn: 'mysql://u@h/db'") + tablesOK,
			want: []string{"is 33 characters long; use at most 32"}},
		{name: "region name reserved", yaml: region("name: kafka, engine: mysql, dsn: 'mysql://u@h/db'") + tablesOK,
			want: []string{`regions[0].name: "kafka" is reserved for the Kafka pipeline target; choose another name`}},
		{name: "region name leading dash", yaml: region("name: -east, engine: mysql, dsn: 'mysql://u@h/db'") + tablesOK,
			want: []string{`regions[0].name: "-east" must start with a lowercase letter or a digit`}},
		{name: "region names duplicate", yaml: regionsOK + "  - {name: east, engine: mysql, dsn: 'mysql://u@h2/db'}\n" + tablesOK,
			want: []string{`line 8: regions[2].name: "east" is already the name of regions[0]; region names must be unique`}},
		{name: "engine missing", yaml: region("name: east, dsn: 'mysql://u@h/db'") + tablesOK,
			want: []string{"regions[0].engine: required; use mysql (MySQL or MariaDB) or postgres"}},
		{name: "engine unsupported", yaml: regionsOK + "  - {name: south, engine: oracle, dsn: 'oracle://u:" + inlinePassword + "@h/db'}\n" + tablesOK,
			want: []string{`line 8: regions[2].engine: "oracle" is not supported; use mysql or postgres`}},
		{name: "dsn missing", yaml: region("name: east, engine: mysql") + tablesOK,
			want: []string{"regions[0].dsn: required; write it like mysql://user:password@host:3306/database"}},
		{name: "postgres dsn missing", yaml: region("name: east, engine: postgres") + tablesOK,
			want: []string{"regions[0].dsn: required; write it like postgres://user:password@host:5432/database"}},
		{name: "mysql dsn without database", yaml: region("name: east, engine: mysql, dsn: 'mysql://regiond:"+inlinePassword+"@10.0.0.5:3306'") + tablesOK,
			want: []string{"regions[0].dsn: the MySQL DSN names no database; add it as the path"}},
		{name: "mysql dsn without database slash", yaml: region("name: east, engine: mysql, dsn: 'mysql://regiond:"+inlinePassword+"@10.0.0.5:3306/'") + tablesOK,
			want: []string{"regions[0].dsn: the MySQL DSN names no database"}},
		{name: "mysql dsn without user", yaml: region("name: east, engine: mysql, dsn: 'mysql://10.0.0.5/app'") + tablesOK,
			want: []string{"regions[0].dsn: the MySQL DSN names no user"}},
		{name: "mysql dsn with postgres scheme", yaml: region("name: east, engine: mysql, dsn: 'postgres://u:"+inlinePassword+"@h/db'") + tablesOK,
			want: []string{"regions[0].dsn: a MySQL DSN must start with mysql://, not postgres://"}},
		{name: "mysql dsn in driver form", yaml: region("name: east, engine: mysql, dsn: 'regiond:"+inlinePassword+"@tcp(10.0.0.5:3306)/app'") + tablesOK,
			want: []string{"regions[0].dsn: not a URL; write it like mysql://user:password@host:3306/database"}},
		{name: "mysql dsn bad port", yaml: region("name: east, engine: mysql, dsn: 'mysql://u:"+inlinePassword+"@h:70000/db'") + tablesOK,
			want: []string{"regions[0].dsn: the DSN port must be a number from 1 to 65535"}},
		{name: "mysql dsn unescaped password", yaml: region("name: east, engine: mysql, dsn: 'mysql://u:"+inlinePassword2+"@h/db'") + tablesOK,
			want: []string{"regions[0].dsn: not a valid URL; write it like mysql://user:password@host:3306/database and URL-escape special characters"}},
		{name: "mysql dsn unescaped slash in numeric password", yaml: region("name: east, engine: mysql, dsn: 'mysql://u:1234/"+inlinePassword+"@h/db'") + tablesOK,
			want: []string{"regions[0].dsn: the user and password are not where they belong; URL-escape"}},
		{name: "mysql dsn extra path", yaml: region("name: east, engine: mysql, dsn: 'mysql://u:"+inlinePassword+"@h/db/x'") + tablesOK,
			want: []string{"regions[0].dsn: the MySQL DSN path must be a single database name"}},
		{name: "mysql dsn duplicate param", yaml: region("name: east, engine: mysql, dsn: 'mysql://u:"+inlinePassword+"@h/db?tls=true&tls=false'") + tablesOK,
			want: []string{`regions[0].dsn: the DSN parameter "tls" is given twice`}},
		{name: "postgres dsn with mysql scheme", yaml: region("name: west, engine: postgres, dsn: 'mysql://u:"+inlinePassword+"@h/db'") + tablesOK,
			want: []string{"regions[0].dsn: a PostgreSQL DSN must start with postgres:// or postgresql://, not mysql://"}},
		{name: "postgres keyword dsn", yaml: region("name: west, engine: postgres, dsn: 'host=h user=u password="+inlinePassword+"'") + tablesOK,
			want: []string{"regions[0].dsn: not a URL; write it like postgres://user:password@host:5432/database"}},
		{name: "postgres dsn bad port", yaml: region("name: west, engine: postgres, dsn: 'postgres://u:"+inlinePassword+"@h:0/db'") + tablesOK,
			want: []string{"regions[0].dsn: the DSN port must be a number from 1 to 65535"}},
		{name: "postgres dsn unescaped password", yaml: region("name: west, engine: postgres, dsn: 'postgresql://u:"+inlinePassword2+"@h/db'") + tablesOK,
			want: []string{"regions[0].dsn: not a valid URL"}},
		{name: "flavor unknown", yaml: region("name: east, engine: mysql, dsn: 'mysql://u@h/db', flavor: percona") + tablesOK,
			want: []string{`regions[0].flavor: "percona" is not a flavor; use mysql or mariadb, or leave it out to detect it when connecting`}},
		{name: "flavor on postgres", yaml: region("name: west, engine: postgres, dsn: 'postgres://u@h/db', flavor: mariadb") + tablesOK,
			want: []string{"regions[0].flavor: only for engine mysql; remove it"}},
		{name: "schema on mysql", yaml: region("name: east, engine: mysql, dsn: 'mysql://u@h/db', schema: public") + tablesOK,
			want: []string{"regions[0].schema: only for engine postgres"}},
		{name: "schema qualified", yaml: region("name: west, engine: postgres, dsn: 'postgres://u@h/db', schema: db.public") + tablesOK,
			want: []string{`regions[0].schema: "db.public" contains a dot`}},
		{name: "server_id on postgres", yaml: region("name: west, engine: postgres, dsn: 'postgres://u@h/db', server_id: 7") + tablesOK,
			want: []string{"regions[0].server_id: only for engine mysql"}},
		{name: "server_id duplicate", yaml: "regions:\n  - {name: a, engine: mysql, dsn: 'mysql://u@h/db', server_id: 7}\n  - {name: b, engine: mysql, dsn: 'mysql://u@h/db', server_id: 8}\n  - {name: c, engine: mysql, dsn: 'mysql://u@h/db', server_id: 7}\n" + tablesOK,
			want: []string{"line 4: regions[2].server_id: 7 is already the server_id of regions[0]; server ids must be unique"}},

		// Tables.
		{name: "no tables", yaml: regionsOK, want: []string{"tables: at least one table is required"}},
		{name: "empty tables", yaml: regionsOK + "tables: {}\n", want: []string{"line 8: tables: at least one table is required"}},
		{name: "table name empty", yaml: regionsOK + "tables: {'': {}}\n", want: []string{"a table name cannot be empty"}},
		{name: "table name qualified", yaml: regionsOK + "tables: {app.accounts: {}}\n",
			want: []string{`line 8: tables.app.accounts: table name "app.accounts" contains a dot; give the bare name, without a schema or database`}},
		{name: "table name quoted", yaml: regionsOK + "tables: {'\"accounts\"': {}}\n", want: []string{"contains a quote; give the bare name, without quotes"}},
		{name: "table name backticks", yaml: regionsOK + "tables: {'`accounts`': {}}\n", want: []string{"contains a quote"}},
		{name: "table name single quote", yaml: regionsOK + "tables: {\"o'neil\": {}}\n", want: []string{"contains a quote"}},
		{name: "table name space", yaml: regionsOK + "tables: {'my table': {}}\n", want: []string{`tables.my table: table name "my table" contains whitespace`}},
		{name: "table name control", yaml: regionsOK + "tables: {\"a\\x01b\": {}}\n", want: []string{`table name "a\x01b" contains a control character`}},
		{name: "table name reserved", yaml: regionsOK + "tables: {regiond_checkpoints: {}}\n",
			want: []string{`line 8: tables.regiond_checkpoints: table name "regiond_checkpoints" starts with regiond_, which is reserved for regiond's own tables`}},
		{name: "table name reserved any case", yaml: regionsOK + "tables: {Regiond_Conflicts: {}}\n", want: []string{"starts with regiond_"}},
		{name: "unknown rule", yaml: regionsOK + "tables:\n  profiles: {conflict: last_writer_win, version_column: updated_at}\n",
			want: []string{`line 9: tables.profiles.conflict: "last_writer_win" is not a rule; valid rules: apply_remote, last_writer_wins, home_region`}},
		{name: "version_column with apply_remote", yaml: regionsOK + "tables:\n  profiles: {version_column: updated_at}\n",
			want: []string{"tables.profiles.version_column: only used by last_writer_wins, but the rule is apply_remote; remove it or set conflict: last_writer_wins"}},
		{name: "home_column with apply_remote", yaml: regionsOK + "tables:\n  accounts: {conflict: apply_remote, home_column: home}\n",
			want: []string{"tables.accounts.home_column: only used by home_region, but the rule is apply_remote; remove it or set conflict: home_region"}},

		// Kafka.
		{name: "kafka without brokers", yaml: regionsOK + tablesOK + "kafka: {topic_prefix: regiond}\n",
			want: []string{"line 10: kafka.brokers: at least one broker is required"}},
		{name: "kafka broker without port", yaml: regionsOK + tablesOK + "kafka: {brokers: [10.2.0.9, 'k:x', ':9092', 'k:0'], topic_prefix: regiond}\n",
			want: []string{
				`kafka.brokers[0]: "10.2.0.9" is not host:port with a port from 1 to 65535; write it like 10.2.0.9:9092`,
				`kafka.brokers[1]: "k:x" is not host:port`,
				`kafka.brokers[2]: ":9092" is not host:port`,
				`kafka.brokers[3]: "k:0" is not host:port`,
			}},
		{name: "kafka without topic_prefix", yaml: regionsOK + tablesOK + "kafka: {brokers: ['k:9092']}\n",
			want: []string{"kafka.topic_prefix: required; topics are named <topic_prefix>.<table>"}},
		{name: "kafka bad topic_prefix", yaml: regionsOK + tablesOK + "kafka: {brokers: ['k:9092'], topic_prefix: 'prod/regiond'}\n",
			want: []string{`kafka.topic_prefix: "prod/regiond" is not a valid Kafka topic prefix; use only letters, digits, ., _ and -`}},
		{name: "kafka topic too long", yaml: regionsOK + "tables: {" + strings.Repeat("t", 200) + ": {}}\nkafka: {brokers: ['k:9092'], topic_prefix: " + strings.Repeat("p", 60) + "}\n",
			want: []string{"would be 261 characters long, more than Kafka's 249"}},
		{name: "kafka topic invalid for table", yaml: regionsOK + "tables: {kunden_größe: {}}\n" + kafkaOK,
			want: []string{`tables.kunden_größe: the Kafka topic "regiond.kunden_größe" would not be valid`}},
		{name: "kafka negative partitions", yaml: regionsOK + tablesOK + kafkaOK + "  partitions: -3\n",
			want: []string{"line 13: kafka.partitions: -3 is negative; use 1 or more"}},
		{name: "kafka sasl mechanism", yaml: regionsOK + tablesOK + kafkaOK + "  sasl: {mechanism: gssapi, username: u, password: ${KAFKA_PASSWORD}}\n",
			want: []string{`kafka.sasl.mechanism: "gssapi" is not a SASL mechanism; use plain, scram-sha-256 or scram-sha-512`}},
		{name: "kafka sasl without credentials", yaml: regionsOK + tablesOK + kafkaOK + "  sasl: {mechanism: plain}\n",
			want: []string{"kafka.sasl.username: required with mechanism plain", "kafka.sasl.password: required with mechanism plain"}},
		{name: "kafka sasl empty password variable", yaml: regionsOK + tablesOK + kafkaOK + "  sasl: {mechanism: scram-sha-256, username: u, password: '${EMPTY}'}\n",
			want: []string{"kafka.sasl.password: required with mechanism scram-sha-256"}},
		{name: "kafka sasl without mechanism", yaml: regionsOK + tablesOK + kafkaOK + "  sasl: {username: u, password: ${KAFKA_PASSWORD}}\n",
			want: []string{"line 13: kafka.sasl.mechanism: required with a username or password"}},
		{name: "kafka tls missing files", yaml: regionsOK + tablesOK + kafkaOK + "  tls: {enabled: true, ca_file: testdata/tls/nope.pem, cert_file: testdata/tls, key_file: testdata/tls/client.key}\n",
			want: []string{
				`kafka.tls.ca_file: "testdata/tls/nope.pem" does not exist; give the path of a PEM file`,
				`kafka.tls.cert_file: "testdata/tls" is a directory`,
			}},
		{name: "kafka tls cert without key", yaml: regionsOK + tablesOK + kafkaOK + "  tls: {enabled: true, cert_file: testdata/tls/client.pem}\n",
			want: []string{"kafka.tls.key_file: required with cert_file"}},
		{name: "kafka tls key without cert", yaml: regionsOK + tablesOK + kafkaOK + "  tls: {enabled: true, key_file: testdata/tls/client.key}\n",
			want: []string{"kafka.tls.cert_file: required with key_file"}},
		{name: "kafka tls not enabled", yaml: regionsOK + tablesOK + kafkaOK + "  tls: {ca_file: testdata/tls/ca.pem}\n",
			want: []string{"line 13: kafka.tls.enabled: is false, but other tls settings are given; set enabled: true, or remove them"}},

		// The rest.
		{name: "negative retention", yaml: regionsOK + tablesOK + "tombstone_retention: -1h\n",
			want: []string{"line 10: tombstone_retention: -1h0m0s is negative; use a duration of 0 or more"}},
		{name: "metrics_addr without port", yaml: regionsOK + tablesOK + "metrics_addr: localhost\n",
			want: []string{`line 10: metrics_addr: "localhost" is not host:port`}},
		{name: "unknown log_level", yaml: regionsOK + tablesOK + "log_level: verbose\n",
			want: []string{`line 10: log_level: "verbose" is not a log level; use debug, info, warn or error`}},
		{name: "kafka without state_dir", yaml: regionsOK + tablesOK + kafkaOK + noStateDir,
			want: []string{"line 10: kafka: needs state_dir: each region's Kafka pipeline keeps the position Kafka acknowledged there; add a local directory, like state_dir: /var/lib/regiond"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := tt.env
			if env == nil {
				env = testEnv
			}
			// A config with kafka needs state_dir; give it one unless the
			// case is about that.
			yaml := tt.yaml
			if strings.Contains(yaml, "kafka:") && !strings.Contains(yaml, "state_dir") {
				yaml += "state_dir: /var/lib/regiond\n"
			}
			yaml = strings.TrimSuffix(yaml, noStateDir)
			c, err := Parse([]byte(yaml), lookup(env))
			if err == nil {
				t.Fatalf("Parse succeeded, want problems %q; config:\n%+v", tt.want, c)
			}
			if c != nil {
				t.Errorf("Parse returned a config with an error")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error does not wrap ErrInvalid: %v", err)
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error is %T, want *Error", err)
			}
			msg := err.Error()
			checkNoSecrets(t, msg)
			lines := strings.Split(msg, "\n")
			if len(lines) != len(tt.want) || len(e.Problems) != len(tt.want) {
				t.Fatalf("got %d problems, want %d:\n%s", len(e.Problems), len(tt.want), msg)
			}
			for i, want := range tt.want {
				if !strings.Contains(lines[i], want) {
					t.Errorf("problem %d:\n got: %s\nwant: …%s…", i, lines[i], want)
				}
			}
		})
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	yaml := `regions:
  - name: East
    engine: oracle
    dsn: mysql://regiond:${EAST_PASSWORD}@10.0.0.5:3306
  - name: west
    engine: postgres
    dsn: postgres://regiond@10.1.0.5:5432/app
    flavor: mariadb
  - name: west
    engine: mysql
    dsn: mysql://regiond:` + inlinePassword + `@10.0.0.6
tables:
  profiles: {conflict: last_writer_win}
  regiond_x: {}
  accounts: {conflict: home_region}
tombstone_retention: -2h
kafka:
  brokers: []
  partitions: -1
metrics_addr: nowhere
state_dir: /var/lib/regiond
`
	_, err := Parse([]byte(yaml), lookup(testEnv))
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("Parse: got %v, want *Error", err)
	}
	checkNoSecrets(t, err.Error())
	want := []Problem{
		{Line: 2, Key: "regions[0].name"},
		{Line: 3, Key: "regions[0].engine"},
		{Line: 8, Key: "regions[1].flavor"},
		{Line: 9, Key: "regions[2].name"},
		{Line: 11, Key: "regions[2].dsn"},
		{Line: 13, Key: "tables.profiles.conflict"},
		{Line: 14, Key: "tables.regiond_x"},
		{Line: 15, Key: "tables.accounts.home_column"}, // reported at its table
		{Line: 16, Key: "tombstone_retention"},
		{Line: 17, Key: "kafka.topic_prefix"}, // missing: reported at kafka
		{Line: 18, Key: "kafka.brokers"},
		{Line: 19, Key: "kafka.partitions"},
		{Line: 20, Key: "metrics_addr"},
	}
	// Problems come in file order; the stable sort keeps Validate's order
	// within a line, and a missing key takes its parent's line.
	var got []Problem
	for _, p := range e.Problems {
		if p.Message == "" {
			t.Errorf("%s: empty message", p.Key)
		}
		got = append(got, Problem{Line: p.Line, Key: p.Key})
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("problems mismatch (-want +got):\n%s\nfull error:\n%v", diff, err)
	}
}

func TestValidateStruct(t *testing.T) {
	c := &Config{
		Regions: []Region{
			{Name: "east", Engine: EngineMySQL, DSN: "mysql://u:" + inlinePassword + "@h/app"},
			{Name: "west", Engine: EnginePostgres, DSN: "postgres://u@h/app"},
		},
		Tables:   map[string]Table{"accounts": {}},
		Kafka:    &Kafka{Brokers: []string{"k:9092"}, TopicPrefix: "regiond"}, // Partitions 0: the default
		StateDir: "/var/lib/regiond",
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}

	c.Regions[1].Name = "east"
	c.Tables["x.y"] = Table{}
	err := c.Validate()
	var e *Error
	if !errors.As(err, &e) || !errors.Is(err, ErrInvalid) {
		t.Fatalf("Validate: got %v, want *Error wrapping ErrInvalid", err)
	}
	want := "regions[1].name: \"east\" is already the name of regions[0]; region names must be unique\n" +
		"tables.x.y: table name \"x.y\" contains a dot; give the bare name, without a schema or database"
	if got := err.Error(); got != want {
		t.Errorf("Validate error:\n got: %s\nwant: %s", got, want)
	}

	var nilConfig *Config
	if err := nilConfig.Validate(); !errors.Is(err, ErrInvalid) {
		t.Errorf("nil Config: Validate = %v, want ErrInvalid", err)
	}
}

func TestImplementedRules(t *testing.T) {
	withImplemented(t, RuleLastWriterWins, RuleHomeRegion)
	tests := []struct {
		name string
		yaml string
		want string // "" for valid
	}{
		{name: "last_writer_wins", yaml: "profiles: {conflict: last_writer_wins, version_column: updated_at}"},
		{name: "home_region", yaml: "accounts: {conflict: home_region, home_column: home}"},
		{name: "last_writer_wins without version_column", yaml: "profiles: {conflict: last_writer_wins}",
			want: "tables.profiles.version_column: required by last_writer_wins; name the column holding the row version"},
		{name: "home_region without home_column", yaml: "accounts: {conflict: home_region}",
			want: "tables.accounts.home_column: required by home_region; name the column holding the name of the row's home region"},
		{name: "home_column with last_writer_wins", yaml: "profiles: {conflict: last_writer_wins, version_column: v, home_column: home}",
			want: "tables.profiles.home_column: only used by home_region, but the rule is last_writer_wins"},
		{name: "version_column with home_region", yaml: "accounts: {conflict: home_region, home_column: home, version_column: v}",
			want: "tables.accounts.version_column: only used by last_writer_wins, but the rule is home_region"},
		{name: "quoted version_column", yaml: "profiles: {conflict: last_writer_wins, version_column: '`v`'}",
			want: "tables.profiles.version_column: column name \"`v`\" contains a quote"},
		{name: "home_column with space", yaml: "accounts: {conflict: home_region, home_column: 'home region'}",
			want: `tables.accounts.home_column: column name "home region" contains whitespace`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(regionsOK+"tables:\n  "+tt.yaml+"\n"), lookup(testEnv))
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Parse: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("Parse: got %v, want …%s…", err, tt.want)
			}
			if err != nil {
				checkNoSecrets(t, err.Error())
			}
		})
	}
}

func TestExpand(t *testing.T) {
	env := map[string]string{"A": "alpha", "B_2": "beta", "EMPTY": "", "DOLLAR": "$x${A}"}
	tests := []struct {
		in, want string
		problems []Problem
	}{
		{in: "x: ${A}", want: "x: alpha"},
		{in: "x: ${A}${B_2}-${EMPTY}.", want: "x: alphabeta-."},
		{in: "x: $$", want: "x: $"},
		{in: "x: $${A}", want: "x: ${A}"},
		{in: "x: $$$${A}", want: "x: $${A}"},
		{in: "x: $A $ a$ $", want: "x: $A $ a$ $"},
		{in: "x: ${DOLLAR}", want: "x: $x${A}"}, // values are not expanded again
		{in: "# ${UNSET} $$\n  # ${UNSET}\nx: 1 # ${A}", want: "# ${UNSET} $$\n  # ${UNSET}\nx: 1 # alpha"},
		{in: "a: ${UNSET}\nb: ${UNSET}\nc: ${OTHER}", want: "a: \nb: \nc: ",
			problems: []Problem{
				{Line: 1, Message: "${UNSET} is not set in the environment; set it (it may be empty), or write $${UNSET} for the literal text"},
				{Line: 3, Message: "${OTHER} is not set in the environment; set it (it may be empty), or write $${OTHER} for the literal text"},
			}},
		{in: "a: 1\nb: ${A\nc: ${A}", want: "a: 1\nb: ${A\nc: alpha",
			problems: []Problem{{Line: 2, Message: `"${" has no closing "}"; write ${NAME} for a variable, or $$ for a literal $`}}},
		{in: "a: ${}", want: "a: ${}",
			problems: []Problem{{Line: 1, Message: `"${}" is not a variable reference; a name has letters, digits and _ and does not start with a digit (write $$ for a literal $)`}}},
		{in: "a: ${A-B}", want: "a: ${A-B}",
			problems: []Problem{{Line: 1, Message: `"${A-B}" is not a variable reference; a name has letters, digits and _ and does not start with a digit (write $$ for a literal $)`}}},
	}
	for _, tt := range tests {
		got, problems := expand([]byte(tt.in), lookup(env))
		if string(got) != tt.want {
			t.Errorf("expand(%q) = %q, want %q", tt.in, got, tt.want)
		}
		if diff := cmp.Diff(tt.problems, problems); diff != "" {
			t.Errorf("expand(%q) problems (-want +got):\n%s", tt.in, diff)
		}
	}
}

func TestParseNilGetenvUsesEnvironment(t *testing.T) {
	t.Setenv("REGIOND_TEST_DB", "shop")
	c, err := Parse([]byte(region("name: east, engine: mysql, dsn: 'mysql://u@h/${REGIOND_TEST_DB}'")+tablesOK), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.Regions[0].DSN, "mysql://u@h/shop"; got != want {
		t.Errorf("DSN = %q, want %q", got, want)
	}
}

func TestLoadErrors(t *testing.T) {
	t.Run("missing file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "nope.yaml")
		_, err := Load(path)
		if !errors.Is(err, ErrInvalid) || !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Load: got %v, want ErrInvalid and fs.ErrNotExist", err)
		}
		if want := path + ": cannot read the config file: no such file or directory"; err == nil || err.Error() != want {
			t.Errorf("Load error:\n got: %v\nwant: %s", err, want)
		}
	})
	t.Run("directory", func(t *testing.T) {
		dir := t.TempDir()
		_, err := Load(dir)
		if !errors.Is(err, ErrInvalid) || err == nil || !strings.HasPrefix(err.Error(), dir+": cannot read the config file: ") {
			t.Errorf("Load: got %v, want an ErrInvalid naming %s", err, dir)
		}
	})
	t.Run("problems name the file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "regiond.yaml")
		if err := os.WriteFile(path, []byte(regionsOK+"tables:\n  t: {conflict: nope}\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		t.Setenv("WEST_PASSWORD", westPassword)
		t.Setenv("EAST_PASSWORD", "") // restored after the test
		os.Unsetenv("EAST_PASSWORD")
		_, err := Load(path)
		want := path + ":4: ${EAST_PASSWORD} is not set in the environment; set it (it may be empty), or write $${EAST_PASSWORD} for the literal text"
		if err == nil || err.Error() != want {
			t.Errorf("Load error:\n got: %v\nwant: %s", err, want)
		}
		t.Setenv("EAST_PASSWORD", eastPasswordEnv)
		_, err = Load(path)
		want = path + `:9: tables.t.conflict: "nope" is not a rule; valid rules: apply_remote, last_writer_wins, home_region`
		if err == nil || err.Error() != want {
			t.Errorf("Load error:\n got: %v\nwant: %s", err, want)
		}
		checkNoSecrets(t, err.Error())
	})
}

func TestErrorFormat(t *testing.T) {
	e := &Error{File: "regiond.yaml", Problems: []Problem{
		{Message: "the config is empty"},
		{Line: 3, Message: "${X} is not set in the environment"},
		{Line: 7, Key: "tables.t.conflict", Message: "bad"},
		{Key: "regions", Message: "missing"},
	}}
	want := "regiond.yaml: the config is empty\n" +
		"regiond.yaml:3: ${X} is not set in the environment\n" +
		"regiond.yaml:7: tables.t.conflict: bad\n" +
		"regiond.yaml: regions: missing"
	if got := e.Error(); got != want {
		t.Errorf("Error():\n got: %s\nwant: %s", got, want)
	}
	e.File = ""
	want = "the config is empty\nline 3: ${X} is not set in the environment\nline 7: tables.t.conflict: bad\nregions: missing"
	if got := e.Error(); got != want {
		t.Errorf("Error() without file:\n got: %s\nwant: %s", got, want)
	}
}

func TestRedactionInMessages(t *testing.T) {
	// Passwords in places where the messages quote user input.
	tests := []struct {
		name, yaml string
	}{
		{name: "dsn run into name", yaml: "regions:\n  - engine: mysql\n    name: east\n      mysql://u:" + inlinePassword + "@h/db\n" + tablesOK},
		{name: "dsn without colon", yaml: "regions:\n  - name: east\n    dsn mysql://u:" + inlinePassword + "@h/db\n    engine: mysql\n" + tablesOK},
		{name: "password as region name", yaml: region("name: '"+inlinePassword+"', engine: mysql, dsn: 'mysql://u:"+inlinePassword+"@h/db'") + tablesOK},
		{name: "escaped password as flavor", yaml: region("name: east, engine: mysql, dsn: 'mysql://u:"+inlinePassword2E+"@h/db', flavor: '"+inlinePassword2+"'") + tablesOK},
		{name: "kafka password as broker", yaml: regionsOK + tablesOK + "kafka: {brokers: ['${KAFKA_PASSWORD}'], topic_prefix: p, sasl: {mechanism: plain, username: u, password: '${KAFKA_PASSWORD}'}}\n"},
		{name: "password in a postgres parameter", yaml: region("name: '?password="+inlinePassword+"', engine: postgres, dsn: 'postgres://h/db?password="+inlinePassword+"'") + tablesOK},
		{name: "password in a table name", yaml: regionsOK + "tables: {'x mysql://u:" + inlinePassword + "@h/db': {}}\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml), lookup(testEnv))
			if err == nil {
				t.Fatal("Parse succeeded; want an error")
			}
			checkNoSecrets(t, err.Error())
			t.Log(err)
		})
	}
}

func TestAccessors(t *testing.T) {
	c, err := Parse([]byte(regionsOK+"tables: {b: {}, a: {conflict: apply_remote}, c: {}}\n"), lookup(testEnv))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"a", "b", "c"}, c.TableNames()); diff != "" {
		t.Errorf("TableNames (-want +got):\n%s", diff)
	}
	r, ok := c.Region("west")
	if !ok || r.Engine != EnginePostgres {
		t.Errorf("Region(west) = %+v, %v", r, ok)
	}
	r.Schema = "changed" // a pointer into the config
	if c.Regions[1].Schema != "changed" {
		t.Errorf("Region returned a copy")
	}
	if r, ok := c.Region("nowhere"); ok || r != nil {
		t.Errorf("Region(nowhere) = %+v, %v; want nil, false", r, ok)
	}
	for _, tt := range []struct{ conflict, want string }{
		{"", RuleApplyRemote},
		{RuleApplyRemote, RuleApplyRemote},
		{RuleLastWriterWins, RuleLastWriterWins},
		{RuleHomeRegion, RuleHomeRegion},
	} {
		if got := (Table{Conflict: tt.conflict}).Rule(); got != tt.want {
			t.Errorf("Table{Conflict: %q}.Rule() = %q, want %q", tt.conflict, got, tt.want)
		}
	}
}

func TestDurationYAML(t *testing.T) {
	var v struct {
		D Duration `yaml:"d"`
	}
	if err := yaml.Unmarshal([]byte("d: 1h30m"), &v); err != nil {
		t.Fatal(err)
	}
	if got, want := v.D.Duration, 90*time.Minute; got != want {
		t.Errorf("Duration = %v, want %v", got, want)
	}
	out, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(out), "d: 1h30m0s\n"; got != want {
		t.Errorf("Marshal = %q, want %q", got, want)
	}
	if err := yaml.Unmarshal([]byte("d: soon"), &v); err == nil {
		t.Error("Unmarshal(soon) succeeded")
	}
}

// FuzzParse checks that Parse never panics, that every error is an *Error
// wrapping ErrInvalid with one line per problem, and that what Parse accepts
// still validates.
func FuzzParse(f *testing.F) {
	for _, file := range []string{"testdata/minimal.yaml", "testdata/full.yaml", "testdata/design.yaml"} {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(regionsOK + tablesOK + kafkaOK))
	env := lookup(testEnv)
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data, env)
		if err == nil {
			if c == nil {
				t.Fatal("Parse returned neither a config nor an error")
			}
			if err := c.Validate(); err != nil {
				t.Fatalf("Parse accepted a config that Validate rejects: %v", err)
			}
			if len(c.Regions) == 0 || len(c.Tables) == 0 {
				t.Fatalf("Parse accepted a config without regions or tables: %+v", c)
			}
			return
		}
		if c != nil {
			t.Fatal("Parse returned a config with an error")
		}
		if !errors.Is(err, ErrInvalid) {
			t.Fatalf("error does not wrap ErrInvalid: %v", err)
		}
		var e *Error
		if !errors.As(err, &e) || len(e.Problems) == 0 {
			t.Fatalf("error is not an *Error with problems: %#v", err)
		}
		for _, p := range e.Problems {
			if p.Message == "" {
				t.Fatalf("problem without a message: %+v", p)
			}
		}
		if got, want := strings.Count(err.Error(), "\n")+1, len(e.Problems); got != want {
			t.Fatalf("error has %d lines for %d problems:\n%v", got, want, err)
		}
	})
}
