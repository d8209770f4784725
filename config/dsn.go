package config

import (
	"net"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// DefaultMySQLPort is the port of a MySQL DSN that names none.
const DefaultMySQLPort = 3306

// redactedPassword replaces every password regiond prints.
const redactedPassword = "xxxxx"

// dsnError is an error about a DSN. Its message never contains the DSN, so
// it can never leak a password, and it wraps ErrInvalid.
type dsnError struct{ msg string }

func (e *dsnError) Error() string { return e.msg }
func (e *dsnError) Unwrap() error { return ErrInvalid }

func newDSNError(msg string) error { return &dsnError{msg: msg} }

// dsnEscapeHint tells the user how to fix a DSN that url.Parse misreads,
// which is nearly always a password with a special character in it.
const dsnEscapeHint = "URL-escape special characters in the user and password (@ as %40, : as %3A, / as %2F, ? as %3F, # as %23, % as %25)"

// MySQLDSN is a parsed MySQL or MariaDB DSN of the form
// mysql://user:password@host:port/database?key=value.
type MySQLDSN struct {
	User     string
	Password string // may be empty
	Host     string // without brackets for an IPv6 address
	Port     int
	Database string
	// Params holds the query parameters, URL-decoded. It is never nil, so
	// callers may add to it.
	Params map[string]string
}

// ParseMySQLDSN parses a DSN of the form
// mysql://user:password@host:port/database?key=value. The port defaults to
// 3306; the user and the database are required; the password may be empty.
// User, password, database and parameters are URL-decoded: a password
// holding /, ?, #, % or a space must be URL-escaped (%2F, %3F, %23, %25, %20),
// and escaping @ and : (%40, %3A) is advised though not required.
//
// Errors wrap ErrInvalid and never contain the DSN or any part of it.
func ParseMySQLDSN(dsn string) (MySQLDSN, error) {
	u, err := parseDSNURL(dsn, "mysql://user:password@host:3306/database")
	if err != nil {
		return MySQLDSN{}, err
	}
	if u.Scheme != "mysql" {
		return MySQLDSN{}, newDSNError("a MySQL DSN must start with mysql://, not " + u.Scheme + "://")
	}
	d := MySQLDSN{Port: DefaultMySQLPort, Params: map[string]string{}}
	if u.User == nil || u.User.Username() == "" {
		return MySQLDSN{}, newDSNError("the MySQL DSN names no user; write it like mysql://user:password@host:3306/database")
	}
	d.User = u.User.Username()
	d.Password, _ = u.User.Password()
	d.Host = u.Hostname()
	if d.Host == "" {
		return MySQLDSN{}, newDSNError("the MySQL DSN names no host; write it like mysql://user:password@host:3306/database")
	}
	if strings.Contains(d.Host, ":") && !strings.HasPrefix(u.Host, "[") {
		return MySQLDSN{}, newDSNError("the MySQL DSN host is not valid; write an IPv6 address in brackets, like [fd00::5]:3306")
	}
	if p := u.Port(); p != "" {
		if d.Port, err = parsePort(p); err != nil {
			return MySQLDSN{}, err
		}
	}
	db := strings.TrimPrefix(u.Path, "/")
	switch {
	case db == "":
		return MySQLDSN{}, newDSNError("the MySQL DSN names no database; add it as the path: mysql://user:password@host:3306/database")
	case strings.Contains(db, "/"):
		return MySQLDSN{}, newDSNError("the MySQL DSN path must be a single database name, like /app")
	}
	d.Database = db
	if d.Params, err = parseParams(u.RawQuery); err != nil {
		return MySQLDSN{}, err
	}
	return d, nil
}

// Addr returns host:port, the form dialers and go-mysql expect.
func (d MySQLDSN) Addr() string {
	return net.JoinHostPort(d.Host, strconv.Itoa(d.Port))
}

// Redacted returns the DSN in URL form with the password replaced by
// "xxxxx", for logs and error messages.
func (d MySQLDSN) Redacted() string {
	u := url.URL{Scheme: "mysql", Host: d.Addr(), Path: "/" + d.Database}
	if d.Password != "" {
		u.User = url.UserPassword(d.User, redactedPassword)
	} else {
		u.User = url.User(d.User)
	}
	if len(d.Params) > 0 {
		keys := make([]string, 0, len(d.Params))
		for k := range d.Params {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var q []string
		for _, k := range keys {
			v := d.Params[k]
			if isSecretParam(k) {
				v = redactedPassword
			}
			q = append(q, url.QueryEscape(k)+"="+url.QueryEscape(v))
		}
		u.RawQuery = strings.Join(q, "&")
	}
	return u.String()
}

// checkPostgresDSN checks a postgres:// or postgresql:// URL. Only the URL
// form is accepted; the database defaults to the user's name as in libpq.
func checkPostgresDSN(dsn string) error {
	u, err := parseDSNURL(dsn, "postgres://user:password@host:5432/database")
	if err != nil {
		return err
	}
	if u.Scheme != "postgres" && u.Scheme != "postgresql" {
		return newDSNError("a PostgreSQL DSN must start with postgres:// or postgresql://, not " + u.Scheme + "://")
	}
	if p := u.Port(); p != "" {
		if _, err := parsePort(p); err != nil {
			return err
		}
	}
	if strings.Contains(strings.TrimPrefix(u.Path, "/"), "/") {
		return newDSNError("the PostgreSQL DSN path must be a single database name, like /app")
	}
	if _, err := parseParams(u.RawQuery); err != nil {
		return err
	}
	return nil
}

// parseDSNURL parses dsn as a URL with an authority ("scheme://..."). Its
// errors never repeat the DSN: url.Parse's errors do, password included.
func parseDSNURL(dsn, example string) (*url.URL, error) {
	scheme, rest, ok := strings.Cut(dsn, "://")
	if !ok || scheme == "" || !validScheme(scheme) {
		return nil, newDSNError("not a URL; write it like " + example)
	}
	u, err := url.Parse(dsn)
	if err != nil {
		return nil, newDSNError("not a valid URL; write it like " + example + " and " + dsnEscapeHint)
	}
	// An unescaped "/", "?" or "#" in a password ends the authority early;
	// the "@" then lands in the path, query or fragment.
	if u.User == nil && strings.Contains(rest, "@") {
		return nil, newDSNError("the user and password are not where they belong; " + dsnEscapeHint)
	}
	if u.Fragment != "" || u.RawFragment != "" || strings.HasSuffix(dsn, "#") {
		return nil, newDSNError("a DSN has no #fragment; " + dsnEscapeHint)
	}
	u.Scheme = strings.ToLower(u.Scheme)
	return u, nil
}

func validScheme(s string) bool {
	for i, r := range s {
		switch {
		case 'a' <= r && r <= 'z', 'A' <= r && r <= 'Z':
		case i > 0 && ('0' <= r && r <= '9' || r == '+' || r == '-' || r == '.'):
		default:
			return false
		}
	}
	return true
}

func parsePort(p string) (int, error) {
	n, err := strconv.Atoi(p)
	if err != nil || n < 1 || n > 65535 {
		return 0, newDSNError("the DSN port must be a number from 1 to 65535")
	}
	return n, nil
}

// parseParams decodes a query string, rejecting what url.ParseQuery would
// silently drop or merge.
func parseParams(raw string) (map[string]string, error) {
	params := map[string]string{}
	if raw == "" {
		return params, nil
	}
	for _, kv := range strings.Split(raw, "&") {
		if kv == "" {
			continue
		}
		k, v, _ := strings.Cut(kv, "=")
		key, err1 := url.QueryUnescape(k)
		val, err2 := url.QueryUnescape(v)
		if err1 != nil || err2 != nil || key == "" {
			return nil, newDSNError("the DSN parameters are not valid key=value pairs; " + dsnEscapeHint)
		}
		if _, dup := params[key]; dup {
			return nil, newDSNError("the DSN parameter " + strconv.Quote(key) + " is given twice")
		}
		params[key] = val
	}
	return params, nil
}

// isSecretParam reports whether a DSN query parameter may hold a secret
// (libpq accepts password=... in the query, for one).
func isSecretParam(key string) bool {
	k := strings.ToLower(key)
	return strings.Contains(k, "pass") || strings.Contains(k, "pwd") || strings.Contains(k, "secret")
}

// RedactDSN returns dsn with its password replaced by "xxxxx", for logs and
// error messages. It accepts any URL-form DSN (mysql://, postgres://, ...),
// and it redacts even a DSN it cannot parse: everything between "://" and
// the last "@" after the user name goes, as do query parameters whose name
// suggests a password. A DSN without a password is returned unchanged.
func RedactDSN(dsn string) string {
	if u, err := url.Parse(dsn); err == nil && strings.Contains(dsn, "://") && u.Opaque == "" && u.Fragment == "" &&
		(u.User != nil || !strings.Contains(afterScheme(dsn), "@")) {
		changed := false
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), redactedPassword)
			changed = true
		}
		if q, ok := redactQuery(u.RawQuery); ok {
			u.RawQuery = q
			changed = true
		}
		if !changed {
			return dsn
		}
		return u.String()
	}
	return redactUnparsed(dsn)
}

