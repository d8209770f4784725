package verify

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/regiond/regiond/config"
	"github.com/regiond/regiond/internal/mysqlconn"
	"github.com/regiond/regiond/snapshot"
	"github.com/regiond/regiond/source"
)

// jsonValue is a canonical value in regiond's JSON mapping.
func jsonValue(v any) json.RawMessage {
	return json.RawMessage(source.AppendJSONValue(nil, v))
}

// keyJSON renders a key as a JSON object, columns in key order.
func keyJSON(def *source.Table, k snapshot.Key) string {
	b := []byte{'{'}
	for i, c := range def.PK {
		if i > 0 {
			b = append(b, ',')
		}
		name, _ := json.Marshal(def.Columns[c].Name)
		b = append(b, name...)
		b = append(b, ':')
		b = source.AppendJSONValue(b, k[i])
	}
	return string(append(b, '}'))
}

func mysqlParams(d config.MySQLDSN) mysqlconn.Params {
	return mysqlconn.Params{Host: d.Host, Port: d.Port, User: d.User, Password: d.Password, Database: d.Database, Extra: d.Params}
}

// WriteText writes the report for a person.
func WriteText(w io.Writer, rep *Report) {
	if len(rep.Before) > 0 {
		fmt.Fprintln(w, "before repair:")
		writeTables(w, rep.Before)
		fmt.Fprintln(w)
		for _, r := range rep.Repairs {
			fmt.Fprintf(w, "repair of table %s (%s): %d writes, %d not repaired\n", r.Table, r.Rule, len(r.Repaired), len(r.NotRepaired))
			for _, a := range r.Repaired {
				fmt.Fprintf(w, "  %s %s in %s (row of %s)\n", a.Action, a.Key, a.Region, a.From)
			}
			for _, a := range r.NotRepaired {
				fmt.Fprintf(w, "  NOT repaired %s in %s: %s\n", a.Key, a.Region, a.Reason)
			}
		}
		fmt.Fprintln(w)
		fmt.Fprintln(w, "after repair:")
	}
	writeTables(w, rep.Tables)
	if rep.Identical() {
		fmt.Fprintf(w, "regions %s are identical\n", strings.Join(rep.Regions, ", "))
	}
}

func writeTables(w io.Writer, ts []TableReport) {
	for _, t := range ts {
		fmt.Fprintf(w, "table %s (%s): %d rows compared in %d chunks (%d differing), %d differences, %d unsettled, %d settled in flight, %.1fs\n",
			t.Table, t.Rule, t.RowsCompared, t.Chunks, t.ChunksDiffering, len(t.Differences), len(t.Unsettled), t.InFlight, t.Seconds)
		for _, d := range t.Differences {
			fmt.Fprintf(w, "  differs %s\n", describe(d))
		}
		for _, d := range t.Unsettled {
			fmt.Fprintf(w, "  unsettled %s (kept changing while verify read it)\n", describe(d))
		}
	}
}

func describe(d Difference) string {
	var b strings.Builder
	b.WriteString(d.Key)
	if len(d.Missing) > 0 {
		fmt.Fprintf(&b, ": missing in %s", strings.Join(d.Missing, ", "))
	}
	if len(d.Columns) > 0 {
		fmt.Fprintf(&b, ": columns %s", strings.Join(d.Columns, ", "))
	}
	regions := make([]string, 0, len(d.Values))
	for r := range d.Values {
		regions = append(regions, r)
	}
	sort.Strings(regions)
	for _, r := range regions {
		vals := d.Values[r]
		if vals == nil {
			fmt.Fprintf(&b, "; %s: no row", r)
			continue
		}
		js, _ := json.Marshal(vals)
		fmt.Fprintf(&b, "; %s: %s", r, js)
	}
	return b.String()
}
