package server_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/quicpush/quicpush/client"
	"github.com/quicpush/quicpush/server"
	"github.com/quicpush/quicpush/stream"
	pb "github.com/quicpush/quicpush/stream/quicpushpb"
)

// BenchmarkConfirmAggregation publishes a message to 1000 subscribers (each
// its own user and connection) with a confirmation request; the subscribers
// handle it over about 2 s (handler i takes i%100 * 20 ms), like phones
// answering at their own pace. It reports what the publisher received about
// it (progress frames, bytes) beside the naive design's one frame per
// recipient, and the time until the last confirmation arrived.
func BenchmarkConfirmAggregation(b *testing.B) {
	const recipients = 1000
	ts := runServer(b, server.Config{PublishRate: -1})
	ctx := context.Background()
	for i := range recipients {
		delay := time.Duration(i%100) * 20 * time.Millisecond
		c := dial(b, ts, client.Config{Token: fmt.Sprintf("student%04d", i)})
		_, err := c.Session("class").Subscribe(ctx, "room/bench", client.SubscribeOptions{}, func(client.Message) error {
			time.Sleep(delay)
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	pub := dial(b, ts, client.Config{Token: "teacher"}).Session("class")
	frames := func() float64 {
		return metricValue(b, ts.Metrics, "quicpush_confirm_frames_total", "type", "progress") +
			metricValue(b, ts.Metrics, "quicpush_confirm_frames_total", "type", "report")
	}
	bytes := func() float64 { return metricValue(b, ts.Metrics, "quicpush_confirm_frame_bytes_total") }
	var naiveBytes int
	frames0, bytes0 := frames(), bytes()
	var updates int
	var took time.Duration
	for b.Loop() {
		start := time.Now()
		res, err := pub.Publish(ctx, "room/bench", []byte("quiz starts now"), client.PublishOptions{
			Confirm: &client.ConfirmOptions{Deadline: time.Minute, OnUpdate: func(client.ConfirmStatus) { updates++ }},
		})
		if err != nil {
			b.Fatal(err)
		}
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		st, err := res.Confirmation.Wait(wctx)
		cancel()
		if err != nil || !st.Complete() || st.Total != recipients {
			b.Fatalf("%+v: %v", st, err)
		}
		took += time.Since(start)
		// The naive design: one frame per recipient, naming it.
		for i := range recipients {
			f, _ := stream.AppendFrame(nil, &pb.Frame{Body: &pb.Frame_ConfirmProgress{ConfirmProgress: &pb.ConfirmProgress{
				RequestId: 1, Channel: "room/bench", Epoch: res.Epoch, Seq: res.Seq, Confirmed: uint32(i + 1), Total: recipients,
			}}})
			naiveBytes += len(f) + 2 + len("student0000") // + a user name field
		}
	}
	n := float64(b.N)
	b.ReportMetric((frames()-frames0)/n, "frames/op")
	b.ReportMetric((bytes()-bytes0)/n, "bytes/op")
	b.ReportMetric(float64(updates)/n, "sdk-updates/op")
	b.ReportMetric(recipients, "naive-frames/op")
	b.ReportMetric(float64(naiveBytes)/n, "naive-bytes/op")
	b.ReportMetric(float64(took.Milliseconds())/n, "ms-to-all-confirmed")
}
