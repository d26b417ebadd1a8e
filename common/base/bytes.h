/* bytes.h - big-endian 32-bit integers in byte buffers: the length prefix of
 * every frame and record, and the headers of IDX files. Inline, no state;
 * callers check that four bytes are there. */
#ifndef FL_BYTES_H
#define FL_BYTES_H

#include <stdint.h>

static inline void fl_be32_put(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static inline uint32_t fl_be32_get(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

#endif
