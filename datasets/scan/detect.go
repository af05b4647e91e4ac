package scan

import (
	"net/netip"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"
)

// match is one finding within a string: its kind and byte span.
type match struct {
	kind       Kind
	start, end int
}

// runeBefore returns the rune ending at byte i of s, or -1 at the start.
func runeBefore(s string, i int) rune {
	if i <= 0 {
		return -1
	}
	r, _ := utf8.DecodeLastRuneInString(s[:i])
	return r
}

// runeAfter returns the rune starting at byte j of s, or -1 at the end.
func runeAfter(s string, j int) rune {
	if j >= len(s) {
		return -1
	}
	r, _ := utf8.DecodeRuneInString(s[j:])
	return r
}

func isWord(r rune) bool { return r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r) }

func isASCIIDigit(r rune) bool { return r >= '0' && r <= '9' }

// numLeftOK reports whether a number may start at byte i of s: it is not
// glued to a word or to a sign, decimal point, path or handle.
func numLeftOK(s string, i int) bool {
	p := runeBefore(s, i)
	switch {
	case p < 0:
		return true
	case isWord(p), strings.ContainsRune("+-./@#$=\\%&", p):
		return false
	case p == ',' || p == ':':
		// "12:30", "1,5": a number continued.
		q := runeBefore(s, i-1)
		return !isASCIIDigit(q)
	}
	return true
}

// numRightOK reports whether a number may end at byte j of s: not glued to
// a word, and not continued by ".5", ",5", "-5", "/5", ":5" or a percent.
func numRightOK(s string, j int) bool {
	n := runeAfter(s, j)
	switch {
	case n < 0:
		return true
	case isWord(n), n == '%', n == '@':
		return false
	case strings.ContainsRune(".,-/:", n):
		m := runeAfter(s, j+1)
		return !(isASCIIDigit(m) || unicode.IsLetter(m))
	}
	return true
}

// ---- e-mail ----

var emailRE = regexp.MustCompile(`[\p{L}\p{N}._%+\-]+@[\p{L}\p{N}](?:[\p{L}\p{N}\-]*[\p{L}\p{N}])?(?:\.[\p{L}\p{N}](?:[\p{L}\p{N}\-]*[\p{L}\p{N}])?)*\.\p{L}{2,24}`)

func findEmails(s string, out []match) []match {
	for _, loc := range emailRE.FindAllStringIndex(s, -1) {
		start, end := loc[0], loc[1]
		// A local part does not start with a dot or a sign.
		for start < end && strings.ContainsRune(".+-%", rune(s[start])) {
			start++
		}
		at := strings.IndexByte(s[start:end], '@')
		if at <= 0 {
			continue
		}
		local := s[start : start+at]
		if strings.HasSuffix(local, ".") || strings.Contains(local, "..") {
			continue
		}
		if n := runeAfter(s, end); n >= 0 && (isWord(n) || n == '-' || n == '@') {
			continue
		}
		if p := runeBefore(s, start); p == '@' || p == '/' {
			// "a@b@c.com" or a path "/x@y.com" is not an address.
			continue
		}
		out = append(out, match{KindEmail, start, end})
	}
	return out
}

// ---- payment cards ----

// issuer is a card range: a prefix range of the given width and the
// lengths cards in it have.
type issuer struct {
	lo, hi, width  int
	minLen, maxLen int
	only           []int // exact lengths, if not a range
}

var issuers = []issuer{
	{lo: 4, hi: 4, width: 1, only: []int{13, 16, 19}},      // Visa
	{lo: 51, hi: 55, width: 2, minLen: 16, maxLen: 16},     // Mastercard
	{lo: 2221, hi: 2720, width: 4, minLen: 16, maxLen: 16}, // Mastercard 2-series
	{lo: 34, hi: 34, width: 2, minLen: 15, maxLen: 15},     // Amex
	{lo: 37, hi: 37, width: 2, minLen: 15, maxLen: 15},     // Amex
	{lo: 6011, hi: 6011, width: 4, minLen: 16, maxLen: 19}, // Discover
	{lo: 644, hi: 649, width: 3, minLen: 16, maxLen: 19},   // Discover
	{lo: 65, hi: 65, width: 2, minLen: 16, maxLen: 19},     // Discover
	{lo: 300, hi: 305, width: 3, minLen: 14, maxLen: 19},   // Diners
	{lo: 36, hi: 36, width: 2, minLen: 14, maxLen: 19},     // Diners
	{lo: 38, hi: 39, width: 2, minLen: 16, maxLen: 19},     // Diners
	{lo: 3528, hi: 3589, width: 4, minLen: 16, maxLen: 19}, // JCB
	{lo: 62, hi: 62, width: 2, minLen: 16, maxLen: 19},     // UnionPay
	{lo: 50, hi: 50, width: 2, minLen: 13, maxLen: 19},     // Maestro
	{lo: 56, hi: 58, width: 2, minLen: 13, maxLen: 19},     // Maestro
	{lo: 63, hi: 63, width: 2, minLen: 13, maxLen: 19},     // Maestro
	{lo: 67, hi: 67, width: 2, minLen: 13, maxLen: 19},     // Maestro
	{lo: 2200, hi: 2204, width: 4, minLen: 16, maxLen: 16}, // Mir
}

