package bench

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/quicvarint"
	"google.golang.org/protobuf/proto"

	"github.com/quicpush/quicpush/stream"
	pb "github.com/quicpush/quicpush/stream/quicpushpb"
)

// The raw baseline: quic-go alone, doing what the quicpush server does for
// a fan-out with no store and no protocol. Each client opens one stream and
// says what it is in one byte; a publisher then writes varint-length-
// prefixed messages, and the server writes each message, prefix included,
// to every subscriber's stream.
const (
	rawALPN       = "quicpush-bench-raw"
	rawSubscriber = 's'
	rawPublisher  = 'p'
	// rawSubscribed is the server's first byte to a subscriber: it is
	// registered, and gets every message published from now on.
	rawSubscribed = 'k'
)

// rawQUICConfig mirrors the quicpush server's quic.Config, so that both
// pay the same for what quic-go does per connection.
func rawQUICConfig() *quic.Config {
	return &quic.Config{
		HandshakeIdleTimeout:             10 * time.Second,
		MaxIdleTimeout:                   45 * time.Second,
		Allow0RTT:                        true,
		MaxIncomingStreams:               1000,
		MaxIncomingUniStreams:            -1,
		EnableDatagrams:                  true,
		EnableStreamResetPartialDelivery: true,
	}
}

type rawServer struct {
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	tr     *quic.Transport

	mu   sync.RWMutex
	subs map[*stream.Sender]struct{}
}

func newRawServer() *rawServer {
	ctx, cancel := context.WithCancel(context.Background())
	return &rawServer{ctx: ctx, cancel: cancel, subs: map[*stream.Sender]struct{}{}}
}

func (s *rawServer) listen(pc net.PacketConn, tlsConf *tls.Config) (net.Addr, error) {
	tlsConf = tlsConf.Clone()
	tlsConf.NextProtos = []string{rawALPN}
	s.tr = &quic.Transport{Conn: pc}
	ln, err := s.tr.ListenEarly(tlsConf, rawQUICConfig())
	if err != nil {
		return nil, err
	}
	s.wg.Go(func() {
		for {
			conn, err := ln.Accept(s.ctx)
			if err != nil {
				return
			}
			s.wg.Go(func() { s.serve(conn) })
		}
	})
	return ln.Addr(), nil
}

func (s *rawServer) close() {
	s.cancel()
	s.tr.Close() // closes the listener and every connection
	s.wg.Wait()
}

func (s *rawServer) serve(conn *quic.Conn) {
	st, err := conn.AcceptStream(s.ctx)
	if err != nil {
		conn.CloseWithError(0, "")
		return
	}
	r := bufio.NewReader(st)
	role, err := r.ReadByte()
	switch {
	case err == nil && role == rawSubscriber:
		// The writer the quicpush server uses (straight into quic-go while
		// the stream has credit, queued otherwise): the same batching. No
		// goroutine waits for the end: quic-go's own are all there is.
		snd := stream.NewSender(st, nil, nil)
		s.mu.Lock()
		snd.Send([]byte{rawSubscribed}) // before any message: both under s.mu
		s.subs[snd] = struct{}{}
		s.mu.Unlock()
		context.AfterFunc(conn.Context(), func() {
			s.mu.Lock()
			delete(s.subs, snd)
			s.mu.Unlock()
		})
	case err == nil && role == rawPublisher:
		s.publish(r)
		fallthrough
	default:
		conn.CloseWithError(0, "")
	}
}

// publish fans out what a publisher sends. Like the hub, which writes the
// messages of one commit batch with one write per subscriber, it writes
// the messages that arrived together with one write.
func (s *rawServer) publish(r *bufio.Reader) {
	var batch []byte
	for {
		var err error
		batch, err = appendRawMessage(batch[:0], r)
		for err == nil && r.Buffered() > 0 && len(batch) < 64<<10 {
			batch, err = appendRawMessage(batch, r)
		}
		if len(batch) > 0 {
			s.mu.RLock()
			for snd := range s.subs {
				snd.Send(batch) // an error means this subscriber is gone
			}
			s.mu.RUnlock()
		}
		if err != nil {
			return
		}
	}
}

// appendRawMessage reads one message and appends it, prefix included, to b.
func appendRawMessage(b []byte, r *bufio.Reader) ([]byte, error) {
	n, err := quicvarint.Read(r)
	if err != nil {
		return b, err
	}
	if n > stream.MaxMessageSize {
		return b, errors.New("raw message too large")
	}
	b = quicvarint.Append(b, n)
	start := len(b)
	b = append(b, make([]byte, n)...)
	if _, err := io.ReadFull(r, b[start:]); err != nil {
		return b[:start-quicvarint.Len(n)], err
	}
	return b, nil
}

