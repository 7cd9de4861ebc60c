package waf

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"strconv"
	"sync"
	"time"

	"github.com/corazawaf/coraza/v3/experimental/plugins/plugintypes"
	"github.com/corazawaf/coraza/v3/types"

	"github.com/clusterwall/clusterwall/internal/telemetry"
)

// Actions of a WAF event.
const (
	ActionBlocked  = "Blocked"
	ActionDetected = "Detected"
)

// Event is one WAF log line: a request that was blocked or that matched at
// least one logging rule. Field names are constant (one schema).
type Event struct {
	Time                 time.Time `json:"time"`
	Category             string    `json:"category"`
	ClientIP             string    `json:"clientIp"`
	ClientPort           int       `json:"clientPort,omitempty"`
	Host                 string    `json:"host"`
	URI                  string    `json:"uri"`
	Method               string    `json:"method"`
	RuleIDs              []int     `json:"ruleIds"`
	Messages             []string  `json:"messages"`
	AnomalyScore         int       `json:"anomalyScore"`
	OutboundAnomalyScore int       `json:"outboundAnomalyScore,omitempty"`
	Action               string    `json:"action"`
	Status               int       `json:"status,omitempty"`
	CorrelationID        string    `json:"correlationId"`
	Listener             string    `json:"listener"`
	Route                string    `json:"route,omitempty"`
	Policy               string    `json:"policy,omitempty"`
	Mode                 string    `json:"mode,omitempty"`
	// Reason is set for blocks that no rule made (body too large).
	Reason string `json:"reason,omitempty"`
	// Details are the matched rules in ModSecurity's error-log format
	// ([id "942100"] [msg "..."] [data "..."] ...), for tuning and for
	// tools that expect that format.
	Details []string `json:"details,omitempty"`
}

// eventLog writes events as JSON lines, one Write per line, in order.
type eventLog struct {
	mu sync.Mutex
	w  io.Writer
	on func(*Event) // Options.OnEvent
}

func (l *eventLog) write(e *Event) {
	if l == nil {
		return
	}
	if l.on != nil {
		l.on(e)
	}
	if l.w == nil {
		return
	}
	b, err := json.Marshal(e)
	if err != nil {
		return
	}
	b = append(b, '\n')
	l.mu.Lock()
	_, _ = l.w.Write(b)
	l.mu.Unlock()
}

// newCorrelationID returns 16 random hex digits.
func newCorrelationID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// logger reports Log() for matched rules (not in the public interface).
type logger interface{ Log() bool }

// fillMatches adds the logging matched rules of tx to e.
func fillMatches(e *Event, tx types.Transaction) {
	for _, mr := range tx.MatchedRules() {
		if l, ok := mr.(logger); ok && !l.Log() {
			continue
		}
		if len(mr.MatchedDatas()) == 0 {
			continue
		}
		e.RuleIDs = append(e.RuleIDs, mr.Rule().ID())
		e.Messages = append(e.Messages, mr.Message())
		e.Details = append(e.Details, mr.ErrorLog())
	}
	if st, ok := tx.(plugintypes.TransactionState); ok {
		txv := st.Variables().TX()
		e.AnomalyScore = firstInt(txv.Get("blocking_inbound_anomaly_score"))
		e.OutboundAnomalyScore = firstInt(txv.Get("blocking_outbound_anomaly_score"))
	}
}

func firstInt(v []string) int {
	if len(v) == 0 {
		return 0
	}
	n, _ := strconv.Atoi(v[0])
	return n
}

var _ = telemetry.CategoryWAF
