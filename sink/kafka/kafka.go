// Package kafka publishes a region's own row changes to Kafka as
// Debezium-style JSON envelopes, one topic per table, keyed by primary key.
//
// Delivery is at-least-once: the pipeline's source position advances, and
// is written to state_dir, only after the brokers acknowledged (acks=all)
// every message before it. After a crash the messages since the last saved
// position are published again, with the same source.pos.
package kafka

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"
	"golang.org/x/sync/errgroup"

	"github.com/regiond/regiond/checkpoint"
	"github.com/regiond/regiond/config"
	"github.com/regiond/regiond/pipeline"
	"github.com/regiond/regiond/source"
)

// Config configures one Kafka pipeline (a region's own log to Kafka).
type Config struct {
	// Pipeline names the pipeline, e.g. "east->kafka"; its position is kept
	// in State under this name.
	Pipeline string
	// Origin fills the envelopes' source block.
	Origin Origin
	// Tables are the configured tables: their topics are created at Open
	// when missing.
	Tables []string
	// Kafka is the config's kafka block.
	Kafka config.Kafka
	// State keeps the delivered position (the config's state_dir).
	State *checkpoint.FileStore
	// BatchMessages bounds the messages of one write (default 16384).
	BatchMessages int
}

// Sink publishes a pipeline's transactions to Kafka.
type Sink struct {
	cfg       Config
	logger    *slog.Logger
	transport *kafkago.Transport
	writer    *Writer
}

var _ pipeline.Sink = (*Sink)(nil)

// New returns a sink; it connects lazily. It fails when the TLS files cannot
// be read.
func New(cfg Config, logger *slog.Logger) (*Sink, error) {
	if cfg.State == nil {
		return nil, errors.New("kafka pipeline " + cfg.Pipeline + ": state_dir is required")
	}
	if cfg.BatchMessages <= 0 {
		cfg.BatchMessages = 16384
	}
	if cfg.Kafka.Partitions <= 0 {
		cfg.Kafka.Partitions = config.DefaultPartitions
	}
	transport, err := NewTransport(cfg.Kafka)
	if err != nil {
		return nil, err
	}
	return &Sink{
		cfg:       cfg,
		logger:    logger.With("pipeline", cfg.Pipeline),
		transport: transport,
		writer:    NewWriter(cfg.Kafka, transport),
	}, nil
}

// NewTransport returns a connection pool for the brokers of k, with its TLS
// and SASL settings.
func NewTransport(k config.Kafka) (*kafkago.Transport, error) {
	t := &kafkago.Transport{DialTimeout: 10 * time.Second, IdleTimeout: time.Minute, ClientID: "regiond"}
	if k.TLS.Enabled {
		c := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: k.TLS.InsecureSkipVerify}
		if k.TLS.CAFile != "" {
			pem, err := os.ReadFile(k.TLS.CAFile)
			if err != nil {
				return nil, fmt.Errorf("kafka.tls.ca_file: %w", err)
			}
			c.RootCAs = x509.NewCertPool()
			if !c.RootCAs.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("kafka.tls.ca_file %s: no PEM certificate in it", k.TLS.CAFile)
			}
		}
		if k.TLS.CertFile != "" {
			cert, err := tls.LoadX509KeyPair(k.TLS.CertFile, k.TLS.KeyFile)
			if err != nil {
				return nil, fmt.Errorf("kafka.tls.cert_file/key_file: %w", err)
			}
			c.Certificates = []tls.Certificate{cert}
		}
		t.TLS = c
	}
	var mech sasl.Mechanism
	switch k.SASL.Mechanism {
	case "":
	case config.SASLPlain:
		mech = plain.Mechanism{Username: k.SASL.Username, Password: k.SASL.Password}
	case config.SASLScramSHA256, config.SASLScramSHA512:
		algo := scram.SHA256
		if k.SASL.Mechanism == config.SASLScramSHA512 {
			algo = scram.SHA512
		}
		m, err := scram.Mechanism(algo, k.SASL.Username, k.SASL.Password)
		if err != nil {
			return nil, fmt.Errorf("kafka.sasl: %w", err)
		}
		mech = m
	default:
		return nil, fmt.Errorf("kafka.sasl.mechanism %q is not supported", k.SASL.Mechanism)
	}
	t.SASL = mech
	return t, nil
}

