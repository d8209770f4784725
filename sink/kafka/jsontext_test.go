package kafka

import (
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/regiond/regiond/source"
)

// TestAppendTextRoundTrip: whatever the text, the output is JSON that
// decodes back to it (invalid UTF-8 as U+FFFD, as encoding/json does).
func TestAppendTextRoundTrip(t *testing.T) {
	cases := []string{"", "plain", `q"uote\back`, "tab\tnl\ncr\r\x00\x01\x1f\x7f", "😀 中文 Ünï", "\u2028\u2029", "bad\xff\xfeutf8", "<html>&"}
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