// knownIssuer reports whether the digits d have an issuer's prefix and length.
func knownIssuer(d string) bool {
	for _, is := range issuers {
		if len(d) < is.width {
			continue
		}
		p := 0
		for _, c := range d[:is.width] {
			p = p*10 + int(c-'0')
		}
		if p < is.lo || p > is.hi {
			continue
		}
		if is.only != nil {
			for _, n := range is.only {
				if len(d) == n {
					return true
				}
			}
			continue
		}
		if len(d) >= is.minLen && len(d) <= is.maxLen {
			return true
		}
	}
	return false
}

// Luhn reports whether the decimal digits d pass the Luhn (mod 10) check.
func Luhn(d string) bool {
	if d == "" {
		return false
	}
	sum, double := 0, false
	for i := len(d) - 1; i >= 0; i-- {
		c := d[i]
		if c < '0' || c > '9' {
			return false
		}
		v := int(c - '0')
		if double {
			v *= 2
			if v > 9 {
				v -= 9
			}
		}
		sum += v
		double = !double
	}
	return sum%10 == 0
}

// cardGrouping reports whether the digit groups look like a printed card:
// one group; fours with a shorter last group; 4-6-5; 4-6-4.
func cardGrouping(groups []int) bool {
	if len(groups) == 1 {
		return true
	}
	if len(groups) == 3 && groups[0] == 4 && groups[1] == 6 && (groups[2] == 5 || groups[2] == 4) {
		return true
	}
	for i, g := range groups {
		if i < len(groups)-1 && g != 4 || i == len(groups)-1 && (g < 1 || g > 4) {
			return false
		}
	}
	return true
}

var digitRunRE = regexp.MustCompile(`[0-9]+(?:[ \-][0-9]+)*`)

func findCards(s string, out []match) []match {
	for _, loc := range digitRunRE.FindAllStringIndex(s, -1) {
		start, end := loc[0], loc[1]
		if !numLeftOK(s, start) {
			continue
		}
		run := s[start:end]
		// One separator throughout: spaces or dashes, not both.
		if strings.Contains(run, " ") && strings.Contains(run, "-") {
			continue
		}
		parts := strings.FieldsFunc(run, func(r rune) bool { return r == ' ' || r == '-' })
		// Try the longest prefix of groups that forms a card, so that a
		// card followed by another number is still found. Only prefixes
		// of 13 to 19 digits can be cards.
		cum, k := 0, 0
		for k < len(parts) && cum+len(parts[k]) <= 19 {
			cum += len(parts[k])
			k++
		}
		for ; k >= 1; k-- {
			digits := strings.Join(parts[:k], "")
			if len(digits) < 13 {
				break
			}
			groups := make([]int, k)
			for i, p := range parts[:k] {
				groups[i] = len(p)
			}
			e := start + spanOf(run, k)
			if k == len(parts) && !numRightOK(s, e) || k < len(parts) && !numRightOKSep(s, e) {
				continue
			}
			if cardGrouping(groups) && knownIssuer(digits) && Luhn(digits) {
				out = append(out, match{KindCard, start, e})
				break
			}
		}
	}
	return out
}

// numRightOKSep is numRightOK for a card cut before the next group of its
// run: only a space may follow it (not a dash joining it to more digits).
func numRightOKSep(s string, j int) bool { return runeAfter(s, j) == ' ' }

// spanOf returns the byte length of the first k digit groups of run.
func spanOf(run string, k int) int {
	n, i := 0, 0
	for ; i < len(run); i++ {
		if run[i] == ' ' || run[i] == '-' {
			continue
		}
		if i == 0 || run[i-1] == ' ' || run[i-1] == '-' {
			n++
			if n > k {
				return i - 1
			}
		}
	}
	return len(run)
}

