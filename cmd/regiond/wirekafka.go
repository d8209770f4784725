package main

import (
	"fmt"
	"log/slog"
	"net/url"
	"strings"

	"github.com/regiond/regiond/checkpoint"
	"github.com/regiond/regiond/config"
	"github.com/regiond/regiond/pipeline"
	kafkasink "github.com/regiond/regiond/sink/kafka"
)

// kafkaTarget is the pseudo-region a Kafka pipeline's source reads for: its
// name makes the pipeline "X->kafka" and the Postgres slot regiond_X_kafka.
var kafkaTarget = config.Region{Name: config.ReservedRegionName}

// kafkaPipeline wires region src's own log to Kafka: a reader of its own
// (skipping regiond's marked transactions, so changes applied by regiond are
// published only by the region where they originated) and the Kafka sink,
// whose position lives in state_dir.
func kafkaPipeline(cfg *config.Config, src config.Region, tables map[string]bool, state *checkpoint.FileStore, logger *slog.Logger) (*pipeline.Pipeline, []func() error, error) {
	name := pipelineName(src.Name, kafkaTarget.Name)
	if state == nil {
		return nil, nil, usagef("kafka needs state_dir: the Kafka pipelines keep their positions there; add state_dir: /var/lib/regiond to the config")
	}
	db, err := regionDatabase(src)
	if err != nil {
		return nil, nil, fmt.Errorf("pipeline %s: %w", name, err)
	}
	reader, err := newSource(src, kafkaTarget, len(cfg.Regions), tables, logger.With("pipeline", name))
	if err != nil {
		return nil, nil, fmt.Errorf("pipeline %s: %w", name, err)
	}
	sink, err := kafkasink.New(kafkasink.Config{
		Pipeline: name,
		Origin:   kafkasink.Origin{Region: src.Name, Engine: src.Engine, DB: db},
		Tables:   cfg.TableNames(),
		Kafka:    *cfg.Kafka,
		State:    state,
	}, logger)
	if err != nil {
		reader.Close()
		return nil, nil, usageError{fmt.Errorf("%w: pipeline %s: %v", config.ErrInvalid, name, err)}
	}
	return &pipeline.Pipeline{Name: name, Source: reader, Sink: sink, Logger: logger},
		[]func() error{reader.Close, sink.Close}, nil
}

// regionDatabase is the database name of a region's DSN: the envelopes'
// source.db.
func regionDatabase(r config.Region) (string, error) {
	if r.Engine == config.EngineMySQL {
		d, err := config.ParseMySQLDSN(r.DSN)
		if err != nil {
			return "", fmt.Errorf("region %s: %w", r.Name, err)
		}
		return d.Database, nil
	}
	u, err := url.Parse(r.DSN)
	if err != nil {
		return "", fmt.Errorf("region %s: dsn: %w", r.Name, err)
	}
	if db := strings.TrimPrefix(u.Path, "/"); db != "" {
		return db, nil
	}
	if db := u.Query().Get("dbname"); db != "" {
		return db, nil
	}
	return u.User.Username(), nil // libpq's default: the user's name
}
