package backfill

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/regiond/regiond/config"
	"github.com/regiond/regiond/internal/mysqlconn"
	"github.com/regiond/regiond/sink/batch"
	mysqlsink "github.com/regiond/regiond/sink/mysql"
	pgsink "github.com/regiond/regiond/sink/postgres"
)

// sinkWriter adapts a sink's chunk transactions to Writer.
type sinkWriter struct {
	begin     func(ctx context.Context, marker, kind string, guard []string) (ChunkTx, map[string]string, error)
	retryable func(error) bool
	close     func() error
}

func (w *sinkWriter) BeginChunk(ctx context.Context, marker, kind string, guard []string) (ChunkTx, map[string]string, error) {
	return w.begin(ctx, marker, kind, guard)
}
func (w *sinkWriter) Retryable(err error) bool { return w.retryable(err) }
func (w *sinkWriter) Close() error             { return w.close() }

// NewSinkWriter returns a Writer into region dst through its engine's sink
// (sink/mysql or sink/postgres): the applier's statements, type mapping and
// last_writer_wins guard. name names the writer in logs and records; rules
// are the tables' rules as backfill applies them.
func NewSinkWriter(dst config.Region, name, from string, tables []string, rules *batch.Rules, logger *slog.Logger) (Writer, error) {
	switch dst.Engine {
	case config.EngineMySQL:
		d, err := config.ParseMySQLDSN(dst.DSN)
		if err != nil {
			return nil, fmt.Errorf("region %s: %w", dst.Name, err)
		}
		conn := mysqlconn.Params{Host: d.Host, Port: d.Port, User: d.User, Password: d.Password, Database: d.Database, Extra: d.Params}
		a, err := mysqlsink.New(mysqlsink.Config{Pipeline: name, Source: from, Target: dst.Name, Conn: conn, Tables: tables, Rules: rules}, logger)
		if err != nil {
			return nil, err
		}
		return &sinkWriter{begin: chunkBegin(a.BeginChunk), retryable: a.Retryable, close: a.Close}, nil
	case config.EnginePostgres:
		a, err := pgsink.New(pgsink.Config{Pipeline: name, Source: from, Target: dst.Name, DSN: dst.DSN, Schema: dst.Schema, Tables: tables, Rules: rules}, logger)
		if err != nil {
			return nil, err
		}
		return &sinkWriter{begin: chunkBegin(a.BeginChunk), retryable: a.Retryable, close: a.Close}, nil
	}
	return nil, fmt.Errorf("region %s: unknown engine %q", dst.Name, dst.Engine)
}

// chunkBegin adapts a sink's BeginChunk, which returns its own transaction
// type, to sinkWriter.begin (a nil transaction stays a nil interface).
func chunkBegin[T ChunkTx](begin func(ctx context.Context, marker, kind string, guard []string) (T, map[string]string, error)) func(context.Context, string, string, []string) (ChunkTx, map[string]string, error) {
	return func(ctx context.Context, marker, kind string, guard []string) (ChunkTx, map[string]string, error) {
		tx, pos, err := begin(ctx, marker, kind, guard)
		if err != nil {
			return nil, nil, err
		}
		return tx, pos, nil
	}
}
