package kafka

import (
	"context"
	"errors"
	"net"
	"sync/atomic"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"

	"github.com/regiond/regiond/config"
)

// Writer is the writer regiond publishes with: kafka-go's, made fail-stop
// so that a failed write cannot reorder a key's events.
//
// kafka-go splits one WriteMessages call into batches of at most BatchSize
// messages or BatchBytes bytes per partition, and sends a partition's
// batches one after another. When a batch fails for good (a non-retriable
// error, or MaxAttempts retriable ones) it goes on with the partition's
// next batch. The call fails and regiond publishes again from its last
// saved position, so a consumer would read the later batch's events, then
// the earlier batch's events for the first time, then the later ones again:
// one that drops duplicates by source.pos would keep an older event of a
// key after a newer one.
//
// So each kafka-go writer sends through an orderGuard. The writer's
// Completion marks the guard failed as soon as a batch fails, in the
// partition's goroutine before it takes its next batch, and a failed guard
// refuses every produce request from then on. A write that fails retires
// its kafka-go writer: the next write uses a new one, and only once every
// batch of the old one has ended (Close waits for them; the refused ones end
// at once). What a failed write leaves in each partition is therefore a
// prefix of what it meant to write there, nothing of it can land later, and
// the replay that follows repeats that prefix before anything new: per key,
// the first copy of every event comes in commit order.
//
// A Writer is used by one goroutine at a time.
type Writer struct {
	k         config.Kafka
	transport kafkago.RoundTripper
	w         *kafkago.Writer
	// retired is closed once the writer retired by the last failed write
	// has ended all its batches (nil: nothing to wait for).
	retired chan struct{}
}

// NewWriter returns the writer regiond publishes with, over transport.
func NewWriter(k config.Kafka, transport *kafkago.Transport) *Writer {
	w := &Writer{k: k, transport: transport}
	w.w = w.newKafkaGo()
	return w
}

func (w *Writer) newKafkaGo() *kafkago.Writer {
	g := &orderGuard{next: w.transport}
	kw := NewKafkaGoWriter(w.k, g)
	kw.Completion = g.completion
	return kw
}

// BatchBytes is the largest batch, and so the largest message, the writer
// sends.
func (w *Writer) BatchBytes() int64 { return w.w.BatchBytes }

// Write publishes msgs and returns once the brokers acknowledged them all.
func (w *Writer) Write(ctx context.Context, msgs []kafkago.Message) error {
	if w.retired != nil {
		select {
		case <-w.retired:
			w.retired = nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	err := w.w.WriteMessages(ctx, msgs...)
	if err == nil {
		return nil
	}
	// Retire the writer, also when ctx ended: batches it still holds may
	// not go out once a later write has begun.
	old := w.w
	old.Transport.(*orderGuard).failed.Store(true)
	done := make(chan struct{})
	go func() {
		old.Close()
		close(done)
	}()
	w.retired = done
	w.w = w.newKafkaGo()
	return err
}

// Close ends the writer: it waits for the batches under way.
func (w *Writer) Close() error {
	err := w.w.Close()
	if w.retired != nil {
		<-w.retired
	}
	return err
}

// errEarlierBatchFailed is what a failed guard answers a produce request
// with. It is not temporary, so kafka-go does not retry it.
var errEarlierBatchFailed = errors.New("not sent: an earlier batch of this write failed (the write is published again from the last saved position)")

// orderGuard passes requests to next, and refuses produce requests once it
// has failed.
type orderGuard struct {
	next   kafkago.RoundTripper
	failed atomic.Bool
}

func (g *orderGuard) RoundTrip(ctx context.Context, addr net.Addr, req kafkago.Request) (kafkago.Response, error) {
	if req.ApiKey() == protocol.Produce && g.failed.Load() {
		return nil, errEarlierBatchFailed
	}
	return g.next.RoundTrip(ctx, addr, req)
}

// completion is the kafka-go writer's Completion, called for each batch
// once it is written or abandoned, before its partition's next batch.
func (g *orderGuard) completion(_ []kafkago.Message, err error) {
	if err != nil {
		g.failed.Store(true)
	}
}
