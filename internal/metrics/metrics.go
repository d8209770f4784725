// Package metrics holds regiond's Prometheus metrics, registered in one
// registry that the process serves at metrics_addr.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Registry holds every regiond metric.
var Registry = prometheus.NewRegistry()

// Conflicts counts changes a conflict rule discarded, by table and rule.
var Conflicts = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "regiond_conflicts_total",
	Help: "Changes discarded by a conflict rule (each also recorded in regiond_conflicts).",
}, []string{"table", "rule"})

func init() {
	Registry.MustRegister(Conflicts)
}
