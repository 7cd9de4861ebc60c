package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/clusterwall/clusterwall/internal/ha"
)

// FQDN state in an HA pair (docs/ha.md, "FQDN state"): every answer the
// DNS proxy learns something new from goes to the peer's daemon over the
// sync link (POST /ha/v1/fqdn on the peer API), which learns it as if its
// own DNS proxy had handed it out: the table the L7 proxy's spoofing check
// and the matcher read, and the kernel's set of a destinationFqdns rule.
// So a client that resolved a name through one gateway can open a new flow
// to that address through the other, even when the other's own resolution
// of the name returns other addresses (round-robin and CDN names). When
// the peer becomes reachable (again, or as a restarted daemon), the whole
// table is sent.

// fqdnEntry is one learned answer on the wire.
type fqdnEntry struct {
	Name    string       `json:"name"`
	Addrs   []netip.Addr `json:"addrs"`
	Expires time.Time    `json:"expires"`
}

// Limits of the replication.
const (
	fqdnQueue     = 8192                  // answers waiting to be sent
	fqdnBatch     = 512                   // answers per request
	fqdnMaxBody   = 4 << 20               // bytes of a request the peer accepts
	fqdnMaxExpiry = 24 * time.Hour        // a peer cannot pin an address longer
	fqdnFlush     = 20 * time.Millisecond // batching delay
)

// fqdnReplicator queues learned answers for the peer.
type fqdnReplicator struct {
	ch                      chan fqdnEntry
	sent, received, dropped atomic.Uint64
	failed, snapshots, bad  atomic.Uint64
}

// haLearned is the DNS table's OnLearn: queue the answer for the peer
// (without HA, nothing).
func (d *Daemon) haLearned(name string, addrs []netip.Addr, expires time.Time) {
	r := d.fqdnRep.Load()
	if r == nil {
		return
	}
	select {
	case r.ch <- fqdnEntry{Name: name, Addrs: addrs, Expires: expires}:
	default:
		r.dropped.Add(1)
	}
}

// runFQDNReplication sends queued answers to the peer until ctx ends, and
// the whole table whenever the peer becomes reachable (again).
func (d *Daemon) runFQDNReplication(ctx context.Context, m *ha.Manager, r *fqdnReplicator) {
	s := m.Spec()
	url := "http://" + netip.AddrPortFrom(s.PeerAddr, s.APIPort).String() + "/ha/v1/fqdn"
	client := &http.Client{Timeout: 2 * time.Second}
	post := func(batch []fqdnEntry) {
		body, err := json.Marshal(batch)
		if err != nil {
			return
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			return
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				err = fmt.Errorf("peer: %s", resp.Status)
			}
		}
		if err != nil {
			r.failed.Add(uint64(len(batch)))
			return
		}
		r.sent.Add(uint64(len(batch)))
	}
	peer := "" // the peer daemon instance that has our table
	check := time.NewTicker(time.Second)
	defer check.Stop()
	var batch []fqdnEntry
	var flush <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case e := <-r.ch:
			batch = append(batch, e)
			if len(batch) >= fqdnBatch {
				post(batch)
				batch, flush = nil, nil
			} else if flush == nil {
				flush = time.After(fqdnFlush)
			}
		case <-flush:
			post(batch)
			batch, flush = nil, nil
		case <-check.C:
			st := m.Status().Peer
			if st.Reachable && st.Instance != peer {
				// The peer is up for the first time, again, or restarted
				// (and so lost what it was sent): send the whole table.
				var all []fqdnEntry
				d.table.Each(func(name string, addrs []netip.Addr, expires time.Time) {
					all = append(all, fqdnEntry{Name: name, Addrs: addrs, Expires: expires})
				})
				for len(all) > 0 {
					n := min(len(all), fqdnBatch)
					post(all[:n])
					all = all[n:]
				}
				r.snapshots.Add(1)
				peer = st.Instance
			}
		}
	}
}

// serveFQDN is the peer API's POST /ha/v1/fqdn: learn the peer's answers.
func (d *Daemon) serveFQDN(w http.ResponseWriter, req *http.Request) {
	r := d.fqdnRep.Load()
	var batch []fqdnEntry
	if err := json.NewDecoder(io.LimitReader(req.Body, fqdnMaxBody)).Decode(&batch); err != nil {
		if r != nil {
			r.bad.Add(1)
		}
		http.Error(w, "bad request: "+err.Error(), http.StatusBadRequest)
		return
	}
	now := time.Now()
	st := d.cur.Load()
	for _, e := range batch {
		if e.Expires.Before(now) {
			continue
		}
		if e.Expires.After(now.Add(fqdnMaxExpiry)) {
			e.Expires = now.Add(fqdnMaxExpiry)
		}
		interesting := st != nil && st.fqdns[e.Name]
		if !d.table.Learn(e.Name, e.Addrs, e.Expires, interesting) {
			continue
		}
		if interesting {
			if err := d.dp.AddFQDNAddrs(e.Name, e.Addrs, e.Expires.Sub(now)); err != nil {
				d.log.Warn("HA: adding the peer's FQDN addresses to the kernel", "name", e.Name, "err", err)
			}
		}
		if r != nil {
			r.received.Add(1)
		}
	}
	w.WriteHeader(http.StatusOK)
}
