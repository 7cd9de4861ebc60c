package telemetry

import (
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strconv"
	"time"
	"unicode/utf8"
)

// AppendJSON appends r as one JSON object followed by a newline, byte for
// byte what encoding/json's Encoder.Encode writes for r (HTML-safe string
// escaping, RFC 3339 times with nanoseconds, omitempty), without
// reflection: the DNS proxy logs one line per query and the decision log's
// writer goroutine should not be the bottleneck. The differential tests and
// the fuzz target (encode_test.go) compare it with encoding/json for every
// field of Record.
//
// If Record gains a field this encoder does not know (recordFields below),
// AppendJSON falls back to encoding/json, so output stays complete; the
// test TestAppendJSONCoversEveryField fails to say the encoder needs the
// new field.
func AppendJSON(dst []byte, r *Record) ([]byte, error) {
	if !encoderComplete {
		b, err := json.Marshal(r)
		if err != nil {
			return dst, err
		}
		return append(append(dst, b...), '\n'), nil
	}
	if math.IsNaN(r.RequestDurationSecs) || math.IsInf(r.RequestDurationSecs, 0) {
		return dst, errors.New("telemetry: RequestDurationSecs is not a finite number")
	}
	b := append(dst, `{"time":"`...)
	b, err := appendTime(b, r.Time)
	if err != nil {
		return dst, err
	}
	b = append(b, `","category":`...)
	b = appendString(b, r.Category)
	b = optString(b, `,"SourceIp":`, r.SourceIp)
	b = optInt(b, `,"SourcePort":`, r.SourcePort)
	b = optString(b, `,"DestinationIp":`, r.DestinationIp)
	b = optInt(b, `,"DestinationPort":`, r.DestinationPort)
	b = optString(b, `,"Protocol":`, r.Protocol)
	return appendRest(b, r), nil
}

// appendTime appends t as time.Time's MarshalJSON does, without the
// quotes, or fails as it does.
func appendTime(b []byte, t time.Time) ([]byte, error) {
	n0 := len(b)
	b = t.AppendFormat(b, time.RFC3339Nano)
	// The checks of time.Time.MarshalJSON: not every time is valid RFC 3339.
	if b[n0+4] != '-' {
		return b[:n0], errors.New("telemetry: Record.Time year outside of range [0,9999]")
	}
	if z := b[len(b)-6:]; b[len(b)-1] != 'Z' && ((z[0] >= '0' && z[0] <= '9') || 10*(z[1]-'0')+(z[2]-'0') >= 24) {
		return b[:n0], errors.New("telemetry: Record.Time timezone hour outside of range [0,23]")
	}
	return b, nil
}

// appendRest appends the fields after Protocol, the closing brace and the
// newline.
func appendRest(b []byte, r *Record) []byte {
	b = optString(b, `,"Fqdn":`, r.Fqdn)
	b = optString(b, `,"Action":`, r.Action)
	b = optString(b, `,"ActionReason":`, r.ActionReason)
	b = optString(b, `,"Policy":`, r.Policy)
	b = optString(b, `,"RuleCollectionGroup":`, r.RuleCollectionGroup)
	b = optString(b, `,"RuleCollection":`, r.RuleCollection)
	b = optString(b, `,"Rule":`, r.Rule)
	b = optString(b, `,"TranslatedIp":`, r.TranslatedIp)
	b = optInt(b, `,"TranslatedPort":`, r.TranslatedPort)
	b = optString(b, `,"OriginalDestinationIp":`, r.OriginalDestinationIp)
	b = optString(b, `,"ResolvedDestinationIp":`, r.ResolvedDestinationIp)
	b = optString(b, `,"ThreatDescription":`, r.ThreatDescription)
	b = optInt(b, `,"QueryId":`, r.QueryId)
	b = optString(b, `,"QueryType":`, r.QueryType)
	b = optString(b, `,"QueryClass":`, r.QueryClass)
	b = optString(b, `,"QueryName":`, r.QueryName)
	b = optInt(b, `,"RequestSize":`, r.RequestSize)
	if r.DnssecOkBit {
		b = append(b, `,"DnssecOkBit":true`...)
	}
	b = optInt(b, `,"EDNS0BufferSize":`, r.EDNS0BufferSize)
	b = optString(b, `,"ResponseCode":`, r.ResponseCode)
	b = optString(b, `,"ResponseFlags":`, r.ResponseFlags)
	b = optInt(b, `,"ResponseSize":`, r.ResponseSize)
	if r.RequestDurationSecs != 0 {
		b = append(b, `,"RequestDurationSecs":`...)
		b = appendFloat(b, r.RequestDurationSecs)
	}
	b = optInt(b, `,"ErrorNumber":`, r.ErrorNumber)
	b = optString(b, `,"ErrorMessage":`, r.ErrorMessage)
	b = optString(b, `,"source":`, r.Source)
	b = optString(b, `,"Hostname":`, r.Hostname)
	b = optString(b, `,"RequestUri":`, r.RequestUri)
	b = optString(b, `,"Method":`, r.Method)
	b = optInts(b, `,"RuleIds":`, r.RuleIds)
	b = optStrings(b, `,"Messages":`, r.Messages)
	b = optInt(b, `,"AnomalyScore":`, r.AnomalyScore)
	b = optInt(b, `,"HttpStatus":`, r.HttpStatus)
	b = optString(b, `,"CorrelationId":`, r.CorrelationId)
	b = optString(b, `,"Listener":`, r.Listener)
	b = optString(b, `,"Route":`, r.Route)
	b = optString(b, `,"WafMode":`, r.WafMode)
	return append(b, '}', '\n')
}

