/* engine_map.c - the engine's connection indexes: an open-addressing hash
 * table (linear probing, backward-shift deletion) from a connection id, or
 * from the client id of a welcomed connection, to its struct srv_conn, so
 * lookups, Hello's duplicate check and removal cost O(1) whatever the
 * number of clients. It owns no connection and makes no protocol decision. */
#include "engine_impl.h"

#include "errors.h"

#include <stdlib.h>
#include <string.h>

#define MAP_MIN_CAP 16

static uint64_t mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

static uint64_t name_hash(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
	for (; *s; s++)
		h = (h ^ (uint8_t)*s) * 0x100000001b3ull;
	return mix64(h);
}

static uint64_t conn_hash(const struct srv_conn_map *m, const struct srv_conn *c)
{
	return m->by_name ? name_hash(c->client_id) : mix64(c->id);
}

static void map_insert(struct srv_conn_map *m, struct srv_conn *c)
{
	size_t mask = m->cap - 1, i = (size_t)conn_hash(m, c) & mask;
	while (m->t[i])
		i = (i + 1) & mask;
	m->t[i] = c;
	m->n++;
}

static int map_grow(struct srv_conn_map *m)
{
	size_t cap = m->cap ? 2 * m->cap : MAP_MIN_CAP;
	struct srv_conn **old = m->t, **t = calloc(cap, sizeof(*t));
	if (!t)
		return fl_error_set(FL_ENOMEM, "engine: out of memory for the connection table");
	size_t ocap = m->cap;
	m->t = t;
	m->cap = cap;
	m->n = 0;
	for (size_t i = 0; i < ocap; i++)
		if (old[i])
			map_insert(m, old[i]);
	free(old);
	return FL_OK;
}

int srv_map_put(struct srv_conn_map *m, struct srv_conn *c)
{
	/* load factor at most 1/2 */
	if (2 * (m->n + 1) > m->cap && map_grow(m) != FL_OK)
		return FL_ENOMEM;
	map_insert(m, c);
	return FL_OK;
}

struct srv_conn *srv_map_get_id(const struct srv_conn_map *m, uint64_t id)
{
	if (!m->n)
		return NULL;
	size_t mask = m->cap - 1;
	for (size_t i = (size_t)mix64(id) & mask; m->t[i]; i = (i + 1) & mask)
		if (m->t[i]->id == id)
			return m->t[i];
	return NULL;
}

struct srv_conn *srv_map_get_name(const struct srv_conn_map *m, const char *name)
{
	if (!m->n)
		return NULL;
	size_t mask = m->cap - 1;
	for (size_t i = (size_t)name_hash(name) & mask; m->t[i]; i = (i + 1) & mask)
		if (strcmp(m->t[i]->client_id, name) == 0)
			return m->t[i];
	return NULL;
}

void srv_map_del(struct srv_conn_map *m, const struct srv_conn *c)
{
	if (!m->n)
		return;
	size_t mask = m->cap - 1, i = (size_t)conn_hash(m, c) & mask;
	while (m->t[i] && m->t[i] != c)
		i = (i + 1) & mask;
	if (!m->t[i])
		return;
	m->t[i] = NULL;
	m->n--;
	/* backward shift: move later entries of the run into the hole when
	 * their home position does not lie cyclically in (hole, j] */
	for (size_t j = (i + 1) & mask; m->t[j]; j = (j + 1) & mask) {
		size_t home = (size_t)conn_hash(m, m->t[j]) & mask;
		if (((j - home) & mask) >= ((j - i) & mask)) {
			m->t[i] = m->t[j];
			m->t[j] = NULL;
			i = j;
		}
	}
}

void srv_map_free(struct srv_conn_map *m)
{
	free(m->t);
	memset(m, 0, sizeof(*m));
}
