package telemetry

import (
	"bufio"
	"bytes"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// stdEncode is the reference: what encoding/json's Encoder writes.
func stdEncode(t testing.TB, r *Record) ([]byte, error) {
	var buf bytes.Buffer
	err := json.NewEncoder(&buf).Encode(r)
	return buf.Bytes(), err
}

func checkSame(t *testing.T, r *Record) {
	t.Helper()
	want, werr := stdEncode(t, r)
	got, gerr := AppendJSON(nil, r)
	if (werr != nil) != (gerr != nil) {
		t.Fatalf("error mismatch for %+v: encoding/json %v, AppendJSON %v", r, werr, gerr)
	}
	if werr == nil && !bytes.Equal(got, want) {
		t.Fatalf("AppendJSON differs from encoding/json:\n got %s\nwant %s", got, want)
	}
}

// fillAll sets every field of a Record to a non-zero value by reflection,
// so a field added to Record and forgotten by AppendJSON shows here.
func fillAll(s string, n int) Record {
	var r Record
	v := reflect.ValueOf(&r).Elem()
	for i := 0; i < v.NumField(); i++ {
		f := v.Field(i)
		switch f.Kind() {
		case reflect.String:
			f.SetString(s + v.Type().Field(i).Name)
		case reflect.Int, reflect.Int64, reflect.Int32:
			f.SetInt(int64(n + i))
		case reflect.Uint, reflect.Uint64, reflect.Uint32, reflect.Uint16:
			f.SetUint(uint64(n + i))
		case reflect.Bool:
			f.SetBool(true)
		case reflect.Float64, reflect.Float32:
			f.SetFloat(float64(n) + 0.25)
		case reflect.Slice:
			switch f.Type().Elem().Kind() {
			case reflect.Int:
				f.Set(reflect.ValueOf([]int{n, 942100 + i}))
			case reflect.String:
				f.Set(reflect.ValueOf([]string{s + "<m>", "\u2028\x01"}))
			}
		}
	}
	r.Time = time.Date(2026, 12, 2, 13, 4, 5, 123456789, time.UTC)
	return r
}

func TestAppendJSONCoversEveryField(t *testing.T) {
	if !encoderComplete {
		t.Fatalf("Record has fields AppendJSON does not write (recordFields in encode.go lists %d, Record has %d): add them to AppendJSON and recordFields", len(recordFields), reflect.TypeOf(Record{}).NumField())
	}
	r := fillAll("x", 7)
	rv := reflect.ValueOf(r)
	for i := 0; i < rv.NumField(); i++ {
		if rv.Field(i).IsZero() {
			t.Errorf("fillAll cannot fill Record.%s (%s): teach it, so the differential test covers the field", rv.Type().Field(i).Name, rv.Field(i).Type())
		}
	}
	checkSame(t, &r)
	// And each field alone (omitempty of every other one).
	full := reflect.ValueOf(r)
	for i := 0; i < full.NumField(); i++ {
		var one Record
		reflect.ValueOf(&one).Elem().Field(i).Set(full.Field(i))
		checkSame(t, &one)
	}
}

func TestAppendJSONCases(t *testing.T) {
	base := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	cases := []Record{
		{},
		{Time: base, Category: CategoryNetworkRule, SourceIp: "10.42.1.10", SourcePort: 5000, DestinationIp: "192.0.2.13", DestinationPort: 123, Protocol: "UDP", Action: "Allow"},
		{Time: base.Add(time.Nanosecond), Fqdn: "<script>&\"'\\\n\r\t\b\f\x00\x1f\x7f"},
		{Time: base.In(time.FixedZone("x", 5*3600+1800)), QueryName: "caf\u00e9.example.\u2028\u2029\U0001F600"},
		{Time: base, ErrorMessage: "bad \xff\xfe utf8 \xe2\x82"},
		{Time: base, SourcePort: -1, RequestDurationSecs: 1e-7},
		{Time: base, RequestDurationSecs: 1e21},
		{Time: base, RequestDurationSecs: 123456.789},
		{Time: base, RequestDurationSecs: -0.000001},
		{Time: base, RequestDurationSecs: math.NaN()},
		{Time: base, RequestDurationSecs: math.Inf(-1)},
		{Time: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)},
		{Time: time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC)},
		{Time: base.In(time.FixedZone("odd", 24*3600+60))},
		{Time: base.In(time.FixedZone("sec", 3600+30))},
		{Time: base, Category: CategoryWAF, RuleIds: []int{}, Messages: []string{}},
		{Time: base, Category: CategoryWAF, RuleIds: []int{-1, 0, 949110}, Messages: []string{"", "SQL <injection> & \"x\""}, HttpStatus: 403, WafMode: "Prevention"},
	}
	for i := range cases {
		checkSame(t, &cases[i])
	}
}

