package mysql

import (
	"fmt"

	"github.com/pingcap/tidb/pkg/parser/charset"
	"golang.org/x/text/encoding"
	"golang.org/x/text/encoding/charmap"
	"golang.org/x/text/encoding/japanese"
	"golang.org/x/text/encoding/korean"
	"golang.org/x/text/encoding/simplifiedchinese"
	"golang.org/x/text/encoding/traditionalchinese"
	"golang.org/x/text/encoding/unicode"
)

// binaryCollation is the id of the "binary" pseudo-collation: binary strings
// and BLOBs, which stay []byte.
const binaryCollation = 63

// textDecoder returns how to turn a character column's bytes into UTF-8:
// nil for character sets whose bytes already are UTF-8 (utf8mb4, utf8mb3,
// ascii). The binlog carries the bytes in the column's own character set.
func textDecoder(collationID uint64) (*encoding.Decoder, error) {
	coll, err := charset.GetCollationByID(int(collationID))
	if err != nil {
		// An id this table does not know (newer server collations) is a
		// UTF-8 collation in practice; MariaDB's UCA-14 ids are.
		return nil, nil
	}
	var enc encoding.Encoding
	switch coll.CharsetName {
	case "utf8mb4", "utf8", "utf8mb3", "ascii":
		return nil, nil
	case "latin1":
		enc = charmap.Windows1252 // MySQL's latin1 is cp1252
	case "latin2":
		enc = charmap.ISO8859_2
	case "cp1250":
		enc = charmap.Windows1250
	case "cp1251":
		enc = charmap.Windows1251
	case "koi8r":
		enc = charmap.KOI8R
	case "greek":
		enc = charmap.ISO8859_7
	case "hebrew":
		enc = charmap.ISO8859_8
	case "gbk":
		enc = simplifiedchinese.GBK
	case "gb18030":
		enc = simplifiedchinese.GB18030
	case "gb2312":
		enc = simplifiedchinese.HZGB2312
	case "big5":
		enc = traditionalchinese.Big5
	case "sjis", "cp932":
		enc = japanese.ShiftJIS
	case "ujis", "eucjpms":
		enc = japanese.EUCJP
	case "euckr":
		enc = korean.EUCKR
	case "ucs2", "utf16":
		enc = unicode.UTF16(unicode.BigEndian, unicode.IgnoreBOM)
	case "utf16le":
		enc = unicode.UTF16(unicode.LittleEndian, unicode.IgnoreBOM)
	default:
		return nil, fmt.Errorf("character set %s (collation %s) is not supported; convert the column to utf8mb4", coll.CharsetName, coll.Name)
	}
	return enc.NewDecoder(), nil
}
