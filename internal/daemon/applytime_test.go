package daemon

import (
	"encoding/json"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
)

// TestApplyStagesInMetricsAndLog: every successful apply adds one
// observation per stage (load, validate, compile, kernel, total) to
// clusterwall_policy_apply_duration_seconds on /metrics, and its "policy
// applied" log line has apply_ms and the stages load_ms, validate_ms,
// compile_ms and kernel_ms; a rejected policy adds none.
func TestApplyStagesInMetricsAndLog(t *testing.T) {
	d, _, _, logs := newAuthDaemon(t) // one apply: the start
	stages := []string{"load", "validate", "compile", "kernel", "total"}
	scrape := func() map[string][2]float64 { // stage -> count, sum
		t.Helper()
		rec := httptest.NewRecorder()
		d.metrics.handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		out := map[string][2]float64{}
		for _, line := range strings.Split(rec.Body.String(), "\n") {
			for _, s := range stages {
				for i, suffix := range []string{"_count", "_sum"} {
					prefix := metricApplyDuration + suffix + `{stage="` + s + `"} `
					if v, ok := strings.CutPrefix(line, prefix); ok {
						f, err := strconv.ParseFloat(v, 64)
						if err != nil {
							t.Fatalf("%s: %v", line, err)
						}
						x := out[s]
						x[i] = f
						out[s] = x
					}
				}
			}
		}
		return out
	}
	check := func(want float64) map[string][2]float64 {
		t.Helper()
		got := scrape()
		for _, s := range stages {
			if got[s][0] != want {
				t.Errorf("%s{stage=%q} count = %v, want %v", metricApplyDuration, s, got[s][0], want)
			}
		}
		return got
	}
	check(1)
	if err := d.ApplyBytes("test", []byte(appliedPolicy)); err != nil {
		t.Fatal(err)
	}
	got := check(2)
	parts := got["load"][1] + got["validate"][1] + got["compile"][1] + got["kernel"][1]
	if got["total"][1] <= 0 || got["total"][1] < parts-1e-4 {
		t.Errorf("total %v s < the stages' sum %v s", got["total"][1], parts)
	}
	if err := d.ApplyBytes("test", []byte("name: [broken")); err == nil {
		t.Fatal("a broken policy applied")
	}
	check(2)

	var applied int
	for _, line := range strings.Split(logs.String(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) != nil || rec["msg"] != "policy applied" {
			continue
		}
		applied++
		for _, k := range []string{"apply_ms", "load_ms", "validate_ms", "compile_ms", "kernel_ms"} {
			if _, ok := rec[k].(float64); !ok {
				t.Errorf("policy applied line without %s: %s", k, line)
			}
		}
	}
	if applied != 2 {
		t.Errorf("%d policy applied lines, want 2:\n%s", applied, logs.String())
	}
}