func FuzzAppendJSON(f *testing.F) {
	f.Add("10.0.0.1", "a.example.com", "Deny <&>", 443, int64(1700000000123456789), 0.0015, 60, true)
	f.Add("\xff", "\u2028", "\x00", -5, int64(-62135596800), 1e-9, -3600, false)
	f.Fuzz(func(t *testing.T, ip, name, reason string, port int, ns int64, dur float64, offset int, dok bool) {
		r := Record{
			Time:                time.Unix(0, ns).In(time.FixedZone("z", offset)),
			Category:            CategoryApplicationRule,
			SourceIp:            ip,
			SourcePort:          port,
			Fqdn:                name,
			QueryName:           name,
			ActionReason:        reason,
			Rule:                reason + name,
			RequestDurationSecs: dur,
			DnssecOkBit:         dok,
			DestinationPort:     -port,
			Messages:            []string{reason, name},
			RuleIds:             []int{port, offset},
			RequestUri:          name,
		}
		checkSame(t, &r)
		// Whatever AppendJSON writes must parse back to the same strings
		// (invalid UTF-8 aside).
		if b, err := AppendJSON(nil, &r); err == nil {
			var back Record
			if err := json.Unmarshal(b, &back); err != nil {
				t.Fatalf("output %q does not parse: %v", b, err)
			}
		}
	})
}

var benchRecord = Record{
	Time: time.Date(2026, 12, 2, 13, 4, 5, 123456789, time.UTC), Category: CategoryDNSQuery,
	SourceIp: "10.42.1.10", SourcePort: 53211, Protocol: "UDP", QueryId: 4242, QueryType: "A",
	QueryClass: "IN", QueryName: "mcr.microsoft.com.", RequestSize: 46, EDNS0BufferSize: 1232,
	ResponseCode: "NOERROR", ResponseFlags: "qr,rd,ra", ResponseSize: 120, RequestDurationSecs: 0.000412,
	Action: "Allow", Source: "dns",
}

// BenchmarkEncode compares AppendJSON with encoding/json on a DNS query
// line (the busiest category).
func BenchmarkEncode(b *testing.B) {
	b.Run("AppendJSON", func(b *testing.B) {
		b.ReportAllocs()
		var buf []byte
		for i := 0; i < b.N; i++ {
			buf, _ = AppendJSON(buf[:0], &benchRecord)
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		for i := 0; i < b.N; i++ {
			buf.Reset()
			enc.Encode(&benchRecord)
		}
	})
}

func TestAppendJSONNoAllocs(t *testing.T) {
	buf := make([]byte, 0, 1024)
	if n := testing.AllocsPerRun(100, func() { buf, _ = AppendJSON(buf[:0], &benchRecord) }); n != 0 {
		t.Errorf("AppendJSON allocates %v times per record", n)
	}
}

func TestSinkRotationKeepsLinesWhole(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "sub", "decisions.log")
	w, c, err := OpenSink(SinkConfig{File: file, MaxSizeMB: 1, MaxBackups: 2, Compress: false}, os.Stdout)
	if err != nil {
		t.Fatal(err)
	}
	l := NewDecisionLog(w, Options{Queue: 1 << 16})
	const n = 12000 // about 2.5 MB: at least two rotations
	for i := 0; i < n; i++ {
		r := benchRecord
		r.QueryId = i
		r.ErrorMessage = strings.Repeat("x", 80)
		l.Log(r)
		if i%1000 == 999 {
			time.Sleep(10 * time.Millisecond) // let the writer keep up
		}
	}
	l.Close()
	c.Close()
	written, dropped, _ := l.Stats()
	// lumberjack removes old backups on a goroutine of its own: wait for it.
	var matches []string
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		matches, _ = filepath.Glob(filepath.Join(dir, "sub", "decisions*.log"))
		if len(matches) <= 3 || time.Now().After(deadline) {
			break
		}
	}
	if len(matches) < 3 {
		t.Fatalf("files %v: want the current file and 2 backups", matches)
	}
	if len(matches) > 3 {
		t.Fatalf("files %v: maxBackups 2 not enforced", matches)
	}
	lines := 0
	for _, m := range matches {
		f, err := os.Open(m)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			var r Record
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				t.Fatalf("%s: a line split by rotation? %q: %v", m, sc.Text(), err)
			}
			lines++
		}
		f.Close()
	}
	if written+dropped != n || written == 0 {
		t.Errorf("written %d + dropped %d != %d", written, dropped, n)
	}
	t.Logf("%d lines written, %d dropped, %d lines in %d files (older backups removed)", written, dropped, lines, len(matches))
}

func TestSinkStdoutAndBadPath(t *testing.T) {
	var out bytes.Buffer
	w, c, err := OpenSink(SinkConfig{File: "-"}, &out)
	if err != nil || w != &out {
		t.Fatalf("File - should be stdout: %v", err)
	}
	c.Close()
	dir := t.TempDir()
	file := filepath.Join(dir, "d.log")
	w, c, err = OpenSink(SinkConfig{File: file, Stdout: true}, &out)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("{}\n"))
	c.Close()
	if b, _ := os.ReadFile(file); string(b) != "{}\n" || out.String() != "{}\n" {
		t.Errorf("file %q stdout %q, want the line in both", b, out.String())
	}
	if _, _, err := OpenSink(SinkConfig{File: "/proc/definitely/not/here.log"}, &out); err == nil {
		t.Error("bad path accepted")
	}
	if _, _, err := OpenSink(SinkConfig{File: file, MaxSizeMB: -1}, &out); err == nil {
		t.Error("negative size accepted")
	}
}
