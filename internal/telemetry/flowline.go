package telemetry

import (
	"errors"
	"math"
	"time"
)

// FlowLine encodes the decision lines of one kernel decision (a log
// prefix: its rule, collection, policy and action), which differ from
// flow to flow only in time, addresses, ports and protocol. The fields
// that do not change are encoded once, by AppendJSON's own code, when the
// FlowLine is made; a line is then the time, the flow's fields and those
// bytes. Append writes byte for byte what AppendJSON writes for the
// template with the flow's fields set (TestFlowLineEqualsAppendJSON,
// FuzzFlowLine).
type FlowLine struct {
	category []byte // `","category":"…"`
	rest     []byte // the fields after Protocol, '}' and '\n'
}

// Flow is what changes from line to line of a FlowLine: the time and the
// flow's fields as JSON strings (Quote; "" omits the field, as AppendJSON
// omits an empty string) and numbers (0 omits the field).
type Flow struct {
	Time            time.Time
	SourceIp        string
	SourcePort      int
	DestinationIp   string
	DestinationPort int
	Protocol        string
}

// NewFlowLine encodes the fields of tmpl that are the same on every line
// (all but Time, SourceIp, SourcePort, DestinationIp, DestinationPort and
// Protocol, which it ignores). It fails when AppendJSON would fail for
// tmpl or cannot be reproduced (a Record field this encoder does not
// know): the caller then logs the record as usual.
func NewFlowLine(tmpl *Record) (*FlowLine, error) {
	if !encoderComplete {
		return nil, errors.New("telemetry: the encoder does not know every Record field")
	}
	if math.IsNaN(tmpl.RequestDurationSecs) || math.IsInf(tmpl.RequestDurationSecs, 0) {
		return nil, errors.New("telemetry: RequestDurationSecs is not a finite number")
	}
	f := &FlowLine{}
	f.category = appendString(append(f.category, `","category":`...), tmpl.Category)
	f.rest = appendRest(nil, tmpl)
	return f, nil
}

// Quote returns s as a JSON string as AppendJSON writes it, or "" for ""
// (an omitted field in Flow).
func Quote(s string) string {
	if s == "" {
		return ""
	}
	return string(appendString(nil, s))
}

// Append appends the line of flow to b, or returns b and AppendJSON's
// error for the time.
func (f *FlowLine) Append(b []byte, tc *TimeCache, flow *Flow) ([]byte, error) {
	b0 := b
	b = append(b, `{"time":"`...)
	b, err := tc.append(b, flow.Time)
	if err != nil {
		return b0, err
	}
	b = append(b, f.category...)
	if flow.SourceIp != "" {
		b = append(append(b, `,"SourceIp":`...), flow.SourceIp...)
	}
	b = optInt(b, `,"SourcePort":`, flow.SourcePort)
	if flow.DestinationIp != "" {
		b = append(append(b, `,"DestinationIp":`...), flow.DestinationIp...)
	}
	b = optInt(b, `,"DestinationPort":`, flow.DestinationPort)
	if flow.Protocol != "" {
		b = append(append(b, `,"Protocol":`...), flow.Protocol...)
	}
	return append(b, f.rest...), nil
}

// TimeCache formats times as AppendJSON does, the date and the time of
// day of a UTC time once per second (a flow log writes tens of thousands
// of lines a second). The zero value is ready; one goroutine uses it.
type TimeCache struct {
	sec   int64
	valid bool
	err   error
	text  []byte // "2006-01-02T15:04:05" of sec
}

// append appends t as appendTime does.
func (c *TimeCache) append(b []byte, t time.Time) ([]byte, error) {
	if t.Location() != time.UTC {
		return appendTime(b, t)
	}
	sec := t.Unix()
	if !c.valid || sec != c.sec {
		c.text, c.err = appendTime(c.text[:0], time.Unix(sec, 0).UTC())
		if c.err == nil {
			c.text = c.text[:len(c.text)-1] // the 'Z'
		}
		c.sec, c.valid = sec, true
	}
	if c.err != nil {
		return b, c.err
	}
	b = append(b, c.text...)
	// RFC 3339 with nanoseconds: the fraction without its trailing zeros,
	// none when it is zero.
	if ns := t.Nanosecond(); ns != 0 {
		var frac [10]byte
		frac[0] = '.'
		for i := 9; i >= 1; i-- {
			frac[i] = byte('0' + ns%10)
			ns /= 10
		}
		n := 10
		for frac[n-1] == '0' {
			n--
		}
		b = append(b, frac[:n]...)
	}
	return append(b, 'Z'), nil
}
