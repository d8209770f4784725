package postgres

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	pgxconn "github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/regiond/regiond/conflict"
	"github.com/regiond/regiond/internal/metrics"
	"github.com/regiond/regiond/internal/pgconn"
	"github.com/regiond/regiond/pipeline"
	"github.com/regiond/regiond/sink/batch"
	"github.com/regiond/regiond/source"
	pgsource "github.com/regiond/regiond/source/postgres"
)

var (
	_ batch.RuleTarget   = (*target)(nil)
	_ batch.RemoteTarget = (*target)(nil)
)

// errInsertRace marks a guarded INSERT that met a row a local transaction
// inserted after the locking read: the batch is retried, and re-read.
var errInsertRace = errors.New("row appeared between the locking read and the insert")

// readType is how a target column's text is read back as a canonical value:
// the arguments of pgsource.Canonical.
type readType struct {
	oid    uint32
	typmod int32
}

// ruleInfo is what the rule statements need to know of a target table
// beyond its definition.
type ruleInfo struct {
	types []readType // per column of the pgTable
	// pkConstraint names the primary key constraint: only a unique
	// violation of it is a row that appeared after the locking read; one
	// of another unique key is a collision the data has to be fixed for.
	pkConstraint string
}

// readTypes returns, per column of tb (by name), its type as the log reader
// sees it: the column's own type and modifier, or for a domain its base type
// (through every level) and no modifier.
func (t *target) readTypes(ctx context.Context, tb *pgTable) (map[string]readType, string, error) {
	rows, err := t.conn.Query(ctx, `
		WITH RECURSIVE cols AS (
			SELECT a.attnum, a.attname::text AS name, a.atttypid, a.atttypmod
			FROM pg_attribute a
			WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped
		), base(attnum, oid, depth) AS (
			SELECT attnum, atttypid, 0 FROM cols
			UNION ALL
			SELECT b.attnum, ty.typbasetype, b.depth + 1
			FROM base b JOIN pg_type ty ON ty.oid = b.oid
			WHERE ty.typtype = 'd' AND b.depth < 16
		)
		SELECT c.name, c.atttypid::int8, c.atttypmod,
		       (SELECT b.oid::int8 FROM base b WHERE b.attnum = c.attnum ORDER BY b.depth DESC LIMIT 1)
		FROM cols c`, tb.ident)
	if err != nil {
		return nil, "", err
	}
	defer rows.Close()
	out := map[string]readType{}
	for rows.Next() {
		var (
			name      string
			oid, base int64
			typmod    int32
		)
		if err := rows.Scan(&name, &oid, &typmod, &base); err != nil {
			return nil, "", err
		}
		rt := readType{oid: uint32(oid), typmod: typmod}
		if base != oid {
			rt = readType{oid: uint32(base), typmod: -1}
		}
		out[name] = rt
	}
	if err := rows.Err(); err != nil {
		return nil, "", err
	}
	var pk string
	err = t.conn.QueryRow(ctx, "SELECT COALESCE((SELECT conname::text FROM pg_constraint WHERE conrelid = $1::regclass AND contype = 'p'), '')", tb.ident).Scan(&pk)
	return out, pk, err
}

// ruleInfo returns the rule statements' information on p's target table.
func (t *target) ruleInfo(ctx context.Context, p *plan) (*ruleInfo, error) {
	if ri := t.reads[p.table]; ri != nil {
		return ri, nil
	}
	byName, pk, err := t.readTypes(ctx, p.table)
	if err != nil {
		return nil, fmt.Errorf("region %s: read column types of table %s: %w", t.a.cfg.Target, p.table.name, err)
	}
	ri := &ruleInfo{types: make([]readType, len(p.table.cols)), pkConstraint: pk}
	for i, c := range p.table.cols {
		x, ok := byName[c.name]
		if !ok {
			return nil, fmt.Errorf("region %s: table %s: column %s is gone from the catalog", t.a.cfg.Target, p.table.name, c.name)
		}
		ri.types[i] = x
	}
	t.reads[p.table] = ri
	return ri, nil
}

