package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/regiond/regiond/internal/dbtest"
)

// TestHomeRevertChainSurvivesCrash: region a writes rows homed in b twice
// (W1, then W2 continuing W1), with more than a batch of a's own writes
// between, while regiond is stopped. a's local pipeline meets W1 when the
// row already holds W2, so it can only revert when it reaches W2, in a
// later batch. regiond is SIGKILLed after the batch with W1 committed and
// before W2 was reverted; after the restart the revert must still restore
// the row as it was before W1 (not as W1 left it), so both regions hold the
// home's rows.
func TestHomeRevertChainSurvivesCrash(t *testing.T) {
	rs := mariaRegions(t, []string{"a", "b"}, ledgerTable)
	a, b := rs[0], rs[1]
	cfg := writeConfig(t, rs, nil, "tables:\n  ledger: {conflict: home_region, home_column: home}\n")
	d := newDaemon(t, "run", "--config", cfg)
	d.start()
	waitMesh(t, rs...)
	dbtest.WaitCheckpoint(t, a.db, "a->a")
	const rows, own = 40, 2000
	for id := 1; id <= rows; id++ {
		dbtest.Exec(t, b.db, fmt.Sprintf("INSERT INTO ledger VALUES (%d, 'b', 100, 'open')", id))
	}
	var ins []string
	for id := 1; id <= own; id++ {
		ins = append(ins, fmt.Sprintf("(%d, 'a', 0, 'own')", 10000+id))
	}
	dbtest.Exec(t, a.db, "INSERT INTO ledger VALUES "+strings.Join(ins, ","))
	dbtest.WaitEqual(t, time.Minute, "ledger", []string{"a", "b"}, a.db, b.db)

	for attempt := 1; ; attempt++ {
		if _, code := d.term(5 * time.Second); code != 0 {
			t.Fatalf("exit code %d after SIGTERM", code)
		}
		var before int
		if err := a.db.QueryRow("SELECT COUNT(*) FROM regiond_conflicts WHERE pipeline = 'a->a'").Scan(&before); err != nil {
			t.Fatal(err)
		}
		w1 := fmt.Sprintf("w1-%d", attempt)
		w2 := fmt.Sprintf("w2-%d", attempt)
		for id := 1; id <= rows; id++ {
			dbtest.Exec(t, a.db, fmt.Sprintf("UPDATE ledger SET balance = balance - 1, note = '%s' WHERE id = %d", w1, id))
		}
		// More than a batch (8192 changes) of a's own writes, several times.
		for i := 0; i < 30; i++ {
			dbtest.Exec(t, a.db, fmt.Sprintf("UPDATE ledger SET balance = balance + 1 WHERE id > 10000 AND home = 'a' AND balance >= %d", 0))
		}
		for id := 1; id <= rows; id++ {
			dbtest.Exec(t, a.db, fmt.Sprintf("UPDATE ledger SET balance = balance - 1, note = '%s' WHERE id = %d", w2, id))
		}
		d.start()
		// Kill as soon as a's local pipeline committed the batch with W1
		// (its conflict records), before it reverted W2.
		deadline := time.Now().Add(time.Minute)
		for {
			var n int
			if err := a.db.QueryRow("SELECT COUNT(*) FROM regiond_conflicts WHERE pipeline = 'a->a'").Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n >= before+rows {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("a's local pipeline recorded %d of the %d violating writes W1 in a minute", n-before, rows)
			}
			time.Sleep(5 * time.Millisecond)
		}
		d.kill()
		var reverted, w2Recorded int
		if err := a.db.QueryRow("SELECT COUNT(*) FROM ledger WHERE id <= ? AND note = 'open'", rows).Scan(&reverted); err != nil {
			t.Fatal(err)
		}
		if err := a.db.QueryRow("SELECT COUNT(*) FROM regiond_conflicts WHERE pipeline = 'a->a' AND lost_image LIKE ?", "%"+w2+"%").Scan(&w2Recorded); err != nil {
			t.Fatal(err)
		}
		d.start()
		if reverted == 0 && w2Recorded == 0 {
			t.Logf("attempt %d: killed between the batch with W1 and the one with W2", attempt)
			break
		}
		t.Logf("attempt %d: the kill came late (%d rows reverted, %d W2 recorded); again", attempt, reverted, w2Recorded)
		dbtest.WaitEqual(t, time.Minute, "ledger", []string{"a", "b"}, a.db, b.db)
		if attempt == 5 {
			t.Fatal("the kill never landed between the two batches in 5 attempts")
		}
	}
	// The home's rows everywhere: a's writes reverted to what they replaced.
	dbtest.WaitEqual(t, time.Minute, "ledger", []string{"a", "b"}, a.db, b.db)
	var notOpen int
	if err := a.db.QueryRow("SELECT COUNT(*) FROM ledger WHERE id <= ? AND (note <> 'open' OR balance <> 100)", rows).Scan(&notOpen); err != nil {
		t.Fatal(err)
	}
	if notOpen != 0 {
		t.Errorf("a: %d of %d rows homed in b are not as b wrote them after the revert", notOpen, rows)
	}
	// Every violating write recorded once in each region, although a's
	// local pipeline read W1 again after the restart.
	for _, r := range []*region{a, b} {
		var dup, total int
		if err := r.db.QueryRow("SELECT COUNT(*), COALESCE(SUM(n), 0) FROM (SELECT COUNT(*) AS n FROM regiond_conflicts"+
			" WHERE pipeline IN ('a->a', 'a->b') GROUP BY pipeline, pk, source_position HAVING COUNT(*) > 1) AS d").Scan(&dup, &total); err != nil {
			t.Fatal(err)
		}
		if dup != 0 {
			t.Errorf("%s: %d violating writes recorded more than once (%d records)", r.name, dup, total)
		}
	}
}
