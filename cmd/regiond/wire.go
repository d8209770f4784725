package main

import (
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"

	"github.com/regiond/regiond/checkpoint"
	"github.com/regiond/regiond/config"
	"github.com/regiond/regiond/internal/mysqlconn"
	"github.com/regiond/regiond/pipeline"
	"github.com/regiond/regiond/sink/batch"
	mysqlsink "github.com/regiond/regiond/sink/mysql"
	pgsink "github.com/regiond/regiond/sink/postgres"
	"github.com/regiond/regiond/sink/tombstones"
	"github.com/regiond/regiond/source"
	mysqlsource "github.com/regiond/regiond/source/mysql"
	pgsource "github.com/regiond/regiond/source/postgres"
)

// pipelineSet is the pipelines of one process and what they hold open.
type pipelineSet struct {
	pipelines []*pipeline.Pipeline
	// pruners prune each region's last_writer_wins tombstones.
	pruners []*tombstones.Pruner
	closers []func() error
}

// Close releases every pipeline's connections.
func (s *pipelineSet) Close() error {
	var errs []error
	for _, c := range s.closers {
		errs = append(errs, c())
	}
	return errors.Join(errs...)
}

// pipelineName names the pipeline from src into dst; src == dst names a
// region's local pipeline (its own log, applied to itself: tombstones for
// its own last_writer_wins deletes).
func pipelineName(src, dst string) string { return src + "->" + dst }

// buildPipelines wires a pipeline from every other region into each target
// region (only into region when it is set). Nothing connects yet.
func buildPipelines(cfg *config.Config, region string, logger *slog.Logger) (*pipelineSet, error) {
	if err := checkRegionFlag(cfg, region); err != nil {
		return nil, err
	}
	tables := make(map[string]bool, len(cfg.Tables))
	for name := range cfg.Tables {
		tables[name] = true
	}
	set := &pipelineSet{}
	var state *checkpoint.FileStore
	if cfg.StateDir != "" {
		var err error
		if state, err = checkpoint.NewFileStore(cfg.StateDir); err != nil {
			return nil, usageError{fmt.Errorf("%w: state_dir %s: %v", config.ErrInvalid, cfg.StateDir, err)}
		}
	}
	needLocal, lww := false, false
	for _, t := range cfg.Tables {
		needLocal = needLocal || t.Rule() == config.RuleLastWriterWins || t.Rule() == config.RuleHomeRegion
		lww = lww || t.Rule() == config.RuleLastWriterWins
	}
	for ti, dst := range cfg.Regions {
		if region != "" && dst.Name != region {
			continue
		}
		var pruner *tombstones.Pruner
		if lww {
			pruner = &tombstones.Pruner{Region: dst.Name, Retention: cfg.TombstoneRetention.Duration, Logger: logger}
			set.pruners = append(set.pruners, pruner)
		}
		for _, src := range cfg.Regions {
			if src.Name == dst.Name && !needLocal {
				continue
			}
			name := pipelineName(src.Name, dst.Name)
			plog := logger.With("pipeline", name)
			reader, err := newSource(src, dst, ti, tables, plog)
			if err != nil {
				return nil, fmt.Errorf("pipeline %s: %w", name, err)
			}
			set.closers = append(set.closers, reader.Close)
			sink, closeSink, err := newSink(cfg, src, dst, logger)
			if err != nil {
				return nil, fmt.Errorf("pipeline %s: %w", name, err)
			}
			set.closers = append(set.closers, closeSink)
			p := &pipeline.Pipeline{
				Name:   name,
				Source: reader,
				Sink:   sink,
				Logger: logger,
				State:  state,
			}
			set.pipelines = append(set.pipelines, p)
			if pruner == nil {
				continue
			}
			if src.Name == dst.Name {
				store, ok := sink.(tombstones.Store)
				if !ok {
					return nil, fmt.Errorf("region %s: its engine cannot prune tombstones", dst.Name)
				}
				pruner.Store = store
				continue
			}
			p.TrackCommits = true
			pruner.Pipelines = append(pruner.Pipelines, p)
		}
		if cfg.Kafka != nil {
			p, closers, err := kafkaPipeline(cfg, dst, tables, state, logger)
			if err != nil {
				return nil, err
			}
			set.closers = append(set.closers, closers...)
			set.pipelines = append(set.pipelines, p)
		}
	}
	return set, nil
}