// pick maps per-target-column read types onto p's source columns.
func pick(p *plan, rt []readType) []readType {
	out := make([]readType, len(p.cols))
	for i, c := range p.cols {
		out[i] = rt[indexOf(p.table.cols, c)]
	}
	return out
}

// keyHashes returns the regiond_tombstones key of each row: the hash of
// the canonical JSON of its primary key.
func keyHashes(t *source.Table, rows []source.Row) [][]byte {
	out := make([][]byte, len(rows))
	for i, r := range rows {
		h := conflict.KeyHash(source.KeyJSON(t, r))
		out[i] = h[:]
	}
	return out
}

func (t *target) tombTable() string { return pgconn.Ident(t.a.cfg.Schema, pgconn.TombstoneTable) }

// Lock implements batch.RuleTarget. With what is queued before it, it sends
// a transaction-scoped advisory lock on each key (so that two pipelines into
// this region decide a key one after the other, also while it has neither
// row nor tombstone) and the locking read of the keys' tombstones; then one
// locking read of the rows, in text format, converted as the log reader
// converts pgoutput's text (which is the same output of each type).
func (t *target) Lock(ctx context.Context, st *source.Table, keys []source.Row) ([]batch.Current, error) {
	p, err := t.plan(ctx, st)
	if err != nil {
		return nil, err
	}
	out := make([]batch.Current, len(keys))
	if len(keys) == 0 {
		return out, nil
	}
	ri, err := t.ruleInfo(ctx, p)
	if err != nil {
		return nil, err
	}
	types := pick(p, ri.types)
	keyArgs := columnArrays(p, p.key, keys)

	b := t.take()
	kcast := keyCast(p)
	b.Queue("SELECT count(pg_advisory_xact_lock(h)) FROM (SELECT DISTINCT hashtextextended($1 || ROW("+kcast+")::text, 0) AS h"+
		" FROM unnest("+arrayParams(2, len(p.key))+") AS u("+aliases(len(p.key))+") ORDER BY 1) AS k",
		append([]any{"regiond_lww:" + p.table.ident}, keyArgs...)...)
	hashes := keyHashes(st, keys)
	byHash := make(map[conflict.Hash]int, len(keys))
	for i, h := range hashes {
		byHash[conflict.Hash(h)] = i
	}
	b.Queue("SELECT pk_hash, version, image_hash, origin FROM "+t.tombTable()+
		" WHERE table_name = $1 AND pk_hash = ANY($2::bytea[]) FOR UPDATE", st.Name, hashes).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			var (
				pkHash, imgHash []byte
				ver, origin     string
			)
			if err := rows.Scan(&pkHash, &ver, &imgHash, &origin); err != nil {
				return err
			}
			if len(pkHash) != len(conflict.Hash{}) {
				continue
			}
			i, ok := byHash[conflict.Hash(pkHash)]
			if !ok {
				continue
			}
			v, err := conflict.DecodeVersion(ver)
			if err != nil {
				return pipeline.Permanent(fmt.Errorf("region %s: %s of table %s key %s: %w", t.a.cfg.Target, pgconn.TombstoneTable, st.Name, source.KeyJSON(st, keys[i]), err))
			}
			tomb := &batch.Tombstone{Version: v, Origin: origin}
			copy(tomb.Hash[:], imgHash)
			out[i].Tomb = tomb
		}
		return rows.Err()
	})
	if err := t.send(ctx, b); err != nil {
		return nil, err
	}

	rows, err := t.readRows(ctx, st, p, types, kcast, keyArgs, keys)
	if err != nil {
		return nil, err
	}
	for i, r := range rows {
		out[i].Row = r
	}
	return out, nil
}

