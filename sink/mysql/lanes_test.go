package mysql

import (
	"database/sql"
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/regiond/regiond/checkpoint"
	"github.com/regiond/regiond/internal/dbtest"
	"github.com/regiond/regiond/internal/testenv"
	"github.com/regiond/regiond/sink/batch"
	"github.com/regiond/regiond/source"
)

// TestLanesOnOneRowUnderTwoKeys applies, on two lanes, transactions whose
// keys differ only in case or accents, which a case- and accent-insensitive
// primary key makes one row. The lanes treat keys that differ in case as
// one, but not accents: a later batch may lock the row first and must give
// up. The result must still be that of applying the transactions one by
// one, every lane transaction must have begun with a marker write of its
// own, and the pipeline's row must hold the last position.
func TestLanesOnOneRowUnderTwoKeys(t *testing.T) {
	srv := testenv.MariaDB(t, 1)
	db := dbtest.Open(t, srv)
	dbtest.Exec(t, db, "CREATE TABLE tags (name VARCHAR(32) COLLATE utf8mb4_general_ci NOT NULL PRIMARY KEY, n BIGINT NOT NULL)")
	tags := &source.Table{Name: "tags", Columns: []source.Column{{Name: "name"}, {Name: "n"}}, PK: []int{0}}
	a := openApplier(t, Config{
		Pipeline: pipelineName, Source: "east", Target: "west", Conn: dbtest.Params(srv),
		Tables: []string{"tags"}, BatchChanges: 16, Lanes: 2,
	}, "0-1-0")
	ctx := t.Context()

	const txns, keys = 240, 12
	in := make(chan source.Txn, txns)
	want := map[string]string{}
	for i := range txns {
		name := fmt.Sprintf("tag%d", i%keys)
		switch i / keys % 4 {
		case 1:
			name = strings.ToUpper(name)
		case 3:
			if i%keys == 0 {
				name = strings.Replace(name, "a", "á", 1)
			}
		}
		in <- source.Txn{
			Changes: []source.Change{{Table: tags, Op: source.Insert, After: source.Row{name, int64(i)}, TxnID: fmt.Sprint(i)}},
			End:     pos(fmt.Sprintf("0-1-%d", i+1)), Origin: "east",
		}
		want[fmt.Sprint(i%keys)] = fmt.Sprintf("\"tag%d\"|\"%d\"", i%keys, i)
	}
	close(in)
	var stored []string
	if err := a.Apply(ctx, in, func(p checkpoint.Position, _ bool) { stored = append(stored, p.String()) }); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if len(stored) == 0 || stored[len(stored)-1] != fmt.Sprintf("0-1-%d", txns) {
		t.Errorf("positions reported: %v; want the last to be 0-1-%d", stored, txns)
	}

	var wantRows []string
	for _, r := range want {
		wantRows = append(wantRows, r)
	}
	sort.Strings(wantRows)
	got := queryLines(t, db, "SELECT LOWER(REPLACE(name, 'á', 'a')) AS k, n FROM tags ORDER BY k")
	if diff := cmp.Diff(wantRows, got); diff != "" {
		t.Errorf("target rows (-want +got):\n%s", diff)
	}
	markers := queryLines(t, db, "SELECT pipeline, kind, position FROM "+CheckpointTable+" ORDER BY pipeline")
	wantMarkers := []string{
		fmt.Sprintf(`%q|"pipeline"|"0-1-%d"`, pipelineName, txns),
		fmt.Sprintf(`%q|"marker"|""`, batch.LaneMarker(pipelineName, 0)),
		fmt.Sprintf(`%q|"marker"|""`, batch.LaneMarker(pipelineName, 1)),
	}
	if diff := cmp.Diff(wantMarkers, markers); diff != "" {
		t.Errorf("checkpoint rows (-want +got):\n%s", diff)
	}
}

// queryLines returns the rows of q, each as its values quoted and joined
// by '|'.
func queryLines(t *testing.T, db *sql.DB, q string) []string {
	t.Helper()
	rows, err := db.Query(q)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		t.Fatal(err)
	}
	vals := make([]sql.NullString, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	var out []string
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		var line []string
		for _, v := range vals {
			line = append(line, fmt.Sprintf("%q", v.String))
		}
		out = append(out, strings.Join(line, "|"))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