// NewKafkaGoWriter returns the kafka-go writer regiond publishes with
// (wrapped in a Writer), over transport: acks from every
// in-sync replica, partition by murmur2 of the key as Kafka's Java client
// does (so one row's events stay in one partition, in order), batches sent
// as soon as a write hands them over.
//
// BatchTimeout is how long kafka-go holds a partition's last, partly filled
// batch of a WriteMessages call for messages of a later call. regiond makes
// one call at a time and waits for it, so nothing more can come: the wait
// was dead time in every call (a millisecond per call of a few thousand
// messages). kafka-go adds a call's messages to a partition's batch under
// that partition's lock, which the expiry also takes, so a batch still
// holds every message of the call that fits it when it leaves.
func NewKafkaGoWriter(k config.Kafka, transport kafkago.RoundTripper) *kafkago.Writer {
	return &kafkago.Writer{
		Addr:         kafkago.TCP(k.Brokers...),
		Balancer:     &kafkago.Murmur2Balancer{Consistent: true},
		RequiredAcks: kafkago.RequireAll,
		MaxAttempts:  5,
		// kafka-go preallocates BatchSize messages for every batch: keep it
		// near what fits BatchBytes (1 MiB, the brokers' default limit).
		BatchSize:    4096,
		BatchBytes:   1 << 20,
		BatchTimeout: time.Microsecond,
		WriteTimeout: 30 * time.Second,
		ReadTimeout:  30 * time.Second,
		Transport:    transport,
	}
}

// Topic is the topic of table's events.
func Topic(k config.Kafka, table string) string { return k.TopicPrefix + "." + table }

// EnsureTopics creates the topics of tables that do not exist yet, with
// k.Partitions partitions and the brokers' default replication factor.
func EnsureTopics(ctx context.Context, k config.Kafka, transport *kafkago.Transport, tables []string) error {
	if len(tables) == 0 {
		return nil
	}
	client := &kafkago.Client{Addr: kafkago.TCP(k.Brokers...), Transport: transport, Timeout: 30 * time.Second}
	partitions := k.Partitions
	if partitions <= 0 {
		partitions = config.DefaultPartitions
	}
	req := &kafkago.CreateTopicsRequest{}
	for _, t := range tables {
		req.Topics = append(req.Topics, kafkago.TopicConfig{Topic: Topic(k, t), NumPartitions: partitions, ReplicationFactor: -1})
	}
	res, err := client.CreateTopics(ctx, req)
	if err != nil {
		return fmt.Errorf("create kafka topics: %w", brokerHint(k, err))
	}
	for topic, err := range res.Errors {
		if err != nil && !errors.Is(err, kafkago.TopicAlreadyExists) {
			return fmt.Errorf("create kafka topic %s: %w", topic, err)
		}
	}
	return nil
}

func brokerHint(k config.Kafka, err error) error {
	var op *net.OpError
	if errors.As(err, &op) {
		return fmt.Errorf("%w (are the brokers %v up and reachable?)", err, k.Brokers)
	}
	return err
}

// Open creates missing topics and returns the delivered position kept in
// state_dir, "" when the pipeline has none yet.
func (s *Sink) Open(ctx context.Context) (string, error) {
	if err := EnsureTopics(ctx, s.cfg.Kafka, s.transport, s.cfg.Tables); err != nil {
		return "", err
	}
	rec, ok, err := s.cfg.State.LoadPublished(s.cfg.Pipeline)
	if err != nil {
		return "", pipeline.Permanent(fmt.Errorf("state_dir: %w", err))
	}
	if !ok {
		return "", nil
	}
	return rec.Position, nil
}

// Init stores pos as the starting position unless one is stored.
func (s *Sink) Init(_ context.Context, pos string) (string, error) {
	rec, ok, err := s.cfg.State.LoadPublished(s.cfg.Pipeline)
	if err != nil {
		return "", pipeline.Permanent(fmt.Errorf("state_dir: %w", err))
	}
	if ok {
		return rec.Position, nil
	}
	if err := s.cfg.State.SavePublished(s.cfg.Pipeline, checkpoint.Published{Position: pos}); err != nil {
		return "", fmt.Errorf("state_dir: %w", err)
	}
	return pos, nil
}

