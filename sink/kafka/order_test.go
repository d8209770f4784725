package kafka

import (
	"context"
	"strconv"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/regiond/regiond/config"
	"github.com/regiond/regiond/internal/kafkatest"
)

// TestFailedBatchStopsItsWrite: one write's messages for one partition
// span three kafka-go batches, and the broker rejects the first with a
// non-retriable error. kafka-go would go on to send the other two; the
// Writer must not, so that after the write is published again (as the sink
// does from its saved position) the first copy of every event comes in
// order.
func TestFailedBatchStopsItsWrite(t *testing.T) {
	kafkatest.RequireKcat(t)
	const topic = "order.items"
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, topic))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	broker := c.ListenAddrs()[0]
	produces := 0
	c.ControlKey(int16(kmsg.Produce), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		produces++
		req := kr.(*kmsg.ProduceRequest)
		resp := req.ResponseKind().(*kmsg.ProduceResponse)
		resp.SetVersion(req.GetVersion())
		for _, rt := range req.Topics {
			st := kmsg.NewProduceResponseTopic()
			st.Topic = rt.Topic
			for _, rp := range rt.Partitions {
				sp := kmsg.NewProduceResponseTopicPartition()
				sp.Partition = rp.Partition
				sp.ErrorCode = 87 // INVALID_RECORD: not retriable
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true // handled once: later requests reach the broker
	})

	transport, err := NewTransport(config.Kafka{Brokers: []string{broker}})
	if err != nil {
		t.Fatal(err)
	}
	defer transport.CloseIdleConnections()
	w := NewWriter(config.Kafka{Brokers: []string{broker}}, transport)
	defer w.Close()
	const n = 10000 // batches of 4096, 4096 and 1808 messages
	if n <= 2*w.w.BatchSize {
		t.Fatalf("%d messages do not make three batches of %d", n, w.w.BatchSize)
	}
	msgs := make([]kafkago.Message, n)
	for i := range msgs {
		msgs[i] = kafkago.Message{Topic: topic, Key: []byte("k"), Value: []byte(strconv.Itoa(i))}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := w.Write(ctx, msgs); err == nil {
		t.Fatal("first write succeeded; want the rejected batch's error")
	}
	if produces != 1 {
		t.Fatalf("%d produce requests reached the broker's control; want the one it rejected", produces)
	}
	if err := w.Write(ctx, msgs); err != nil {
		t.Fatalf("write again: %v", err)
	}

	recs := kafkatest.ReadTopic(t, broker, topic)
	if len(recs) != n {
		t.Errorf("the topic holds %d messages, want %d: a batch after the failed one went out", len(recs), n)
	}
	for i, r := range recs {
		if i >= n || string(r.Value) != strconv.Itoa(i) {
			t.Fatalf("message %d of the topic is %q, want %d", i, r.Value, i)
		}
	}
}
