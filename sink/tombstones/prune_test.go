package tombstones

import (
	"testing"
	"time"
)

// progress is a pipeline's reported progress.
type progress struct {
	at time.Time
	ok bool
}

func (p progress) Applied() (time.Time, bool) { return p.at, p.ok }

func TestHorizon(t *testing.T) {
	now := time.Date(2026, 1, 10, 12, 0, 0, 0, time.UTC)
	week := 7 * 24 * time.Hour
	tests := []struct {
		name      string
		retention time.Duration
		pipelines []Pipeline
		want      time.Time
		ok        bool
	}{
		{"no other region: the retention alone", week, nil, now.Add(-week), true},
		{"pipelines far ahead: the retention", week, []Pipeline{progress{now, true}, progress{now.Add(-time.Hour), true}}, now.Add(-week), true},
		{"a pipeline behind the retention holds pruning below its progress", week,
			[]Pipeline{progress{now, true}, progress{now.Add(-8 * 24 * time.Hour), true}}, now.Add(-8*24*time.Hour - Margin), true},
		{"a short retention: the slowest pipeline's progress minus the margin", time.Second,
			[]Pipeline{progress{now.Add(-time.Minute), true}, progress{now.Add(-time.Second), true}}, now.Add(-time.Minute - Margin), true},
		{"a pipeline that has not reported holds everything", time.Second, []Pipeline{progress{now, true}, progress{}}, time.Time{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := &Pruner{Retention: tt.retention, Pipelines: tt.pipelines, Now: func() time.Time { return now }}
			got, ok := p.Horizon()
			if ok != tt.ok || !got.Equal(tt.want) {
				t.Errorf("Horizon() = %v, %v; want %v, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestInterval(t *testing.T) {
	for _, tt := range []struct{ retention, want time.Duration }{
		{0, time.Second}, {3 * time.Second, time.Second}, {5 * time.Minute, 30 * time.Second}, {168 * time.Hour, time.Minute},
	} {
		if got := (&Pruner{Retention: tt.retention}).Interval(); got != tt.want {
			t.Errorf("retention %v: interval %v, want %v", tt.retention, got, tt.want)
		}
	}
}
