package webtest

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/quicpush/quicpush/client"
)

var writeDocs = flag.Bool("web.docs", false, "also write the demo screenshot to docs/web-demo.png")

// The demo classroom, driven as a person would: the teacher starts a
// sign-in, sends a quiz card and starts an exercise (reliable), the quiz
// card is never pushed live (a server-side hole) so the student's page
// repairs it, the student signs in, two Go clients sign in too, and the
// barrage (droppable) flies. Screenshots of both pages go to a temporary
// directory (printed), and with -web.docs to docs/web-demo.png.
func TestDemoClassroomScreenshots(t *testing.T) {
	e := newEnv(t)
	e.store.skipSeqs("room/math-101", 2)
	b := browser(t)
	student := tab(t, b, e.pageURL+"/demo/student.html?user=alice&room=math-101")
	waitFor(t, student, `document.getElementById("state").textContent === "connected" && window.demo`, 15*time.Second)
	teacher := tab(t, b, e.pageURL+"/demo/teacher.html?user=teacher&room=math-101")
	waitFor(t, teacher, `document.getElementById("state").textContent === "connected" && window.demo`, 15*time.Second)

	for i, button := range []string{"#signin", "#quiz", "#start"} {
		require.NoError(t, chromedp.Do(teacher, chromedp.Click(chromedp.CSS(button))))
		waitFor(t, teacher, `document.querySelectorAll("#log .ok").length === `+string(rune('1'+i)), 10*time.Second)
	}
	waitFor(t, student, `document.querySelectorAll("#cards .card").length === 3`, 15*time.Second)
	waitFor(t, student, `document.getElementById("repaired").textContent === "1"`, 10*time.Second) // the quiz card came by repair
	require.True(t, eval[bool](t, student, `document.querySelector("#cards .card.quiz .tag")?.textContent === "repaired"`))

	require.NoError(t, chromedp.Do(student, chromedp.Click(chromedp.CSS("#cards .card.signin button"))))
	for _, user := range []string{"bob", "chen"} {
		c := e.dial(t, user)
		_, err := c.Session("classroom").Publish(t.Context(), "room/math-101/signin", []byte(`{"user":"`+user+`"}`), client.PublishOptions{})
		require.NoError(t, err)
	}
	waitFor(t, teacher, `document.getElementById("signed-count").textContent === "3"`, 10*time.Second)
	waitFor(t, student, `document.querySelector("#cards .card.signin button").textContent === "Signed in ✓"`, 10*time.Second)

	front(t, student)
	for _, text := range []string{"Great question!", "It is 56", "Can we see it again?", "Got it, thanks"} {
		// Typed in by script: the teacher's tab is in the background now.
		eval[bool](t, teacher, fmt.Sprintf(`document.getElementById("barrage").value = %q, document.getElementById("barrage-form").requestSubmit(), true`, text))
		time.Sleep(600 * time.Millisecond) // spread the bubbles over the strip
	}
	waitFor(t, student, `document.getElementById("barrage").textContent === "4"`, 10*time.Second)
	time.Sleep(time.Second) // let the last bubble fly in

	dir, err := os.MkdirTemp("", "quicpush-web-demo-")
	require.NoError(t, err)
	studentPNG := screenshot(t, student)
	front(t, teacher)
	teacherPNG := screenshot(t, teacher)
	demo := sideBySide(t, teacherPNG, studentPNG)
	for name, b := range map[string][]byte{"teacher.png": teacherPNG, "student.png": studentPNG, "web-demo.png": demo} {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), b, 0o644))
	}
	t.Logf("screenshots of the demo classroom: %s/{teacher,student,web-demo}.png", dir)
	if *writeDocs {
		docs := filepath.Join("..", "..", "..", "docs", "web-demo.png")
		require.NoError(t, os.WriteFile(docs, demo, 0o644))
		t.Logf("wrote %s", docs)
	}
}

// front makes the tab the active one, so its timers and animations run at
// full speed and it can be captured.
func front(t *testing.T, ctx context.Context) {
	t.Helper()
	_, err := chromedp.Call(ctx, page.BringToFront, cdp.Empty{})
	require.NoError(t, err)
}

func screenshot(t *testing.T, ctx context.Context) []byte {
	t.Helper()
	b, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	require.NoError(t, err)
	return b
}

// sideBySide puts the teacher's and the student's screenshots next to each
// other on one image, for the README.
func sideBySide(t *testing.T, left, right []byte) []byte {
	t.Helper()
	l, err := png.Decode(bytes.NewReader(left))
	require.NoError(t, err)
	r, err := png.Decode(bytes.NewReader(right))
	require.NoError(t, err)
	const gap = 16
	w := l.Bounds().Dx() + gap + r.Bounds().Dx()
	h := max(l.Bounds().Dy(), r.Bounds().Dy())
	out := image.NewRGBA(image.Rect(0, 0, w, h))
	draw.Draw(out, out.Bounds(), image.NewUniform(color.RGBA{0xd5, 0xda, 0xe5, 0xff}), image.Point{}, draw.Src)
	draw.Draw(out, l.Bounds(), l, l.Bounds().Min, draw.Src)
	draw.Draw(out, r.Bounds().Add(image.Pt(l.Bounds().Dx()+gap, 0)), r, r.Bounds().Min, draw.Src)
	var buf bytes.Buffer
	require.NoError(t, png.Encode(&buf, out))
	return buf.Bytes()
}
