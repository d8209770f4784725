// Package metrics holds regiond's Prometheus metrics, registered in one
// registry that the process serves at metrics_addr.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"
)

// GaugeValue returns the value of g's child with the given label values
// (creating it at 0 when missing).
func GaugeValue(g *prometheus.GaugeVec, labels ...string) float64 {
	var m dto.Metric
	if err := g.WithLabelValues(labels...).Write(&m); err != nil {
		return 0
	}
	return m.GetGauge().GetValue()
}

// Registry holds every regiond metric.
var Registry = prometheus.NewRegistry()

// Conflicts counts changes a conflict rule discarded, by table and rule.
var Conflicts = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "regiond_conflicts_total",
	Help: "Changes discarded by a conflict rule (each also recorded in regiond_conflicts).",
}, []string{"table", "rule"})

// ReplicationLag is, per pipeline, how long after its source commit the
// last applied source transaction committed in the target. It drops to 0
// when the applier has nothing left to apply.
var ReplicationLag = prometheus.NewGaugeVec(prometheus.GaugeOpts{
	Name: "regiond_replication_lag_seconds",
	Help: "Source commit to target commit of the last applied transaction (0 when caught up with what the reader delivered). MySQL/MariaDB commit times are whole seconds.",
}, []string{"pipeline"})

// ChangesApplied counts row changes committed in the target.
var ChangesApplied = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "regiond_changes_applied_total",
	Help: "Row changes of committed batches, by pipeline, table and operation (changes a conflict rule discarded count here too, and in regiond_conflicts_total).",
}, []string{"pipeline", "table", "op"})

// Batches counts target transactions committed by appliers.
var Batches = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "regiond_batches_total",
	Help: "Target transactions (batches of source transactions) committed, by pipeline.",
}, []string{"pipeline"})

// ApplyDuration is how long a committed batch took, from its first
// statement to its commit.
var ApplyDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
	Name:    "regiond_apply_duration_seconds",
	Help:    "Time from a batch's first statement to its commit in the target, by pipeline.",
	Buckets: prometheus.ExponentialBuckets(0.0005, 2.5, 14), // 0.5 ms .. ~75 s
}, []string{"pipeline"})

// SourcePositionLag is how many bytes of log the source holds beyond the
// pipeline's applied position (PostgreSQL: pg_current_wal_lsn() minus the
// applied LSN; MySQL/MariaDB: the binlog after the applied transaction's
// end, from SHOW BINARY LOGS).
var SourcePositionLag = prometheus.NewGaugeVec(prometheus.GaugeOpts{
	Name: "regiond_source_position_lag_bytes",
	Help: "Bytes of source log (PostgreSQL WAL, MySQL/MariaDB binlog) beyond the pipeline's applied position, sampled every 10 s.",
}, []string{"pipeline"})

// PipelineUp is 1 while a pipeline streams (or stands by for another
// process that applies), 0 while it starts, retries or is stopped.
var PipelineUp = prometheus.NewGaugeVec(prometheus.GaugeOpts{
	Name: "regiond_pipeline_up",
	Help: "1 while the pipeline streams or stands by as the HA standby, 0 while it starts, retries or is stopped.",
}, []string{"pipeline"})

// PipelineLeader is 1 while this process applies the pipeline, 0 while it
// stands by.
var PipelineLeader = prometheus.NewGaugeVec(prometheus.GaugeOpts{
	Name: "regiond_pipeline_leader",
	Help: "1 while this process holds the pipeline's lease and applies it, 0 otherwise.",
}, []string{"pipeline"})

func init() {
	Registry.MustRegister(Conflicts, ReplicationLag, ChangesApplied, Batches, ApplyDuration, SourcePositionLag, PipelineUp, PipelineLeader,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
}
