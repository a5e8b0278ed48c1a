// Package widget owns the end-user widget's browser assets: the script defining the
// <pipes-connections> and <pipes-admin> custom elements, embedded into the manager
// binary and served compressed from a versioned URL (content hash) with a year-long cache,
// and from an unversioned one that browsers revalidate.
package widget

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"net/http"
	"strings"
)

//go:embed assets/pipes-widget.js
var assets embed.FS

// ScriptName is the widget script's file name.
const ScriptName = "pipes-widget.js"

// asset is one file, ready to serve.
type asset struct {
	raw, gz     []byte
	contentType string
	etag        string
}

// Assets are the widget's files and their versioned paths.
type Assets struct {
	// Version is the script's content hash (12 hex digits): it changes with every change
	// to the script, so the versioned URL can be cached for a year.
	Version string
	script  asset
}

// Load reads the embedded assets and compresses them once.
func Load() (*Assets, error) {
	raw, err := assets.ReadFile("assets/" + ScriptName)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(raw)
	var gz bytes.Buffer
	zw, err := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	if _, err := zw.Write(raw); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	version := hex.EncodeToString(sum[:6])
	return &Assets{Version: version, script: asset{raw: raw, gz: gz.Bytes(), contentType: "text/javascript; charset=utf-8", etag: `"` + version + `"`}}, nil
}

// ScriptPath is the script's versioned path: what an application puts in its script tag.
func (a *Assets) ScriptPath() string { return "/widget/v/" + a.Version + "/" + ScriptName }

// LatestScriptPath is the unversioned path, always the current script (revalidated).
const LatestScriptPath = "/widget/" + ScriptName

// GzipSize is the compressed size of the script, as served to browsers.
func (a *Assets) GzipSize() int { return len(a.script.gz) }

// Register adds the script's routes to mux.
func (a *Assets) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /widget/v/{version}/"+ScriptName, func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("version") != a.Version {
			// An old version after an upgrade: point at the current one rather than serve
			// new code under an old immutable URL.
			w.Header().Set("Cache-Control", "no-cache")
			http.Redirect(w, r, a.ScriptPath(), http.StatusFound)
			return
		}
		a.script.serve(w, r, "public, max-age=31536000, immutable")
	})
	mux.HandleFunc("GET "+LatestScriptPath, func(w http.ResponseWriter, r *http.Request) {
		a.script.serve(w, r, "no-cache")
	})
}

func (f *asset) serve(w http.ResponseWriter, r *http.Request, cacheControl string) {
	h := w.Header()
	h.Set("Content-Type", f.contentType)
	h.Set("Cache-Control", cacheControl)
	h.Set("ETag", f.etag)
	h.Set("Vary", "Accept-Encoding")
	// Embedding pages live on other origins: let them load it (and nothing else).
	h.Set("Cross-Origin-Resource-Policy", "cross-origin")
	h.Set("Access-Control-Allow-Origin", "*")
	if match := r.Header.Get("If-None-Match"); match != "" && strings.Contains(match, f.etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	body := f.raw
	if acceptsGzip(r) {
		h.Set("Content-Encoding", "gzip")
		body = f.gz
	}
	_, _ = w.Write(body)
}

func acceptsGzip(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept-Encoding"), ",") {
		coding, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.EqualFold(strings.TrimSpace(coding), "gzip") && strings.ReplaceAll(params, " ", "") != "q=0" {
			return true
		}
	}
	return false
}