func afterScheme(s string) string {
	if _, rest, ok := strings.Cut(s, "://"); ok {
		return rest
	}
	return s
}

// redactQuery redacts the values of secret-looking parameters, reporting
// whether it changed anything.
func redactQuery(raw string) (string, bool) {
	if raw == "" {
		return raw, false
	}
	parts := strings.Split(raw, "&")
	changed := false
	for i, kv := range parts {
		k, _, hasValue := strings.Cut(kv, "=")
		key, err := url.QueryUnescape(k)
		if err != nil {
			key = k
		}
		if hasValue && isSecretParam(key) {
			parts[i] = k + "=" + redactedPassword
			changed = true
		}
	}
	return strings.Join(parts, "&"), changed
}

// secretParamRE finds password=... in a DSN that is not a valid URL (or in
// a libpq keyword/value string).
var secretParamRE = regexp.MustCompile(`(?i)((?:[a-z_]*pass[a-z_]*|[a-z_]*pwd|[a-z_]*secret[a-z_]*)\s*=\s*)('[^']*'|[^&\s]*)`)

// redactUnparsed redacts a DSN that url.Parse rejects or misreads, which is
// typically one whose password holds an unescaped special character.
func redactUnparsed(dsn string) string {
	start := 0
	if i := strings.Index(dsn, "://"); i >= 0 {
		start = i + 3
	}
	out := dsn
	if at := strings.LastIndex(dsn[start:], "@"); at >= 0 {
		userinfo := dsn[start : start+at]
		if user, _, hasPassword := strings.Cut(userinfo, ":"); hasPassword {
			out = dsn[:start] + user + ":" + redactedPassword + dsn[start+at:]
		}
	}
	return secretParamRE.ReplaceAllString(out, "${1}"+redactedPassword)
}

// urlPasswordRE finds the password of anything that looks like a URL with
// user info, anywhere in a message.
var urlPasswordRE = regexp.MustCompile(`([a-zA-Z][a-zA-Z0-9+.-]*://[^\s:@/]*):[^\s@]*@`)

// scrubPasswords redacts every URL password and secret-looking parameter in
// free text, such as a user value about to be quoted in a message.
func scrubPasswords(s string) string {
	return secretParamRE.ReplaceAllString(scrubURLPasswords(s), "${1}"+redactedPassword)
}

// scrubURLPasswords redacts the password of everything in s that looks like
// a URL with user info. The placeholder "password" of the examples in
// messages is kept.
func scrubURLPasswords(s string) string {
	return urlPasswordRE.ReplaceAllStringFunc(s, func(m string) string {
		sub := urlPasswordRE.FindStringSubmatch(m)
		if m == sub[1]+":password@" {
			return m
		}
		return sub[1] + ":" + redactedPassword + "@"
	})
}
