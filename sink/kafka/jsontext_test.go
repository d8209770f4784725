package kafka

import (
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/regiond/regiond/source"
)

// TestAppendTextRoundTrip: whatever the text, the output is JSON that
// decodes back to it (invalid UTF-8 as U+FFFD, as encoding/json does).
func TestAppendTextRoundTrip(t *testing.T) {
	cases := []string{"", "plain", `q"uote\back`, "tab\tnl\ncr\r\x00\x01\x1f\x7f", "😀 中文 Ünï", "\u2028\u2029", "bad\xff\xfeutf8", "<html>&"}
	// Every special byte at every place of a run long enough for the
	// eight-byte skipping.
	for _, special := range []string{"\x00", "\x1f", "\"", "\\", "\x7f", "\x80", "é", "\u2028", "😀", "\xff", " ", "~"} {
		for i := range 20 {
			cases = append(cases, strings.Repeat("a", i)+special+strings.Repeat("b", 19-i))
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		b := make([]byte, rng.IntN(40))
		for i := range b {
			b[i] = byte(rng.IntN(256))
		}
		cases = append(cases, string(b))
	}
	for _, s := range cases {
		out := appendText(nil, s)
		if ref := referenceAppendText(nil, s); string(out) != string(ref) {
			t.Fatalf("appendText(%q) = %s, the byte-at-a-time encoder gives %s", s, out, ref)
		}
		var got string
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("appendText(%q) = %s: not JSON: %v", s, out, err)
		}
		want := strings.ToValidUTF8(s, "\ufffd")
		// encoding/json replaces each invalid byte; ToValidUTF8 a run.
		var ref string
		js, _ := json.Marshal(s)
		_ = json.Unmarshal(js, &ref)
		if got != ref && got != want {
			t.Fatalf("appendText(%q) decodes to %q, want %q", s, got, ref)
		}
	}
}

func TestAppendValueMatchesMapping(t *testing.T) {
	for _, v := range []any{
		"x\ny", source.Decimal("-1.50"), source.Date("2024-01-02"), source.Time("-838:59:59.000000"), source.Bits("0101"),
		source.DateTime("2024-01-02 03:04:05"), source.DateTime("2024-01-02 03:04:05.123"), source.Timestamp("2024-01-02 03:04:05.123456"),
		int64(-5), uint64(1) << 60, []byte{1, 2}, nil, true, 1.5, source.JSON(`{"a":[1,2]}`),
	} {
		got := string(appendValue(nil, v))
		want := string(source.AppendJSONValue(nil, v))
		if got != want {
			t.Errorf("appendValue(%#v) = %s, source.AppendJSONValue gives %s", v, got, want)
		}
	}
}

// referenceAppendText is appendText without the eight-byte skipping: the
// output must be the same byte for byte.
func referenceAppendText(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
