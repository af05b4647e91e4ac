// Package scan finds personal data in a dataset: e-mail addresses, phone
// numbers, payment card numbers, IP addresses and terms from a list the user
// gives. It is the check behind `fedtune dataset scan` and the "pii-scan"
// attestation an auditor signs about a dataset.
//
// # Samples
//
// A file is either text (one sample per non-empty line, as datasets.Load
// reads it) or JSONL (one sample per non-empty line, each a JSON object).
// DetectFormat picks JSONL for a .jsonl or .ndjson name, or for any file
// whose every non-empty line is a JSON object; text otherwise. In a JSONL
// record every string is scanned, object keys included, each on its own (a
// match never spans two strings), in document order. Samples are numbered
// from 0 in file order.
//
// # What is found
//
// The rules favour precision: a number in ordinary prose (a version, a
// date, a time, a decimal, a hash, an ISBN, a count) is not flagged. Every
// candidate must stand alone: not glued to a letter, digit or underscore,
// not continued by ".5", "-7", "/2", ":30" and the like, not preceded by
// "+", "-", ".", "/", "@", "#", "$" or "=".
//
//   - email: local@domain.tld with letters, digits and ._%+- in the local
//     part (not starting or ending with a dot, no two dots in a row),
//     domain labels of letters, digits and inner hyphens, and a top-level
//     domain of 2 to 24 letters. "user@localhost" and "pkg@1.2.3" are not
//     addresses.
//   - phone, international: "+" then a country code (first digit 1–9), then
//     groups of digits separated by single spaces, dashes, dots or slashes,
//     optionally one "(…)" group such as the trunk "(0)"; 8 to 15 digits in
//     all (E.164), at most 16 with a "(0)".
//   - phone, national (the documented set):
//     US/NANP "(555) 123-4567", "555-123-4567", "555.123.4567",
//     "1-555-123-4567" (area code 2–9XX);
//     UK "07911 123456", "020 7946 0958", "0161 496 0000", "01632 960123",
//     "0800 123 4567" (leading 0, 11 digits, the usual groupings);
//     DE "030 12345678", "089/1234567", "0171-1234567" (0 and a 2–5 digit
//     area code, one space, slash or dash, 10 to 12 digits in all);
//     FR "01 23 45 67 89", "06.12.34.56.78", "06-12-34-56-78",
//     "0612345678" (unbroken only for mobiles 06/07);
//     IN "98765 43210", "098765 43210" (5+5 with a space).
//     Unbroken runs of 10 digits (US, IN) are not flagged: they are as often
//     counts or timestamps.
//   - card: 13 to 19 digits, unbroken or grouped by spaces or dashes as
//     cards are printed (fours, the last group shorter; 4-6-5; 4-6-4), with
//     a known issuer prefix and length (Visa, Mastercard, Amex, Discover,
//     Diners, JCB, UnionPay, Maestro, Mir) and a valid Luhn check digit.
//   - ip: IPv4 dotted quads (with an optional /prefix or :port) and IPv6
//     addresses, each parsed with net/netip; the unspecified addresses
//     0.0.0.0 and :: are not flagged, a quad right after "version", "v",
//     "release" or "build" is a version, and an IPv6 candidate needs at
//     least one decimal digit and four hex digits (so "a::b" in code is not
//     an address).
//   - term: each term of the user's list (Terms), case-insensitively, as a
//     whole word (not inside a longer word); whitespace in a term matches
//     any run of whitespace. A shorter term inside a longer term's match is
//     not reported again.
//
// Overlapping findings of the first four kinds keep the longest (an e-mail
// before the digits inside it); term findings are reported beside them.
package scan
