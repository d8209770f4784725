package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/regiond/regiond/checkpoint"
	"github.com/regiond/regiond/config"
	"github.com/regiond/regiond/internal/mysqlconn"
	"github.com/regiond/regiond/internal/testenv"
	"github.com/regiond/regiond/pipeline"
	kafkasink "github.com/regiond/regiond/sink/kafka"
	mysqlsource "github.com/regiond/regiond/source/mysql"
)

// The -to kafka run.
const (
	toKafka = "kafka"
	// targetVsRawKafka is the ratio regiond's publish rate should reach
	// against a raw kafka-go writer sending the same messages.
	targetVsRawKafka = 0.5
	kafkaPipeline    = "source->kafka"
	kafkaPartitions  = 6
	// rawWriteMessages is how many messages the raw writer hands kafka-go
	// per WriteMessages call (regiond's sink default).
	rawWriteMessages = 16384
)

// kafkaBench measures regiond publishing a MariaDB backlog to Kafka against
// a raw kafka-go writer sending the same messages to the same broker.
//
// Each phase takes about a second, so one pair of them is at the mercy of
// whatever else the machine does in that second: the bench runs -rounds
// rounds, each a regiond phase and a raw phase one after the other, and
// judges the median of the rounds' ratios. Every round publishes to topics
// of its own, deleted when the round ends; regiond's round i resumes a
// pipeline of its own (its position in state_dir i), initialized with the
// others before the backlog was written.
type kafkaBench struct {
	*bench
	cluster *kfake.Cluster
	broker  string
	states  []*checkpoint.FileStore // one per round
	dir     string
	msgs    []kafkago.Message // regiond's messages, read back after its first phase
}

func runKafka(opt options) error {
	b := &bench{opt: opt, began: time.Now(), logger: runLogger(opt), loadAvg: loadAverage()}
	return drive(opt, &kafkaBench{bench: b})
}

// kafkaConfig is the kafka: block of round i's pipeline.
func (k *kafkaBench) kafkaConfig(round int) config.Kafka {
	return config.Kafka{Brokers: []string{k.broker}, TopicPrefix: fmt.Sprintf("bench%d", round+1), Partitions: kafkaPartitions}
}

// rawTopic is round i's topic for the raw writer.
func rawTopic(round int) string { return fmt.Sprintf("raw%d.%s", round+1, benchTable) }

func (k *kafkaBench) setupSteps() []func(context.Context) error {
	return []func(context.Context) error{k.start, k.createTable, k.initPipelines, k.writeBacklog}
}

// start starts the source MariaDB server and the in-process broker.
func (k *kafkaBench) start(ctx context.Context) error {
	dir, err := os.MkdirTemp("", "regiond-bench-")
	if err != nil {
		return err
	}
	k.dir = dir
	s := &server{role: "source", srv: &testenv.Server{Engine: testenv.EngineMySQL, Dir: dir, ServerID: 1}}
	k.source = s
	k.servers = []*server{s}
	k.progress("starting a MariaDB server and a kfake broker (in this process)")
	if s.srv, err = testenv.StartMariaDB(ctx, dir, 1); err != nil {
		return fmt.Errorf("source: %w", err)
	}
	if s.db, err = mysqlconn.Open(s.params()); err != nil {
		return err
	}
	if pid, err := os.ReadFile(dir + "/mysqld.pid"); err == nil {
		s.pid, _ = strconv.Atoi(strings.TrimSpace(string(pid)))
	}
	if k.cluster, err = kfake.NewCluster(kfake.NumBrokers(1)); err != nil {
		return fmt.Errorf("kfake: %w", err)
	}
	k.broker = k.cluster.ListenAddrs()[0]
	for i := range k.opt.rounds {
		st, err := checkpoint.NewFileStore(fmt.Sprintf("%s/state%d", dir, i+1))
		if err != nil {
			return err
		}
		k.states = append(k.states, st)
	}
	k.progress("source port=%d dir=%s; broker %s", s.srv.Port, dir, k.broker)
	return nil
}

func (k *kafkaBench) createTable(ctx context.Context) error {
	if _, err := k.source.db.ExecContext(ctx, createBench); err != nil {
		return fmt.Errorf("source: %w", err)
	}
	var err error
	k.startPos, err = gtidBinlogPos(ctx, k.source.db)
	return err
}

