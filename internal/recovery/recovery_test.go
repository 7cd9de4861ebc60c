package recovery

import (
	"bytes"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
)

func TestReportCountsAndLogs(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	before := Count(DNS)
	func() {
		defer func() {
			if v := recover(); v != nil {
				Report(log, DNS, v, "name", "boom.example")
			}
		}()
		var m map[string]int
		m["x"]++ // a nil map write: a real runtime panic
	}()
	if Count(DNS) != before+1 {
		t.Errorf("count %d, want %d", Count(DNS), before+1)
	}
	out := buf.String()
	for _, want := range []string{`"where":"dns"`, `"name":"boom.example"`, "assignment to entry in nil map", `"stack":"goroutine`} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %s: %s", want, out)
		}
	}
}

func TestCriticalMakesCorrupt(t *testing.T) {
	var got any
	func() {
		defer func() { got = recover() }()
		func() {
			defer Critical("dns cache")
			panic("bug")
		}()
	}()
	c, ok := got.(Corrupt)
	if !ok || c.What != "dns cache" || c.Value != "bug" || len(c.Stack) == 0 {
		t.Fatalf("recovered %#v", got)
	}
	// A Corrupt panic is reported and handed to Fatal, not counted.
	var fatal any
	old := Fatal
	Fatal = func(v any) { fatal = v }
	defer func() { Fatal = old }()
	var buf bytes.Buffer
	before := Count(Proxy)
	Report(slog.New(slog.NewJSONHandler(&buf, nil)), Proxy, c)
	if fatal == nil || Count(Proxy) != before || !strings.Contains(buf.String(), "fail closed") {
		t.Errorf("fatal %v, count %d, log %s", fatal, Count(Proxy), buf.String())
	}
}

func TestAbortHandlerPassesThrough(t *testing.T) {
	defer func() {
		if v := recover(); v != http.ErrAbortHandler {
			t.Errorf("recovered %v", v)
		}
	}()
	Report(nil, Admin, http.ErrAbortHandler)
}

// TestFatalStopsProcess: Fatal ends the process even when the caller
// recovers (the child here recovers everything and would exit 0).
func TestFatalStopsProcess(t *testing.T) {
	if os.Getenv("RECOVERY_FATAL_CHILD") == "1" {
		defer func() { recover(); os.Exit(0) }()
		Fatal(Corrupt{What: "test state", Value: "bug"})
		os.Exit(0)
	}
	cmd := exec.Command(os.Args[0], "-test.run", "^TestFatalStopsProcess$")
	cmd.Env = append(os.Environ(), "RECOVERY_FATAL_CHILD=1")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(out), "test state") {
		t.Fatalf("child: %v\n%s", err, out)
	}
}
