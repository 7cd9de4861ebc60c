package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/clusterwall/clusterwall/internal/lab"
)

// dashboardPolicy has a rule the test hits, one it never hits, an
// explicit Deny, and an application rule (HTTPS by name through the L7
// proxy).
const dashboardPolicy = `name: e2e-dashboard
ruleCollectionGroups:
  - name: egress
    priority: 200
    ruleCollections:
      - name: allow-web
        kind: Network
        priority: 100
        action: Allow
        rules:
          - name: mcr-http
            protocols: [TCP]
            sourceAddresses: ['*']
            destinationAddresses: [192.0.2.11]
            destinationPorts: ['80']
          - name: ghcr-https-unused
            protocols: [TCP]
            sourceAddresses: ['*']
            destinationAddresses: [192.0.2.10]
            destinationPorts: ['443']
      - name: deny-raw
        kind: Network
        priority: 200
        action: Deny
        rules:
          - name: raw-http
            protocols: [TCP]
            sourceAddresses: ['*']
            destinationAddresses: [192.0.2.16]
            destinationPorts: ['80']
  - name: apps
    priority: 300
    ruleCollections:
      - name: registries
        kind: Application
        priority: 100
        action: Allow
        rules:
          - name: ghcr-by-name
            protocols: ['Https:443']
            sourceAddresses: [10.42.1.0/24]
            targetFqdns: [ghcr.io]
`

