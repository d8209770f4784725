package mysql

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/regiond/regiond/conflict"
	"github.com/regiond/regiond/internal/metrics"
	"github.com/regiond/regiond/internal/mysqlconn"
	"github.com/regiond/regiond/pipeline"
	"github.com/regiond/regiond/sink/batch"
	"github.com/regiond/regiond/source"
)

var (
	_ batch.RuleTarget   = (*writer)(nil)
	_ batch.RemoteTarget = (*writer)(nil)
)

// errInsertRace marks a guarded INSERT that met a row a local transaction
// inserted after the locking read: the batch is retried, and re-read.
var errInsertRace = errors.New("row appeared between the locking read and the insert")

// targetColumn is how a target column is read back as a canonical value.
type targetColumn struct {
	expr string // select expression
	kind string
	bits int
	year bool // a YEAR column (kind "int")
	// charset is the character set of a string column ("" for others);
	// only columnsOf sets it.
	charset string
}

// columnsOf returns, for t's columns in t's order, how to read each from the
// target table of the same name.
func (w *writer) columnsOf(ctx context.Context, t *source.Table) ([]targetColumn, error) {
	if cols, ok := w.cols[t]; ok {
		return cols, nil
	}
	rows, err := w.tx.QueryContext(ctx, `SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, COALESCE(CHARACTER_SET_NAME, '') FROM information_schema.COLUMNS
		WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?`, t.Name)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	types := map[string][3]string{}
	for rows.Next() {
		var name, dt, ct, cs string
		if err := rows.Scan(&name, &dt, &ct, &cs); err != nil {
			return nil, err
		}
		types[strings.ToLower(name)] = [3]string{strings.ToLower(dt), strings.ToLower(ct), strings.ToLower(cs)}
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	cols := make([]targetColumn, len(t.Columns))
	for i, c := range t.Columns {
		ty, ok := types[strings.ToLower(c.Name)]
		if !ok {
			return nil, pipeline.Permanent(fmt.Errorf("region %s: table %s has no column %s (the source has it): add it", w.a.cfg.Target, t.Name, c.Name))
		}
		cols[i] = readColumn(quote(c.Name), ty[0], ty[1])
		cols[i].charset = ty[2]
	}
	w.cols[t] = cols
	return cols, nil
}

func readColumn(q, dataType, columnType string) targetColumn {
	c := targetColumn{expr: q, kind: dataType}
	unsigned := strings.Contains(columnType, "unsigned")
	switch dataType {
	case "tinyint", "smallint", "mediumint", "int", "bigint", "year":
		c.kind = "int"
		c.year = dataType == "year"
		if unsigned {
			c.kind = "uint"
		}
	case "float":
		c.expr = "(" + q + " + 0e0)" // FLOAT is printed rounded to 6 digits
	case "bit":
		c.expr = "BIN(" + q + ")"
		c.bits, _ = strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(columnType, "bit("), ")"))
	}
	return c
}

// canonical converts a value read as text into the canonical value a binlog
// reader would produce for the column.
func (c targetColumn) canonical(b []byte) (any, error) {
	if b == nil {
		return nil, nil
	}
	switch c.kind {
	case "int":
		if v, ok := decimalDigits(b, true); ok {
			return v, nil
		}
		return strconv.ParseInt(string(b), 10, 64)
	case "uint":
		if v, ok := decimalDigits(b, false); ok {
			return uint64(v), nil
		}
		return strconv.ParseUint(string(b), 10, 64)
	}
	s := string(b)
	switch c.kind {
	case "decimal":
		return source.Decimal(s), nil
	case "float":
		f, err := strconv.ParseFloat(s, 64)
		return float32(f), err
	case "double":
		return strconv.ParseFloat(s, 64)
	case "date":
		return source.Date(s), nil
	case "datetime":
		return source.DateTime(s), nil
	case "timestamp":
		return source.Timestamp(s), nil
	case "time":
		return source.Time(s), nil
	case "json":
		return source.JSON(s), nil
	case "bit":
		u, err := strconv.ParseUint(s, 2, 64)
		return source.BitsFromUint(u, c.bits), err
	case "binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob":
		return append([]byte{}, b...), nil
	}
	return s, nil
}

