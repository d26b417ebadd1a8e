/* half.h - conversions between float32 and the 16-bit floats fedloha reads
 * and writes (IEEE binary16 "f16" and bfloat16 "bf16"). Float to 16 bits
 * rounds to nearest, ties to even; values past the largest finite 16-bit
 * number become infinity (callers that must refuse overflow check for it);
 * NaN stays a quiet NaN. 16 bits to float is exact. One implementation for
 * safetensors, the wire and the adapter merge. */
#ifndef FL_HALF_H
#define FL_HALF_H

#include <stdint.h>

uint16_t fl_f32_to_f16(float f);
float fl_f16_to_f32(uint16_t h);
uint16_t fl_f32_to_bf16(float f);
float fl_bf16_to_f32(uint16_t h);

#endif
