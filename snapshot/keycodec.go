package snapshot

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/regiond/regiond/source"
)

// EncodeKey gives a key's text for storing it (a resumable backfill's
// progress): JSON holding, per value, its canonical type and text, so that
// DecodeKey reads it back as the same canonical values.
func EncodeKey(k Key) (string, error) {
	parts := make([][2]string, len(k))
	for i, v := range k {
		var tag string
		switch x := v.(type) {
		case int64:
			tag = "i"
		case uint64:
			tag = "u"
		case bool:
			tag = "bool"
		case float32:
			tag = "f32"
		case float64:
			tag = "f64"
		case string:
			tag = "s"
		case []byte:
			parts[i] = [2]string{"b", hex.EncodeToString(x)}
			continue
		case source.Decimal:
			tag = "dec"
		case source.Date:
			tag = "date"
		case source.DateTime:
			tag = "dt"
		case source.Timestamp:
			tag = "ts"
		case source.Time:
			tag = "time"
		case source.JSON:
			tag = "json"
		case source.Bits:
			tag = "bits"
		default:
			return "", fmt.Errorf("key value %v of type %T cannot be stored", v, v)
		}
		s, _ := source.Text(v)
		parts[i] = [2]string{tag, s}
	}
	b, err := json.Marshal(parts)
	return string(b), err
}

// DecodeKey reads a key EncodeKey wrote.
func DecodeKey(s string) (Key, error) {
	var parts [][2]string
	if err := json.Unmarshal([]byte(s), &parts); err != nil {
		return nil, err
	}
	k := make(Key, len(parts))
	for i, p := range parts {
		var err error
		switch p[0] {
		case "i":
			k[i], err = strconv.ParseInt(p[1], 10, 64)
		case "u":
			k[i], err = strconv.ParseUint(p[1], 10, 64)
		case "bool":
			k[i], err = strconv.ParseBool(p[1])
		case "f32":
			var f float64
			f, err = strconv.ParseFloat(p[1], 32)
			k[i] = float32(f)
		case "f64":
			k[i], err = strconv.ParseFloat(p[1], 64)
		case "s":
			k[i] = p[1]
		case "b":
			k[i], err = hex.DecodeString(p[1])
		case "dec":
			k[i] = source.Decimal(p[1])
		case "date":
			k[i] = source.Date(p[1])
		case "dt":
			k[i] = source.DateTime(p[1])
		case "ts":
			k[i] = source.Timestamp(p[1])
		case "time":
			k[i] = source.Time(p[1])
		case "json":
			k[i] = source.JSON(p[1])
		case "bits":
			k[i] = source.Bits(p[1])
		default:
			return nil, fmt.Errorf("unknown key value type %q", p[0])
		}
		if err != nil {
			return nil, err
		}
	}
	return k, nil
}