// rawSystem is the raw baseline as its load clients see it.
type rawSystem struct {
	addr string
	tls  *tls.Config
	log  *slog.Logger
	size int // bytes of a message on the wire, as quicpush's push frame
}

func (s rawSystem) dial(ctx context.Context, role byte) (*quic.Conn, *quic.Stream, error) {
	tlsConf := s.tls.Clone()
	tlsConf.NextProtos = []string{rawALPN}
	conn, err := quic.DialAddr(ctx, s.addr, tlsConf, &quic.Config{
		HandshakeIdleTimeout: dialTimeout,
		MaxIdleTimeout:       2 * time.Minute,
		KeepAlivePeriod:      15 * time.Second, // as often as quicpush's heartbeat
	})
	if err != nil {
		return nil, nil, err
	}
	st, err := conn.OpenStreamSync(ctx)
	if err == nil {
		_, err = st.Write([]byte{role})
	}
	if err != nil {
		conn.CloseWithError(0, "")
		return nil, nil, err
	}
	return conn, st, nil
}

func (s rawSystem) subscribe(ctx context.Context, i int, deliver func([]byte)) (func(), error) {
	conn, st, err := s.dial(ctx, rawSubscriber)
	if err != nil {
		return nil, err
	}
	// Like quicpush's Subscribe, which returns once the server has
	// registered the subscription: a subscriber counted before that would
	// miss the first messages, and the run would wait for them forever.
	if err := awaitSubscribed(st); err != nil {
		conn.CloseWithError(0, "")
		return nil, err
	}
	var closing atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		err := readRaw(st, deliver)
		if !closing.Load() {
			// Nothing reconnects a raw subscriber: the messages it misses
			// stall the run, which then fails; this says why.
			s.log.Warn("raw subscriber stopped reading", "subscriber", i, "err", err)
		}
	}()
	return func() {
		closing.Store(true)
		conn.CloseWithError(0, "")
		<-done
	}, nil
}

// awaitSubscribed reads the server's rawSubscribed byte.
func awaitSubscribed(st *quic.Stream) error {
	st.SetReadDeadline(time.Now().Add(dialTimeout))
	defer st.SetReadDeadline(time.Time{})
	var b [1]byte
	if _, err := io.ReadFull(st, b[:]); err != nil {
		return fmt.Errorf("raw subscribe: %w", err)
	}
	if b[0] != rawSubscribed {
		return fmt.Errorf("raw subscribe: got %q from the server", b[0])
	}
	return nil
}

// readRaw hands each message read from st to deliver until an error.
func readRaw(st io.Reader, deliver func([]byte)) error {
	r := bufio.NewReader(st)
	var buf []byte
	for {
		n, err := quicvarint.Read(r)
		if err != nil {
			return err
		}
		if n > stream.MaxMessageSize {
			return fmt.Errorf("raw message of %d bytes", n)
		}
		buf = append(buf[:0], make([]byte, n)...)
		if _, err := io.ReadFull(r, buf); err != nil {
			return err
		}
		deliver(buf)
	}
}

func (s rawSystem) publisher(ctx context.Context) (publishFunc, func(), error) {
	conn, st, err := s.dial(ctx, rawPublisher)
	if err != nil {
		return nil, nil, err
	}
	var mu sync.Mutex
	publish := func(_ context.Context, _ uint64, payload []byte) error {
		msg := quicvarint.Append(make([]byte, 0, 8+s.size), uint64(s.size))
		msg = append(msg, payload...)
		msg = append(msg, make([]byte, max(0, s.size-len(payload)))...)
		mu.Lock()
		defer mu.Unlock()
		_, err := st.Write(msg)
		return err
	}
	return publish, func() { conn.CloseWithError(0, "") }, nil
}

// pushSize is the size of the push frame the quicpush server sends for a
// message of size bytes on channel, so that the raw baseline sends as many
// bytes per delivery.
func pushSize(channel string, size int) int {
	return proto.Size(&pb.Frame{Body: &pb.Frame_Push{Push: &pb.Push{
		Channel: channel, Epoch: math.MaxUint64 / 3, Seq: 100000, Data: make([]byte, size),
		TimeUnixNs: time.Now().UnixNano(), From: "publisher", Id: msgID(100000),
	}}})
}
