package crypto

import "testing"

func BenchmarkSeal64(b *testing.B) {
	s := NewSealer(mustKeyset(b))
	b.ReportAllocs()
	b.SetBytes(int64(len(apiKey64)))
	for b.Loop() {
		if _, err := s.Seal(apiKey64, testBinding); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkOpen64(b *testing.B) {
	s := NewSealer(mustKeyset(b))
	sealed := mustSeal(b, s, apiKey64, testBinding)
	b.ReportAllocs()
	b.SetBytes(int64(len(apiKey64)))
	for b.Loop() {
		if _, err := s.Open(sealed.Ciphertext, testBinding); err != nil {
			b.Fatal(err)
		}
	}
}