// newPipeline wires source/mysql → sink/kafka as the daemon does, for round i.
func (k *kafkaBench) newPipeline(round int) (*pipeline.Pipeline, func(), error) {
	reader, err := mysqlsource.New(mysqlsource.Config{
		Region: "source", Conn: k.source.params(), ServerID: readerServerID,
		Tables: map[string]bool{benchTable: true},
	}, k.logger)
	if err != nil {
		return nil, nil, err
	}
	sink, err := kafkasink.New(kafkasink.Config{
		Pipeline: kafkaPipeline,
		Origin:   kafkasink.Origin{Region: "source", Engine: config.EngineMySQL, DB: "app"},
		Tables:   []string{benchTable},
		Kafka:    k.kafkaConfig(round),
		State:    k.states[round],
	}, k.logger)
	if err != nil {
		reader.Close()
		return nil, nil, err
	}
	p := &pipeline.Pipeline{Name: kafkaPipeline, Source: reader, Sink: sink, Logger: k.logger}
	return p, func() { reader.Close(); sink.Close() }, nil
}

// published is the position round i's pipeline saved in state_dir.
func (k *kafkaBench) published(round int) (checkpoint.GTID, bool, error) {
	rec, ok, err := k.states[round].LoadPublished(kafkaPipeline)
	if err != nil || !ok {
		return checkpoint.GTID{}, false, err
	}
	g, err := checkpoint.ParseGTID("mariadb", rec.Position)
	return g, err == nil, err
}

// initPipelines runs each round's pipeline until it saved its start
// position (the source's, just after CREATE TABLE) and created its topic.
func (k *kafkaBench) initPipelines(ctx context.Context) error {
	for i := range k.opt.rounds {
		if err := k.initPipeline(ctx, i); err != nil {
			return err
		}
	}
	return nil
}

func (k *kafkaBench) initPipeline(ctx context.Context, round int) error {
	k.progress("regiond: first start of round %d's pipeline, to store its start position and create topic %s", round+1, kafkasink.Topic(k.kafkaConfig(round), benchTable))
	p, closeP, err := k.newPipeline(round)
	if err != nil {
		return err
	}
	defer closeP()
	pctx, cancel := context.WithCancel(ctx)
	stopped := make(chan struct{})
	go func() { p.Run(pctx); close(stopped) }()
	defer func() { cancel(); <-stopped }()
	deadline := time.Now().Add(time.Minute)
	for {
		if g, ok, err := k.published(round); err != nil {
			return err
		} else if ok {
			if g.String() != k.startPos {
				return fmt.Errorf("regiond stored start position %q, but the source is at %q", g, k.startPos)
			}
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the kafka pipeline stored no position within a minute (%s: %s)", p.Status().State, p.Status().LastError)
		}
		time.Sleep(pollEvery)
	}
}

func (k *kafkaBench) measure(ctx context.Context) error {
	var raws, regs []phase
	for i := range k.opt.rounds {
		reg, err := k.runRegiond(ctx, i)
		if err != nil {
			return fmt.Errorf("round %d, regiond phase: %w", i+1, err)
		}
		k.progress("round %d: %s", i+1, reg.summary())
		if i == 0 {
			if err := k.readBack(ctx); err != nil {
				return err
			}
		}
		raw, err := k.runRaw(ctx, i)
		if err != nil {
			return fmt.Errorf("round %d, raw writer phase: %w", i+1, err)
		}
		k.progress("round %d: %s", i+1, raw.summary())
		raws, regs = append(raws, raw), append(regs, reg)
		if err := k.deleteTopics(ctx, i); err != nil {
			return err
		}
	}
	return k.report(ctx, os.Stdout, raws, regs)
}

// deleteTopics deletes round i's topics, so that the broker holds no more
// data in the next round than in this one.
func (k *kafkaBench) deleteTopics(ctx context.Context, round int) error {
	client := &kafkago.Client{Addr: kafkago.TCP(k.broker)}
	topics := []string{kafkasink.Topic(k.kafkaConfig(round), benchTable), rawTopic(round)}
	res, err := client.DeleteTopics(ctx, &kafkago.DeleteTopicsRequest{Topics: topics})
	if err != nil {
		return fmt.Errorf("delete topics %v: %w", topics, err)
	}
	for t, err := range res.Errors {
		if err != nil {
			return fmt.Errorf("delete topic %s: %w", t, err)
		}
	}
	return nil
}