// keyCast is the key of a row of unnest(keyArgs) AS u(v1, ...) as the
// server reads it, e.g. "u.v1::bigint", so that keys equal in the target
// compare equal whatever engine their values came from.
func keyCast(p *plan) string {
	var kcast strings.Builder
	for n, i := range p.key {
		if n > 0 {
			kcast.WriteString(", ")
		}
		kcast.WriteString("u.v" + strconv.Itoa(n+1) + "::" + p.cols[i].cast)
	}
	return kcast.String()
}

// readRows reads, locking them, the current rows of keys (nil where none)
// in one statement, in text format, converted as the log reader converts
// pgoutput's text (which is the same output of each type). Whatever t has
// queued is sent first.
func (t *target) readRows(ctx context.Context, st *source.Table, p *plan, types []readType, kcast string, keyArgs []any, keys []source.Row) ([]source.Row, error) {
	if err := t.send(ctx, t.take()); err != nil {
		return nil, err
	}
	out := make([]source.Row, len(keys))
	var sel strings.Builder
	sel.WriteString("SELECT u.n")
	for _, c := range p.cols {
		sel.WriteString(", r." + pgconn.Ident(c.name))
	}
	sel.WriteString(" FROM unnest(" + arrayParams(1, len(p.key)) + ") WITH ORDINALITY AS u(" + aliases(len(p.key)) + ", n)" +
		" JOIN " + p.table.ident + " AS r ON (" + p.keyList("r.") + ") = (" + kcast + ") FOR UPDATE OF r")
	// Text format: each value in its type's output, as pgoutput sends it
	// (a cast to text would differ for boolean, character(n) and inet).
	args := append([]any{pgx.QueryResultFormats{pgx.TextFormatCode}}, keyArgs...)
	rows, err := t.conn.Query(ctx, sel.String(), args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		raw := rows.RawValues()
		n, err := strconv.Atoi(string(raw[0]))
		if err != nil || n < 1 || n > len(keys) {
			return nil, fmt.Errorf("region %s: locking read of table %s: bad ordinal %q", t.a.cfg.Target, st.Name, raw[0])
		}
		row := make(source.Row, len(p.cols))
		for i := range p.cols {
			v := raw[i+1]
			if v == nil {
				continue
			}
			row[i], err = pgsource.Canonical(types[i].oid, types[i].typmod, string(v))
			if err != nil {
				return nil, pipeline.Permanent(fmt.Errorf("region %s: table %s row %s column %s in the target: %w",
					t.a.cfg.Target, st.Name, source.KeyJSON(st, keys[n-1]), st.Columns[i].Name, err))
			}
		}
		out[n-1] = row
	}
	return out, rows.Err()
}

// ReadRows implements batch.RemoteTarget: one locking read of the rows.
func (t *target) ReadRows(ctx context.Context, st *source.Table, keys []source.Row) ([]source.Row, func(int, any) any, error) {
	p, err := t.plan(ctx, st)
	if err != nil {
		return nil, nil, err
	}
	ri, err := t.ruleInfo(ctx, p)
	if err != nil {
		return nil, nil, err
	}
	types := pick(p, ri.types)
	rows, err := t.readRows(ctx, st, p, types, keyCast(p), columnArrays(p, p.key, keys), keys)
	if err != nil {
		return nil, nil, err
	}
	return rows, normBpchar(types), nil
}

// normBpchar is the norm of RemoteTarget.ReadRows for columns of types:
// character(n) is read padded with spaces to n, which an image from a MySQL
// CHAR column does not carry.
func normBpchar(types []readType) func(int, any) any {
	return func(i int, v any) any {
		if types[i].oid == bpcharOID {
			if s, ok := v.(string); ok {
				return strings.TrimRight(s, " ")
			}
		}
		return v
	}
}

// bpcharOID is the type of character(n) columns.
const bpcharOID = 1042

// arrayParams is "$from::text[], $from+1::text[], ..." for n parameters.
func arrayParams(from, n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("$" + strconv.Itoa(from+i) + "::text[]")
	}
	return b.String()
}

