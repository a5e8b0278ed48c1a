package oauth

import (
	"bytes"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	pipesv1 "github.com/pipes-dev/pipes-operator/api/v1alpha1"
)

// FuzzParseToken reads arbitrary bytes as a stored OAuth token (the plaintext of a
// credential Secret, or of a backup): no panic; an error names no part of the input; a
// token that parses survives Marshal and ParseToken unchanged.
func FuzzParseToken(f *testing.F) {
	good := (&Token{AccessToken: "gho_x", TokenType: "bearer", RefreshToken: "ghr_y", Expiry: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC), Scopes: []string{"repo"}}).Marshal()
	for _, seed := range [][]byte{
		good, []byte(`{"access_token":"a"}`), []byte(`{"access_token":""}`), []byte(`{"access_token":"a","access_token":"b"}`),
		[]byte(`{"access_token":"a","expiry":"not a time"}`), []byte(`{"access_token":"a","expiry":"99999-01-01T00:00:00Z"}`),
		[]byte(`{"access_token":"a","scopes":"repo"}`), []byte(strings.Repeat("[", 100_000)), []byte("\xff\xfe"), nil,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		tok, err := ParseToken(in)
		if err != nil {
			if len(in) >= 8 && strings.Contains(err.Error(), string(in)) {
				t.Fatalf("the error quotes the input: %v", err)
			}
			return
		}
		again, err := ParseToken(tok.Marshal())
		if err != nil {
			t.Fatalf("a parsed token does not parse once marshalled: %v", err)
		}
		if again.AccessToken != tok.AccessToken || again.RefreshToken != tok.RefreshToken || !again.Expiry.Equal(tok.Expiry) || !slices.Equal(again.Scopes, tok.Scopes) {
			t.Fatal("the token changed in a round trip")
		}
		_ = tok.ExpiresWithin(time.Now(), time.Minute)
		_ = tok.MissingScopes([]string{"repo", ""})
	})
}

// FuzzLock reads arbitrary pipes.dev/refreshing annotations ("HOLDER RFC3339"), which
// decide whether another replica is refreshing a token: no panic, and a lock is only
// held by the holder written there.
func FuzzLock(f *testing.F) {
	for _, seed := range []string{"pod-a/1/xyz 2026-01-02T03:04:05Z", "pod-a", " ", "", "a b c", "x 2026-01-02T03:04:05+25:00", "x 99999-01-01T00:00:00Z", "\xff 2026-01-02T03:04:05Z"} {
		f.Add(seed, true)
	}
	f.Fuzz(func(t *testing.T, v string, present bool) {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{}}}
		if present {
			s.Annotations[pipesv1.AnnotationRefreshing] = v
		}
		holder, until, ok := lock(s)
		if !present && (ok || holder != "") {
			t.Fatal("a lock without the annotation")
		}
		if ok && !bytes.HasPrefix([]byte(v), []byte(holder)) {
			t.Fatalf("holder %q is not from %q", holder, v)
		}
		_ = until
	})
}
