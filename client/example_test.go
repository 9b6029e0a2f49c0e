package client_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/quicpush/quicpush/certs"
	"github.com/quicpush/quicpush/client"
	"github.com/quicpush/quicpush/server"
	"github.com/quicpush/quicpush/store/memstore"
)

// exampleServer starts an in-process server on 127.0.0.1 for the examples
// and returns its address and a TLS config trusting its dev CA.
func exampleServer() (addr string, tlsConf *tls.Config, stop func()) {
	dir, _ := os.MkdirTemp("", "quicpush-example")
	dev, err := certs.EnsureDev(dir, nil)
	if err != nil {
		panic(err)
	}
	rl, _ := certs.Load(dev.Cert, dev.Key)
	pool, _ := certs.CAPool(dev.CA)
	srv, _ := server.New(server.Config{
		Store:     memstore.New(memstore.Options{}),
		TLSConfig: &tls.Config{GetCertificate: rl.GetCertificate},
		Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	pc, _ := net.ListenPacket("udp", "127.0.0.1:0")
	a, err := srv.Listen(pc)
	if err != nil {
		panic(err)
	}
	return a.String(), &tls.Config{RootCAs: pool}, func() {
		srv.Close()
		pc.Close()
		os.RemoveAll(dir)
	}
}

func Example() {
	addr, tlsConf, stop := exampleServer()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))

	student, err := client.Dial(ctx, addr, client.Config{TLSConfig: tlsConf, Token: "student-1", Logger: quiet})
	if err != nil {
		panic(err)
	}
	defer student.Close()
	got := make(chan client.Message)
	_, err = student.Session("classroom").Subscribe(ctx, "room/math-101", client.SubscribeOptions{},
		func(m client.Message) error { got <- m; return nil })
	if err != nil {
		panic(err)
	}

	teacher, err := client.Dial(ctx, addr, client.Config{TLSConfig: tlsConf, Token: "teacher", Logger: quiet})
	if err != nil {
		panic(err)
	}
	defer teacher.Close()
	res, err := teacher.Session("classroom").Publish(ctx, "room/math-101", []byte("quiz starts now"),
		client.PublishOptions{ID: "quiz-1"})
	if err != nil {
		panic(err)
	}
	fmt.Println("stored as seq", res.Seq)

	m := <-got
	fmt.Printf("student got seq %d from %s: %s\n", m.Seq, m.From, m.Data)
	// Output:
	// stored as seq 1
	// student got seq 1 from teacher: quiz starts now
}

func ExampleSession_Publish() {
	addr, tlsConf, stop := exampleServer()
	defer stop()
	ctx := context.Background()
	c, err := client.Dial(ctx, addr, client.Config{TLSConfig: tlsConf, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		panic(err)
	}
	defer c.Close()
	sess := c.Session("notify")
	// The same client message id twice (say, a retry after a crash) is
	// stored once: the second publish returns the original seq.
	first, _ := sess.Publish(ctx, "user/alice", []byte("exam moved to 10:00"), client.PublishOptions{ID: "notice-7"})
	again, _ := sess.Publish(ctx, "user/alice", []byte("exam moved to 10:00"), client.PublishOptions{ID: "notice-7"})
	fmt.Println(first.Seq, again.Seq, again.Duplicate)
	// Output: 1 1 true
}

func ExampleClient_History() {
	addr, tlsConf, stop := exampleServer()
	defer stop()
	ctx := context.Background()
	c, err := client.Dial(ctx, addr, client.Config{TLSConfig: tlsConf, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		panic(err)
	}
	defer c.Close()
	for _, text := range []string{"sign in", "quiz card", "stop exercise"} {
		c.Session("classroom").Publish(ctx, "room/physics", []byte(text), client.PublishOptions{})
	}
	msgs, _, err := c.History(ctx, "room/physics", 2, 3)
	if err != nil {
		panic(err)
	}
	for _, m := range msgs {
		fmt.Println(m.Seq, string(m.Data))
	}
	// Output:
	// 2 quiz card
	// 3 stop exercise
}

func ExampleOpenFileStore() {
	// A FileStore keeps handled positions across restarts: a subscriber
	// started again with the same file goes on right after the last
	// message its handler returned from.
	dir, _ := os.MkdirTemp("", "quicpush-state")
	defer os.RemoveAll(dir)
	st, err := client.OpenFileStore(dir + "/positions.json")
	if err != nil {
		panic(err)
	}
	st.Save("room/math-101", client.Position{Epoch: 42, Seq: 17})
	again, _ := client.OpenFileStore(dir + "/positions.json")
	pos, ok, _ := again.Load("room/math-101")
	fmt.Println(pos.Seq, ok)
	// Output: 17 true
}
