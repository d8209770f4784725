package batch

import (
	"context"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/regiond/regiond/source"
)

// TestAbsence: which upsert rows the log says are absent, and which of
// them a present row would make a conflict, segment by segment; the keys
// whose first change is an insert are left out of the batch's locking read.
func TestAbsence(t *testing.T) {
	tb := &source.Table{Name: "a", Columns: []source.Column{{Name: "id"}, {Name: "v"}}, PK: []int{0}}
	lww := &source.Table{Name: "l", Columns: []source.Column{{Name: "id"}, {Name: "v"}}, PK: []int{0}}
	r := func(id int64, v string) source.Row { return source.Row{id, v} }
	ins := func(t *source.Table, row source.Row) source.Change {
		return source.Change{Table: t, Op: source.Insert, After: row, TxnID: fmt.Sprint("i", row[0])}
	}
	upd := func(b, a source.Row) source.Change {
		return source.Change{Table: tb, Op: source.Update, Before: b, After: a}
	}
	del := func(b source.Row) source.Change { return source.Change{Table: tb, Op: source.Delete, Before: b} }
	changes := []source.Change{
		ins(tb, r(1, "x")),        // first change an insert: absent, checked
		upd(r(2, "x"), r(2, "y")), // an update: present
		ins(tb, r(4, "x")),        // inserted, then (below) deleted and inserted again
		upd(r(5, "x"), r(6, "x")), // key change: 6 is not known absent
		ins(lww, r(1, "x")),       // another rule: not this path
		del(r(3, "x")),            // deleted, then inserted: absent, not checked
		del(r(4, "x")),            //
		ins(tb, r(3, "y")),        //
		ins(tb, r(4, "y")),        //
		upd(r(1, "x"), r(1, "z")), // after its insert: present
		ins(tb, r(7, "x")),        //
		upd(r(7, "x"), r(7, "z")), // same segment as its insert: still absent
	}
	rules := &Rules{Tables: map[string]Rule{"l": {Name: "last_writer_wins", VersionColumn: "v"}}, Pipeline: "p", Origin: "east", Target: "west"}
	a := NewAbsence(rules, changes)
	var got []string
	for _, st := range Plan(rules, changes) {
		if st.Segment == nil {
			continue
		}
		absent, check := a.Next(st.Segment)
		for i, row := range st.Segment.Rows {
			s := fmt.Sprintf("%v", row)
			switch {
			case st.Segment.Delete:
				s = "delete " + s
			case absent[i] && check[i] != nil:
				s += " absent, checked against " + check[i].TxnID
			case absent[i]:
				s += " absent"
			}
			got = append(got, s)
		}
	}
	want := []string{
		"[1 x] absent, checked against i1",
		"[2 y]",
		"[4 x] absent, checked against i4",
		"delete [5 x]",
		"[6 x]",
		"delete [3 x]",
		"delete [4 x]",
		"[3 y] absent",
		"[4 y] absent",
		"[1 z]",
		"[7 z] absent, checked against i7",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("segments (-want +got):\n%s", diff)
	}

	// The locking read covers the other first changes only: 2, 5 and 3.
	rt := &keysTarget{}
	if _, err := a.CheckRemote(context.Background(), rt); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"[2]", "[5]", "[3]"}, rt.keys); diff != "" {
		t.Errorf("keys read (-want +got):\n%s", diff)
	}

	// Without rules (the check off) nothing is read, and the rows are known
	// absent all the same.
	a = NewAbsence(nil, changes[:1])
	if cs, err := a.CheckRemote(context.Background(), rt); err != nil || cs != nil {
		t.Errorf("CheckRemote without rules = %v, %v; want nothing", cs, err)
	}
	if absent, _ := a.Next(Segments(changes[:1])[0]); len(absent) != 1 || !absent[0] {
		t.Errorf("without rules, an insert's row absent = %v; want [true]", absent)
	}
}

// keysTarget is a RemoteTarget that records the keys it is asked to read
// and finds every row as the change's image expects it.
type keysTarget struct{ keys []string }

func (k *keysTarget) ReadRows(_ context.Context, t *source.Table, keys []source.Row) ([]source.Row, func(int, any) any, error) {
	for _, r := range keys {
		k.keys = append(k.keys, source.KeyJSON(t, r))
	}
	return keys, nil, nil
}

func (k *keysTarget) Record(context.Context, []Conflict) error { return nil }