// Close releases the brokers' connections.
func (s *Sink) Close() error {
	err := s.writer.Close()
	s.transport.CloseIdleConnections()
	return err
}

// batch is one write: its messages and the position of the last source
// transaction that ends in it (nil when none does).
type batch struct {
	msgs []kafkago.Message
	end  checkpoint.Position
	// arenas are the encoder's buffers that were filled up while this batch
	// was built: they hold bytes of this batch and earlier ones only, so
	// they can be used again once this batch is written.
	arenas [][]byte
}

// Apply publishes the transactions from in, in order, in three stages:
// an encoder turns transactions into messages, accumulating them while the
// previous write is in flight; a writer hands one batch at a time to the
// brokers and waits for every acknowledgement (one write in flight, through
// a fail-stop Writer, keeps a key's events in order even when a write fails
// and is replayed); a saver
// writes the position of the last transaction of the acknowledged batches
// to state_dir and only then reports it durable. Saving runs beside the
// writes, and coalesces, so fsync never holds up publishing.
func (s *Sink) Apply(ctx context.Context, in <-chan source.Txn, durable func(pos checkpoint.Position, stored bool)) error {
	g, gctx := errgroup.WithContext(ctx)
	batches := make(chan batch) // unbuffered: the encoder keeps adding until the writer is ready
	// Written batches' message slices go back to the encoder: a batch of
	// 16384 messages is 2.5 MB of kafkago.Message, and kafka-go keeps no
	// reference to the slice once WriteMessages has returned.
	free := make(chan []kafkago.Message, 2)
	// So do the encoder's buffers of keys and values: reusing them, rather
	// than allocating and zeroing new ones, cut the buffers allocated for
	// the bench's 300,000 events from 154 MB to 17 MB.
	freeArenas := make(chan []byte, maxFreeArenas)
	var (
		mu         sync.Mutex
		acked      checkpoint.Position // newest position whose messages were all acknowledged
		ackedN     int                 // how many times acked was set
		kick       = make(chan struct{}, 1)
		writerDone = make(chan struct{})
	)
	g.Go(func() error {
		defer close(batches)
		return s.encode(gctx, in, batches, free, freeArenas)
	})
	g.Go(func() error {
		defer close(writerDone)
		for b := range batches {
			if err := s.write(gctx, b.msgs); err != nil {
				return err
			}
			select {
			case free <- b.msgs[:0]:
			default:
			}
			for _, a := range b.arenas {
				select {
				case freeArenas <- a[:0]:
				default:
				}
			}
			if b.end == nil {
				continue
			}
			mu.Lock()
			acked, ackedN = b.end, ackedN+1
			mu.Unlock()
			select {
			case kick <- struct{}{}:
			default:
			}
		}
		return nil
	})
	g.Go(func() error {
		saved := 0
		save := func() error {
			mu.Lock()
			pos, n := acked, ackedN
			mu.Unlock()
			if n == saved {
				return nil
			}
			if err := s.cfg.State.SavePublished(s.cfg.Pipeline, checkpoint.Published{Position: pos.String()}); err != nil {
				return fmt.Errorf("save position to state_dir: %w", err)
			}
			saved = n
			durable(pos, true)
			return nil
		}
		for {
			select {
			case <-kick:
				if err := save(); err != nil {
					return err
				}
			case <-writerDone:
				return save()
			case <-gctx.Done():
				return gctx.Err()
			}
		}
	})
	return g.Wait()
}