// decimalDigits parses b when it is one to 18 decimal digits (after a '-'
// if signed), as the server prints integers, without the string that
// strconv needs; ok false leaves any other text to strconv.
func decimalDigits(b []byte, signed bool) (v int64, ok bool) {
	neg := signed && len(b) > 0 && b[0] == '-'
	if neg {
		b = b[1:]
	}
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	for _, d := range b {
		if d < '0' || d > '9' {
			return 0, false
		}
		v = v*10 + int64(d-'0')
	}
	if neg {
		v = -v
	}
	return v, true
}

// keyArgs returns the key values of rows, flattened, and a placeholder list
// "(?,?),(?,?)" (or "?,?" for one-column keys).
func keyArgs(t *source.Table, rows []source.Row) (string, []any) {
	ph := "?"
	if len(t.PK) > 1 {
		ph = "(" + strings.TrimSuffix(strings.Repeat("?,", len(t.PK)), ",") + ")"
	}
	var b strings.Builder
	args := make([]any, 0, len(rows)*len(t.PK))
	for i, r := range rows {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(ph)
		for _, k := range t.PK {
			args = append(args, arg(r[k]))
		}
	}
	return b.String(), args
}

func keyColumns(t *source.Table) string {
	var cs []string
	for _, k := range t.PK {
		cs = append(cs, quote(t.Columns[k].Name))
	}
	if len(cs) == 1 {
		return cs[0]
	}
	return "(" + strings.Join(cs, ",") + ")"
}

// readRows reads the current row of each key (nil where none), locking
// them, in canonical values.
func (w *writer) readRows(ctx context.Context, t *source.Table, keys []source.Row) ([]source.Row, []targetColumn, error) {
	cols, err := w.columnsOf(ctx, t)
	if err != nil {
		return nil, nil, err
	}
	out := make([]source.Row, len(keys))
	idx := keyIndex{t: t, keys: keys}
	exprs := make([]string, len(cols))
	for i, c := range cols {
		exprs[i] = c.expr
	}
	ph, args := keyArgs(t, keys)
	// FORCE INDEX: on a small table the optimizer prefers a full scan,
	// which locks (and waits for) every row it reads, also rows the
	// applications are writing, instead of only the keys.
	rows, err := w.tx.QueryContext(ctx, "SELECT "+strings.Join(exprs, ",")+" FROM "+quote(t.Name)+" FORCE INDEX (PRIMARY)"+
		" WHERE "+keyColumns(t)+" IN ("+ph+") FOR UPDATE", args...)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	raw := make([]sql.RawBytes, len(cols))
	ptrs := make([]any, len(cols))
	for i := range raw {
		ptrs[i] = &raw[i]
	}
	// The rows' values come from one slab, and each row's text values
	// are slices of one string: a few allocations per row, not one or
	// two per value.
	var (
		slab []any
		text []byte
	)
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return nil, nil, err
		}
		if len(slab) < len(cols) {
			slab = make([]any, len(cols)*max(len(keys), 1))
		}
		row := source.Row(slab[:len(cols):len(cols)])
		slab = slab[len(cols):]
		text = text[:0]
		for i, c := range cols {
			if raw[i] != nil && c.textual() {
				text = append(text, raw[i]...)
			}
		}
		all := string(text)
		for i, c := range cols {
			if raw[i] != nil && c.textual() {
				n := len(raw[i])
				row[i], all = c.fromText(all[:n]), all[n:]
				continue
			}
			if row[i], err = c.canonical(raw[i]); err != nil {
				return nil, nil, fmt.Errorf("table %s column %s: %w", t.Name, t.Columns[i].Name, err)
			}
		}
		if i, ok := idx.find(row); ok {
			out[i] = row
		}
	}
	return out, cols, rows.Err()
}

