package client_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/quicpush/quicpush/certs"
	"github.com/quicpush/quicpush/client"
	"github.com/quicpush/quicpush/server"
	"github.com/quicpush/quicpush/store/memstore"
)

// BenchmarkDeliver measures the SDK's cost of taking a push to the
// handler: one subscriber, pushes published in batches of 100 through the
// server's API. Read the client's share in a CPU profile
// (-cpuprofile, focus=client); allocs/op are per delivered message.
func BenchmarkDeliver(b *testing.B) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	dev, err := certs.EnsureDev(b.TempDir(), nil)
	if err != nil {
		b.Fatal(err)
	}
	rl, err := certs.Load(dev.Cert, dev.Key)
	if err != nil {
		b.Fatal(err)
	}
	srv, err := server.New(server.Config{Store: memstore.New(memstore.Options{}), TLSConfig: &tls.Config{GetCertificate: rl.GetCertificate},
		Logger: quiet, Registerer: prometheus.NewRegistry(), PublishRate: -1})
	if err != nil {
		b.Fatal(err)
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr, err := srv.Listen(pc)
	if err != nil {
		b.Fatal(err)
	}
	defer pc.Close()
	defer srv.Close()
	pool, err := certs.CAPool(dev.CA)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	c, err := client.Dial(ctx, addr.String(), client.Config{TLSConfig: &tls.Config{RootCAs: pool}, Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	var delivered atomic.Int64
	if _, err := c.Session("s").Subscribe(ctx, "room/bench", client.SubscribeOptions{}, func(client.Message) error {
		delivered.Add(1)
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	const batch = 100
	reqs := make([]server.PublishRequest, batch)
	for i := range reqs {
		reqs[i] = server.PublishRequest{Channel: "room/bench", Data: make([]byte, 100)}
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if i%batch == 0 {
			if _, err := srv.Publish(ctx, "publisher", reqs); err != nil {
				b.Fatal(err)
			}
		}
	}
	want := int64((b.N + batch - 1) / batch * batch)
	deadline := time.Now().Add(30 * time.Second)
	for delivered.Load() < want && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if got := delivered.Load(); got < want {
		b.Fatal(fmt.Sprintf("%d of %d delivered", got, want))
	}
}