// recordFields are the Record fields AppendJSON writes, in order.
var recordFields = []string{
	"Time", "Category", "SourceIp", "SourcePort", "DestinationIp", "DestinationPort",
	"Protocol", "Fqdn", "Action", "ActionReason", "Policy", "RuleCollectionGroup",
	"RuleCollection", "Rule", "TranslatedIp", "TranslatedPort", "OriginalDestinationIp",
	"ResolvedDestinationIp", "ThreatDescription", "QueryId", "QueryType", "QueryClass",
	"QueryName", "RequestSize", "DnssecOkBit", "EDNS0BufferSize", "ResponseCode",
	"ResponseFlags", "ResponseSize", "RequestDurationSecs", "ErrorNumber", "ErrorMessage",
	"Source",
	"Hostname", "RequestUri", "Method", "RuleIds", "Messages", "AnomalyScore", "HttpStatus",
	"CorrelationId", "Listener", "Route", "WafMode",
}

// encoderComplete is true when Record has exactly the fields AppendJSON
// writes, in the same order.
var encoderComplete = func() bool {
	t := reflect.TypeOf(Record{})
	if t.NumField() != len(recordFields) {
		return false
	}
	for i, name := range recordFields {
		if t.Field(i).Name != name {
			return false
		}
	}
	return true
}()

func optString(b []byte, key, v string) []byte {
	if v == "" {
		return b
	}
	return appendString(append(b, key...), v)
}

// optInts writes a non-empty int slice (omitempty omits nil and empty).
func optInts(b []byte, key string, v []int) []byte {
	if len(v) == 0 {
		return b
	}
	b = append(append(b, key...), '[')
	for i, n := range v {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, int64(n), 10)
	}
	return append(b, ']')
}

// optStrings writes a non-empty string slice.
func optStrings(b []byte, key string, v []string) []byte {
	if len(v) == 0 {
		return b
	}
	b = append(append(b, key...), '[')
	for i, s := range v {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, s)
	}
	return append(b, ']')
}

func optInt(b []byte, key string, v int) []byte {
	if v == 0 {
		return b
	}
	return strconv.AppendInt(append(b, key...), int64(v), 10)
}

// appendFloat formats like encoding/json (ES6 number formatting).
func appendFloat(b []byte, f float64) []byte {
	abs := math.Abs(f)
	format := byte('f')
	if abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		n := len(b)
		if n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}

const hexDigits = "0123456789abcdef"

// appendString quotes s as encoding/json does with HTML escaping: <, >, &,
// control characters, U+2028 and U+2029 are escaped, and invalid UTF-8 is
// replaced by U+FFFD.
// safeASCII: the ASCII bytes encoding/json writes as they are (with its
// HTML-safe escaping of <, > and &).
var safeASCII = func() (t [utf8.RuneSelf]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
	}
	return t
}()

func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if safeASCII[c] {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
