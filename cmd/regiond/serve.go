package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/regiond/regiond/internal/metrics"
	"github.com/regiond/regiond/pipeline"
)

// daemonStatus is what /status serves and `regiond status` reads: the
// running process's view of its pipelines.
type daemonStatus struct {
	Version   string           `json:"version"`
	Region    string           `json:"region,omitempty"` // --region, if any
	PID       int              `json:"pid"`
	Started   time.Time        `json:"started"`
	Pipelines []pipelineStatus `json:"pipelines"`
}

// pipelineStatus is one pipeline as the running process sees it.
type pipelineStatus struct {
	Pipeline   string    `json:"pipeline"`
	State      string    `json:"state"`
	Since      time.Time `json:"since"`
	Leader     bool      `json:"leader"`
	Epoch      int64     `json:"epoch,omitempty"`
	Position   string    `json:"position"`
	LagSeconds *float64  `json:"lag_seconds,omitempty"`
	LagBytes   *float64  `json:"source_lag_bytes,omitempty"`
	Pending    int       `json:"pending"`
	LastError  string    `json:"last_error,omitempty"`
	Failures   int       `json:"failures"`
}

// statusSnapshot returns the process's pipelines' statuses, sorted by name.
func statusSnapshot(set []*pipeline.Pipeline, region string, started time.Time) daemonStatus {
	ds := daemonStatus{Version: version, Region: region, PID: os.Getpid(), Started: started}
	for _, p := range set {
		s := p.Status()
		ps := pipelineStatus{
			Pipeline: s.Name, State: string(s.State), Since: s.Since, Leader: s.Leader, Epoch: s.Epoch,
			Position: s.Position, Pending: s.Pending, LastError: s.LastError, Failures: s.Failures,
		}
		if s.State == pipeline.Streaming {
			ps.LastError = "" // an error it recovered from is history
		}
		if s.Leader {
			lag := metrics.GaugeValue(metrics.ReplicationLag, s.Name)
			ps.LagSeconds = &lag
			if s.SourceLagBytes >= 0 {
				b := float64(s.SourceLagBytes)
				ps.LagBytes = &b
			}
		}
		ds.Pipelines = append(ds.Pipelines, ps)
	}
	sort.Slice(ds.Pipelines, func(i, j int) bool { return ds.Pipelines[i].Pipeline < ds.Pipelines[j].Pipeline })
	return ds
}

// unhealthy lists the pipelines that neither stream nor stand by, with why.
func unhealthy(set []*pipeline.Pipeline) []string {
	var bad []string
	for _, p := range set {
		s := p.Status()
		if s.Healthy() {
			continue
		}
		line := fmt.Sprintf("%s: %s", s.Name, s.State)
		if s.LastError != "" && s.State != pipeline.Starting {
			line += ": " + s.LastError
		}
		bad = append(bad, line)
	}
	sort.Strings(bad)
	return bad
}

// serveHTTP serves /metrics, /healthz and /status on addr until ctx ends.
// It returns once it listens (or failed to).
func serveHTTP(ctx context.Context, addr string, set []*pipeline.Pipeline, region string, started time.Time, logger *slog.Logger) error {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(metrics.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		bad := unhealthy(set)
		if len(bad) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "unhealthy: %d of %d pipelines are not streaming\n%s\n", len(bad), len(set), strings.Join(bad, "\n"))
			return
		}
		fmt.Fprintf(w, "ok: %d pipelines streaming or standing by\n", len(set))
	})
	mux.HandleFunc("/status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(statusSnapshot(set, region, started))
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics_addr %s: %w", addr, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("metrics server stopped", "addr", addr, "error", err)
		}
	}()
	logger.Info("serving /metrics, /healthz and /status", "addr", ln.Addr().String())
	return nil
}