// keyIndex finds the index in keys of a row's key, as equal KeyJSON
// texts: by value where both are one int64 column (equal KeyJSON texts
// exactly then), else by the texts, indexed at the first need.
type keyIndex struct {
	t    *source.Table
	keys []source.Row
	ints map[int64]int
	strs map[string]int
	kb   []byte
	// noInts: a key is not one int64 column.
	noInts bool
}

func (x *keyIndex) find(row source.Row) (int, bool) {
	if len(x.t.PK) == 1 && !x.noInts {
		if v, ok := row[x.t.PK[0]].(int64); ok {
			if x.ints == nil {
				x.ints = make(map[int64]int, len(x.keys))
				for i, k := range x.keys {
					kv, ok := k[x.t.PK[0]].(int64)
					if !ok {
						x.ints, x.noInts = nil, true
						break
					}
					x.ints[kv] = i
				}
			}
			if x.ints != nil {
				i, ok := x.ints[v]
				return i, ok
			}
		}
	}
	if x.strs == nil {
		x.strs = make(map[string]int, len(x.keys))
		for i, k := range x.keys {
			x.kb = source.AppendKeyJSON(x.kb[:0], x.t, k)
			x.strs[string(x.kb)] = i
		}
	}
	x.kb = source.AppendKeyJSON(x.kb[:0], x.t, row)
	i, ok := x.strs[string(x.kb)]
	return i, ok
}

// textual reports whether canonical keeps a value of c as its text (in
// a string or a string type), so that fromText converts it.
func (c targetColumn) textual() bool {
	switch c.kind {
	case "int", "uint", "float", "double", "bit",
		"binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob":
		return false
	}
	return true
}

// fromText is canonical for a non-NULL value of a textual column, given
// as a string.
func (c targetColumn) fromText(s string) any {
	switch c.kind {
	case "decimal":
		return source.Decimal(s)
	case "date":
		return source.Date(s)
	case "datetime":
		return source.DateTime(s)
	case "timestamp":
		return source.Timestamp(s)
	case "time":
		return source.Time(s)
	case "json":
		return source.JSON(s)
	}
	return s
}

// ReadRows implements batch.RemoteTarget.
func (w *writer) ReadRows(ctx context.Context, t *source.Table, keys []source.Row) ([]source.Row, func(int, any) any, error) {
	rows, cols, err := w.readRows(ctx, t, keys)
	if err != nil {
		return nil, nil, err
	}
	return rows, func(i int, v any) any { return cols[i].stored(v) }, nil
}

// stored maps a value to the form in which the column keeps it where a
// log image and a read disagree: BINARY(n) is padded with zero bytes,
// which the binlog strips; CHAR(n) is read without its trailing spaces,
// which a PostgreSQL character(n) image carries.
//
// A value with nothing to strip is returned as it is, not boxed again.
func (c targetColumn) stored(v any) any {
	switch c.kind {
	case "binary":
		if b, ok := v.([]byte); ok && len(b) > 0 && b[len(b)-1] == 0 {
			return bytes.TrimRight(b, "\x00")
		}
	case "char":
		if s, ok := v.(string); ok && strings.HasSuffix(s, " ") {
			return strings.TrimRight(s, " ")
		}
	}
	return v
}