// aliases is "v1, v2, ..., vn".
func aliases(n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("v" + strconv.Itoa(i+1))
	}
	return b.String()
}

// Write implements batch.RuleTarget: the statements are queued, and sent
// with the next locking read, Exec's end or the commit. Keys without a row
// at Lock time are written with a plain INSERT: a row a local transaction
// inserted meanwhile makes it fail with a unique violation, which retries
// the batch (Classify).
func (t *target) Write(ctx context.Context, st *source.Table, r *batch.Resolved) error {
	p, err := t.plan(ctx, st)
	if err != nil {
		return err
	}
	ri, err := t.ruleInfo(ctx, p)
	if err != nil {
		return err
	}
	if t.pending == nil {
		t.pending = &pgx.Batch{}
	}
	b := t.pending
	t.queueRows(b, p.delete, p, p.key, r.Delete)
	full, partial, order := splitUnchanged(p, r.Update)
	t.queueRows(b, p.upsert, p, p.written, full)
	for _, u := range order {
		if u.sql != "" {
			t.queueUpdate(b, u, p, st.Name, partial[u])
		}
	}
	// Rows the log did not carry whole cannot be inserted: as in Exec, an
	// UPDATE of what they hold, which finds no row and says so.
	full, partial, order = splitUnchanged(p, r.Insert)
	for start := 0; start < len(full); start += t.a.cfg.StatementRows {
		chunk := full[start:min(start+t.a.cfg.StatementRows, len(full))]
		b.Queue(p.insert, columnArrays(p, p.written, chunk)...).Fn = guardInsert(ri.pkConstraint)
	}
	for _, u := range order {
		if u.sql != "" {
			t.queueUpdate(b, u, p, st.Name, partial[u])
		}
	}
	if len(r.DropTombs) > 0 {
		b.Queue("DELETE FROM "+t.tombTable()+" WHERE table_name = $1 AND pk_hash = ANY($2::bytea[])", st.Name, keyHashes(st, r.DropTombs))
	}
	if len(r.PutTombs) > 0 {
		n := len(r.PutTombs)
		var (
			pk      = make([]string, n)
			hash    = make([][]byte, n)
			version = make([]string, n)
			image   = make([][]byte, n)
			origin  = make([]string, n)
		)
		for i, tr := range r.PutTombs {
			pk[i] = source.KeyJSON(st, tr.Key)
			h := conflict.KeyHash(pk[i])
			hash[i] = h[:]
			version[i] = tr.Tomb.Version.Encode()
			image[i] = append([]byte(nil), tr.Tomb.Hash[:]...)
			origin[i] = tr.Tomb.Origin
		}
		b.Queue("INSERT INTO "+t.tombTable()+" (table_name, pk_hash, pk, version, image_hash, origin, deleted_at)"+
			" SELECT $1, h, k, v, ih, o, now() FROM unnest($2::bytea[], $3::text[], $4::text[], $5::bytea[], $6::text[]) AS u(h, k, v, ih, o)"+
			" ON CONFLICT (table_name, pk_hash) DO UPDATE SET version = EXCLUDED.version, image_hash = EXCLUDED.image_hash,"+
			" origin = EXCLUDED.origin, deleted_at = EXCLUDED.deleted_at",
			st.Name, hash, pk, version, image, origin)
	}
	return nil
}

// guardInsert reads the result of a guarded INSERT: a violation of the
// primary key (constraint pk) there means a row appeared after the locking
// read. Another unique key's violation stays what it is (Rejected).
func guardInsert(pk string) func(pgx.BatchResults) error {
	return func(br pgx.BatchResults) error {
		_, err := br.Exec()
		var pe *pgxconn.PgError
		if errors.As(err, &pe) && pe.Code == "23505" && pe.ConstraintName == pk {
			return fmt.Errorf("%w: %w", errInsertRace, err)
		}
		return err
	}
}

