package controller

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/clusterwall/clusterwall/internal/apis/clusterwall/v1alpha1"
	"github.com/clusterwall/clusterwall/internal/lab"
)

// TestHALabSamePolicyOnBothGateways is the documented HA path for the
// policy (docs/ha.md): one controller, both gateways' daemons as --daemon.
// It applies the FirewallPolicy to both; each gateway's /v1/status shows
// the peer running the same policy; a gateway someone applies another
// policy to directly shows the mismatch on its peer (policyInSync false,
// the peer's generation), and the controller's resync puts it back.
func TestHALabSamePolicyOnBothGateways(t *testing.T) {
	lab.RequireLab(t)
	c := kubeClient(t)
	exe := lab.BuildBinary(t)
	dir := t.TempDir()
	polFile := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(polFile, []byte(initialPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	l := lab.NewTestLab(t, lab.Config{Exe: exe, Daemon: &lab.DaemonOptions{Policy: polFile}, HA: &lab.HAOptions{}})
	t.Cleanup(func() {
		if t.Failed() {
			for _, p := range []string{lab.DaemonProc, lab.Daemon2Proc} {
				data, _ := os.ReadFile(l.LogFile(p))
				t.Logf("%s.log:\n%s", p, data)
			}
		}
	})
	// Both daemons listen on 127.0.0.1:9180 in their own namespaces: the
	// controller reaches them as fw.lab and fw2.lab.
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, _, _ := net.SplitHostPort(addr)
			return l.DialContext(strings.TrimSuffix(host, ".lab"))(ctx, network, lab.DaemonAdmin)
		}}}
	urls := []string{"http://fw.lab:9180", "http://fw2.lab:9180"}
	const pol = "ha"
	startController(t, Options{PolicyName: pol, Daemons: urls, HTTP: hc, Resync: 2 * time.Second})

	fp := &v1.FirewallPolicy{ObjectMeta: metav1.ObjectMeta{Name: pol}, Spec: v1.FirewallPolicySpec{
		RuleCollectionGroups: []v1.RuleCollectionGroupSpecNamed{{Name: "platform", RuleCollectionGroupSpec: v1.RuleCollectionGroupSpec{
			Priority: 200,
			RuleCollections: []v1.RuleCollection{{Name: "tunnels", Kind: "Network", Priority: 100, Action: "Allow", Rules: []v1.Rule{{
				Name: "to-nonazure", Protocols: []string{"TCP"}, SourceAddresses: []string{"*"},
				DestinationAddresses: []string{"192.0.2.99"}, DestinationPorts: []string{"9000"},
			}}}},
		}}},
	}}
	create(t, c, fp)
	eventually(t, 30*time.Second, "policy programmed", policyCond(c, pol, v1.ConditionProgrammed, metav1.ConditionTrue, "applied to 2 daemon(s)"))
	waitFlow(t, "node → 192.0.2.99:9000 through the active gateway", true, func() bool { return tunnel(l, lab.HostNode) })

	type peerView struct {
		Generation uint64 `json:"generation"`
		HA         struct {
			Peer struct {
				Reachable    bool   `json:"reachable"`
				Generation   uint64 `json:"generation"`
				PolicySHA256 string `json:"policySHA256"`
			} `json:"peer"`
			PolicyInSync *bool `json:"policyInSync"`
		} `json:"ha"`
	}
	status := func(host string) (peerView, error) {
		var v peerView
		code, body, err := l.AdminOf(context.Background(), host, http.MethodGet, "/v1/status")
		if err != nil || code != http.StatusOK {
			return v, fmt.Errorf("%s /v1/status: %d %v", host, code, err)
		}
		return v, json.Unmarshal(body, &v)
	}
	inSync := func(want bool) func() string {
		return func() string {
			for _, h := range []string{lab.HostFW, lab.HostFW2} {
				v, err := status(h)
				if err != nil {
					return err.Error()
				}
				if v.HA.PolicyInSync == nil || *v.HA.PolicyInSync != want {
					return fmt.Sprintf("%s: policyInSync %v (peer reachable %v, peer generation %d), want %v", h, v.HA.PolicyInSync, v.HA.Peer.Reachable, v.HA.Peer.Generation, want)
				}
			}
			return ""
		}
	}
	eventually(t, 10*time.Second, "both gateways run the controller's policy", inSync(true))

	// Someone applies another policy to fw2 alone: both gateways show it.
	if _, err := (&DaemonClient{URL: urls[1], HTTP: hc}).Apply(context.Background(), []byte(initialPolicy)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the mismatch is visible", inSync(false))
	// The controller's resync applies its policy to fw2 again.
	eventually(t, 30*time.Second, "the controller restores the same policy on both", inSync(true))
	fw, err := status(lab.HostFW)
	if err != nil {
		t.Fatal(err)
	}
	fw2, err := status(lab.HostFW2)
	if err != nil {
		t.Fatal(err)
	}
	if fw.HA.Peer.Generation != fw2.Generation || fw2.HA.Peer.Generation != fw.Generation {
		t.Errorf("peer generations: fw sees %d (fw2 has %d), fw2 sees %d (fw has %d)", fw.HA.Peer.Generation, fw2.Generation, fw2.HA.Peer.Generation, fw.Generation)
	}
}
