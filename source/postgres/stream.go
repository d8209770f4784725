package postgres

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	pgxconn "github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/regiond/regiond/checkpoint"
	"github.com/regiond/regiond/source"
)

// wireMsg is one message of the replication stream, or the error that
// ended it.
type wireMsg struct {
	data []byte  // CopyData payload, owned
	buf  *[]byte // data's buffer, for putBuf
	err  error
}

// stream is one START_REPLICATION session. Its run loop is the only
// goroutine that decodes and writes; a receiver goroutine only reads from
// the connection and hands messages over, so that the loop can keep sending
// standby status updates while it waits for the sink.
type stream struct {
	r        *Reader
	conn     *pgxconn.PgConn
	out      chan<- source.Txn
	interval time.Duration
	dec      *decoder
	tick     *time.Ticker
	rows     rowScratch // the row message being decoded

	received    pglogrepl.LSN  // how far the server has sent (write position)
	idle        pglogrepl.LSN  // flush position earned while nothing was pending
	lastSentEnd checkpoint.LSN // End of the last transaction sent to out
	lastStatus  time.Time
	reported    pglogrepl.LSN // flush position of the last status update
}

func newStream(r *Reader, conn *pgxconn.PgConn, out chan<- source.Txn, from checkpoint.LSN, interval time.Duration) *stream {
	// Everything up to from is durable in the sinks: it is the checkpoint.
	r.Ack(context.Background(), from)
	s := &stream{r: r, conn: conn, out: out, interval: interval}
	s.dec = &decoder{
		region: r.cfg.Region,
		schema: r.cfg.Schema,
		tables: r.cfg.Tables,
		chunk:  r.cfg.ChunkChanges,
		from:   from,
		logger: r.logger,
		rels:   map[uint32]*relation{},
		lookup: r.lookupRelation,
		emit:   s.send,
	}
	return s
}

func (s *stream) run(ctx context.Context) error {
	tickEvery := min(s.interval, ackReportEvery)
	s.tick = time.NewTicker(tickEvery)
	defer s.tick.Stop()

	msgs := make(chan []wireMsg, 2)
	rctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		receive(rctx, s.conn, msgs)
	}()
	defer func() {
		cancel()
		wg.Wait()
	}()

	if err := s.status(true); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case ms := <-msgs:
			for _, m := range ms {
				if m.err != nil {
					if ctx.Err() != nil {
						return ctx.Err()
					}
					return s.r.classify(fmt.Errorf("region %s: replication stream of slot %s: %w", s.r.cfg.Region, s.r.cfg.Slot, m.err))
				}
				err := s.handle(ctx, m.data)
				putBuf(m.buf)
				if err != nil {
					return err
				}
			}
		case <-s.tick.C:
			if err := s.status(false); err != nil {
				return err
			}
		case <-s.r.ackNotify:
			if err := s.status(false); err != nil {
				return err
			}
		}
	}
}

// receive reads the replication stream into msgs until it fails or ctx
// ends. It never writes to the connection: the run loop does, and
// concurrent reads and writes of one connection are safe.
//
// Messages are handed over in batches: one message per row, each a
// channel handoff and often a goroutine wakeup, cost the reader more than
// decoding some of them. A batch takes the messages already read from the
// socket (pgconn's read buffer), up to receiveBatch of them or
// receiveBatchBytes; a message is
// never held back waiting for data that has not arrived.
func receive(ctx context.Context, conn *pgxconn.PgConn, msgs chan<- []wireMsg) {
	var (
		batch []wireMsg
		size  int // bytes in batch
	)
	flush := func() bool {
		if len(batch) == 0 {
			return true
		}
		select {
		case msgs <- batch:
			batch, size = nil, 0
			return true
		case <-ctx.Done():
			return false
		}
	}
	fail := func(err error) {
		batch = append(batch, wireMsg{err: err})
		flush()
	}
	// ReceiveMessage with a cancellable context arms and disarms a context
	// watcher per message (one message per row: a tenth of the reader's
	// CPU). Instead, ctx's end interrupts the read once, through the
	// connection's read deadline, which is cleared again on the way out.
	interrupted := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		_ = conn.Conn().SetReadDeadline(time.Now())
		close(interrupted)
	})
	defer func() {
		if !stop() {
			<-interrupted
			_ = conn.Conn().SetReadDeadline(time.Time{})
		}
	}()
	for {
		if ctx.Err() != nil {
			fail(ctx.Err())
			return
		}
		msg, err := conn.ReceiveMessage(context.Background())
		if err != nil {
			if ctx.Err() != nil {
				err = fmt.Errorf("%w (%w)", ctx.Err(), err)
			}
			fail(err)
			return
		}
		switch m := msg.(type) {
		case *pgproto3.CopyData:
			if batch == nil {
				batch = make([]wireMsg, 0, receiveBatch)
			}
			b := getBuf(len(m.Data))
			*b = append(*b, m.Data...)
			batch = append(batch, wireMsg{data: *b, buf: b})
			size += len(m.Data)
		case *pgproto3.ErrorResponse:
			fail(pgxconn.ErrorResponseToPgError(m))
			return
		case *pgproto3.CopyDone:
			fail(errors.New("the server ended the replication stream"))
			return
		}
		// Nothing more read from the socket yet: the next ReceiveMessage
		// may wait, so what was read goes now.
		if len(batch) >= receiveBatch || size >= receiveBatchBytes || conn.Frontend().ReadBufferLen() == 0 {
			if !flush() {
				return
			}
		}
	}
}

