package client_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/quicpush/quicpush/client"
)

// A teacher pushes "quiz starts now" and learns which students have it: two
// students handle it at once, the third never returns from its handler, so
// at the deadline the report names it.
func ExampleSession_Publish_confirm() {
	addr, tlsConf, stop := exampleServer()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))

	busy := make(chan struct{})
	for _, name := range []string{"ann", "bob", "cy"} {
		student, err := client.Dial(ctx, addr, client.Config{TLSConfig: tlsConf, Token: name, Logger: quiet})
		if err != nil {
			panic(err)
		}
		defer student.Close()
		handler := func(client.Message) error { return nil }
		if name == "cy" {
			handler = func(client.Message) error { <-busy; return nil }
		}
		if _, err := student.Session("classroom").Subscribe(ctx, "room/math-101", client.SubscribeOptions{}, handler); err != nil {
			panic(err)
		}
	}
	defer close(busy) // runs first: the busy handler returns before the Closes

	teacher, err := client.Dial(ctx, addr, client.Config{TLSConfig: tlsConf, Token: "teacher", Logger: quiet})
	if err != nil {
		panic(err)
	}
	defer teacher.Close()
	res, err := teacher.Session("classroom").Publish(ctx, "room/math-101", []byte("quiz starts now"), client.PublishOptions{
		Confirm: &client.ConfirmOptions{Deadline: 500 * time.Millisecond},
	})
	if err != nil {
		panic(err)
	}
	report, err := res.Confirmation.Report(ctx)
	if err != nil {
		panic(err)
	}
	fmt.Printf("seq %d: %d of %d confirmed, missing %v\n", report.Seq, report.Confirmed, report.Total, report.Missing)
	// Output:
	// seq 1: 2 of 3 confirmed, missing [cy]
}

// A teacher watches who is in the room, then pages through the members.
func ExampleSession_WatchPresence() {
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
	updates := make(chan client.PresenceUpdate, 16)
	watch, err := teacher.Session("classroom").WatchPresence(ctx, "room/math-101", func(u client.PresenceUpdate) { updates <- u })
	if err != nil {
		panic(err)
	}
	defer watch.Close()
	fmt.Println("online:", (<-updates).Online)

	student, err := client.Dial(ctx, addr, client.Config{TLSConfig: tlsConf, Token: "ann", Logger: quiet})
	if err != nil {
		panic(err)
	}
	defer student.Close()
	if _, err := student.Session("classroom").Subscribe(ctx, "room/math-101", client.SubscribeOptions{}, func(client.Message) error { return nil }); err != nil {
		panic(err)
	}
	u := <-updates // merged: at most one per second (the first change goes at once)
	fmt.Println("online:", u.Online, "joined:", u.Joined)

	page, err := teacher.Session("classroom").PresenceMembers(ctx, "room/math-101", "", 100)
	if err != nil {
		panic(err)
	}
	fmt.Println("members:", page.Users, "last page:", page.Next == "")
	// Output:
	// online: 0
	// online: 1 joined: [ann]
	// members: [ann] last page: true
}
