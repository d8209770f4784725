package postgres

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pglogrepl"
	pgxconn "github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/regiond/regiond/checkpoint"
	"github.com/regiond/regiond/source"
)

// stream is one START_REPLICATION session. A receiving goroutine reads the
// connection, decodes each message where pgconn read it (no copy: a
// decoded row's values are copies, and nothing keeps a reference into a
// message once handle returns) and hands whole transactions (or chunks of
// large ones) to the sink. The run loop meanwhile sends standby status
// updates on time, also while the receiver waits for a slow sink or for
// the server. So there is one handoff per transaction, not one per read
// and another per transaction.
//
// Both goroutines write to the connection (status updates), serialized by
// mu; the receiver alone reads from it, and concurrent reads and writes of
// one connection are safe.
type stream struct {
	r        *Reader
	conn     *pgxconn.PgConn
	out      chan<- source.Txn
	interval time.Duration

	// The receiving goroutine's own.
	dec  *decoder
	rows rowScratch // the row message being decoded

	// Written by the receiving goroutine, read by status.
	received    atomic.Uint64 // how far the server has sent (write position)
	idle        atomic.Uint64 // flush position earned while nothing was pending
	lastSentEnd atomic.Uint64 // End of the last transaction sent to out
	inTxn       atomic.Bool   // a transaction has begun and not committed
	messages    atomic.Uint64 // CopyData messages received (lowat.go)

	mu         sync.Mutex // serializes status updates
	lastStatus time.Time
	reported   pglogrepl.LSN // flush position of the last status update
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
	tick := time.NewTicker(min(s.interval, ackReportEvery))
	defer tick.Stop()

	if err := s.status(true); err != nil {
		return err
	}

	rctx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		errc <- s.receive(rctx)
	}()
	if l := newLowatControl(s.conn.Conn(), &s.messages); l != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.run(rctx)
		}()
	}
	defer func() {
		cancel()
		wg.Wait()
	}()

	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-errc:
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		case <-tick.C:
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

// receive reads and decodes the replication stream until it fails or ctx
// ends.
func (s *stream) receive(ctx context.Context) error {
	// ReceiveMessage with a cancellable context arms and disarms a context
	// watcher per message (one message per row: a tenth of the reader's
	// CPU). Instead, ctx's end interrupts the read once, through the
	// connection's read deadline, which is cleared again on the way out.
	interrupted := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		_ = s.conn.Conn().SetReadDeadline(time.Now())
		close(interrupted)
	})
	defer func() {
		if !stop() {
			<-interrupted
			_ = s.conn.Conn().SetReadDeadline(time.Time{})
		}
	}()
	wireErr := func(err error) error {
		return s.r.classify(fmt.Errorf("region %s: replication stream of slot %s: %w", s.r.cfg.Region, s.r.cfg.Slot, err))
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		msg, err := s.conn.ReceiveMessage(context.Background())
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("%w (%w)", ctx.Err(), err)
			}
			return wireErr(err)
		}
		switch m := msg.(type) {
		case *pgproto3.CopyData:
			s.messages.Add(1)
			// m.Data is pgconn's read buffer, valid until the next
			// ReceiveMessage: handle is done with it when it returns.
			if err := s.handle(ctx, m.Data); err != nil {
				return err
			}
		case *pgproto3.ErrorResponse:
			return wireErr(pgxconn.ErrorResponseToPgError(m))
		case *pgproto3.CopyDone:
			return wireErr(errors.New("the server ended the replication stream"))
		}
	}
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
		s.advanceReceived(ka.ServerWALEnd)
		if s.caughtUp() {
			// Every message before this keepalive has been processed, no
			// transaction is open and every one sent was acknowledged:
			// nothing before the server's send position is waiting for a
			// sink, so the slot may move there (WAL of other tables).
			if uint64(ka.ServerWALEnd) > s.idle.Load() {
				s.idle.Store(uint64(ka.ServerWALEnd))
			}
		}
		if ka.ReplyRequested {
			return s.status(true)
		}
	case pglogrepl.XLogDataByteID:
		xld, err := pglogrepl.ParseXLogData(data[1:])
		if err != nil {
			return fmt.Errorf("region %s: xlog data: %w", s.r.cfg.Region, err)
		}
		s.advanceReceived(xld.WALStart + pglogrepl.LSN(len(xld.WALData)))
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
		err = s.dec.handle(ctx, msg)
		if open := s.dec.open(); open != s.inTxn.Load() {
			s.inTxn.Store(open)
		}
		return err
	}
	return nil
}

// advanceReceived records that the server has sent up to lsn. Only the
// receiving goroutine writes received.
func (s *stream) advanceReceived(lsn pglogrepl.LSN) {
	if uint64(lsn) > s.received.Load() {
		s.received.Store(uint64(lsn))
	}
}

// caughtUp reports whether nothing read so far waits for a sink.
func (s *stream) caughtUp() bool {
	return !s.inTxn.Load() && s.lastSentEnd.Load() <= s.r.acked.Load()
}

// flushPos is the flush position to report: only ever what the sinks made
// durable (or WAL that held nothing for them).
func (s *stream) flushPos() pglogrepl.LSN {
	return pglogrepl.LSN(max(s.r.acked.Load(), s.idle.Load()))
}

// status sends a standby status update when one is due: always if force,
// when the interval has passed, or when the flush position advanced and the
// last update is more than ackReportEvery old.
func (s *stream) status(force bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	since := now.Sub(s.lastStatus)
	flush := s.flushPos()
	due := since >= s.interval
	advanced := flush > s.reported && since >= min(s.interval, ackReportEvery)
	if !force && !due && !advanced {
		return nil
	}
	ssu := pglogrepl.StandbyStatusUpdate{
		WALWritePosition: max(pglogrepl.LSN(s.received.Load()), flush),
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

// send hands txn to the sink; the run loop keeps the connection alive
// with standby status updates while the sink is slow.
func (s *stream) send(ctx context.Context, txn source.Txn) error {
	select {
	case s.out <- txn:
		if end, ok := txn.End.(checkpoint.LSN); ok {
			s.lastSentEnd.Store(uint64(end))
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
