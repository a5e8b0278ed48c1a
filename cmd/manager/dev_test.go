package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// quietFor is how long after the banner the terminal must stay silent.
const quietFor = 3 * time.Second

// TestDevCommand runs what `make run` runs, as a user would: the built binary, then
// kubectl through the kubeconfig it prints, TLS clients that trust only PIPES_API_CA,
// then Ctrl-C.
func TestDevCommand(t *testing.T) {
	r := startDev(t, devOptions{})
	bannerAt := r.waitBanner()
	cp := r.controlPlane()
	dir, assets := r.dir, r.assets

	env, err := os.ReadFile(filepath.Join(dir, "env"))
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if !strings.Contains(string(env), "KUBECONFIG="+kubeconfig) {
		t.Fatalf("env file does not export the kubeconfig: %q", env)
	}

	t.Run("backend API certificate is issued by PIPES_API_CA", func(t *testing.T) {
		apiURL, caFile := exported(t, env, "PIPES_API_URL"), exported(t, env, "PIPES_API_CA")
		u, err := url.Parse(apiURL)
		if err != nil || u.Scheme != "https" {
			t.Fatalf("PIPES_API_URL %q", apiURL)
		}
		ca := readCert(t, caFile)
		if !ca.IsCA || !ca.BasicConstraintsValid || ca.KeyUsage&x509.KeyUsageCertSign == 0 {
			t.Errorf("PIPES_API_CA is not a CA certificate (IsCA %v, KeyUsageCertSign %v)", ca.IsCA, ca.KeyUsage&x509.KeyUsageCertSign != 0)
		}
		conn, err := tls.Dial("tcp", u.Host, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // to inspect what is served
		if err != nil {
			t.Fatal(err)
		}
		served := conn.ConnectionState().PeerCertificates
		_ = conn.Close()
		leaf := served[0]
		if bytes.Equal(leaf.Raw, ca.Raw) {
			t.Fatal("PIPES_API_CA is the served certificate itself, not the CA that issued it")
		}
		if leaf.IsCA {
			t.Error("the served certificate is a CA certificate")
		}
		if err := leaf.CheckSignatureFrom(ca); err != nil {
			t.Errorf("the served certificate is not signed by PIPES_API_CA: %v", err)
		}
		roots := x509.NewCertPool()
		roots.AddCert(ca)
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: u.Hostname()}); err != nil {
			t.Errorf("the served certificate does not verify against PIPES_API_CA for %s: %v", u.Hostname(), err)
		}

		// Clients that never take a leaf as a trust anchor: OpenSSL and Node (the SDK's).
		if openssl, err := exec.LookPath("openssl"); err != nil {
			t.Log("openssl not installed; skipping its check")
		} else {
			out, err := exec.Command(openssl, "s_client", "-connect", u.Host, "-verify_return_error",
				"-verify_ip", u.Hostname(), "-CAfile", caFile).CombinedOutput()
			if err != nil || !strings.Contains(string(out), "Verify return code: 0 (ok)") {
				t.Errorf("openssl s_client -verify_return_error -CAfile $PIPES_API_CA: %v\n%s", err, out)
			}
		}
		if node, err := exec.LookPath("node"); err != nil {
			t.Log("node not installed; skipping its check")
		} else {
			script := `const https = require("https"), fs = require("fs");
https.get(process.env.PIPES_API_URL + "/", {ca: fs.readFileSync(process.env.PIPES_API_CA)}, (res) => {
  console.log("TLS ok, HTTP " + res.statusCode); process.exit(0);
}).on("error", (e) => { console.error(e.code || e.message); process.exit(1); });`
			cmd := exec.Command(node, "-e", script)
			cmd.Env = append(os.Environ(), "PIPES_API_URL="+apiURL, "PIPES_API_CA="+caFile)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("node https.get with ca: $PIPES_API_CA: %v\n%s", err, out)
			}
		}
	})

	kubectl := func(args ...string) string {
		out, err := exec.Command(filepath.Join(assets, "kubectl"), append([]string{"--kubeconfig", kubeconfig}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("kubectl %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	crds := kubectl("get", "crd", "-o", "name")
	for _, want := range []string{"providers.pipes.dev", "organizationproviders.pipes.dev", "connectedaccounts.pipes.dev"} {
		if !strings.Contains(crds, want) {
			t.Errorf("kubectl get crd lacks %s:\n%s", want, crds)
		}
	}
	// Through the validating webhooks, which the API server calls trusting the dev CA.
	kubectl("apply", "-f", filepath.Join(r.root, "config", "samples"))
	deadline := time.Now().Add(30 * time.Second)
	for {
		state := kubectl("get", "connectedaccount", "openai-user-123", "-o", "jsonpath={.status.state}/{.status.apiKeyLast4}")
		if state == "connected/7f3a" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sample account not connected, state %q", state)
		}
		time.Sleep(200 * time.Millisecond)
	}

	t.Run("the widget demo page embeds the widget for the demo user, who can connect a key", func(t *testing.T) {
		if !strings.Contains(r.term.String(), "OAuth callback: http://"+r.public+"/oauth/callback") {
			t.Errorf("the banner does not give the OAuth callback URL:\n%s", r.term)
		}
		if !strings.Contains(r.term.String(), "Widget demo: http://"+r.demo+"/") {
			t.Fatalf("the banner does not give the demo page's URL:\n%s", r.term)
		}
		resp, err := http.Get("http://" + r.demo + "/")
		if err != nil {
			t.Fatal(err)
		}
		page, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		script := regexp.MustCompile(`<script src="(http://[^"]+/widget/v/[0-9a-f]{12}/pipes-widget.js)" defer></script>`).FindSubmatch(page)
		token := regexp.MustCompile(`<pipes-connections token="([^"]+)">`).FindSubmatch(page)
		if script == nil || token == nil || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "script-src http://"+r.public) {
			t.Fatalf("the demo page does not embed the widget from the public listener (CSP %q):\n%s", resp.Header.Get("Content-Security-Policy"), page)
		}
		if resp, err := http.Get(string(script[1])); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("the widget script: %v %v", err, resp)
		}
		// What the widget does in the demo page: the page's origin is allowed.
		req, _ := http.NewRequest(http.MethodPut, "http://"+r.public+"/widget/api/v1/providers/openai/api-key", strings.NewReader(`{"secret":"sk-demo-typed-in-browser-1234"}`))
		req.Header.Set("Authorization", "Bearer "+string(token[1]))
		req.Header.Set("Origin", "http://"+r.demo)
		resp, err = http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Access-Control-Allow-Origin") != "http://"+r.demo || !strings.Contains(string(body), `"api_key_last_4":"1234"`) {
			t.Fatalf("connecting a key as the demo page: %d %q\n%s", resp.StatusCode, resp.Header.Get("Access-Control-Allow-Origin"), body)
		}
	})

	t.Run("manager keyset acts on both keysets, through the kubeconfig", func(t *testing.T) {
		bin, _, _ := devManager(t)
		manager := func(args ...string) (stdout, stderr string, err error) {
			cmd := exec.Command(bin, args...)
			cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig, "POD_NAMESPACE=")
			var out, errOut bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &errOut
			err = cmd.Run()
			return out.String(), errOut.String(), err
		}
		expect := func(want string, args ...string) string {
			t.Helper()
			out, errOut, err := manager(args...)
			if err != nil || !strings.Contains(out+errOut, want) {
				t.Fatalf("manager %v: %v, want %q in\n%s%s", args, err, want, out, errOut)
			}
			return out
		}
		expect("keyset pipes-system/pipes-keyset: primary key", "keyset", "status")
		expect("sealing keyset pipes-system/pipes-sealing-keyset: primary key", "keyset", "status", "--sealing")
		file := filepath.Join(t.TempDir(), "pipes-sealing-keyset.json")
		expect("saved to "+file, "keyset", "backup", "--sealing", "--file", file)
		if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("sealing keyset backup: %v", err)
		}
		expect("last backup", "keyset", "status", "--sealing")
		expect("new primary sealing key", "keyset", "rotate", "--sealing")
		expect("does not hold primary key", "keyset", "status", "--sealing")
		if _, errOut, err := manager("keyset", "bogus"); err == nil || !strings.Contains(errOut, "--sealing") {
			t.Fatalf("manager keyset bogus: %v\n%s", err, errOut)
		}
	})

	t.Run("terminal shows the banner last; the log is in manager.log", func(t *testing.T) {
		if wait := time.Until(bannerAt.Add(quietFor)); wait > 0 {
			time.Sleep(wait)
		}
		lines := r.term.snapshot()
		var bannerStream string
		for _, l := range lines {
			if strings.Contains(l.text, banner) {
				bannerStream = l.stream
			}
			if strings.Contains(l.text, "\tINFO\t") {
				t.Errorf("INFO log line on the terminal: %q", l.text)
				break
			}
		}
		if bannerStream != "out" {
			t.Errorf("banner printed on std%s, want stdout", bannerStream)
		}
		last := lines[len(lines)-1]
		if last.at.After(bannerAt.Add(time.Second)) {
			t.Errorf("printed %v after the banner (the banner must come last, after startup): %q", last.at.Sub(bannerAt), last.text)
		}
		var bannerText strings.Builder
		for _, l := range lines {
			if !l.at.Before(bannerAt) {
				bannerText.WriteString(l.text + "\n")
			}
		}
		logFile := filepath.Join(dir, "manager.log")
		if !strings.Contains(bannerText.String(), logFile) && !strings.Contains(bannerText.String(), "manager.log") {
			t.Errorf("the banner does not say where the log is:\n%s", bannerText.String())
		}
		log, err := os.ReadFile(logFile)
		if err != nil {
			t.Fatalf("no log file: %v", err)
		}
		if !strings.Contains(string(log), "\tINFO\t") || !strings.Contains(string(log), "serving backend API") {
			t.Errorf("%s lacks the manager's INFO lines:\n%.2000s", logFile, log)
		}
		if t.Failed() {
			t.Logf("terminal:\n%s", r.term)
		}
	})

	if err := r.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if err := r.wait(time.Minute); err != nil {
		t.Fatalf("manager dev exited with %v after Ctrl-C:\n%s", err, r.term)
	}
	assertNothingLeft(t, cp, dir)
}

// exported returns the value the env file exports for name.
func exported(t *testing.T, env []byte, name string) string {
	t.Helper()
	for _, l := range strings.Split(string(env), "\n") {
		if v, ok := strings.CutPrefix(l, "export "+name+"="); ok {
			return v
		}
	}
	t.Fatalf("env file does not export %s:\n%s", name, env)
	return ""
}

func readCert(t *testing.T, file string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatalf("%s holds no PEM certificate", file)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}
