package sdk

import "unicode/utf8"

// FNV-1a 32-bit parameters.
const (
	fnvOffset32 = 0x811c9dc5
	fnvPrime32  = 16777619
)

// fnvString continues an FNV-1a 32-bit hash over s taken as UTF-16 code
// units, the way JavaScript's charCodeAt sees a string: GrowthBook's
// JavaScript SDK hashes that way, so ids outside ASCII land in the same
// bucket here as there. Each code unit is XORed in whole (not byte by byte).
// Invalid UTF-8 counts as U+FFFD, as a JavaScript string decoded from it
// would hold.
func fnvString(h uint32, s string) uint32 {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x80 { // ASCII: one code unit, the common case
			h ^= uint32(c)
			h *= fnvPrime32
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		i += size - 1
		if r >= 0x10000 { // outside the BMP: a surrogate pair
			r -= 0x10000
			h ^= 0xd800 + uint32(r>>10)
			h *= fnvPrime32
			h ^= 0xdc00 + uint32(r&0x3ff)
			h *= fnvPrime32
			continue
		}
		h ^= uint32(r)
		h *= fnvPrime32
	}
	return h
}

// seededHasher hashes values with a fixed seed. For version 2 the seed
// comes first, so the FNV state after it is computed once (at compile
// time) and evaluation hashes only the value; version 1 puts the seed
// last and hashes it each time.
type seededHasher struct {
	prefix, seed string
	version      int
	state        uint32 // v2: FNV state after prefix+seed
}

func newSeededHasher(prefix, seed string, version int) seededHasher {
	return seededHasher{prefix: prefix, seed: seed, version: version,
		state: fnvString(fnvString(fnvOffset32, prefix), seed)}
}

// hash is hashSeeded(prefix, seed, value, version).
func (h *seededHasher) hash(value string) (float64, bool) {
	if h.version == 2 {
		return float64(fnvDecimal(fnvString(h.state, value))%10000) / 10000, true
	}
	return hashSeeded(h.prefix, h.seed, value, h.version)
}

// fnvDecimal is the FNV-1a hash of v written in decimal, without
// formatting it into a string first.
func fnvDecimal(v uint32) uint32 {
	var digits [10]byte
	i := len(digits)
	for {
		i--
		digits[i] = byte('0' + v%10)
		v /= 10
		if v == 0 {
			break
		}
	}
	return fnvBytes(fnvOffset32, digits[i:])
}

// fnvBytes continues an FNV-1a hash over ASCII bytes.
func fnvBytes(h uint32, b []byte) uint32 {
	for _, c := range b {
		h ^= uint32(c)
		h *= fnvPrime32
	}
	return h
}

// Hash maps a unit's hash value into [0, 1) the way GrowthBook does:
//
//	v1: (fnv1a32(value + seed) mod 1000) / 1000
//	v2: (fnv1a32(decimal(fnv1a32(seed + value))) mod 10000) / 10000
//
// It reports false for an unknown version. It does not allocate.
func Hash(seed, value string, version int) (float64, bool) {
	return hashSeeded("", seed, value, version)
}

// hashSeeded is Hash with the seed given as prefix+seed, so that namespace
// seeds ("__" + id) need no concatenation.
func hashSeeded(prefix, seed, value string, version int) (float64, bool) {
	switch version {
	case 1:
		h := fnvString(fnvString(fnvString(fnvOffset32, value), prefix), seed)
		return float64(h%1000) / 1000, true
	case 2:
		inner := fnvString(fnvString(fnvString(fnvOffset32, prefix), seed), value)
		return float64(fnvDecimal(inner)%10000) / 10000, true
	}
	return 0, false
}
