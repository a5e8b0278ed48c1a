package validation

import (
	"strings"
	"testing"
)

func TestPodInjectionRules(t *testing.T) {
	for _, v := range []string{"true", "false"} {
		if err := InjectLabel(v); err != nil {
			t.Errorf("InjectLabel(%q) = %v", v, err)
		}
	}
	if err := InjectLabel("True"); err == nil || !strings.Contains(err.Error(), `label pipes.dev/inject="True": want "true" or "false"`) {
		t.Errorf("a typo in the label must be named: %v", err)
	}
	if err := InjectHostNetwork(false, "127.0.0.1:8299"); err != nil {
		t.Errorf("a pod without hostNetwork: %v", err)
	}
	if err := InjectHostNetwork(true, "127.0.0.1:8299"); err == nil || !strings.Contains(err.Error(), "run the pod without hostNetwork") {
		t.Errorf("a host-network pod must be refused with what to do: %v", err)
	}
	used := func(port int32) string {
		if port == 8080 {
			return "app"
		}
		return ""
	}
	for raw, want := range map[string]string{
		"9299":  "",
		"8299":  "other than 8299",
		"0":     "want a port number",
		"70000": "want a port number",
		"http":  "want a port number",
		"8080":  `container "app" already uses port 8080`,
	} {
		port, err := VendMetricsPort(raw, 8299, used)
		switch {
		case want == "" && (err != nil || port != 9299):
			t.Errorf("VendMetricsPort(%q) = %d, %v", raw, port, err)
		case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
			t.Errorf("VendMetricsPort(%q) = %v; want an error saying %q", raw, err, want)
		}
	}
}