// Lock implements batch.RuleTarget: one locking read of the rows, one of
// their tombstones.
func (w *writer) Lock(ctx context.Context, t *source.Table, keys []source.Row) ([]batch.Current, error) {
	rs, _, err := w.readRows(ctx, t, keys)
	if err != nil {
		return nil, err
	}
	out := make([]batch.Current, len(keys))
	for i, r := range rs {
		out[i].Row = r
	}

	hashes := make([]any, 0, len(keys)+1)
	hashes = append(hashes, t.Name)
	byHash := make(map[conflict.Hash]int, len(keys))
	for i, k := range keys {
		h := conflict.KeyHash(source.KeyJSON(t, k))
		byHash[h] = i
		hashes = append(hashes, h[:])
	}
	trows, err := w.tx.QueryContext(ctx, "SELECT `pk_hash`, `version`, `image_hash`, `origin` FROM "+quote(TombstoneTable)+
		" WHERE `table_name` = ? AND `pk_hash` IN ("+strings.TrimSuffix(strings.Repeat("?,", len(keys)), ",")+") FOR UPDATE", hashes...)
	if err != nil {
		return nil, err
	}
	defer trows.Close()
	for trows.Next() {
		var pkHash, imgHash []byte
		var ver, origin string
		if err := trows.Scan(&pkHash, &ver, &imgHash, &origin); err != nil {
			return nil, err
		}
		var h conflict.Hash
		copy(h[:], pkHash)
		i, ok := byHash[h]
		if !ok {
			continue
		}
		v, err := conflict.DecodeVersion(ver)
		if err != nil {
			return nil, err
		}
		tomb := &batch.Tombstone{Version: v, Origin: origin}
		copy(tomb.Hash[:], imgHash)
		out[i].Tomb = tomb
	}
	return out, trows.Err()
}

// Write implements batch.RuleTarget.
func (w *writer) Write(ctx context.Context, t *source.Table, r *batch.Resolved) error {
	if err := w.writeRows(ctx, t, r.Delete, modeDelete); err != nil {
		return err
	}
	if err := w.writeRows(ctx, t, r.Update, modeUpsert); err != nil {
		return err
	}
	if err := w.writeRows(ctx, t, r.Insert, modeInsert); err != nil {
		if mysqlconnDuplicate(err) {
			return fmt.Errorf("%w: %v", errInsertRace, err)
		}
		return err
	}
	if len(r.DropTombs) > 0 {
		args := []any{t.Name}
		for _, k := range r.DropTombs {
			h := conflict.KeyHash(source.KeyJSON(t, k))
			args = append(args, h[:])
		}
		if _, err := w.tx.ExecContext(ctx, "DELETE FROM "+quote(TombstoneTable)+" WHERE `table_name` = ? AND `pk_hash` IN ("+
			strings.TrimSuffix(strings.Repeat("?,", len(r.DropTombs)), ",")+")", args...); err != nil {
			return err
		}
	}
	if err := w.deleteBehindTombs(ctx, t, r); err != nil {
		return err
	}
	if len(r.PutTombs) > 0 {
		var q strings.Builder
		q.WriteString("INSERT INTO " + quote(TombstoneTable) + " (`table_name`, `pk_hash`, `pk`, `version`, `image_hash`, `origin`, `deleted_at`) VALUES ")
		var args []any
		for i, tr := range r.PutTombs {
			if i > 0 {
				q.WriteByte(',')
			}
			q.WriteString("(?,?,?,?,?,?,UTC_TIMESTAMP(6))")
			key := source.KeyJSON(t, tr.Key)
			h := conflict.KeyHash(key)
			args = append(args, t.Name, h[:], key, tr.Tomb.Version.Encode(), tr.Tomb.Hash[:], tr.Tomb.Origin)
		}
		q.WriteString(" ON DUPLICATE KEY UPDATE `version` = VALUES(`version`), `image_hash` = VALUES(`image_hash`), `origin` = VALUES(`origin`), `deleted_at` = VALUES(`deleted_at`)")
		if _, err := w.tx.ExecContext(ctx, q.String(), args...); err != nil {
			return err
		}
	}
	return nil
}

// deleteBehindTombs deletes, for each new tombstone whose key had no row at
// the locking read, a row that another pipeline may have inserted since
// (READ COMMITTED locks no gap), if its version is not above the delete's.
// The DELETE waits for such an uncommitted insert and then sees it.
func (w *writer) deleteBehindTombs(ctx context.Context, t *source.Table, r *batch.Resolved) error {
	vname := ""
	if w.a.cfg.Rules != nil {
		vname = w.a.cfg.Rules.Tables[t.Name].VersionColumn
	}
	vcol := -1
	for i, c := range t.Columns {
		if c.Name == vname {
			vcol = i
		}
	}
	if vcol < 0 {
		return nil
	}
	deleted := make(map[string]bool, len(r.Delete))
	for _, k := range r.Delete {
		deleted[source.KeyJSON(t, k)] = true
	}
	for _, tr := range r.PutTombs {
		if deleted[source.KeyJSON(t, tr.Key)] {
			continue
		}
		ph, args := keyArgs(t, []source.Row{tr.Key})
		args = append(args, arg(tr.Key[vcol]))
		if _, err := w.tx.ExecContext(ctx, "DELETE FROM "+quote(t.Name)+" WHERE "+keyColumns(t)+" IN ("+ph+") AND "+quote(vname)+" <= ?", args...); err != nil {
			return err
		}
	}
	return nil
}