// receiveBatch and receiveBatchBytes bound the messages handed over at
// once (and so, with the channel's capacity, the memory they hold).
const (
	receiveBatch      = 64
	receiveBatchBytes = 256 << 10
)

// bufs recycles the buffers that receive copies messages into: one message
// per row, each handed to the run loop, would otherwise be an allocation
// per row (and garbage that makes the collector run more often over a
// heap full of queued transactions). handle keeps no reference into a
// message once it returns: a decoded row's values are copies.
var bufs sync.Pool

// maxPooled bounds the buffers kept for reuse.
const maxPooled = 64 << 10

// getBuf returns an empty buffer with room for n bytes.
func getBuf(n int) *[]byte {
	if b, ok := bufs.Get().(*[]byte); ok && cap(*b) >= n {
		*b = (*b)[:0]
		return b
	}
	b := make([]byte, 0, max(n, 512))
	return &b
}

func putBuf(b *[]byte) {
	if b == nil || cap(*b) > maxPooled {
		return
	}
	bufs.Put(b)
}

// handle processes one CopyData message of the stream.
func (s *stream) handle(ctx context.Context, data []byte) error {
	if len(data) == 0 {
		return nil
	}
	switch data[0] {
	case pglogrepl.PrimaryKeepaliveMessageByteID:
		ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(data[1:])
		if err != nil {
			return fmt.Errorf("region %s: keepalive: %w", s.r.cfg.Region, err)
		}
		s.received = max(s.received, ka.ServerWALEnd)
		if s.caughtUp() {
			// Every message before this keepalive has been processed, no
			// transaction is open and every one sent was acknowledged:
			// nothing before the server's send position is waiting for a
			// sink, so the slot may move there (WAL of other tables).
			s.idle = max(s.idle, ka.ServerWALEnd)
		}
		if ka.ReplyRequested {
			return s.status(true)
		}
	case pglogrepl.XLogDataByteID:
		xld, err := pglogrepl.ParseXLogData(data[1:])
		if err != nil {
			return fmt.Errorf("region %s: xlog data: %w", s.r.cfg.Region, err)
		}
		s.received = max(s.received, xld.WALStart+pglogrepl.LSN(len(xld.WALData)))
		if len(xld.WALData) == 0 {
			return nil
		}
		var msg pglogrepl.Message
		switch xld.WALData[0] {
		case 'I', 'U', 'D':
			// One message per row: parsed without a copy of each value.
			msg, err = s.rows.parse(xld.WALData)
		default:
			msg, err = pglogrepl.ParseV2(xld.WALData, false)
		}
		if err != nil {
			return fmt.Errorf("region %s: decode pgoutput message %q: %w", s.r.cfg.Region, xld.WALData[0], err)
		}
		return s.dec.handle(ctx, msg)
	}
	return nil
}

// caughtUp reports whether nothing read so far waits for a sink.
func (s *stream) caughtUp() bool {
	return !s.dec.open() && uint64(s.lastSentEnd) <= s.r.acked.Load()
}

// flushPos is the flush position to report: only ever what the sinks made
// durable (or WAL that held nothing for them).
func (s *stream) flushPos() pglogrepl.LSN {
	return max(pglogrepl.LSN(s.r.acked.Load()), s.idle)
}

// status sends a standby status update when one is due: always if force,
// when the interval has passed, or when the flush position advanced and the
// last update is more than ackReportEvery old.
func (s *stream) status(force bool) error {
	now := time.Now()
	since := now.Sub(s.lastStatus)
	flush := s.flushPos()
	due := since >= s.interval
	advanced := flush > s.reported && since >= min(s.interval, ackReportEvery)
	if !force && !due && !advanced {
		return nil
	}
	ssu := pglogrepl.StandbyStatusUpdate{
		WALWritePosition: max(s.received, flush),
		WALFlushPosition: flush,
		WALApplyPosition: flush,
		ClientTime:       now,
		// While caught up, ask for a keepalive: its send position lets
		// an idle slot advance over WAL that holds nothing for us.
		ReplyRequested: due && !force && s.caughtUp(),
	}
	if flush == 0 {
		// pglogrepl would report the write position as flushed.
		ssu.WALWritePosition = 0
	}
	if err := pglogrepl.SendStandbyStatusUpdate(context.Background(), s.conn, ssu); err != nil {
		return fmt.Errorf("region %s: send standby status update: %w", s.r.cfg.Region, err)
	}
	s.lastStatus, s.reported = now, flush
	return nil
}

// send hands txn to the sink. While the sink is slow it keeps the
// connection alive with standby status updates and reports acknowledgements.
func (s *stream) send(ctx context.Context, txn source.Txn) error {
	for {
		select {
		case s.out <- txn:
			if end, ok := txn.End.(checkpoint.LSN); ok {
				s.lastSentEnd = end
			}
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-s.tick.C:
			if err := s.status(false); err != nil {
				return err
			}
		case <-s.r.ackNotify:
			if err := s.status(false); err != nil {
				return err
			}
		}
	}
}
