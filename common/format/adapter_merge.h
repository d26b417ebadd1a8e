/* adapter_merge.h - the pieces the LoHa merge (adapter.c) and the LoRA
 * merge (adapter_lora.c) share inside fedloha_format. Not a public API:
 * callers use fl_adapter_merge() (adapter.h).
 */
#ifndef FL_ADAPTER_MERGE_H
#define FL_ADAPTER_MERGE_H

#include "adapter.h"
#include "safetensors.h"

#include <stddef.h>

/* w0 + dw in the dtype of w, added to out under w's name. */
int fl_adapter_store_merged(struct fl_st *out, const struct fl_st_tensor *w, const float *dw);

/* peft_type of DIR/adapter_config.json into buf ("" when unreadable). */
void fl_adapter_peft_type(const char *dir, char *buf, size_t cap);

/* Merges the PEFT LoRA folder dir into base_path, written to out_path. */
int fl_adapter_merge_lora(const char *base_path, const char *dir, const char *out_path,
			  struct fl_adapter_merge_stats *stats);

#endif
