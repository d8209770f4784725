package backfill

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/regiond/regiond/snapshot"
)

// Preflight looks every table up in both regions and checks that rows of
// the source can be written into the target: the table exists in both, the
// primary keys have the same columns in the same order, both have the same
// columns, and each column's type maps onto the other's (README, "Types
// across engines"). It returns the source tables, or one error wrapping
// ErrMismatch that lists every problem.
func Preflight(ctx context.Context, src, dst *snapshot.DB, tables []string) ([]*snapshot.Table, error) {
	var (
		out      []*snapshot.Table
		problems []string
	)
	for _, name := range tables {
		s, err := src.Table(ctx, name)
		if err != nil && !errors.Is(err, snapshot.ErrNoTable) {
			return nil, err
		}
		if err != nil {
			problems = append(problems, err.Error())
		}
		d, err2 := dst.Table(ctx, name)
		if err2 != nil && !errors.Is(err2, snapshot.ErrNoTable) {
			return nil, err2
		}
		if err2 != nil {
			problems = append(problems, err2.Error())
		}
		if err != nil || err2 != nil {
			continue
		}
		problems = append(problems, compare(src.Region, dst.Region, s, d)...)
		out = append(out, s)
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("%w:\n  %s", ErrMismatch, strings.Join(problems, "\n  "))
	}
	return out, nil
}

func compare(from, to string, s, d *snapshot.Table) []string {
	var problems []string
	name := s.Def.Name
	lower := func(xs []string) []string {
		out := make([]string, len(xs))
		for i, x := range xs {
			out[i] = strings.ToLower(x)
		}
		return out
	}
	if sk, dk := s.KeyNames(), d.KeyNames(); !slices.Equal(lower(sk), lower(dk)) {
		problems = append(problems, fmt.Sprintf("table %s: primary key (%s) in region %s but (%s) in region %s: give it the same primary key in every region",
			name, strings.Join(sk, ", "), from, strings.Join(dk, ", "), to))
	}
	dcols := map[string]int{}
	for i, c := range d.Def.Columns {
		dcols[strings.ToLower(c.Name)] = i
	}
	seen := map[string]bool{}
	for i, c := range s.Def.Columns {
		j, ok := dcols[strings.ToLower(c.Name)]
		if !ok {
			problems = append(problems, fmt.Sprintf("table %s: column %s exists in region %s but not in region %s: add it there", name, c.Name, from, to))
			continue
		}
		seen[strings.ToLower(c.Name)] = true
		if !maps(s.Types[i], d.Types[j]) {
			problems = append(problems, fmt.Sprintf("table %s column %s: %s in region %s does not map to %s in region %s: use the types of the README's mapping",
				name, c.Name, s.Types[i], from, d.Types[j], to))
		}
	}
	for _, c := range d.Def.Columns {
		if !seen[strings.ToLower(c.Name)] {
			problems = append(problems, fmt.Sprintf("table %s: column %s exists in region %s but not in region %s: add it there or drop it", name, c.Name, to, from))
		}
	}
	return problems
}

// class is the kind of values a column type holds, for mapping checks.
func class(typ string) string {
	t := strings.ToLower(typ)
	switch {
	case t == "tinyint(1)" || t == "boolean":
		return "bool"
	case strings.HasPrefix(t, "bit"):
		return "bits"
	case hasPrefix(t, "tinyint", "smallint", "mediumint", "int", "bigint", "integer") || strings.HasPrefix(t, "year") || strings.HasPrefix(t, "decimal") || strings.HasPrefix(t, "numeric") ||
		strings.HasPrefix(t, "float") || strings.HasPrefix(t, "double") || t == "real":
		return "number"
	case strings.HasPrefix(t, "datetime") || strings.HasPrefix(t, "timestamp"):
		return "datetime"
	case t == "date":
		return "date"
	case strings.HasPrefix(t, "time"):
		return "time"
	case strings.Contains(t, "blob") || strings.Contains(t, "binary") || t == "bytea":
		return "binary"
	case t == "json" || t == "jsonb":
		return "json"
	}
	return "text"
}

// maps reports whether values of a source column of type from can be
// written into a target column of type to.
func maps(from, to string) bool {
	f, t := class(from), class(to)
	switch {
	case f == t, t == "text":
		return true
	case f == "bool" && t == "number", f == "number" && t == "bool":
		return true // TINYINT(1) holds 0/1, a boolean reads as one
	case f == "text" && t == "json", f == "json" && t == "text":
		return true // MariaDB's JSON is LONGTEXT
	}
	return false
}

func hasPrefix(s string, prefixes ...string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}