// runRegiond resumes round i's pipeline and times it until the position
// saved in state_dir covers the source's final position: every change
// published and acknowledged.
func (k *kafkaBench) runRegiond(ctx context.Context, round int) (phase, error) {
	final, err := checkpoint.ParseGTID("mariadb", k.final)
	if err != nil {
		return phase{}, err
	}
	p, closeP, err := k.newPipeline(round)
	if err != nil {
		return phase{}, err
	}
	defer closeP()
	k.progress("regiond, round %d: publishing the backlog from %s to %s", round+1, k.startPos, k.final)
	stopProfiles, err := startProfiles(roundFile(k.opt.cpuProfile, round, k.opt.rounds), roundFile(k.opt.trace, round, k.opt.rounds))
	if err != nil {
		return phase{}, err
	}
	defer stopProfiles()
	none := &server{}
	cpu0 := k.cpuNow(none)
	start := time.Now()
	pctx, cancel := context.WithCancel(ctx)
	stopped := make(chan struct{})
	go func() { p.Run(pctx); close(stopped) }()
	defer func() { cancel(); <-stopped }()
	// The pipeline's status shows a position once the sink saved it in
	// state_dir: polled every millisecond (a lock and a parse), it times
	// the end closer than reading the file every pollEvery would, at no
	// measurable cost. The file is checked once the clock stopped.
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		if g, err := checkpoint.ParseGTID("mariadb", p.Status().Position); err == nil && g.Contains(final) {
			break
		}
		select {
		case <-stopped:
			return phase{}, fmt.Errorf("pipeline stopped: %s", p.Status().LastError)
		case <-ctx.Done():
			return phase{}, ctx.Err()
		case <-tick.C:
		}
	}
	ph := phase{name: "regiond: binlog → sink/kafka", unit: "changes", n: k.changes(), d: time.Since(start),
		cpu: k.cpuNow(none).sub(cpu0)}
	if g, ok, err := k.published(round); err != nil || !ok || !g.Contains(final) {
		return phase{}, fmt.Errorf("the pipeline reported %s, but its state_dir holds %s (%v)", p.Status().Position, g, err)
	}
	return ph, stopProfiles()
}

// roundFile names round i's profile or trace file: name itself when there
// is one round, else name.1, name.2, … (go tool pprof merges profiles given
// together), so that no round's profile overwrites another's.
func roundFile(name string, round, rounds int) string {
	if name == "" || rounds == 1 {
		return name
	}
	return fmt.Sprintf("%s.%d", name, round+1)
}

// readBack consumes regiond's topic (untimed), checks that it holds each
// change exactly once, and keeps the messages for the raw writer.
func (k *kafkaBench) readBack(ctx context.Context) error {
	topic := kafkasink.Topic(k.kafkaConfig(0), benchTable)
	k.progress("reading %s back (untimed)", topic)
	transport, err := kafkasink.NewTransport(k.kafkaConfig(0))
	if err != nil {
		return err
	}
	defer transport.CloseIdleConnections()
	seen := make(map[string]bool, k.changes())
	for part := range kafkaPartitions {
		r := kafkago.NewReader(kafkago.ReaderConfig{Brokers: []string{k.broker}, Topic: topic, Partition: part, MaxBytes: 8 << 20})
		conn, err := kafkago.DialLeader(ctx, "tcp", k.broker, topic, part)
		if err != nil {
			r.Close()
			return err
		}
		last, err := conn.ReadLastOffset()
		conn.Close()
		if err != nil {
			r.Close()
			return err
		}
		for off := int64(0); off < last; off++ {
			m, err := r.ReadMessage(ctx)
			if err != nil {
				r.Close()
				return fmt.Errorf("read %s[%d]: %w", topic, part, err)
			}
			pos := envelopePos(m.Value)
			if seen[pos] {
				r.Close()
				return fmt.Errorf("%s: source.pos %s published twice", topic, pos)
			}
			seen[pos] = true
			k.msgs = append(k.msgs, kafkago.Message{Key: m.Key, Value: m.Value})
		}
		r.Close()
	}
	if len(k.msgs) != k.changes() {
		return fmt.Errorf("%s holds %d events, want %d (one per change)", topic, len(k.msgs), k.changes())
	}
	k.progress("%s holds %d events, one per change", topic, len(k.msgs))
	return nil
}

// envelopePos extracts source.pos from an envelope without decoding it all.
func envelopePos(v []byte) string {
	s := string(v)
	i := strings.LastIndex(s, `"pos":"`)
	if i < 0 {
		return ""
	}
	s = s[i+len(`"pos":"`):]
	j := strings.IndexByte(s, '"')
	if j < 0 {
		return ""
	}
	return s[:j]
}