// ---- IP addresses ----

var ipv4RE = regexp.MustCompile(`[0-9]{1,3}(?:\.[0-9]{1,3}){3}(?:/[0-9]{1,2}|:[0-9]{1,5})?`)

var versionWords = []string{"version", "ver", "v", "release", "build", "rev", "revision", "firmware", "kernel"}

func precededByVersionWord(s string, i int) bool {
	before := strings.TrimRight(s[:i], " \t")
	if len(before) == len(s[:i]) && i > 0 {
		return false
	}
	j := len(before)
	for j > 0 {
		r, size := utf8.DecodeLastRuneInString(before[:j])
		if !unicode.IsLetter(r) {
			break
		}
		j -= size
	}
	w := strings.ToLower(before[j:])
	for _, v := range versionWords {
		if w == v {
			return true
		}
	}
	return false
}

func findIPv4(s string, out []match) []match {
	for _, loc := range ipv4RE.FindAllStringIndex(s, -1) {
		start, end := loc[0], loc[1]
		cand := s[start:end]
		addrText := cand
		if i := strings.IndexAny(cand, "/:"); i >= 0 {
			addrText = cand[:i]
		}
		a, err := netip.ParseAddr(addrText)
		if err != nil || !a.Is4() || a.IsUnspecified() {
			continue
		}
		if strings.Contains(cand, "/") {
			if _, err := netip.ParsePrefix(cand); err != nil {
				continue
			}
		}
		if !numLeftOK(s, start) || precededByVersionWord(s, start) {
			continue
		}
		// Not glued to a word, not a fifth version component ("1.2.3.4.5").
		if n := runeAfter(s, end); n >= 0 && (isWord(n) || n == '.' && isASCIIDigit(runeAfter(s, end+1))) {
			continue
		}
		out = append(out, match{KindIP, start, end})
	}
	return out
}

func isHex(r byte) bool {
	return r >= '0' && r <= '9' || r >= 'a' && r <= 'f' || r >= 'A' && r <= 'F'
}

func findIPv6(s string, out []match) []match {
	for i := 0; i < len(s); {
		c := s[i]
		if !(isHex(c) || c == ':') {
			i++
			continue
		}
		j := i
		colons := 0
		for j < len(s) && (isHex(s[j]) || s[j] == ':' || s[j] == '.') {
			if s[j] == ':' {
				colons++
			}
			j++
		}
		start, end := i, j
		i = j
		if colons < 2 {
			continue
		}
		// Sentence punctuation after an address.
		for end > start && s[end-1] == '.' {
			end--
		}
		cand := s[start:end]
		a, err := netip.ParseAddr(cand)
		if err != nil {
			// "::1:" or a trailing colon of a label ("addr fe80::1: up").
			t := strings.TrimRight(cand, ":")
			if a, err = netip.ParseAddr(t); err != nil || strings.HasSuffix(t, ":") {
				continue
			}
			end = start + len(t)
			cand = t
		}
		if !a.Is6() || a.IsUnspecified() {
			continue
		}
		if p := runeBefore(s, start); p >= 0 && (isWord(p) || p == '.' || p == '-') {
			continue
		}
		if n := runeAfter(s, end); n >= 0 && (isWord(n) || n == ':') {
			continue
		}
		hexDigits, decimal := 0, false
		for k := 0; k < len(cand); k++ {
			if isHex(cand[k]) {
				hexDigits++
			}
			if cand[k] >= '0' && cand[k] <= '9' {
				decimal = true
			}
		}
		if hexDigits < 4 || !decimal {
			continue
		}
		out = append(out, match{KindIP, start, end})
	}
	return out
}

// ---- phone numbers ----

// findIntlPhones finds "+CC …" numbers.
func findIntlPhones(s string, out []match) []match {
	for i := 0; i < len(s); i++ {
		if s[i] != '+' || i+1 >= len(s) || s[i+1] < '1' || s[i+1] > '9' {
			continue
		}
		if p := runeBefore(s, i); p >= 0 && (isWord(p) || strings.ContainsRune("+-./@#$=\\%&)", p)) {
			continue
		}
		end, digits, parens, ok := scanPhoneGroups(s, i+1)
		if !ok {
			continue
		}
		max := 15
		if strings.Contains(s[i:end], "(0)") {
			max = 16
		}
		if digits < 8 || digits > max || parens > 1 {
			continue
		}
		if !numRightOK(s, end) {
			continue
		}
		out = append(out, match{KindPhone, i, end})
		i = end - 1
	}
	return out
}