// chromiumPath finds Debian's Chromium (package chromium).
func chromiumPath() string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// artifactsDir is $ARTIFACTS_DIR, else test/artifacts (gitignored).
func artifactsDir(t *testing.T) string {
	dir := os.Getenv("ARTIFACTS_DIR")
	if dir == "" {
		dir = filepath.Join(repoRoot, "test", "artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestDashboardInBrowser loads the dashboard in a real headless Chromium
// running inside the lab's firewall namespace (where the admin listener
// is, on that namespace's loopback), makes denied and allowed requests
// from the node and checks what the page shows: the denied flows in the
// live stream within seconds, the top denied destinations, and the
// policy's never-hit rule. Screenshots go to $ARTIFACTS_DIR or
// test/artifacts.
func TestDashboardInBrowser(t *testing.T) {
	requireFW(t)
	browser := chromiumPath()
	if browser == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("chromium is not installed (Debian: apt-get install -y chromium; make test-deps installs it)")
		}
		t.Skip("chromium is not installed (Debian: apt-get install -y chromium); skipping the browser test")
	}
	ipBin, err := exec.LookPath("ip")
	if err != nil {
		t.Skip("no ip(8)")
	}
	f := newFWLab(t, dashboardPolicy)
	ns := f.NS(lab.HostFW)

	// Chromium talks CDP over a pipe (fds 3 and 4), so no debugging port is
	// opened anywhere; `ip netns exec` keeps those fds.
	profile := t.TempDir()
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		append(chromedp.DefaultExecAllocatorOptions[:],
			chromedp.ExecPath(browser),
			chromedp.UserDataDir(profile),
			chromedp.Flag("no-sandbox", true), // root
			chromedp.Flag("disable-gpu", true),
			chromedp.Flag("disable-component-update", true),
			chromedp.WindowSize(1400, 1000),
			chromedp.ModifyCmdFunc(func(cmd *exec.Cmd) {
				cmd.Args = append([]string{ipBin, "netns", "exec", ns}, cmd.Args...)
				cmd.Path = ipBin
				cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
			}),
		)...)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(allocCtx, chromedp.WithErrorf(t.Logf))
	defer cancel()
	ctx, cancelT := context.WithTimeout(ctx, 2*time.Minute)
	defer cancelT()

	dir := artifactsDir(t)
	shot := func(name string) {
		t.Helper()
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100) /* 100: PNG */)
		if err != nil {
			t.Errorf("screenshot %s: %v", name, err)
			return
		}
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Error(err)
			return
		}
		t.Logf("screenshot: %s (%d bytes)", path, len(png))
		// No view shows a JavaScript hole.
		text, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector("main").innerText`))
		if m := regexp.MustCompile(`null|undefined|NaN|\[object Object\]`).FindString(text); m != "" {
			t.Errorf("%s: the page shows %q:\n%s", name, m, text)
		}
	}
	// wait polls a JavaScript predicate in the page.
	wait := func(what, js string, timeout time.Duration) {
		t.Helper()
		start := time.Now()
		if err := chromedp.Do(ctx, chromedp.Poll[chromedp.Void](js, chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(timeout))); err != nil {
			body, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector("main").innerText`))
			shot("dashboard-failed.png")
			t.Fatalf("dashboard: %s not seen after %s: %v\npage text:\n%s", what, timeout, err, body)
		}
		t.Logf("dashboard: %s after %s", what, time.Since(start).Round(time.Millisecond))
	}

	url := "http://" + lab.DaemonAdmin + "/"
	if err := chromedp.Do(ctx, chromedp.Navigate(url)); err != nil {
		t.Fatalf("load %s in Chromium: %v", url, err)
	}
	loc, _ := chromedp.Run(ctx, chromedp.Location())
	if loc != "http://"+lab.DaemonAdmin+"/ui/" {
		t.Errorf("/ led to %s, want /ui/", loc)
	}
	wait("the status line", `document.getElementById("status").textContent.includes("e2e-dashboard")`, 10*time.Second)
	if err := chromedp.Do(ctx, chromedp.Navigate("http://"+lab.DaemonAdmin+"/ui/#live")); err != nil {
		t.Fatal(err)
	}
	wait("the live stream connected", `document.getElementById("live-state").textContent === "live"`, 10*time.Second)

	// A flow the default action denies (a port no test used, so the row
	// is this one) and one an explicit Deny rule denies.
	port := 20000 + rand.IntN(20000)
	dflt := netip.AddrPortFrom(netip.MustParseAddr("192.0.2.99"), uint16(port))
	sent := time.Now()
	o, _, err := f.tcpLine(lab.HostNode, netip.Addr{}, dflt)
	if err != nil || o == passed {
		t.Fatalf("node → %s: %v %v, want it denied", dflt, o, err)
	}
	gaveUp := time.Since(sent)
	rowJS := func(dst, rule string) string {
		return fmt.Sprintf(`[...document.querySelectorAll("#live-rows tr")].some(tr => tr.dataset.action === "Deny" && tr.cells[1].innerText.startsWith("NetworkRule") && tr.innerText.includes(%q) && tr.innerText.includes(%q))`, dst, rule)
	}
	wait("the default-deny row "+dflt.String(), rowJS(dflt.String(), "no rule matched"), 5*time.Second)
	t.Logf("denied flow on the page %s after its SYN (the client %s, after %s)", time.Since(sent).Round(time.Millisecond), o, gaveUp.Round(time.Millisecond))

	raw := netip.MustParseAddrPort("192.0.2.16:80")
	if o, _, err := f.tcpLine(lab.HostNode, netip.Addr{}, raw); err != nil || o == passed {
		t.Fatalf("node → %s: %v %v, want it denied", raw, o, err)
	}
	wait("the raw-http row", rowJS(raw.String(), "raw-http"), 5*time.Second)
	shot("dashboard-live.png")

	// The text filter narrows the stream (and reconnects it).
	if err := chromedp.Do(ctx, chromedp.SendKeys(chromedp.CSS("#f-q"), "192.0.2.16")); err != nil {
		t.Fatal(err)
	}
	wait("the filtered stream", `document.getElementById("live-state").textContent === "live" && [...document.querySelectorAll("#live-rows tr")].length > 0 && [...document.querySelectorAll("#live-rows tr")].every(tr => tr.innerText.includes("192.0.2.16"))`, 5*time.Second)

	// An allowed flow hits mcr-http; ghcr-https-unused stays never hit.
	if o, line, err := f.tcpLine(lab.HostNode, netip.Addr{}, netip.MustParseAddrPort("192.0.2.11:80")); err != nil || o != passed {
		t.Fatalf("node → 192.0.2.11:80: %v %q %v, want it allowed", o, line, err)
	}

	if err := chromedp.Do(ctx, chromedp.Navigate("http://"+lab.DaemonAdmin+"/ui/#overview")); err != nil {
		t.Fatal(err)
	}
	wait("the top denied destinations", `[...document.querySelectorAll("#top-denied td")].some(td => td.innerText === "`+dflt.String()+`") && document.querySelectorAll("#chart svg path").length === 4`, 10*time.Second)
	wait("the denied counter", `Number(document.getElementById("ov-denied").textContent.replace(/,/g, "")) >= 2`, 5*time.Second)
	shot("dashboard-overview.png")

	if err := chromedp.Do(ctx, chromedp.Navigate("http://"+lab.DaemonAdmin+"/ui/#policy")); err != nil {
		t.Fatal(err)
	}
	wait("the policy with hit counts", `(() => {
		const row = (n) => document.querySelector('#policy-body tr[data-rule="' + n + '"]');
		return row("ghcr-https-unused")?.classList.contains("never") && row("mcr-http") && !row("mcr-http").classList.contains("never") && row("raw-http") && !row("raw-http").classList.contains("never");
	})()`, 10*time.Second)
	// Each rule shows what it matches, not only its name.
	wait("the rules' sources, destinations and ports", `(() => {
		const m = (n) => document.querySelector('#policy-body tr[data-rule="' + n + '"] td.matches')?.innerText;
		return m("mcr-http") === "* → 192.0.2.11 · TCP 80" && m("raw-http") === "* → 192.0.2.16 · TCP 80" &&
			m("ghcr-by-name") === "10.42.1.0/24 → ghcr.io · Https:443";
	})()`, 5*time.Second)
	// The flows denied by default include the L7 proxy's (a name no rule
	// allows) as well as the kernel's; never "0" after the denials above.
	if _, err := f.Exec(context.Background(), lab.HostNode, "curl", "-sS", "-m", "3", "--cacert", f.CAFile(), "https://example.org/"); err == nil {
		t.Errorf("https://example.org/ passed; the policy allows only ghcr.io by name")
	}
	var hits struct {
		DefaultDenyHits uint64 `json:"defaultDenyHits"`
	}
	if code, body, err := f.Admin(ctx, http.MethodGet, "/v1/rules"); err != nil || code != http.StatusOK || json.Unmarshal(body, &hits) != nil || hits.DefaultDenyHits < 2 {
		t.Errorf("GET /v1/rules defaultDenyHits = %d (%d %v), want the kernel's and the proxy's", hits.DefaultDenyHits, code, err)
	}
	if err := chromedp.Do(ctx, chromedp.Reload()); err != nil {
		t.Fatal(err)
	}
	wait("the flows denied by default", `(() => {
		const m = document.getElementById("policy-summary").innerText.match(/([\d,]+) flows denied by default \(no rule matched: kernel and L7 proxy\)/);
		return m && Number(m[1].replace(/,/g, "")) >= 2;
	})()`, 10*time.Second)
	shot("dashboard-policy.png")

	if err := chromedp.Do(ctx, chromedp.Navigate("http://"+lab.DaemonAdmin+"/ui/#dns")); err != nil {
		t.Fatal(err)
	}
	// The DNS view lists what the daemon reports.
	var ups struct {
		Enabled   bool `json:"enabled"`
		Upstreams []struct {
			Addr    string `json:"addr"`
			Healthy bool   `json:"healthy"`
		} `json:"upstreams"`
	}
	code, body, err := f.Admin(ctx, http.MethodGet, "/v1/dns/upstreams")
	if err != nil || code != http.StatusOK || json.Unmarshal(body, &ups) != nil {
		t.Fatalf("GET /v1/dns/upstreams: %d %v %s", code, err, body)
	}
	want := `document.getElementById("dns-state").textContent.includes("DNS proxy is off")`
	if ups.Enabled {
		var conds []string
		for _, u := range ups.Upstreams {
			health := "down"
			if u.Healthy {
				health = "healthy"
			}
			conds = append(conds, fmt.Sprintf(`[...document.querySelectorAll("#dns-rows tr")].some(tr => tr.cells[0].innerText === %q && tr.cells[1].innerText === %q)`, u.Addr, health))
		}
		want = `document.getElementById("dns-state").textContent.includes("listens on") && ` + strings.Join(append(conds, "true"), " && ")
	}
	wait(fmt.Sprintf("the DNS upstreams view (%d upstreams)", len(ups.Upstreams)), want, 5*time.Second)
	shot("dashboard-dns.png")

	// With admin.tokenFile the page asks for the token once, keeps it in
	// localStorage and sends it (also on the live stream).
	const tok = "dashboard-e2e-token-0123456789"
	f.enableTokens(t, tok+" e2e\n")
	if code, _, _ := f.Admin(ctx, http.MethodGet, "/v1/status"); code != http.StatusUnauthorized {
		t.Fatalf("GET /v1/status without a token = %d after enabling tokens, want 401", code)
	}
	// A fresh page load (a hash change alone would keep the page and its
	// text filter).
	if err := chromedp.Do(ctx, chromedp.Navigate("http://"+lab.DaemonAdmin+"/ui/#live"), chromedp.Reload()); err != nil {
		t.Fatal(err)
	}
	wait("the token dialog", `document.getElementById("token-dialog").open && document.getElementById("live-state").textContent === "needs a token"`, 10*time.Second)
	shot("dashboard-token.png")
	if err := chromedp.Do(ctx, chromedp.SendKeys(chromedp.CSS("#token-input"), tok), chromedp.Click(chromedp.CSS("#token-save"))); err != nil {
		t.Fatal(err)
	}
	wait("the live stream with the token", `!document.getElementById("token-dialog").open && document.getElementById("live-state").textContent === "live" && localStorage.getItem("clusterwall.adminToken") === "`+tok+`"`, 10*time.Second)
	dflt2 := netip.AddrPortFrom(dflt.Addr(), dflt.Port()+1)
	if o, _, err := f.tcpLine(lab.HostNode, netip.Addr{}, dflt2); err != nil || o == passed {
		t.Fatalf("node → %s: %v %v, want it denied", dflt2, o, err)
	}
	wait("the default-deny row "+dflt2.String()+" over the authenticated stream", rowJS(dflt2.String(), "no rule matched"), 5*time.Second)
	// A reload keeps the token: no dialog, data loads.
	if err := chromedp.Do(ctx, chromedp.Navigate("http://"+lab.DaemonAdmin+"/ui/#overview")); err != nil {
		t.Fatal(err)
	}
	wait("the overview with the stored token", `!document.getElementById("token-dialog").open && document.getElementById("status").textContent.includes("e2e-dashboard") && document.getElementById("ov-observed").textContent !== "–"`, 10*time.Second)

	// The page ran without script errors that reached the console? The
	// error banner stays hidden when every API call worked.
	hidden, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.getElementById("error").hidden`))
	if err != nil || !hidden {
		text, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById("error").textContent`))
		t.Errorf("error banner shown: %q %v", strings.TrimSpace(text), err)
	}
}