// encode reads transactions and hands batches to the writer: a batch of
// BatchMessages, or less when no further transaction is waiting in in, so
// that a lone transaction is not held back while a backlog goes out in full
// batches. (Handing over whatever was ready whenever the writer was made
// writes of ~7,000 messages under a backlog, and kafka-go's cost per call —
// a batch per partition, each preallocating BatchSize messages — made
// publishing 10–30% slower in the benchmark.)
func (s *Sink) encode(ctx context.Context, in <-chan source.Txn, out chan<- batch, free <-chan []kafkago.Message, freeArenas <-chan []byte) error {
	index := 0 // events of the current source transaction so far
	var cur batch
	enc := &encoder{s: s, tables: map[*source.Table]*tableEnc{}, free: freeArenas}
	add := func(txn source.Txn) {
		now := time.Now()
		for i := range txn.Changes {
			index = enc.appendChange(&cur.msgs, &txn.Changes[i], txn.Commit, index, now)
		}
		if !txn.More {
			index = 0
			if txn.End != nil {
				cur.end = txn.End
			}
		}
	}
	for in != nil || len(cur.msgs) > 0 || cur.end != nil {
		pending := len(cur.msgs) > 0 || cur.end != nil
		var send chan<- batch
		if pending && (in == nil || len(in) == 0 || len(cur.msgs) >= s.cfg.BatchMessages) {
			// Nothing more is ready (or the batch is full): send now.
			send = out
			cur.arenas = enc.retired
		}
		recv := in
		if len(cur.msgs) >= s.cfg.BatchMessages {
			recv = nil // full: wait for the writer
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case send <- cur:
			enc.retired = nil // now cur.arenas
			select {
			case msgs := <-free:
				cur = batch{msgs: msgs}
			default:
				cur = batch{msgs: make([]kafkago.Message, 0, s.cfg.BatchMessages)}
			}
		case txn, ok := <-recv:
			if !ok {
				in = nil
				continue
			}
			add(txn)
		}
	}
	return nil
}

// encoder builds messages. Keys and values of many messages share one
// buffer (an arena whose bytes are not written again while a message
// holds them), which saves an allocation or two per message.
type encoder struct {
	s       *Sink
	arena   []byte
	retired [][]byte                    // arenas filled up since the last batch was sent
	free    <-chan []byte               // arenas of written batches, to use again
	tables  map[*source.Table]*tableEnc // a reader shares one *Table per definition
	txn     txnJSON                     // the current transaction's part of the envelopes
}

// tableEnc is what the encoder keeps per table definition.
type tableEnc struct {
	topic string
	json  *tableJSON
}

const (
	arenaSize = 256 << 10
	// maxFreeArenas bounds the arenas kept for reuse (16 MB): a full batch
	// of typical events fills 30–40.
	maxFreeArenas = 64
)

// grab returns b[start:] as its own slice and keeps b as the arena.
func (e *encoder) grab(b []byte, start int) []byte {
	e.arena = b
	return b[start:len(b):len(b)]
}

func (e *encoder) room() {
	if cap(e.arena)-len(e.arena) >= 16<<10 {
		return
	}
	if cap(e.arena) == arenaSize { // not one grown for a huge event
		e.retired = append(e.retired, e.arena)
	}
	select {
	case a := <-e.free:
		e.arena = a
	default:
		e.arena = make([]byte, 0, arenaSize)
	}
}

func (e *encoder) key(t *source.Table, row source.Row) []byte {
	e.room()
	start := len(e.arena)
	return e.grab(AppendKey(e.arena, t, row), start)
}

// appendChange appends the messages of one change and returns the index of
// the transaction's next event. An update that changes the primary key is
// published as Debezium does: a delete of the old key (and its tombstone)
// and a create of the new one, each in its own key's partition.
func (e *encoder) appendChange(msgs *[]kafkago.Message, c *source.Change, commit time.Time, index int, now time.Time) int {
	ev := Event{Table: c.Table, Before: c.Before, After: c.After, TxID: c.TxnID, Commit: commit}
	switch c.Op {
	case source.Insert:
		ev.Op = OpCreate
		return e.appendEvent(msgs, &ev, e.key(c.Table, c.After), index, now)
	case source.Delete:
		ev.Op = OpDelete
		return e.appendEvent(msgs, &ev, e.key(c.Table, c.Before), index, now)
	}
	key := e.key(c.Table, c.After)
	if c.Before != nil && !hasUnchangedKey(c) {
		if old := e.key(c.Table, c.Before); string(old) != string(key) {
			del := Event{Table: c.Table, Op: OpDelete, Before: c.Before, TxID: c.TxnID, Commit: commit}
			index = e.appendEvent(msgs, &del, old, index, now)
			ins := Event{Table: c.Table, Op: OpCreate, After: c.After, TxID: c.TxnID, Commit: commit}
			return e.appendEvent(msgs, &ins, key, index, now)
		}
	}
	ev.Op = OpUpdate
	return e.appendEvent(msgs, &ev, key, index, now)
}

