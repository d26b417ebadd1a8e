/* half.c - float32 <-> f16 / bf16, bit-exact (see half.h). */
#include "half.h"

#include <string.h>

static uint32_t f32_bits(float f)
{
	uint32_t u;
	memcpy(&u, &f, sizeof(u));
	return u;
}

static float bits_f32(uint32_t u)
{
	float f;
	memcpy(&f, &u, sizeof(f));
	return f;
}

uint16_t fl_f32_to_f16(float f)
{
	uint32_t x = f32_bits(f);
	uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
	uint32_t ax = x & 0x7fffffffu;
	if (ax > 0x7f800000u) /* NaN stays a (quiet) NaN */
		return sign | 0x7e00u;
	if (ax >= 0x477ff000u) /* >= 65520 rounds past 65504 */
		return sign | 0x7c00u;
	if (ax < 0x38800000u) {       /* below 2^-14: a half subnormal, m * 2^-24 */
		if (ax < 0x33000000u) /* below 2^-25: rounds to zero */
			return sign;
		uint32_t e = ax >> 23, m = (ax & 0x7fffffu) | 0x800000u;
		uint32_t shift = 126 - e; /* 14 .. 24 */
		uint32_t q = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
		if (rem > half || (rem == half && (q & 1)))
			q++; /* may carry into the smallest normal, which is right */
		return sign | (uint16_t)q;
	}
	uint32_t h = (ax >> 13) - ((uint32_t)(127 - 15) << 10), rem = ax & 0x1fffu;
	if (rem > 0x1000u || (rem == 0x1000u && (h & 1)))
		h++; /* a carry into the exponent is still correct */
	return sign | (uint16_t)h;
}

/* Normals rebias the exponent, subnormals are m * 2^-24 (exact in float),
 * inf and NaN keep sign and payload. */
float fl_f16_to_f32(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
	uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
	if (exp == 0x1f)
		return bits_f32(sign | 0x7f800000u | (man << 13));
	if (exp != 0)
		return bits_f32(sign | ((exp + 127 - 15) << 23) | (man << 13));
	float mag = (float)man * 0x1p-24f;
	return sign ? -mag : mag;
}

uint16_t fl_f32_to_bf16(float f)
{
	uint32_t x = f32_bits(f);
	if ((x & 0x7fffffffu) > 0x7f800000u)
		return (uint16_t)((x >> 16) | 0x40u);
	x += 0x7fffu + ((x >> 16) & 1u);
	return (uint16_t)(x >> 16);
}

float fl_bf16_to_f32(uint16_t h)
{
	return bits_f32((uint32_t)h << 16);
}
