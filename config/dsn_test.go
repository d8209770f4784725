package config

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseMySQLDSN(t *testing.T) {
	tests := []struct {
		dsn  string
		want MySQLDSN
	}{
		{
			dsn:  "mysql://regiond:pw@10.0.0.5:3306/app",
			want: MySQLDSN{User: "regiond", Password: "pw", Host: "10.0.0.5", Port: 3306, Database: "app", Params: map[string]string{}},
		},
		{
			dsn:  "mysql://regiond@db.internal/app",
			want: MySQLDSN{User: "regiond", Host: "db.internal", Port: 3306, Database: "app", Params: map[string]string{}},
		},
		{
			dsn:  "mysql://regiond:@db:3307/app",
			want: MySQLDSN{User: "regiond", Host: "db", Port: 3307, Database: "app", Params: map[string]string{}},
		},
		{ // URL-escaped @, :, /, ?, #, % and space in the password
			dsn:  "mysql://regiond:p%40ss%3Aw%2Fo%3Fr%23d%25%20x@db/app",
			want: MySQLDSN{User: "regiond", Password: "p@ss:w/o?r#d% x", Host: "db", Port: 3306, Database: "app", Params: map[string]string{}},
		},
		{ // a raw @ or : in the password still parses: the last @ ends the user info
			dsn:  "mysql://regiond:p@ss:word@db/app",
			want: MySQLDSN{User: "regiond", Password: "p@ss:word", Host: "db", Port: 3306, Database: "app", Params: map[string]string{}},
		},
		{
			dsn:  "mysql://re%40giond:pw@[fd00::5]:3308/my%2Dapp?tls=skip-verify&charset=utf8mb4&x=a%26b",
			want: MySQLDSN{User: "re@giond", Password: "pw", Host: "fd00::5", Port: 3308, Database: "my-app", Params: map[string]string{"tls": "skip-verify", "charset": "utf8mb4", "x": "a&b"}},
		},
		{
			dsn:  "MYSQL://u@h/db?",
			want: MySQLDSN{User: "u", Host: "h", Port: 3306, Database: "db", Params: map[string]string{}},
		},
	}
	for _, tt := range tests {
		got, err := ParseMySQLDSN(tt.dsn)
		if err != nil {
			t.Errorf("ParseMySQLDSN(%q): %v", tt.dsn, err)
			continue
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("ParseMySQLDSN(%q) mismatch (-want +got):\n%s", tt.dsn, diff)
		}
	}
}

func TestParseMySQLDSNErrors(t *testing.T) {
	const pw = "Sup3r-secret"
	tests := []struct{ dsn, want string }{
		{"", "not a URL"},
		{"regiond:" + pw + "@tcp(10.0.0.5:3306)/app", "not a URL"},
		{"mysql:regiond:" + pw + "@h/app", "not a URL"},
		{"postgres://regiond:" + pw + "@h/app", "a MySQL DSN must start with mysql://, not postgres://"},
		{"mysql://h/app", "names no user"},
		{"mysql://:" + pw + "@h/app", "names no user"},
		{"mysql://u:" + pw + "@/app", "names no host"},
		{"mysql://u:" + pw + "@h", "names no database"},
		{"mysql://u:" + pw + "@h/", "names no database"},
		{"mysql://u:" + pw + "@h/a/b", "single database name"},
		{"mysql://u:" + pw + "@h:0/app", "port must be a number from 1 to 65535"},
		{"mysql://u:" + pw + "@h:65536/app", "port must be a number from 1 to 65535"},
		{"mysql://u:" + pw + "@h:x/app", "not a valid URL"},
		{"mysql://u:" + pw + "#x@h/app", "not a valid URL"},
		{"mysql://u:" + pw + "?x@h/app", "not a valid URL"},
		{"mysql://u:4242/" + pw + "@h/app", "the user and password are not where they belong"},
		{"mysql://u:4242#" + pw + "@h/app", "the user and password are not where they belong"},
		{"mysql://u:" + pw + "@h/app#frag", "a DSN has no #fragment"},
		{"mysql://u:" + pw + "@h/app?a=1&a=2", `the DSN parameter "a" is given twice`},
		{"mysql://u:" + pw + "@h/app?a=%zz", "not valid key=value pairs"},
		{"mysql://u:" + pw + "%zz@h/app", "not a valid URL"},
	}
	for _, tt := range tests {
		_, err := ParseMySQLDSN(tt.dsn)
		if err == nil {
			t.Errorf("ParseMySQLDSN(%q) succeeded, want error …%s…", tt.dsn, tt.want)
			continue
		}
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseMySQLDSN(%q) error does not wrap ErrInvalid: %v", tt.dsn, err)
		}
		if !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseMySQLDSN(%q) = %v, want …%s…", tt.dsn, err, tt.want)
		}
		if strings.Contains(err.Error(), pw) {
			t.Errorf("ParseMySQLDSN(%q) error contains the password: %v", tt.dsn, err)
		}
	}
}