// hasUnchangedKey reports whether the before image lacks key columns (a
// PostgreSQL delete or key-only image never does; this guards odd images).
func hasUnchangedKey(c *source.Change) bool {
	for _, i := range c.Table.PK {
		if i >= len(c.Before) || c.Before[i] == nil {
			return true
		}
	}
	return false
}

func (e *encoder) appendEvent(msgs *[]kafkago.Message, ev *Event, key []byte, index int, now time.Time) int {
	ev.Index = index
	te, ok := e.tables[ev.Table]
	if !ok {
		if len(e.tables) >= 1024 {
			clear(e.tables) // old definitions after many schema changes
		}
		te = &tableEnc{topic: Topic(e.s.cfg.Kafka, ev.Table.Name), json: e.s.cfg.Origin.tableJSON(ev.Table)}
		e.tables[ev.Table] = te
	}
	topic := te.topic
	e.room()
	start := len(e.arena)
	e.txn.set(ev.TxID, ev.Commit, now)
	value := e.grab(te.json.appendEvent(e.arena, ev, &e.txn), start)
	*msgs = append(*msgs, kafkago.Message{Topic: topic, Key: key, Value: value})
	if ev.Op == OpDelete && e.s.cfg.Kafka.Tombstones {
		*msgs = append(*msgs, kafkago.Message{Topic: topic, Key: key})
	}
	return index + 1
}

// write publishes msgs and returns when the brokers acknowledged all of
// them. A message too large for the brokers stops the pipeline: retrying
// cannot help.
func (s *Sink) write(ctx context.Context, msgs []kafkago.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	err := s.writer.Write(ctx, msgs)
	if err == nil {
		return nil
	}
	var tooLarge kafkago.MessageTooLargeError
	if errors.As(err, &tooLarge) {
		m := tooLarge.Message
		return pipeline.Permanent(fmt.Errorf("kafka: event for key %s in topic %s is %d bytes, more than the writer's limit of %d: raise the brokers' message.max.bytes and regiond's limit, or store smaller rows",
			m.Key, m.Topic, len(m.Key)+len(m.Value), s.writer.BatchBytes()))
	}
	var werrs kafkago.WriteErrors
	if errors.As(err, &werrs) {
		for i, e := range werrs {
			if e != nil {
				return fmt.Errorf("kafka: publish to %s (%d of %d messages failed; the batch is published again): %w",
					msgs[i].Topic, werrs.Count(), len(msgs), brokerHint(s.cfg.Kafka, e))
			}
		}
	}
	return fmt.Errorf("kafka: publish %d messages: %w", len(msgs), brokerHint(s.cfg.Kafka, err))
}

// SnapshotMessages returns the events of rows read by backfill from table t
// (op "r", no before image), for topic <prefix>.<table>. Their source.pos
// is "<txid>#<n>", n counting from first; commit is the time of the read.
func SnapshotMessages(k config.Kafka, o Origin, t *source.Table, rows []source.Row, txid string, first int, commit time.Time) []kafkago.Message {
	topic := Topic(k, t.Name)
	tj := o.tableJSON(t)
	msgs := make([]kafkago.Message, 0, len(rows))
	var arena []byte
	var tx txnJSON
	tx.set(txid, commit, commit)
	for i, row := range rows {
		if cap(arena)-len(arena) < 16<<10 {
			arena = make([]byte, 0, arenaSize)
		}
		start := len(arena)
		arena = AppendKey(arena, t, row)
		key := arena[start:len(arena):len(arena)]
		ev := Event{Table: t, Op: OpSnapshot, After: row, TxID: txid, Index: first + i, Commit: commit}
		start = len(arena)
		arena = tj.appendEvent(arena, &ev, &tx)
		msgs = append(msgs, kafkago.Message{Topic: topic, Key: key, Value: arena[start:len(arena):len(arena)]})
	}
	return msgs
}

// Publish writes msgs and returns once the brokers acknowledged them all.
func Publish(ctx context.Context, w *Writer, msgs []kafkago.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	if err := w.Write(ctx, msgs); err != nil {
		return fmt.Errorf("kafka: publish %d messages: %w", len(msgs), err)
	}
	return nil
}
