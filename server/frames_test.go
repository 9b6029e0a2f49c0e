package server

import (
	"bytes"
	"context"
	"errors"
	"io"
	"sync"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/require"

	"github.com/quicpush/quicpush/stream"
	pb "github.com/quicpush/quicpush/stream/quicpushpb"
)

// pings is n Ping frames with ids 1..n, and where each frame ends.
func pings(t testing.TB, n int) (b []byte, ends []int) {
	for i := 1; i <= n; i++ {
		var err error
		b, err = stream.AppendFrame(b, &pb.Frame{Body: &pb.Frame_Ping{Ping: &pb.Ping{Id: uint64(i)}}})
		require.NoError(t, err)
		ends = append(ends, len(b))
	}
	return b, ends
}

// testPool is a stackPool whose workers end with the test.
func testPool(t testing.TB) *stackPool {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	return newStackPool(ctx, &wg)
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += n
	return n, err
}

// Every frame is handled once, in order, before the next one is read; a
// clean end between frames is io.EOF.
func TestReadFramesOrderAndEOF(t *testing.T) {
	for _, name := range []string{"whole", "byte by byte"} {
		t.Run(name, func(t *testing.T) {
			b, ends := pings(t, 300)
			cr := &countingReader{r: bytes.NewReader(b)}
			var r io.Reader = cr
			if name == "byte by byte" {
				r = iotest.OneByteReader(cr)
			}
			// The handler runs on another goroutine: it records, the
			// test checks afterwards.
			var got []uint64
			var read []int
			err := readFrames(testPool(t), r, func(f *pb.Frame) error {
				got = append(got, f.GetPing().GetId())
				read = append(read, cr.n)
				return nil
			})
			require.ErrorIs(t, err, io.EOF)
			require.Len(t, got, len(ends))
			for i, id := range got {
				require.Equal(t, uint64(i+1), id)
			}
			// Nothing of the next frame was read before a frame was handled.
			require.Equal(t, ends, read)
		})
	}
}

// A stream that ends inside a frame, even right after its first byte, is
// io.ErrUnexpectedEOF, and the frames before it are handled.
func TestReadFramesTruncated(t *testing.T) {
	b, ends := pings(t, 3)
	for _, cut := range []int{ends[1] + 1, len(b) - 1} {
		var got []uint64
		err := readFrames(testPool(t), bytes.NewReader(b[:cut]), func(f *pb.Frame) error {
			got = append(got, f.GetPing().GetId())
			return nil
		})
		require.ErrorIs(t, err, io.ErrUnexpectedEOF, "cut at %d", cut)
		require.Equal(t, []uint64{1, 2}, got, "cut at %d", cut)
	}
}

// The handler's error ends the loop at once; bad frames get their code.
func TestReadFramesErrors(t *testing.T) {
	b, _ := pings(t, 5)
	stop := errors.New("stop")
	var got []uint64
	err := readFrames(testPool(t), bytes.NewReader(b), func(f *pb.Frame) error {
		got = append(got, f.GetPing().GetId())
		if len(got) == 2 {
			return stop
		}
		return nil
	})
	require.ErrorIs(t, err, stop)
	require.Equal(t, []uint64{1, 2}, got)

	for _, bad := range [][]byte{
		{0x80, 0x0f, 0xff, 0xff}, // a length over MaxFrameSize
		{2, 0xff, 0xff},          // a body that is no frame
	} {
		handled := false
		err := readFrames(testPool(t), bytes.NewReader(bad), func(*pb.Frame) error {
			handled = true
			return nil
		})
		require.False(t, handled)
		var se *stream.Error
		require.ErrorAs(t, err, &se)
		require.Contains(t, []stream.ErrCode{stream.FrameTooLarge, stream.FrameMalformed}, se.Code)
	}
}

// BenchmarkReadFrames prints what a received frame costs handled on a pool
// worker (readFrames) and read and decoded on the reader's goroutine
// (direct).
func BenchmarkReadFrames(b *testing.B) {
	const n = 1000
	frames, _ := pings(b, n)
	b.Run("readFrames", func(b *testing.B) {
		pool := testPool(b)
		b.ReportAllocs()
		for b.Loop() {
			if err := readFrames(pool, bytes.NewReader(frames), func(*pb.Frame) error { return nil }); err != io.EOF {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/frame")
	})
	b.Run("direct", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			r := stream.NewReader(bytes.NewReader(frames), 0)
			for {
				if _, err := r.ReadFrame(); err == io.EOF {
					break
				} else if err != nil {
					b.Fatal(err)
				}
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/frame")
	})
}