// Record implements batch.RuleTarget: the conflicts go into
// regiond_conflicts in the open transaction (queued like Write), and are
// counted and logged once it commits.
func (t *target) Record(ctx context.Context, cs []batch.Conflict) error {
	if len(cs) == 0 {
		return nil
	}
	if t.pending == nil {
		t.pending = &pgx.Batch{}
	}
	n := len(cs)
	var (
		pipe, table, pk, rule, winner, loser, reason, pos = make([]string, n), make([]string, n), make([]string, n),
			make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		kept, lost = make(pgtype.FlatArray[pgtype.Text], n), make(pgtype.FlatArray[pgtype.Text], n)
	)
	for i, c := range cs {
		pipe[i], table[i], pk[i], rule[i] = c.Pipeline, c.Table.Name, source.KeyJSON(c.Table, c.Key), c.Rule
		winner[i], loser[i], reason[i], pos[i] = c.Winner, c.Loser, c.Reason, c.Position
		if c.Kept != nil {
			kept[i] = text(string(source.RowJSON(c.Table, c.Kept)))
		}
		if c.Lost != nil {
			lost[i] = text(string(source.RowJSON(c.Table, c.Lost)))
		}
	}
	t.pending.Queue("INSERT INTO "+pgconn.Ident(t.a.cfg.Schema, pgconn.ConflictTable)+
		" (detected_at, pipeline, table_name, pk, rule, winner_region, loser_region, kept_image, lost_image, reason, source_position)"+
		" SELECT clock_timestamp(), * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[])",
		pipe, table, pk, rule, winner, loser, kept, lost, reason, pos)
	t.conflicts = append(t.conflicts, cs...)
	return nil
}

// Recorded implements batch.RuleTarget, in the open transaction (after
// what is queued). The detected_at index bounds the rows it reads.
func (t *target) Recorded(ctx context.Context, pipeline, rule, position string, since time.Time) (map[string]bool, error) {
	b := t.take()
	out := map[string]bool{}
	b.Queue("SELECT table_name, pk FROM "+pgconn.Ident(t.a.cfg.Schema, pgconn.ConflictTable)+
		" WHERE detected_at >= $1 AND pipeline = $2 AND rule = $3 AND source_position = $4",
		since, pipeline, rule, position).Query(func(rows pgx.Rows) error {
		for rows.Next() {
			var table, pk string
			if err := rows.Scan(&table, &pk); err != nil {
				return err
			}
			out[batch.RecordKey(table, pk)] = true
		}
		return rows.Err()
	})
	if err := t.send(ctx, b); err != nil {
		return nil, err
	}
	return out, nil
}

// announce counts and logs the conflicts of a committed transaction (only
// then are they facts).
func (t *target) announce() {
	for _, c := range t.conflicts {
		metrics.Conflicts.WithLabelValues(c.Table.Name, c.Rule).Inc()
		t.a.logger.Warn(batch.LogMessage(c.Rule), "table", c.Table.Name, "key", source.KeyJSON(c.Table, c.Key),
			"rule", c.Rule, "winner", c.Winner, "loser", c.Loser, "position", c.Position, "reason", c.Reason)
	}
	t.conflicts = t.conflicts[:0]
}

// PruneTombstones implements tombstones.Store: one DELETE of the oldest
// tombstones recorded before before, on a connection of its own.
func (a *Applier) PruneTombstones(ctx context.Context, before time.Time, limit int) (int64, error) {
	conn, err := a.connect(ctx)
	if err != nil {
		return 0, err
	}
	defer closeConn(conn)
	t := pgconn.Ident(a.cfg.Schema, pgconn.TombstoneTable)
	tag, err := conn.Exec(ctx, "DELETE FROM "+t+" WHERE ctid IN (SELECT ctid FROM "+t+" WHERE deleted_at < $1 ORDER BY deleted_at LIMIT $2)", before, limit)
	if err != nil {
		return 0, fmt.Errorf("region %s: prune %s: %w", a.cfg.Target, pgconn.TombstoneTable, err)
	}
	return tag.RowsAffected(), nil
}