// runRaw sends regiond's messages to a fresh topic with the same partition
// count, through a kafka-go writer with regiond's settings (acks=all,
// murmur2 by key), rawWriteMessages per WriteMessages call.
func (k *kafkaBench) runRaw(ctx context.Context, round int) (phase, error) {
	cfg := k.kafkaConfig(round)
	rawTopic := rawTopic(round)
	for i := range k.msgs {
		k.msgs[i].Topic = rawTopic
	}
	transport, err := kafkasink.NewTransport(cfg)
	if err != nil {
		return phase{}, err
	}
	defer transport.CloseIdleConnections()
	client := &kafkago.Client{Addr: kafkago.TCP(k.broker), Transport: transport}
	res, err := client.CreateTopics(ctx, &kafkago.CreateTopicsRequest{Topics: []kafkago.TopicConfig{{Topic: rawTopic, NumPartitions: kafkaPartitions, ReplicationFactor: -1}}})
	if err != nil {
		return phase{}, err
	}
	if err := res.Errors[rawTopic]; err != nil {
		return phase{}, err
	}
	w := kafkasink.NewKafkaGoWriter(cfg, transport)
	defer w.Close()
	k.progress("raw kafka-go writer: %d messages to %s", len(k.msgs), rawTopic)
	none := &server{}
	cpu0 := k.cpuNow(none)
	start := time.Now()
	for i := 0; i < len(k.msgs); i += rawWriteMessages {
		if err := w.WriteMessages(ctx, k.msgs[i:min(i+rawWriteMessages, len(k.msgs))]...); err != nil {
			return phase{}, err
		}
	}
	return phase{name: fmt.Sprintf("raw kafka-go writer, %d messages a call", rawWriteMessages), unit: "messages", n: len(k.msgs),
		d: time.Since(start), cpu: k.cpuNow(none).sub(cpu0)}, nil
}

func (k *kafkaBench) report(ctx context.Context, w io.Writer, raws, regs []phase) error {
	var version string
	if err := k.source.db.QueryRowContext(ctx, "SELECT VERSION()").Scan(&version); err != nil {
		return err
	}
	var bytes int
	for _, m := range k.msgs {
		bytes += len(m.Key) + len(m.Value)
	}
	fmt.Fprintf(w, "\n## regiond Kafka benchmark, %s\n\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(w, "- machine: %d CPUs (%s), GOMAXPROCS %d, %s %s/%s, MariaDB %s; load average at the start: %s\n",
		runtime.NumCPU(), cpuModel(), runtime.GOMAXPROCS(0), runtime.Version(), runtime.GOOS, runtime.GOARCH, version, k.loadAvg)
	fmt.Fprintf(w, "- broker: kfake (franz-go), one broker in this process, topics of %d partitions; acks=all, murmur2 partitioning by key\n", kafkaPartitions)
	fmt.Fprintf(w, "- backlog: %d inserts in %d-row transactions + %d single-row updates in %d-statement transactions = %d changes in %d source transactions; %d messages, %.0f bytes each on average (key + value)\n",
		k.opt.inserts, insertTxnRows, k.opt.updates, updateTxnStmts, k.changes(), k.txns, len(k.msgs), float64(bytes)/float64(len(k.msgs)))
	fmt.Fprintf(w, "- %d rounds, each regiond's phase (its own pipeline and topic) then the raw writer's (a topic of its own)\n\n", len(regs))
	fmt.Fprintln(w, "| round | path | count | seconds | rate | CPU s: source / bench process (regiond or writer, and the broker) / other processes | regiond / raw |")
	fmt.Fprintln(w, "|---:|---|---:|---:|---:|---|---:|")
	ratios := make([]float64, len(regs))
	for i := range regs {
		ratios[i] = regs[i].rate() / raws[i].rate()
		for _, p := range []phase{raws[i], regs[i]} {
			name, ratio := p.name, ""
			if p.noisy() {
				name += " (NOISY)"
			}
			if p.unit == "changes" {
				ratio = fmt.Sprintf("%.2f×", ratios[i])
			}
			fmt.Fprintf(w, "| %d | %s | %d %s | %.2f | %.0f %s/s | %.1f / %.1f / %.1f | %s |\n",
				i+1, name, p.n, p.unit, p.d.Seconds(), p.rate(), p.unit, p.cpu.source.Seconds(), p.cpu.self.Seconds(), p.cpu.others().Seconds(), ratio)
		}
	}
	fmt.Fprintln(w)
	for i := range regs {
		for _, p := range []phase{raws[i], regs[i]} {
			if p.noisy() {
				fmt.Fprintf(w, "- WARNING: other processes took %.0f%% of the CPUs during round %d's %q: its numbers are unreliable; rerun on a quiet machine\n",
					100*p.othersShare(), i+1, p.name)
			}
		}
	}
	r := median(ratios)
	verdict := "met"
	if r < targetVsRawKafka {
		verdict = "MISSED"
	}
	fmt.Fprintf(w, "- regiond / raw kafka-go writer, median of %d rounds: %.2f× (target ≥ %.1f×: %s)\n", len(ratios), r, targetVsRawKafka, verdict)
	return nil
}

// median of xs (the mean of the middle two for an even count).
func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func (k *kafkaBench) cleanup() error {
	var errs []error
	if k.cluster != nil {
		k.cluster.Close()
	}
	if err := k.bench.cleanup(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
