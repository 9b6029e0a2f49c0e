package server

import (
	"context"
	"errors"
	"fmt"

	"github.com/quicpush/quicpush/store"
	"github.com/quicpush/quicpush/stream"
)

// The methods in this file serve backends and operators (the HTTP API)
// rather than QUIC clients. They enforce the same limits as the protocol.

// ErrInvalid wraps the errors of requests that break the protocol's limits.
var ErrInvalid = errors.New("server: invalid request")

// PublishRequest is one message a backend publishes.
type PublishRequest struct {
	Channel string
	Data    []byte
	// ID makes the publish idempotent (with From and Channel): publishing
	// it again returns the original seq.
	ID string
}

// Publish stores reliable messages as user from, in order, and returns once
// they are durable; subscribers get them like any other publish.
func (s *Server) Publish(ctx context.Context, from string, reqs []PublishRequest) (res []store.AppendResult, err error) {
	defer func() { // counted like the clients' publishes
		for i := range reqs {
			if err != nil {
				s.metrics.published(store.AppendResult{}, err)
			} else {
				s.metrics.published(res[i], nil)
			}
		}
	}()
	if from == "" || len(from) > stream.MaxIDLen {
		return nil, fmt.Errorf("%w: publisher name must be 1 to %d bytes", ErrInvalid, stream.MaxIDLen)
	}
	appends := make([]store.AppendRequest, len(reqs))
	for i, r := range reqs {
		if err := stream.ValidateChannel(r.Channel); err != nil {
			return nil, fmt.Errorf("%w: message %d: %v", ErrInvalid, i, err)
		}
		if _, inbox := stream.InboxOwner(r.Channel); inbox {
			return nil, fmt.Errorf("%w: message %d: %s is an inbox: only the server writes it", ErrInvalid, i, r.Channel)
		}
		if err := stream.ValidateID(r.ID); err != nil {
			return nil, fmt.Errorf("%w: message %d: %v", ErrInvalid, i, err)
		}
		if len(r.Data) > stream.MaxMessageSize {
			return nil, fmt.Errorf("%w: message %d: %d bytes exceeds %d", ErrInvalid, i, len(r.Data), stream.MaxMessageSize)
		}
		appends[i] = store.AppendRequest{Channel: r.Channel, From: from, ID: r.ID, Data: r.Data}
	}
	return s.appendToStore(ctx, appends)
}

// History returns channel's retained messages from..to (inclusive), at
// most limit, with the channel's bounds.
func (s *Server) History(ctx context.Context, channel string, from, to uint64, limit int) ([]store.Message, store.Bounds, error) {
	if err := stream.ValidateChannel(channel); err != nil {
		return nil, store.Bounds{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if limit <= 0 || from == 0 || from > to {
		return nil, store.Bounds{}, fmt.Errorf("%w: range %d..%d, limit %d", ErrInvalid, from, to, limit)
	}
	b, err := s.cfg.Store.Bounds(ctx, channel)
	if err != nil {
		return nil, b, err
	}
	msgs, err := s.cfg.Store.Range(ctx, channel, from, to, limit)
	return msgs, b, err
}

// ChannelInfo describes a channel.
type ChannelInfo struct {
	Channel     string
	Epoch       uint64 // 0: no message yet
	First       uint64 // first retained seq
	Last        uint64 // last seq
	Subscribers int    // sessions subscribed on this server
}

// ChannelInfo returns what the store and this server know of channel.
func (s *Server) ChannelInfo(ctx context.Context, channel string) (ChannelInfo, error) {
	if err := stream.ValidateChannel(channel); err != nil {
		return ChannelInfo{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	b, err := s.cfg.Store.Bounds(ctx, channel)
	if err != nil {
		return ChannelInfo{}, err
	}
	return ChannelInfo{Channel: channel, Epoch: b.Epoch, First: b.First, Last: b.Last, Subscribers: s.hub.subscribers(channel)}, nil
}

// DisconnectUser closes every connection of user with code (UNAUTHORIZED,
// terminal, keeps it out until its token changes; SHUTTING_DOWN lets it
// reconnect; a request code such as FORBIDDEN is not terminal, so clients
// reconnect) and returns how many were closed.
func (s *Server) DisconnectUser(user string, code stream.ErrCode, reason string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for c := range s.conns {
		if c.userName() == user {
			c.closeWith(code, reason)
			n++
		}
	}
	return n
}
