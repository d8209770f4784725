package main

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/regiond/regiond/checkpoint"
	"github.com/regiond/regiond/config"
	kafkasink "github.com/regiond/regiond/sink/kafka"
	"github.com/regiond/regiond/snapshot"
	"github.com/regiond/regiond/source"
)

// runBackfillKafka publishes the existing rows of region from's tables to
// Kafka as op "r" events.
//
// Ordering with the stream: each chunk is read with a locking read in a
// READ COMMITTED transaction of the source, and the transaction ends only
// after the brokers acknowledged the chunk's events. A change to one of
// those rows therefore commits after its "r" event is in Kafka, and the
// region's Kafka pipeline publishes it after. A change committed before the
// read that the pipeline had not published yet comes after the "r" event
// that already shows its result; consumers applying events in order still
// end with the row's current state.
func runBackfillKafka(ctx context.Context, cfg *config.Config, from string, only []string, chunk int, restart bool, stdout, stderr io.Writer) error {
	if cfg.Kafka == nil {
		return usagef("--to kafka: the config has no kafka: block; add one (brokers, topic_prefix) to publish to Kafka")
	}
	src, ok := cfg.Region(from)
	if from == "" || !ok {
		return usagef("--from %q: name a region of the config", from)
	}
	if chunk <= 0 {
		return usagef("--chunk-size %d: must be at least 1", chunk)
	}
	tables := only
	if len(tables) == 0 {
		tables = cfg.TableNames()
		slices.Sort(tables)
	}
	for _, t := range tables {
		if _, ok := cfg.Tables[t]; !ok {
			return usagef("--table %s: not a configured table; add it under tables: in the config first", t)
		}
	}
	// Changes made while the rows are read must reach Kafka through the
	// region's Kafka pipeline: it must have started.
	pipe := pipelineName(src.Name, kafkaTarget.Name)
	state, err := checkpoint.NewFileStore(cfg.StateDir)
	if err != nil {
		return usagef("state_dir %s: %v", cfg.StateDir, err)
	}
	if _, ok, err := state.LoadPublished(pipe); err != nil {
		return fmt.Errorf("state_dir: %w", err)
	} else if !ok {
		return fmt.Errorf("pipeline %s has not started (no position in state_dir %s): start 'regiond run' with this config first (on this host), so that changes made during the backfill are published too", pipe, cfg.StateDir)
	}
	db, err := regionDatabase(*src)
	if err != nil {
		return err
	}
	origin := kafkasink.Origin{Region: src.Name, Engine: src.Engine, DB: db}

	sdb, err := snapshot.Open(*src)
	if err != nil {
		return err
	}
	defer sdb.Close()
	transport, err := kafkasink.NewTransport(*cfg.Kafka)
	if err != nil {
		return usageError{fmt.Errorf("%w: %v", config.ErrInvalid, err)}
	}
	defer transport.CloseIdleConnections()
	if err := kafkasink.EnsureTopics(ctx, *cfg.Kafka, transport, tables); err != nil {
		return err
	}
	w := kafkasink.NewWriter(*cfg.Kafka, transport)
	defer w.Close()

	start := time.Now()
	prog, resumed, err := loadKafkaBackfill(state, pipe, restart)
	if err != nil {
		return err
	}
	if !resumed {
		prog = checkpoint.KafkaBackfill{TxID: kafkasink.SnapshotTxID(start), Tables: map[string]checkpoint.TableBackfill{}}
	}
	total := 0
	for _, name := range tables {
		tp := prog.Tables[name]
		if tp.Done {
			fmt.Fprintf(stderr, "backfill %s: table %s: all %d rows were published by an earlier run\n", pipe, name, tp.Rows)
			continue
		}
		t, err := sdb.Table(ctx, name)
		if err != nil {
			return fmt.Errorf("backfill %s: %w", pipe, err)
		}
		var after snapshot.Key
		if tp.After != "" {
			if after, err = snapshot.DecodeKey(tp.After); err != nil {
				return fmt.Errorf("backfill %s: table %s: stored progress in %s: %w (run the backfill with --restart)", pipe, name, cfg.StateDir, err)
			}
			fmt.Fprintf(stderr, "backfill %s: table %s: continuing after %d rows published by an earlier run\n", pipe, name, tp.Rows)
		}
		ranges, err := t.BoundsAfter(ctx, sdb.SQL, chunk, after)
		if err != nil {
			return fmt.Errorf("backfill %s: %w", pipe, err)
		}
		n := 0
		for i, r := range ranges {
			published, err := publishChunk(ctx, sdb, t, r, func(rows []source.Row, read time.Time) error {
				if err := kafkasink.Publish(ctx, w, kafkasink.SnapshotMessages(*cfg.Kafka, origin, t.Def, rows, prog.TxID, prog.Published, read)); err != nil {
					return err
				}
				if len(rows) == 0 {
					return nil
				}
				// Acknowledged: a run after a crash goes on after these rows.
				if tp.After, err = snapshot.EncodeKey(t.KeyOf(rows[len(rows)-1])); err != nil {
					return err
				}
				tp.Rows += len(rows)
				prog.Published += len(rows)
				prog.Tables[name] = tp
				return state.SaveKafkaBackfill(pipe, prog)
			})
			if err != nil {
				return fmt.Errorf("backfill %s: table %s chunk %d of %d: %w", pipe, name, i+1, len(ranges), err)
			}
			n += published
		}
		tp.Done = true
		prog.Tables[name] = tp
		if err := state.SaveKafkaBackfill(pipe, prog); err != nil {
			return fmt.Errorf("backfill %s: state_dir: %w", pipe, err)
		}
		total += n
		fmt.Fprintf(stderr, "backfill %s: table %s: %d rows published\n", pipe, name, n)
	}
	// Done: the tables of this run are forgotten, so that a later run
	// publishes them again; the file goes once no table is left in it.
	for _, name := range tables {
		delete(prog.Tables, name)
	}
	if len(prog.Tables) == 0 {
		err = state.RemoveKafkaBackfill(pipe)
	} else {
		err = state.SaveKafkaBackfill(pipe, prog)
	}
	if err != nil {
		return fmt.Errorf("backfill %s: state_dir: %w", pipe, err)
	}
	fmt.Fprintf(stdout, "backfill %s: %d rows of %d tables published in %s\n", pipe, total, len(tables), time.Since(start).Round(time.Millisecond))
	return nil
}