// closingSource is a source that holds connections.
type closingSource interface {
	source.Source
	Close() error
}

// newSource returns the reader of src's log for the pipeline into dst.
func newSource(src, dst config.Region, targetIndex int, tables map[string]bool, logger *slog.Logger) (closingSource, error) {
	name := pipelineName(src.Name, dst.Name)
	switch src.Engine {
	case config.EngineMySQL:
		conn, err := mysqlParams(src)
		if err != nil {
			return nil, err
		}
		return mysqlsource.New(mysqlsource.Config{
			Region:   src.Name,
			Conn:     conn,
			Flavor:   src.Flavor,
			ServerID: replicaServerID(src, name, targetIndex),
			Tables:   tables,
		}, logger)
	case config.EnginePostgres:
		return pgsource.New(pgsource.Config{
			Region: src.Name,
			DSN:    src.DSN,
			Schema: src.Schema,
			Slot:   pgsource.SlotName(src.Name, dst.Name),
			Tables: tables,
		}, logger)
	}
	return nil, fmt.Errorf("region %s: unknown engine %q", src.Name, src.Engine)
}

// newSink returns the applier into dst for the pipeline from src.
func newSink(cfg *config.Config, src, dst config.Region, logger *slog.Logger) (pipeline.Sink, func() error, error) {
	name := pipelineName(src.Name, dst.Name)
	switch dst.Engine {
	case config.EngineMySQL:
		conn, err := mysqlParams(dst)
		if err != nil {
			return nil, nil, err
		}
		a, err := mysqlsink.New(mysqlsink.Config{
			Pipeline: name, Source: src.Name, Target: dst.Name, Conn: conn, Tables: cfg.TableNames(),
			Rules: rulesFor(cfg, name, src.Name, dst.Name), Lanes: dst.ApplyConnections,
		}, logger)
		if err != nil {
			return nil, nil, err
		}
		return a, a.Close, nil
	case config.EnginePostgres:
		a, err := pgsink.New(pgsink.Config{
			Pipeline: name, Source: src.Name, Target: dst.Name, DSN: dst.DSN, Schema: dst.Schema, Tables: cfg.TableNames(),
			Rules: rulesFor(cfg, name, src.Name, dst.Name), Lanes: dst.ApplyConnections,
		}, logger)
		if err != nil {
			return nil, nil, err
		}
		return a, a.Close, nil
	}
	return nil, nil, fmt.Errorf("region %s: unknown engine %q", dst.Name, dst.Engine)
}

// rulesFor gives a sink the tables' conflict rules.
func rulesFor(cfg *config.Config, pipeline, origin, target string) *batch.Rules {
	r := &batch.Rules{Tables: map[string]batch.Rule{}, Pipeline: pipeline, Origin: origin, Target: target, Local: origin == target}
	for name, t := range cfg.Tables {
		r.Tables[name] = batch.Rule{Name: t.Rule(), VersionColumn: t.VersionColumn, HomeColumn: t.HomeColumn}
	}
	return r
}

func mysqlParams(r config.Region) (mysqlconn.Params, error) {
	d, err := config.ParseMySQLDSN(r.DSN)
	if err != nil {
		return mysqlconn.Params{}, fmt.Errorf("region %s: %w", r.Name, err)
	}
	return mysqlconn.Params{
		Host: d.Host, Port: d.Port, User: d.User, Password: d.Password,
		Database: d.Database, Extra: d.Params,
	}, nil
}

// replicaServerID is the server id regiond presents when it reads src's
// binlog for one pipeline: the region's server_id plus the target's index
// when configured, else derived from the pipeline's name. Each reader of a
// server needs its own id, or the server disconnects the older one.
func replicaServerID(src config.Region, pipelineName string, targetIndex int) uint32 {
	if src.ServerID != 0 {
		return src.ServerID + uint32(targetIndex)
	}
	h := fnv.New32a()
	h.Write([]byte(pipelineName))
	return h.Sum32() | 1<<31 | 1
}
