package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/regiond/regiond/internal/dbtest"
)

var notesDDL = map[string][]string{
	"mysql": {"CREATE TABLE notes (id BIGINT NOT NULL PRIMARY KEY, body VARCHAR(64) NOT NULL, code BINARY(4) NOT NULL, js JSON)"},
	"postgres": {"CREATE TABLE notes (id bigint PRIMARY KEY, body varchar(64) NOT NULL, code bytea NOT NULL, js jsonb)",
		"ALTER TABLE notes REPLICA IDENTITY FULL"},
}

// TestApplyRemoteConflicts: with regiond stopped, a MariaDB and a
// PostgreSQL region change the same apply_remote rows differently (an
// update each, a delete each, an insert each). When regiond runs again,
// each region applies the other's changes as they are and records each of
// them as a conflict, naming both rows; the rows both regions agree on
// (whatever BINARY(n) padding or JSON spelling) are not recorded.
func TestApplyRemoteConflicts(t *testing.T) {
	rs := []*region{newRegion(t, "east", "mysql", 1, notesDDL), newRegion(t, "west", "postgres", 0, notesDDL)}
	east, west := rs[0], rs[1]
	cfg := writeConfig(t, rs, []string{"notes"}, "")
	d := newDaemon(t, "run", "--config", cfg)
	d.start()
	waitMesh(t, rs...)
	for id := 1; id <= 4; id++ {
		dbtest.Exec(t, east.db, fmt.Sprintf(`INSERT INTO notes VALUES (%d, 'first', 'ab', '{"b": [1, 2.5], "a": "x"}')`, id))
	}
	dbtest.WaitEqualCanonical(t, time.Minute, "notes", east.canon(), west.canon())
	// Agreed changes from both sides: no conflict.
	dbtest.Exec(t, east.db, `UPDATE notes SET body = 'second' WHERE id = 4`)
	dbtest.WaitEqualCanonical(t, time.Minute, "notes", east.canon(), west.canon())
	dbtest.Exec(t, west.db, `UPDATE notes SET body = 'third' WHERE id = 4`)
	dbtest.WaitEqualCanonical(t, time.Minute, "notes", east.canon(), west.canon())
	if _, code := d.term(5 * time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM", code)
	}

	dbtest.Exec(t, east.db, `UPDATE notes SET body = 'east' WHERE id = 1`, `DELETE FROM notes WHERE id = 2`,
		`INSERT INTO notes VALUES (5, 'east', 'e', NULL)`)
	dbtest.Exec(t, west.db, `UPDATE notes SET body = 'west' WHERE id = 1`, `DELETE FROM notes WHERE id = 2`,
		`INSERT INTO notes VALUES (5, 'west', '\x77', NULL)`)
	d.start()

	want := map[string]string{ // key -> what the reason says
		"[1]": "differs from the update's before image",
		"[2]": "delete from",
		"[5]": "insert from",
	}
	for _, r := range rs {
		other := "west"
		if r == west {
			other = "east"
		}
		deadline := time.Now().Add(time.Minute)
		var got map[string]string
		for {
			got = map[string]string{}
			rows, err := r.db.Query("SELECT pk, reason, winner_region, loser_region, COALESCE(kept_image, ''), COALESCE(lost_image, '') FROM regiond_conflicts WHERE rule = 'apply_remote'")
			if err != nil {
				t.Fatal(err)
			}
			for rows.Next() {
				var pk, reason, winner, loser, kept, lost string
				if err := rows.Scan(&pk, &reason, &winner, &loser, &kept, &lost); err != nil {
					t.Fatal(err)
				}
				if winner != other || loser != r.name {
					t.Errorf("%s: conflict on %s has winner %s, loser %s; want %s, %s", r.name, pk, winner, loser, other, r.name)
				}
				if pk == "[1]" && (!strings.Contains(kept, `"body":"`+other+`"`) || !strings.Contains(lost, `"body":"`+r.name+`"`)) {
					t.Errorf("%s: conflict on [1] keeps %s and loses %s; want %s's row kept and %s's lost", r.name, kept, lost, other, r.name)
				}
				got[pk] = reason
			}
			rows.Close()
			if len(got) >= len(want) || time.Now().After(deadline) {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if len(got) != len(want) {
			t.Errorf("%s: apply_remote conflicts on %v, want on each of %v", r.name, got, want)
		}
		for pk, frag := range want {
			if !strings.Contains(got[pk], frag) {
				t.Errorf("%s: conflict on %s says %q, want it to say %q", r.name, pk, got[pk], frag)
			}
		}
	}
	// Each region took the other's changes (apply_remote does not
	// converge here; `verify --repair` would).
	var body string
	if err := east.db.QueryRow("SELECT body FROM notes WHERE id = 1").Scan(&body); err != nil || body != "west" {
		t.Errorf("east: notes 1 body %q (%v), want west's", body, err)
	}
	if err := west.db.QueryRow("SELECT body FROM notes WHERE id = 1").Scan(&body); err != nil || body != "east" {
		t.Errorf("west: notes 1 body %q (%v), want east's", body, err)
	}
}