// Record implements batch.RuleTarget: the conflicts go into
// regiond_conflicts in the same transaction, and are counted and logged.
func (w *writer) Record(ctx context.Context, cs []batch.Conflict) error {
	var q strings.Builder
	q.WriteString("INSERT INTO " + quote(ConflictTable) + " (`detected_at`, `pipeline`, `table_name`, `pk`, `rule`, `winner_region`, `loser_region`, `kept_image`, `lost_image`, `reason`, `source_position`) VALUES ")
	var args []any
	for i, c := range cs {
		if i > 0 {
			q.WriteByte(',')
		}
		q.WriteString("(UTC_TIMESTAMP(6),?,?,?,?,?,?,?,?,?,?)")
		var kept, lost any
		if c.Kept != nil {
			kept = string(source.RowJSON(c.Table, c.Kept))
		}
		if c.Lost != nil {
			lost = string(source.RowJSON(c.Table, c.Lost))
		}
		args = append(args, c.Pipeline, c.Table.Name, source.KeyJSON(c.Table, c.Key), c.Rule, c.Winner, c.Loser,
			kept, lost, c.Reason, c.Position)
	}
	if _, err := w.tx.ExecContext(ctx, q.String(), args...); err != nil {
		return err
	}
	w.pending = append(w.pending, cs...)
	return nil
}

// Recorded implements batch.RuleTarget, in the open transaction. The
// detected_at index bounds the rows it reads.
func (w *writer) Recorded(ctx context.Context, pipeline, rule, position string, since time.Time) (map[string]bool, error) {
	rows, err := w.tx.QueryContext(ctx, "SELECT `table_name`, `pk` FROM "+quote(ConflictTable)+
		" WHERE `detected_at` >= ? AND `pipeline` = ? AND `rule` = ? AND `source_position` = ?",
		since.UTC().Format("2006-01-02 15:04:05.000000"), pipeline, rule, position)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var table, pk string
		if err := rows.Scan(&table, &pk); err != nil {
			return nil, err
		}
		out[batch.RecordKey(table, pk)] = true
	}
	return out, rows.Err()
}

// announce counts and logs the conflicts of a committed transaction (only
// then are they facts).
func (w *writer) announce() {
	for _, c := range w.pending {
		metrics.Conflicts.WithLabelValues(c.Table.Name, c.Rule).Inc()
		w.a.logger.Warn(batch.LogMessage(c.Rule), "table", c.Table.Name, "key", source.KeyJSON(c.Table, c.Key),
			"rule", c.Rule, "winner", c.Winner, "loser", c.Loser, "position", c.Position, "reason", c.Reason)
	}
	w.pending = w.pending[:0]
}

func mysqlconnDuplicate(err error) bool { return mysqlconn.ErrorNumber(err) == 1062 }

// PruneTombstones implements tombstones.Store: one DELETE of the oldest
// tombstones recorded before before (deleted_at is UTC).
func (a *Applier) PruneTombstones(ctx context.Context, before time.Time, limit int) (int64, error) {
	res, err := a.db.ExecContext(ctx, "DELETE FROM "+quote(TombstoneTable)+" WHERE `deleted_at` < ? ORDER BY `deleted_at` LIMIT ?",
		before.UTC().Format("2006-01-02 15:04:05.000000"), limit)
	if err != nil {
		return 0, fmt.Errorf("region %s: prune %s: %w", a.cfg.Target, TombstoneTable, err)
	}
	return res.RowsAffected()
}
