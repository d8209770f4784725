package mysql

import (
	"strings"

	"github.com/pingcap/tidb/pkg/parser"
	"github.com/pingcap/tidb/pkg/parser/ast"
	// The parser needs a driver for literal values; test_driver is the
	// parser module's own stand-alone one (regiond only reads table names).
	_ "github.com/pingcap/tidb/pkg/parser/test_driver"
)

// Statement-based DML. The server refuses nothing when a session sets
// binlog_format=STATEMENT (or MIXED, which picks STATEMENT for most DML):
// its INSERT/UPDATE/DELETE/REPLACE/LOAD DATA then reach the binlog as query
// events, without row events. regiond cannot replicate those, and skipping
// them would lose the change, so the reader stops at the first one that
// writes a configured table (see decoder.statementDML).

// stmtTarget is what statementWrites found: the first configured table the
// statement writes ("" when the statement could not be parsed) and the
// statement kind (INSERT, UPDATE, ...).
type stmtTarget struct {
	table, kind string
}

// statementWrites reports whether q, run with current database defaultDB,
// may write one of tables in database db. A statement the parser cannot
// parse (MariaDB-only syntax) counts when it starts with a DML keyword: a
// false stop can be fixed by the operator, a skipped write cannot.
func statementWrites(p *parser.Parser, q, defaultDB, db string, tables map[string]bool) (stmtTarget, bool) {
	stmts, _, err := p.Parse(q, "", "")
	if err != nil {
		if kw := dmlKeyword(q); kw != "" {
			return stmtTarget{kind: kw}, true
		}
		return stmtTarget{}, false
	}
	for _, s := range stmts {
		kind, written := writtenTables(s)
		for _, t := range written {
			schema := t.Schema.O
			if schema == "" {
				schema = defaultDB
			}
			// Compared without case: whether names are case sensitive
			// depends on the server (lower_case_table_names), and a
			// false stop is the safe error.
			if !strings.EqualFold(schema, db) {
				continue
			}
			if name, ok := configured(tables, t.Name.O); ok {
				return stmtTarget{table: name, kind: kind}, true
			}
		}
	}
	return stmtTarget{}, false
}

func configured(tables map[string]bool, name string) (string, bool) {
	if tables[name] {
		return name, true
	}
	for t, on := range tables {
		if on && strings.EqualFold(t, name) {
			return t, true
		}
	}
	return "", false
}

// writtenTables returns the kind of a DML statement and the tables it may
// write (base tables, aliases resolved); nothing for other statements.
func writtenTables(s ast.StmtNode) (string, []*ast.TableName) {
	switch s := s.(type) {
	case *ast.InsertStmt:
		kind := "INSERT"
		if s.IsReplace {
			kind = "REPLACE"
		}
		// Only the target: the tables of INSERT ... SELECT are read.
		return kind, baseTables(s.Table)
	case *ast.UpdateStmt:
		return "UPDATE", updated(s)
	case *ast.DeleteStmt:
		return "DELETE", deleted(s)
	case *ast.LoadDataStmt:
		return "LOAD DATA", []*ast.TableName{s.Table}
	}
	return "", nil
}

// refs is the FROM part of a statement: each base table under its alias
// (or name, and schema.name).
type refs struct {
	all    []*ast.TableName
	byName map[string]*ast.TableName
}

func collect(c *ast.TableRefsClause) refs {
	r := refs{byName: map[string]*ast.TableName{}}
	if c == nil {
		return r
	}
	var walk func(n ast.ResultSetNode)
	walk = func(n ast.ResultSetNode) {
		switch n := n.(type) {
		case *ast.Join:
			if n.Left != nil {
				walk(n.Left)
			}
			if n.Right != nil {
				walk(n.Right)
			}
		case *ast.TableSource:
			t, ok := n.Source.(*ast.TableName)
			if !ok {
				// A derived table or a nested join in parentheses.
				walk(n.Source)
				return
			}
			r.all = append(r.all, t)
			if n.AsName.L != "" {
				r.byName[n.AsName.L] = t
			} else {
				r.byName[t.Name.L] = t
				if t.Schema.L != "" {
					r.byName[t.Schema.L+"."+t.Name.L] = t
				}
			}
		case *ast.TableName:
			r.all = append(r.all, n)
			r.byName[n.Name.L] = n
		}
		// Subqueries (derived tables) are read, never written.
	}
	walk(c.TableRefs)
	return r
}

func baseTables(c *ast.TableRefsClause) []*ast.TableName { return collect(c).all }

// lookup resolves a table reference (an alias or a name) of a multi-table
// statement; an unknown one is taken as a table name itself.
func (r refs) lookup(schema, name string) *ast.TableName {
	key := strings.ToLower(name)
	if schema != "" {
		key = strings.ToLower(schema) + "." + key
	}
	if t, ok := r.byName[key]; ok {
		return t
	}
	return &ast.TableName{Schema: ast.NewCIStr(schema), Name: ast.NewCIStr(name)}
}

// updated is the tables an UPDATE's SET list assigns. An unqualified column
// of a multi-table UPDATE could belong to any of them: all count then.
func updated(s *ast.UpdateStmt) []*ast.TableName {
	r := collect(s.TableRefs)
	if len(r.all) <= 1 {
		return r.all
	}
	var out []*ast.TableName
	for _, a := range s.List {
		if a.Column == nil || a.Column.Table.O == "" {
			return r.all
		}
		out = append(out, r.lookup(a.Column.Schema.O, a.Column.Table.O))
	}
	return out
}

// deleted is the tables a DELETE removes rows from: in the multi-table
// forms (DELETE t1, t2 FROM ... / DELETE FROM t1, t2 USING ...) the listed
// ones, which may be aliases of the FROM part.
func deleted(s *ast.DeleteStmt) []*ast.TableName {
	r := collect(s.TableRefs)
	if !s.IsMultiTable || s.Tables == nil {
		return r.all
	}
	var out []*ast.TableName
	for _, t := range s.Tables.Tables {
		out = append(out, r.lookup(t.Schema.O, t.Name.O))
	}
	return out
}

// dmlKeyword returns the DML keyword q starts with after comments and
// blanks, upper-cased, or "".
func dmlKeyword(q string) string {
	for {
		q = strings.TrimLeft(q, " \t\r\n(")
		switch {
		case strings.HasPrefix(q, "/*!"), strings.HasPrefix(q, "/*M!"):
			// An executable comment: its text runs, keep reading it.
			q = strings.TrimLeft(strings.TrimPrefix(strings.TrimPrefix(q, "/*M!"), "/*!"), "0123456789")
			continue
		case strings.HasPrefix(q, "/*"):
			end := strings.Index(q, "*/")
			if end < 0 {
				return ""
			}
			q = q[end+2:]
			continue
		case strings.HasPrefix(q, "#"), strings.HasPrefix(q, "--"):
			end := strings.IndexByte(q, '\n')
			if end < 0 {
				return ""
			}
			q = q[end+1:]
			continue
		}
		break
	}
	end := strings.IndexFunc(q, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r == '_')
	})
	if end < 0 {
		end = len(q)
	}
	switch kw := strings.ToUpper(q[:end]); kw {
	case "INSERT", "REPLACE", "UPDATE", "DELETE", "LOAD", "WITH":
		// WITH: a statement-logged query starting with a CTE is an
		// UPDATE or DELETE (plain SELECTs are not logged).
		return kw
	}
	return ""
}
