package bench

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strings"

	"github.com/quicpush/quicpush/certs"
	"github.com/quicpush/quicpush/server"
	"github.com/quicpush/quicpush/store"
)

// The kinds of server child.
const (
	KindQuicpush = "quicpush" // the quicpush server on the Badger store
	KindRaw      = "raw"      // the raw quic-go baseline (raw.go)
)

// readyLine is the first line a server child prints.
type readyLine struct {
	Addr string `json:"addr"`
	CA   string `json:"ca"` // the dev CA file that signed the server's certificate
}

// statsLine answers the "stats" command.
type statsLine struct {
	HeapBytes uint64 `json:"heap_bytes"` // live heap, right after a GC
	// HeapSpanBytes are the heap's spans in use: the live heap and the free
	// room between live objects that the runtime cannot give back.
	HeapSpanBytes uint64 `json:"heap_span_bytes"`
	StackBytes    uint64 `json:"stack_bytes"`
	Goroutines    int    `json:"goroutines"`
	Error         string `json:"error,omitempty"`
}

// Serve runs a server of kind on a random 127.0.0.1 UDP port, for the
// process that started this one: it prints {"addr","ca"} as one JSON line
// on out once it listens, then answers each command line read from in with
// one JSON line, until in ends or ctx is done:
//
//	stats          {"heap_bytes","stack_bytes","goroutines"} (after a GC)
//	profile FILE   starts a CPU profile into FILE
//	profile-stop   stops it
//	snapshot BASE  writes BASE.heap.pprof (after a GC) and BASE.goroutines.txt
//
// Its data (the store, the dev certificates) lives in a temporary
// directory that is removed on return. A quicpush child builds its server
// as quicpushd does, with the same defaults; it leaves out what costs the
// same whatever the load (the admin HTTP server, persisted keys).
func Serve(ctx context.Context, kind string, in io.Reader, out io.Writer, log *slog.Logger) error {
	dir, err := os.MkdirTemp("", "quicpush-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	dev, err := certs.EnsureDev(filepath.Join(dir, "certs"), nil)
	if err != nil {
		return err
	}
	cert, err := certs.Load(dev.Cert, dev.Key)
	if err != nil {
		return err
	}
	tlsConf := &tls.Config{GetCertificate: cert.GetCertificate}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer pc.Close() // after the server's Close (defers run last first)

	var addr net.Addr
	switch kind {
	case KindQuicpush:
		db, err := store.Open(filepath.Join(dir, "store"), store.Options{Logger: log})
		if err != nil {
			return err
		}
		defer db.Close()
		srv, err := server.New(server.Config{Store: db, TLSConfig: tlsConf, Logger: log})
		if err != nil {
			return err
		}
		defer srv.Close()
		if addr, err = srv.Listen(pc); err != nil {
			return err
		}
	case KindRaw:
		srv := newRawServer()
		defer srv.close()
		if addr, err = srv.listen(pc, tlsConf); err != nil {
			return err
		}
	default:
		return fmt.Errorf("bench: unknown server kind %q", kind)
	}
	enc := json.NewEncoder(out)
	if err := enc.Encode(readyLine{Addr: addr.String(), CA: dev.CA}); err != nil {
		return err
	}
	return control(ctx, in, enc)
}

// control answers the commands read from in until in ends or ctx is done.
func control(ctx context.Context, in io.Reader, enc *json.Encoder) error {
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(in)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			case <-ctx.Done():
				return
			}
		}
	}()
	var profile *os.File
	defer func() {
		if profile != nil {
			pprof.StopCPUProfile()
			profile.Close()
		}
	}()
	for {
		var line string
		select {
		case <-ctx.Done():
			return nil
		case l, ok := <-lines:
			if !ok {
				return nil
			}
			line = l
		}
		var reply statsLine
		cmd, arg, _ := strings.Cut(line, " ")
		switch {
		case cmd == "release":
			debug.FreeOSMemory()
		case cmd == "stats":
			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			reply.HeapBytes, reply.HeapSpanBytes, reply.StackBytes, reply.Goroutines = ms.HeapAlloc, ms.HeapInuse, ms.StackInuse, runtime.NumGoroutine()
		case cmd == "profile" && profile == nil:
			f, err := os.Create(arg)
			if err == nil {
				if err = pprof.StartCPUProfile(f); err != nil {
					f.Close()
				} else {
					profile = f
				}
			}
			if err != nil {
				reply.Error = err.Error()
			}
		case cmd == "profile-stop" && profile != nil:
			pprof.StopCPUProfile()
			if err := profile.Close(); err != nil {
				reply.Error = err.Error()
			}
			profile = nil
		case cmd == "snapshot":
			runtime.GC()
			if err := errors.Join(writeProfile(arg+".heap.pprof", "heap", 0), writeProfile(arg+".goroutines.txt", "goroutine", 1)); err != nil {
				reply.Error = err.Error()
			}
		default:
			reply.Error = fmt.Sprintf("unexpected command %q", line)
		}
		if err := enc.Encode(reply); err != nil {
			return err
		}
	}
}

// writeProfile writes the named runtime profile to path.
func writeProfile(path, name string, debug int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	return errors.Join(pprof.Lookup(name).WriteTo(f, debug), f.Close())
}