// scanPhoneGroups reads digit groups from i: digits, or "(" 1–4 digits ")",
// separated by at most one of " -./" (none before or after a parenthesis
// group is fine). It returns the end of the last group, the digit count and
// the number of parenthesised groups.
func scanPhoneGroups(s string, i int) (end, digits, parens int, ok bool) {
	pos := i
	for {
		switch {
		case pos < len(s) && s[pos] == '(':
			k := pos + 1
			for k < len(s) && s[k] >= '0' && s[k] <= '9' {
				k++
			}
			n := k - pos - 1
			if n < 1 || n > 4 || k >= len(s) || s[k] != ')' {
				return end, digits, parens, end > 0
			}
			digits += n
			parens++
			pos = k + 1
		case pos < len(s) && s[pos] >= '0' && s[pos] <= '9':
			k := pos
			for k < len(s) && s[k] >= '0' && s[k] <= '9' {
				k++
			}
			digits += k - pos
			pos = k
		default:
			return end, digits, parens, end > 0
		}
		end = pos
		if pos < len(s) && s[pos] >= '0' && s[pos] <= '9' {
			continue // digits right after a "(0)" group
		}
		if pos < len(s) && strings.IndexByte(" -./", s[pos]) >= 0 && pos+1 < len(s) && (s[pos+1] >= '0' && s[pos+1] <= '9' || s[pos+1] == '(') {
			pos++
		} else if !(pos < len(s) && s[pos] == '(') {
			return end, digits, parens, true
		}
	}
}

// nationalPhones are the national formats of the documented set.
var nationalPhones = []struct {
	re    *regexp.Regexp
	check func(digits string) bool
}{
	// US / NANP.
	{regexp.MustCompile(`\([0-9]{3}\) ?[0-9]{3}-[0-9]{4}`), nanp},
	{regexp.MustCompile(`(?:1-)?[0-9]{3}-[0-9]{3}-[0-9]{4}`), nanp},
	{regexp.MustCompile(`[0-9]{3}\.[0-9]{3}\.[0-9]{4}`), nanp},
	// UK.
	{regexp.MustCompile(`0(?:7[0-9]{3} ?[0-9]{6}|20 ?[0-9]{4} ?[0-9]{4}|1[0-9]{3} ?[0-9]{6}|1[0-9]{2} ?[0-9]{3} ?[0-9]{4}|[38][0-9]{2} ?[0-9]{3} ?[0-9]{4})`), digitsLen(11, 11)},
	// DE.
	{regexp.MustCompile(`0[1-9][0-9]{1,4}[ /\-][0-9]{4,8}`), digitsLen(10, 12)},
	// FR.
	{regexp.MustCompile(`0[1-9](?: [0-9]{2}){4}`), digitsLen(10, 10)},
	{regexp.MustCompile(`0[1-9](?:\.[0-9]{2}){4}`), digitsLen(10, 10)},
	{regexp.MustCompile(`0[1-9](?:-[0-9]{2}){4}`), digitsLen(10, 10)},
	{regexp.MustCompile(`0[67][0-9]{8}`), digitsLen(10, 10)},
	// IN.
	{regexp.MustCompile(`0?[6-9][0-9]{4} [0-9]{5}`), digitsLen(10, 11)},
}

func onlyDigits(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] >= '0' && s[i] <= '9' {
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

// nanp checks a North American number: area code 2–9XX, optionally after 1.
func nanp(d string) bool {
	if len(d) == 11 && d[0] == '1' {
		d = d[1:]
	}
	return len(d) == 10 && d[0] >= '2'
}

func digitsLen(lo, hi int) func(string) bool {
	return func(d string) bool { return len(d) >= lo && len(d) <= hi }
}

func findNationalPhones(s string, out []match) []match {
	for _, np := range nationalPhones {
		for _, loc := range np.re.FindAllStringIndex(s, -1) {
			start, end := loc[0], loc[1]
			if s[start] == '(' {
				if p := runeBefore(s, start); p >= 0 && (isWord(p) || strings.ContainsRune("+-./@#$=\\%&", p)) {
					continue
				}
			} else if !numLeftOK(s, start) {
				continue
			}
			if !numRightOK(s, end) || !np.check(onlyDigits(s[start:end])) {
				continue
			}
			out = append(out, match{KindPhone, start, end})
		}
	}
	return out
}
