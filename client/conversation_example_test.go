package client_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/quicpush/quicpush/client"
)

// Alice sends Bob a message while he is offline, and learns that it was
// delivered once Bob's client has handled it.
func ExampleClient_Send() {
	addr, tlsConf, stop := exampleServer()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))

	alice, err := client.Dial(ctx, addr, client.Config{TLSConfig: tlsConf, Token: "alice", Logger: quiet})
	if err != nil {
		panic(err)
	}
	defer alice.Close()
	receipts := make(chan client.Receipt, 1)
	_, err = alice.Inbox(ctx, client.InboxOptions{
		OnMessage: func(client.ChatMessage) error { return nil },
		OnReceipt: func(r client.Receipt) error { receipts <- r; return nil },
	})
	if err != nil {
		panic(err)
	}
	res, err := alice.Send(ctx, "bob", []byte("are you coming?"), client.SendOptions{ID: "msg-1"})
	if err != nil {
		panic(err)
	}
	fmt.Println("stored in", res.Channel, "as seq", res.Seq)

	bob, err := client.Dial(ctx, addr, client.Config{TLSConfig: tlsConf, Token: "bob", Logger: quiet})
	if err != nil {
		panic(err)
	}
	defer bob.Close()
	_, err = bob.Inbox(ctx, client.InboxOptions{
		OnMessage: func(m client.ChatMessage) error {
			fmt.Printf("bob got %q from %s\n", m.Data, m.From)
			return nil
		},
	})
	if err != nil {
		panic(err)
	}
	r := <-receipts
	fmt.Println(r.ID, r.Kind, "to", r.Peer)
	// Output:
	// stored in user/bob/inbox as seq 1
	// bob got "are you coming?" from alice
	// msg-1 delivered to bob
}

// A client coming back learns first how much waits, then gets it in pages.
func ExampleClient_Inbox() {
	addr, tlsConf, stop := exampleServer()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))

	teacher, err := client.Dial(ctx, addr, client.Config{TLSConfig: tlsConf, Token: "teacher", Logger: quiet})
	if err != nil {
		panic(err)
	}
	defer teacher.Close()
	for i := 1; i <= 300; i++ {
		if _, err := teacher.Send(ctx, "student-7", fmt.Appendf(nil, "note %d", i), client.SendOptions{ID: fmt.Sprint("note-", i)}); err != nil {
			panic(err)
		}
	}

	student, err := client.Dial(ctx, addr, client.Config{TLSConfig: tlsConf, Token: "student-7", Logger: quiet})
	if err != nil {
		panic(err)
	}
	defer student.Close()
	w, err := student.Waiting(ctx, "user/student-7/inbox")
	if err != nil {
		panic(err)
	}
	fmt.Printf("%d waiting, pages of %d\n", w[0].Count, w[0].PageSize)
	recent, err := student.Page(ctx, "user/student-7/inbox", client.PageOptions{Newest: true, Limit: 1})
	if err != nil {
		panic(err)
	}
	fmt.Printf("newest: %s\n", recent.Messages[0].ID)

	all := make(chan struct{})
	n := 0
	_, err = student.Inbox(ctx, client.InboxOptions{
		OnMessage: func(m client.ChatMessage) error {
			if n++; n == 300 {
				close(all)
			}
			return nil
		},
	})
	if err != nil {
		panic(err)
	}
	<-all
	fmt.Println("handled", n, "in", student.Stats().Pages-1, "pages") // the preview was one page too
	// Output:
	// 300 waiting, pages of 200
	// newest: note-300
	// handled 300 in 2 pages
}
