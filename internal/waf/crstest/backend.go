package crstest

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
)

// reflectSpec is the body of a request to /reflect, as the CRS "albedo"
// backend reads it: the response to send back.
type reflectSpec struct {
	Status      int               `json:"status"`
	Headers     map[string]string `json:"headers"`
	Body        string            `json:"body"`
	EncodedBody string            `json:"encodedBody"`
	LogMessage  string            `json:"logMessage"`
}

// Backend is the echo backend behind the WAF during a run, modelled on
// albedo: POST /reflect answers with the status, headers and body its JSON
// asks for (the response-rule tests use it); every other request gets 200
// with a short body after its request body is read.
func Backend() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 64<<20))
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		if r.URL.Path != "/reflect" {
			w.WriteHeader(http.StatusOK)
			_, _ = io.WriteString(w, "Hello!")
			return
		}
		var spec reflectSpec
		if err := json.Unmarshal(body, &spec); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			_, _ = io.WriteString(w, "Invalid JSON in request body")
			return
		}
		if spec.Status != 0 && (spec.Status < 100 || spec.Status >= 600) {
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprintf(w, "Invalid status code: %d", spec.Status)
			return
		}
		out := []byte(spec.Body)
		if spec.Body == "" && spec.EncodedBody != "" {
			out, err = base64.StdEncoding.DecodeString(spec.EncodedBody)
			if err != nil {
				w.WriteHeader(http.StatusBadRequest)
				_, _ = io.WriteString(w, "invalid base64 encoding of response body")
				return
			}
		}
		for k, v := range spec.Headers {
			w.Header().Add(k, v)
		}
		status := spec.Status
		if status == 0 {
			status = http.StatusOK
		}
		w.WriteHeader(status)
		_, _ = w.Write(out)
	})
}
