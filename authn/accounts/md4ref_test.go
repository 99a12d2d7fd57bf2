package accounts

import "encoding/binary"

// md4Ref is a small, independent MD4 (RFC 1320) so the NT hash vectors do
// not test x/crypto/md4 against itself.
func md4Ref(msg []byte) []byte {
	a0, b0, c0, d0 := uint32(0x67452301), uint32(0xefcdab89), uint32(0x98badcfe), uint32(0x10325476)
	ml := uint64(len(msg)) * 8
	m := append(append([]byte{}, msg...), 0x80)
	for len(m)%64 != 56 {
		m = append(m, 0)
	}
	m = binary.LittleEndian.AppendUint64(m, ml)
	rotl := func(x uint32, s uint) uint32 { return x<<s | x>>(32-s) }
	for off := 0; off < len(m); off += 64 {
		var x [16]uint32
		for i := range x {
			x[i] = binary.LittleEndian.Uint32(m[off+4*i:])
		}
		a, b, c, d := a0, b0, c0, d0
		f := func(x, y, z uint32) uint32 { return x&y | ^x&z }
		g := func(x, y, z uint32) uint32 { return x&y | x&z | y&z }
		h := func(x, y, z uint32) uint32 { return x ^ y ^ z }
		for _, i := range []int{0, 4, 8, 12} {
			a = rotl(a+f(b, c, d)+x[i], 3)
			d = rotl(d+f(a, b, c)+x[i+1], 7)
			c = rotl(c+f(d, a, b)+x[i+2], 11)
			b = rotl(b+f(c, d, a)+x[i+3], 19)
		}
		for _, i := range []int{0, 1, 2, 3} {
			a = rotl(a+g(b, c, d)+x[i]+0x5a827999, 3)
			d = rotl(d+g(a, b, c)+x[i+4]+0x5a827999, 5)
			c = rotl(c+g(d, a, b)+x[i+8]+0x5a827999, 9)
			b = rotl(b+g(c, d, a)+x[i+12]+0x5a827999, 13)
		}
		for _, i := range []int{0, 2, 1, 3} {
			a = rotl(a+h(b, c, d)+x[i]+0x6ed9eba1, 3)
			d = rotl(d+h(a, b, c)+x[i+8]+0x6ed9eba1, 9)
			c = rotl(c+h(d, a, b)+x[i+4]+0x6ed9eba1, 11)
			b = rotl(b+h(c, d, a)+x[i+12]+0x6ed9eba1, 15)
		}
		a0, b0, c0, d0 = a0+a, b0+b, c0+c, d0+d
	}
	out := make([]byte, 0, 16)
	for _, v := range []uint32{a0, b0, c0, d0} {
		out = binary.LittleEndian.AppendUint32(out, v)
	}
	return out
}