// loadKafkaBackfill returns the stored progress of an interrupted backfill
// of pipe (ok false: none, or restart asked to forget it).
func loadKafkaBackfill(state *checkpoint.FileStore, pipe string, restart bool) (checkpoint.KafkaBackfill, bool, error) {
	if restart {
		if err := state.RemoveKafkaBackfill(pipe); err != nil {
			return checkpoint.KafkaBackfill{}, false, fmt.Errorf("state_dir: %w", err)
		}
		return checkpoint.KafkaBackfill{}, false, nil
	}
	prog, ok, err := state.LoadKafkaBackfill(pipe)
	if err != nil {
		return prog, false, fmt.Errorf("state_dir: %w", err)
	}
	if ok && prog.Tables == nil {
		prog.Tables = map[string]checkpoint.TableBackfill{}
	}
	return prog, ok, nil
}

// publishChunk reads range r of t with a locking read and calls publish with
// the rows before it releases the locks.
func publishChunk(ctx context.Context, sdb *snapshot.DB, t *snapshot.Table, r snapshot.Range, publish func(rows []source.Row, read time.Time) error) (int, error) {
	tx, err := sdb.SQL.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		return 0, err
	}
	defer tx.Rollback() // read only: ending it releases the row locks
	rows, err := t.Read(ctx, tx, r, true)
	if err != nil {
		return 0, err
	}
	if err := publish(rows, time.Now()); err != nil {
		return 0, err
	}
	return len(rows), tx.Commit()
}
