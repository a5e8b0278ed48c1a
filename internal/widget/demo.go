package widget

import (
	"fmt"
	"html/template"
	"net/http"
	"net/url"
)

// Demo serves pages that embed the widget as an application does: one script tag, one
// element, a token minted for each page load, and a strict Content-Security-Policy (no
// inline script or style; scripts and API calls to the operator's origin only). `make
// run` serves it for a newcomer, and the browser suite drives it.
type Demo struct {
	// ScriptURL is the widget script's absolute, versioned URL on the public listener.
	ScriptURL string
	// Mint returns a widget token for the page being served; admin asks for one with the
	// admin scope (the /admin page).
	Mint func(r *http.Request, admin bool) (string, error)
}

var demoPage = template.Must(template.New("demo").Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}} · pipes-operator widget demo</title>
<link rel="stylesheet" href="/demo.css">
<link rel="icon" href="data:,">
<script src="{{.Script}}" defer></script>
</head>
<body>
<main>
<h1>{{.Title}}</h1>
<p class="lede">{{.Lede}}</p>
{{if .Admin}}<pipes-admin token="{{.Token}}"></pipes-admin>{{else}}<pipes-connections token="{{.Token}}"></pipes-connections>{{end}}
<p class="foot"><a href="{{if .Admin}}/{{else}}/admin{{end}}{{.Query}}">{{if .Admin}}Your connections{{else}}Organization settings (admin){{end}}</a></p>
</main>
</body>
</html>
`))

const demoCSS = `body{margin:0;background:#eef1f4;font:16px/1.5 system-ui,sans-serif;color:#1f2328}
main{max-width:44rem;margin:3rem auto;padding:2rem;background:#fff;border-radius:12px;box-shadow:0 1px 3px rgba(0,0,0,.12)}
h1{margin-top:0;font-size:1.5rem}.lede{color:#57606a}.foot{margin-top:2rem;font-size:.9rem}a{color:#0a58ca}
`

func (d *Demo) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/demo.css":
		w.Header().Set("Content-Type", "text/css; charset=utf-8")
		_, _ = w.Write([]byte(demoCSS))
		return
	case "/", "/admin":
	default:
		http.NotFound(w, r)
		return
	}
	admin := r.URL.Path == "/admin"
	token, err := d.Mint(r, admin)
	if err != nil {
		http.Error(w, "minting a widget token: "+err.Error(), http.StatusBadGateway)
		return
	}
	script, err := url.Parse(d.ScriptURL)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	operator := script.Scheme + "://" + script.Host
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", fmt.Sprintf("default-src 'none'; script-src %s; connect-src %s; style-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'", operator, operator))
	h.Set("Referrer-Policy", "no-referrer")
	data := struct {
		Title, Lede, Script, Token, Query string
		Admin                             bool
	}{
		Title: "Your connections", Script: d.ScriptURL, Token: token, Admin: admin,
		Lede: "Connect the services this app uses on your behalf. Keys are stored encrypted in the cluster; only their last four characters are ever shown again.",
	}
	if r.URL.RawQuery != "" {
		data.Query = "?" + r.URL.RawQuery
	}
	if admin {
		data.Title, data.Lede = "Organization settings", "Choose which services the members of your organization may connect."
	}
	_ = demoPage.Execute(w, data)
}
