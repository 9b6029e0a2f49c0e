package server

import (
	"context"
	"net"
	"time"
)

// HelloEvent is what Authenticate gets, for a Hello or a token Refresh.
type HelloEvent struct {
	Token      string
	ClientID   string
	DeviceID   string
	RemoteAddr net.Addr
	// Refresh is set when the client replaces the token of a connection
	// already authenticated (the user must stay the same).
	Refresh bool
}

// HelloReply is what Authenticate returns for an accepted client.
type HelloReply struct {
	// User names the client: cursors, idempotency keys and the user's own
	// channels ("user/<User>...") are per user. 1 to 128 bytes.
	User string
	// Claims are kept with the connection and handed to Authorize.
	Claims any
	// ExpiresAt, if not zero, is when the connection is closed with
	// UNAUTHORIZED unless the client has refreshed its token by then.
	ExpiresAt time.Time
}

// Action is what a client asks to do with a channel.
type Action int

const (
	ActionSubscribe Action = iota
	ActionPublish
	// ActionChat: send a chat message to the user whose inbox is Channel
	// ("user/<name>/inbox"); Channel names the recipient, not a channel
	// the sender may publish to otherwise.
	ActionChat
)

func (a Action) String() string { return [...]string{"subscribe", "publish", "chat"}[a] }

// AuthorizeEvent is what Authorize gets.
type AuthorizeEvent struct {
	User      string
	Claims    any // from HelloReply
	Action    Action
	Channel   string
	Droppable bool // for publishes: the message's class
}

func devAuthenticate(_ context.Context, ev HelloEvent) (HelloReply, error) {
	if ev.Token == "" {
		return HelloReply{User: "anonymous"}, nil
	}
	return HelloReply{User: ev.Token}, nil
}