func TestMySQLDSNRedacted(t *testing.T) {
	tests := []struct{ dsn, want string }{
		{"mysql://regiond:p%40ss@10.0.0.5:3306/app", "mysql://regiond:xxxxx@10.0.0.5:3306/app"},
		{"mysql://regiond@10.0.0.5/app", "mysql://regiond@10.0.0.5:3306/app"},
		{"mysql://regiond:pw@[fd00::5]/app?tls=true&charset=utf8mb4", "mysql://regiond:xxxxx@[fd00::5]:3306/app?charset=utf8mb4&tls=true"},
		{"mysql://regiond:pw@h/app?ssl_password=hush", "mysql://regiond:xxxxx@h:3306/app?ssl_password=xxxxx"},
	}
	for _, tt := range tests {
		d, err := ParseMySQLDSN(tt.dsn)
		if err != nil {
			t.Fatalf("ParseMySQLDSN(%q): %v", tt.dsn, err)
		}
		if got := d.Redacted(); got != tt.want {
			t.Errorf("ParseMySQLDSN(%q).Redacted() = %q, want %q", tt.dsn, got, tt.want)
		}
		if got := RedactDSN(d.Redacted()); got != d.Redacted() {
			t.Errorf("RedactDSN(Redacted()) = %q, want it unchanged", got)
		}
	}
	if got, want := (MySQLDSN{User: "u", Host: "fd00::1", Port: 3306}).Addr(), "[fd00::1]:3306"; got != want {
		t.Errorf("Addr() = %q, want %q", got, want)
	}
}

func TestRedactDSN(t *testing.T) {
	tests := []struct{ dsn, want string }{
		{"mysql://regiond:Sup3r-secret@10.0.0.5:3306/app", "mysql://regiond:xxxxx@10.0.0.5:3306/app"},
		{"mysql://regiond:p%40ss%3Aword@h/app", "mysql://regiond:xxxxx@h/app"},
		{"postgres://regiond:Sup3r-secret@10.1.0.5:5432/app?sslmode=require", "postgres://regiond:xxxxx@10.1.0.5:5432/app?sslmode=require"},
		{"postgresql://regiond@h/app?sslmode=require&password=Sup3r-secret", "postgresql://regiond@h/app?sslmode=require&password=xxxxx"},
		{"postgres://regiond@h/app", "postgres://regiond@h/app"},
		{"mysql://regiond:@h/app", "mysql://regiond:xxxxx@h/app"},
		// Unparseable: a raw #, / or ? in the password.
		{"mysql://regiond:Sup3r#secret@h/app", "mysql://regiond:xxxxx@h/app"},
		{"mysql://regiond:Sup3r/secret@h/app", "mysql://regiond:xxxxx@h/app"},
		{"mysql://regiond:4242/Sup3r-secret@h/app", "mysql://regiond:xxxxx@h/app"},
		{"mysql://regiond:Sup3r?secret@h/app", "mysql://regiond:xxxxx@h/app"},
		{"mysql://regiond:Sup3r@secret@h:bad/app", "mysql://regiond:xxxxx@h:bad/app"},
		// Not URLs at all.
		{"regiond:Sup3r-secret@tcp(h:3306)/app", "regiond:xxxxx@tcp(h:3306)/app"},
		{"host=h user=regiond password=Sup3r-secret dbname=app", "host=h user=regiond password=xxxxx dbname=app"},
		{"host=h password='Sup3r secret' dbname=app", "host=h password=xxxxx dbname=app"},
		{"", ""},
		{"not a dsn", "not a dsn"},
	}
	for _, tt := range tests {
		got := RedactDSN(tt.dsn)
		if got != tt.want {
			t.Errorf("RedactDSN(%q) = %q, want %q", tt.dsn, got, tt.want)
		}
		for _, secret := range []string{"Sup3r", "secret", "p%40ss"} {
			if strings.Contains(got, secret) {
				t.Errorf("RedactDSN(%q) = %q still contains %q", tt.dsn, got, secret)
			}
		}
	}
}

func TestCheckPostgresDSN(t *testing.T) {
	for _, dsn := range []string{
		"postgres://regiond@10.1.0.5:5432/app?sslmode=require",
		"postgresql://regiond:p%40ss@h/app",
		"postgres:///app?host=/var/run/postgresql",
		"postgres://h",
		"postgres://[::1]:5433/app",
	} {
		if err := checkPostgresDSN(dsn); err != nil {
			t.Errorf("checkPostgresDSN(%q): %v", dsn, err)
		}
	}
	for _, dsn := range []string{
		"mysql://u@h/app",
		"host=h dbname=app",
		"postgres://u@h:99999/app",
		"postgres://u@h/a/b",
		"postgres://u:a#b@h/app",
		"postgres://u@h/app?x=1&x=2",
	} {
		if err := checkPostgresDSN(dsn); err == nil || !errors.Is(err, ErrInvalid) {
			t.Errorf("checkPostgresDSN(%q) = %v, want an ErrInvalid", dsn, err)
		}
	}
}

// FuzzParseMySQLDSN checks that a parsed DSN survives Redacted and parsing
// again, with only the password changed, and that errors never contain the
// DSN's password.
func FuzzParseMySQLDSN(f *testing.F) {
	for _, s := range []string{
		"mysql://regiond:pw@10.0.0.5:3306/app",
		"mysql://u:p%40ss%3Aword@[fd00::5]/db?tls=true&x=%26",
		"mysql://u@h/db",
		"mysql://u:p@ss@h/db",
		"mysql://u:12/34@h/db",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, dsn string) {
		d, err := ParseMySQLDSN(dsn)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error does not wrap ErrInvalid: %v", err)
			}
			return
		}
		again, err := ParseMySQLDSN(d.Redacted())
		if err != nil {
			t.Fatalf("ParseMySQLDSN(%q) = %+v, but its Redacted() %q does not parse: %v", dsn, d, d.Redacted(), err)
		}
		if d.Password != "" {
			d.Password = redactedPassword
		}
		if diff := cmp.Diff(d, again); diff != "" {
			t.Fatalf("Redacted() %q parses differently (-want +got):\n%s", d.Redacted(), diff)
		}
	})
}
