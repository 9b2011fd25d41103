/*
 * C kernels for state resolution: the twin of homeserver/state/_pure.py.
 *
 * Same surface, same results (tests/unit/state proves it on generated DAGs).
 * A Graph holds the interned auth DAG of one room in flat arrays: event i's
 * auth events are auth_data[auth_off[i] .. auth_off[i+1]) and always have
 * indices < i (events are interned after their auth events), which gives every
 * kernel a free topological order. Kernels that touch only these arrays run
 * with the GIL released; the iterative auth checks hold it because they call
 * the Python authorization rules.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define FLAG_POWER 1
#define FLAG_POWER_LEVELS 2
#define FLAG_REJECTED 4
#define FLAG_STATE 8

typedef struct {
    int32_t *data;
    Py_ssize_t len, cap;
} ivec;

static int ivec_push(ivec *v, int32_t x) {
    if (v->len == v->cap) {
        Py_ssize_t cap = v->cap ? v->cap * 2 : 64;
        int32_t *d = realloc(v->data, (size_t)cap * sizeof(int32_t));
        if (!d) return -1;
        v->data = d;
        v->cap = cap;
    }
    v->data[v->len++] = x;
    return 0;
}

static void ivec_free(ivec *v) {
    free(v->data);
    v->data = NULL;
    v->len = v->cap = 0;
}

typedef struct {
    PyObject_HEAD
    PyObject *index;     /* dict: event_id -> int */
    PyObject *key_index; /* dict: key -> int */
    PyObject *keys;      /* list of keys */
    PyObject *ids;       /* list of event_id str (keeps the UTF-8 buffers alive) */
    Py_ssize_t n, cap;
    int32_t *auth_off;   /* n + 1 */
    ivec auth;
    int32_t *akey_off;   /* n + 1 */
    ivec akeys;
    int64_t *ts, *power;
    int32_t *flags, *key, *pl_auth;
    const char **id_utf8;
    Py_ssize_t *id_len;
    /* scratch, sized cap */
    uint32_t *stamp, *stamp2;
    int32_t *aux;        /* kept all-zero between kernel calls */
    int32_t *stack;
    uint32_t epoch;
    int busy;
    /* Fast authorization path (see fast_auth()). */
    int8_t *kind, *membership, *rule9;
    int32_t *type_id, *sender_id, *sender_domain, *room_key, *sender_mkey;
    int32_t *target_id, *target_domain, *target_mkey;
    struct pltable **pl;
    struct createinfo **ci;
    int infinite_creators, limit_notifications;
    int32_t create_key, pl_key, jr_key;
    int64_t named_default[7];
    int64_t no_pl_creator_level;
    int knock_join_rule, restricted_join_rule, knock_restricted_join_rule;
    long long fast_decisions, python_checks;
    PyObject *last_state; /* the last StateSet interned from a dict (a lockstep hint) */
} GraphObject;

#define KIND_PYTHON 0
#define KIND_STATE 1
#define KIND_POWER_LEVELS 2
#define KIND_MEMBER 3

/* membership / join_rule codes (the "content code" of member and join rules events) */
#define M_NONE 0
#define M_JOIN 1
#define M_INVITE 2
#define M_LEAVE 3
#define M_BAN 4
#define M_KNOCK 5
#define M_OTHER 6
#define JR_PUBLIC 1
#define JR_INVITE 2
#define JR_KNOCK 3
#define JR_RESTRICTED 4
#define JR_KNOCK_RESTRICTED 5
#define JR_OTHER 6
#define LEVEL_INFINITE INT64_MAX
#define N_NAMED 7

typedef struct { int32_t id; int64_t level; } lentry;

typedef struct pltable {
    int8_t has[N_NAMED];
    int64_t named[N_NAMED]; /* users_default, events_default, state_default, ban, redact, kick, invite */
    Py_ssize_t n_maps[3];   /* events, users, notifications */
    lentry *maps[3];        /* sorted by id */
} pltable;

#define MAP_EVENTS 0
#define MAP_USERS 1
#define MAP_NOTIFICATIONS 2

typedef struct createinfo {
    Py_ssize_t n_creators;
    int32_t *creators;
    int federate;
    int32_t sender_domain;
} createinfo;

static void pltable_free(pltable *t) {
    if (!t) return;
    for (int i = 0; i < 3; i++) free(t->maps[i]);
    free(t);
}

static void createinfo_free(createinfo *c) {
    if (!c) return;
    free(c->creators);
    free(c);
}

/* An interned state map: (key index, event index) pairs sorted by key. */
typedef struct {
    PyObject_HEAD
    Py_ssize_t n;
    int32_t *keys;
    int32_t *evs;
    PyObject *source; /* a private copy of the dict it was interned from, or NULL */
    int32_t *src_pairs; /* (key, event) of source's entries, in its iteration order */
} StateSetObject;

static PyTypeObject StateSetType;

static StateSetObject *stateset_alloc(Py_ssize_t n) {
    StateSetObject *st = PyObject_New(StateSetObject, &StateSetType);
    if (!st) return NULL;
    st->n = 0;
    st->source = NULL;
    st->src_pairs = NULL;
    st->keys = malloc((size_t)(n ? n : 1) * sizeof(int32_t));
    st->evs = malloc((size_t)(n ? n : 1) * sizeof(int32_t));
    if (!st->keys || !st->evs) {
        free(st->keys); free(st->evs);
        st->keys = st->evs = NULL;
        Py_DECREF(st);
        PyErr_NoMemory();
        return NULL;
    }
    return st;
}

static void StateSet_dealloc(StateSetObject *st) {
    Py_XDECREF(st->source);
    free(st->src_pairs);
    free(st->keys);
    free(st->evs);
    PyObject_Free(st);
}

static Py_ssize_t StateSet_len(StateSetObject *st) { return st->n; }

static Py_ssize_t stateset_find(const StateSetObject *st, int32_t key) {
    Py_ssize_t lo = 0, hi = st->n;
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) / 2;
        if (st->keys[mid] < key) lo = mid + 1;
        else hi = mid;
    }
    return (lo < st->n && st->keys[lo] == key) ? lo : -1;
}

static PyObject *StateSet_get(StateSetObject *st, PyObject *arg) {
    long k = PyLong_AsLong(arg);
    if (k == -1 && PyErr_Occurred()) return NULL;
    Py_ssize_t i = (k < INT32_MIN || k > INT32_MAX) ? -1 : stateset_find(st, (int32_t)k);
    if (i < 0) Py_RETURN_NONE;
    return PyLong_FromLong(st->evs[i]);
}

static PyObject *StateSet_items(StateSetObject *st, PyObject *unused) {
    PyObject *list = PyList_New(st->n);
    if (!list) return NULL;
    for (Py_ssize_t i = 0; i < st->n; i++) {
        PyObject *t = Py_BuildValue("(ii)", st->keys[i], st->evs[i]);
        if (!t) { Py_DECREF(list); return NULL; }
        PyList_SET_ITEM(list, i, t);
    }
    return list;
}

static PyMethodDef StateSet_methods[] = {
    {"get", (PyCFunction)StateSet_get, METH_O, "The event index at a key index, or None."},
    {"items", (PyCFunction)StateSet_items, METH_NOARGS, "(key index, event index) pairs sorted by key."},
    {NULL}
};

static PySequenceMethods StateSet_as_sequence = {
    .sq_length = (lenfunc)StateSet_len,
};

static PyTypeObject StateSetType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "homeserver.state._speedups.StateSet",
    .tp_basicsize = sizeof(StateSetObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "An interned state map (immutable), made by Graph.intern_state.",
    .tp_dealloc = (destructor)StateSet_dealloc,
    .tp_methods = StateSet_methods,
    .tp_as_sequence = &StateSet_as_sequence,
};

static int pair_cmp(const void *a, const void *b) {
    int32_t x = ((const int32_t *)a)[0], y = ((const int32_t *)b)[0];
    return (x > y) - (x < y);
}


static int graph_grow(GraphObject *g) {
    Py_ssize_t cap = g->cap ? g->cap * 2 : 256;
#define GROW(field, type, count)                                              \
    do {                                                                      \
        type *p = realloc(g->field, (size_t)(count) * sizeof(type));          \
        if (!p) { PyErr_NoMemory(); return -1; }                               \
        g->field = p;                                                         \
    } while (0)
    GROW(auth_off, int32_t, cap + 1);
    GROW(akey_off, int32_t, cap + 1);
    GROW(ts, int64_t, cap);
    GROW(power, int64_t, cap);
    GROW(flags, int32_t, cap);
    GROW(key, int32_t, cap);
    GROW(pl_auth, int32_t, cap);
    GROW(id_utf8, const char *, cap);
    GROW(id_len, Py_ssize_t, cap);
    GROW(stamp, uint32_t, cap);
    GROW(stamp2, uint32_t, cap);
    GROW(aux, int32_t, cap);
    GROW(stack, int32_t, cap);
    GROW(kind, int8_t, cap);
    GROW(membership, int8_t, cap);
    GROW(rule9, int8_t, cap);
    GROW(type_id, int32_t, cap);
    GROW(sender_id, int32_t, cap);
    GROW(sender_domain, int32_t, cap);
    GROW(room_key, int32_t, cap);
    GROW(sender_mkey, int32_t, cap);
    GROW(target_id, int32_t, cap);
    GROW(target_domain, int32_t, cap);
    GROW(target_mkey, int32_t, cap);
    GROW(pl, pltable *, cap);
    GROW(ci, createinfo *, cap);
#undef GROW
    memset(g->stamp + g->cap, 0, (size_t)(cap - g->cap) * sizeof(uint32_t));
    memset(g->stamp2 + g->cap, 0, (size_t)(cap - g->cap) * sizeof(uint32_t));
    memset(g->aux + g->cap, 0, (size_t)(cap - g->cap) * sizeof(int32_t));
    if (g->cap == 0) {
        g->auth_off[0] = 0;
        g->akey_off[0] = 0;
    }
    g->cap = cap;
    return 0;
}

/* A fresh traversal epoch; both stamp arrays are cleared when it wraps. */
static uint32_t next_epoch(GraphObject *g) {
    g->epoch++;
    if (g->epoch == 0) {
        memset(g->stamp, 0, (size_t)g->cap * sizeof(uint32_t));
        memset(g->stamp2, 0, (size_t)g->cap * sizeof(uint32_t));
        g->epoch = 1;
    }
    return g->epoch;
}

static int graph_check_idle(GraphObject *g) {
    if (g->busy) {
        PyErr_SetString(PyExc_RuntimeError, "Graph is in use by another thread");
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------- helpers */

/* Convert a sequence of ints to a malloc'ed int32 array of valid indices. */
static int32_t *indices_from(GraphObject *g, PyObject *seq, Py_ssize_t *out_len) {
    PyObject *fast = PySequence_Fast(seq, "expected a sequence of event indices");
    if (!fast) return NULL;
    Py_ssize_t len = PySequence_Fast_GET_SIZE(fast);
    int32_t *out = malloc((size_t)(len ? len : 1) * sizeof(int32_t));
    if (!out) { Py_DECREF(fast); PyErr_NoMemory(); return NULL; }
    PyObject **items = PySequence_Fast_ITEMS(fast);
    for (Py_ssize_t i = 0; i < len; i++) {
        long v = PyLong_AsLong(items[i]);
        if (v == -1 && PyErr_Occurred()) { free(out); Py_DECREF(fast); return NULL; }
        if (v < 0 || v >= g->n) {
            PyErr_SetString(PyExc_IndexError, "event index out of range");
            free(out); Py_DECREF(fast); return NULL;
        }
        out[i] = (int32_t)v;
    }
    Py_DECREF(fast);
    *out_len = len;
    return out;
}

static PyObject *list_from(const int32_t *xs, Py_ssize_t len) {
    PyObject *list = PyList_New(len);
    if (!list) return NULL;
    for (Py_ssize_t i = 0; i < len; i++) {
        PyObject *v = PyLong_FromLong(xs[i]);
        if (!v) { Py_DECREF(list); return NULL; }
        PyList_SET_ITEM(list, i, v);
    }
    return list;
}

static int cmp_int32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* Python str ordering == UTF-8 byte ordering for valid code points. */
static int cmp_ids(const GraphObject *g, int32_t a, int32_t b) {
    Py_ssize_t la = g->id_len[a], lb = g->id_len[b];
    int c = memcmp(g->id_utf8[a], g->id_utf8[b], (size_t)(la < lb ? la : lb));
    if (c) return c;
    return (la > lb) - (la < lb);
}

/* DFS over auth edges from starts (marking stamp == ep), skipping nodes with
 * stop_arr[x] == stop_ep when stop_arr is given. Visited nodes are appended to
 * out when out is non-NULL. Returns -1 on allocation failure. */
static int chain_from(GraphObject *g, uint32_t *marks, const int32_t *starts, Py_ssize_t ns,
                      uint32_t ep, const uint32_t *stop_arr, uint32_t stop_ep, ivec *out) {
    int32_t *stack = g->stack;
    Py_ssize_t sp = 0;
    for (Py_ssize_t i = 0; i < ns; i++) {
        int32_t s = starts[i];
        if (marks[s] == ep) continue;
        if (stop_arr && stop_arr[s] == stop_ep) continue;
        marks[s] = ep;
        stack[sp++] = s;
    }
    while (sp) {
        int32_t x = stack[--sp];
        if (out && ivec_push(out, x) < 0) return -1;
        for (int32_t j = g->auth_off[x]; j < g->auth_off[x + 1]; j++) {
            int32_t a = g->auth.data[j];
            if (marks[a] == ep) continue;
            if (stop_arr && stop_arr[a] == stop_ep) continue;
            marks[a] = ep;
            stack[sp++] = a;
        }
    }
    return 0;
}

/* ------------------------------------------------------------ lifecycle */

static PyObject *Graph_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    GraphObject *g = (GraphObject *)type->tp_alloc(type, 0);
    if (!g) return NULL;
    g->index = PyDict_New();
    g->key_index = PyDict_New();
    g->keys = PyList_New(0);
    g->ids = PyList_New(0);
    g->create_key = g->pl_key = g->jr_key = -1;
    g->no_pl_creator_level = 100;
    if (!g->index || !g->key_index || !g->keys || !g->ids || graph_grow(g) < 0) {
        Py_DECREF(g);
        return NULL;
    }
    return (PyObject *)g;
}

static int Graph_traverse(GraphObject *g, visitproc visit, void *arg) {
    Py_VISIT(g->index);
    Py_VISIT(g->key_index);
    Py_VISIT(g->keys);
    Py_VISIT(g->ids);
    return 0;
}

static int Graph_clear(GraphObject *g) {
    Py_CLEAR(g->last_state);
    Py_CLEAR(g->index);
    Py_CLEAR(g->key_index);
    Py_CLEAR(g->keys);
    Py_CLEAR(g->ids);
    return 0;
}

static void Graph_dealloc(GraphObject *g) {
    PyObject_GC_UnTrack(g);
    Graph_clear(g);
    free(g->auth_off); free(g->akey_off);
    ivec_free(&g->auth); ivec_free(&g->akeys);
    free(g->ts); free(g->power); free(g->flags); free(g->key); free(g->pl_auth);
    free(g->id_utf8); free(g->id_len);
    free(g->stamp); free(g->stamp2); free(g->aux); free(g->stack);
    if (g->pl) for (Py_ssize_t i = 0; i < g->n; i++) pltable_free(g->pl[i]);
    if (g->ci) for (Py_ssize_t i = 0; i < g->n; i++) createinfo_free(g->ci[i]);
    free(g->kind); free(g->membership); free(g->rule9);
    free(g->type_id); free(g->sender_id); free(g->sender_domain); free(g->room_key); free(g->sender_mkey);
    free(g->target_id); free(g->target_domain); free(g->target_mkey);
    free(g->pl); free(g->ci);
    Py_TYPE(g)->tp_free((PyObject *)g);
}

static Py_ssize_t Graph_len(GraphObject *g) { return g->n; }

/* ------------------------------------------------------------ interning */

static PyObject *Graph_add_key(GraphObject *g, PyObject *key) {
    PyObject *k = PyDict_GetItemWithError(g->key_index, key);
    if (k) { Py_INCREF(k); return k; }
    if (PyErr_Occurred()) return NULL;
    Py_ssize_t n = PyList_GET_SIZE(g->keys);
    if (n >= INT32_MAX) { PyErr_SetString(PyExc_OverflowError, "too many keys"); return NULL; }
    k = PyLong_FromSsize_t(n);
    if (!k) return NULL;
    if (PyDict_SetItem(g->key_index, key, k) < 0 || PyList_Append(g->keys, key) < 0) {
        Py_DECREF(k);
        return NULL;
    }
    return k;
}

static PyObject *Graph_add_event(GraphObject *g, PyObject *args) {
    PyObject *event_id, *auth_seq, *akeys_seq;
    long long ts, power;
    int flags, key, pl_auth;
    if (!PyArg_ParseTuple(args, "UOLLiiiO:add_event", &event_id, &auth_seq, &ts, &power,
                          &flags, &key, &pl_auth, &akeys_seq))
        return NULL;
    if (graph_check_idle(g) < 0) return NULL;
    int has = PyDict_Contains(g->index, event_id);
    if (has < 0) return NULL;
    if (has) { PyErr_Format(PyExc_ValueError, "event already interned: %R", event_id); return NULL; }
    Py_ssize_t nkeys = PyList_GET_SIZE(g->keys);
    if (pl_auth >= g->n || pl_auth < -1 || key >= nkeys || key < -1) {
        PyErr_SetString(PyExc_ValueError, "index out of range");
        return NULL;
    }
    if (g->n >= INT32_MAX - 1) { PyErr_SetString(PyExc_OverflowError, "too many events"); return NULL; }
    Py_ssize_t id_len;
    const char *utf8 = PyUnicode_AsUTF8AndSize(event_id, &id_len);
    if (!utf8) return NULL;

    Py_ssize_t auth_start = g->auth.len, akey_start = g->akeys.len;
    PyObject *fast = PySequence_Fast(auth_seq, "auth must be a sequence");
    if (!fast) return NULL;
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(fast); i++) {
        long a = PyLong_AsLong(PySequence_Fast_GET_ITEM(fast, i));
        if (a == -1 && PyErr_Occurred()) goto fail_fast;
        if (a < 0 || a >= g->n) { PyErr_SetString(PyExc_ValueError, "auth event index out of range"); goto fail_fast; }
        int dup = 0;
        for (Py_ssize_t j = auth_start; j < g->auth.len; j++)
            if (g->auth.data[j] == a) { dup = 1; break; }
        if (!dup && ivec_push(&g->auth, (int32_t)a) < 0) { PyErr_NoMemory(); goto fail_fast; }
    }
    Py_DECREF(fast);
    fast = PySequence_Fast(akeys_seq, "auth_keys must be a sequence");
    if (!fast) goto fail;
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(fast); i++) {
        long k = PyLong_AsLong(PySequence_Fast_GET_ITEM(fast, i));
        if (k == -1 && PyErr_Occurred()) goto fail_fast;
        if (k < 0 || k >= nkeys) { PyErr_SetString(PyExc_ValueError, "key index out of range"); goto fail_fast; }
        if (ivec_push(&g->akeys, (int32_t)k) < 0) { PyErr_NoMemory(); goto fail_fast; }
    }
    Py_DECREF(fast);
    if (g->n == g->cap && graph_grow(g) < 0) goto fail;
    PyObject *idx = PyLong_FromSsize_t(g->n);
    if (!idx) goto fail;
    if (PyList_Append(g->ids, event_id) < 0) { Py_DECREF(idx); goto fail; }
    if (PyDict_SetItem(g->index, event_id, idx) < 0) {
        PyList_SetSlice(g->ids, g->n, g->n + 1, NULL);
        Py_DECREF(idx);
        goto fail;
    }
    Py_ssize_t i = g->n;
    g->auth_off[i + 1] = (int32_t)g->auth.len;
    g->akey_off[i + 1] = (int32_t)g->akeys.len;
    g->ts[i] = ts;
    g->power[i] = power;
    g->flags[i] = flags;
    g->key[i] = key;
    g->pl_auth[i] = pl_auth;
    g->id_utf8[i] = utf8;
    g->id_len[i] = id_len;
    g->kind[i] = KIND_PYTHON;
    g->membership[i] = 0;
    g->rule9[i] = 0;
    g->type_id[i] = g->sender_id[i] = g->sender_domain[i] = g->room_key[i] = g->sender_mkey[i] = -1;
    g->target_id[i] = g->target_domain[i] = g->target_mkey[i] = -1;
    g->pl[i] = NULL;
    g->ci[i] = NULL;
    g->n++;
    return idx;
fail_fast:
    Py_DECREF(fast);
fail:
    g->auth.len = auth_start;
    g->akeys.len = akey_start;
    return NULL;
}

static int index_arg(GraphObject *g, PyObject *arg, long *out) {
    long v = PyLong_AsLong(arg);
    if (v == -1 && PyErr_Occurred()) return -1;
    if (v < 0 || v >= g->n) { PyErr_SetString(PyExc_IndexError, "event index out of range"); return -1; }
    *out = v;
    return 0;
}

static PyObject *Graph_event_id(GraphObject *g, PyObject *arg) {
    long i;
    if (index_arg(g, arg, &i) < 0) return NULL;
    PyObject *r = PyList_GET_ITEM(g->ids, i);
    Py_INCREF(r);
    return r;
}

static PyObject *Graph_event_key(GraphObject *g, PyObject *arg) {
    long i;
    if (index_arg(g, arg, &i) < 0) return NULL;
    return PyLong_FromLong(g->key[i]);
}

static PyObject *Graph_flags(GraphObject *g, PyObject *arg) {
    long i;
    if (index_arg(g, arg, &i) < 0) return NULL;
    return PyLong_FromLong(g->flags[i]);
}

static PyObject *Graph_set_rejected(GraphObject *g, PyObject *args) {
    long i;
    int rejected;
    if (!PyArg_ParseTuple(args, "lp:set_rejected", &i, &rejected)) return NULL;
    if (graph_check_idle(g) < 0) return NULL;
    if (i < 0 || i >= g->n) { PyErr_SetString(PyExc_IndexError, "event index out of range"); return NULL; }
    if (rejected) g->flags[i] |= FLAG_REJECTED; else g->flags[i] &= ~FLAG_REJECTED;
    Py_RETURN_NONE;
}

static PyObject *Graph_lookup(GraphObject *g, PyObject *seq) {
    PyObject *it = PyObject_GetIter(seq);
    if (!it) return NULL;
    PyObject *out = PyList_New(0), *item;
    if (!out) { Py_DECREF(it); return NULL; }
    while ((item = PyIter_Next(it))) {
        PyObject *idx = PyDict_GetItemWithError(g->index, item);
        Py_DECREF(item);
        if (idx) {
            if (PyList_Append(out, idx) < 0) goto fail;
        } else if (PyErr_Occurred()) {
            goto fail;
        }
    }
    Py_DECREF(it);
    if (PyErr_Occurred()) { Py_DECREF(out); return NULL; }
    return out;
fail:
    Py_DECREF(it);
    Py_DECREF(out);
    return NULL;
}

/* -------------------------------------------------------- auth difference */

static PyObject *Graph_auth_difference(GraphObject *g, PyObject *args) {
    PyObject *common_seq, *sets_seq;
    if (!PyArg_ParseTuple(args, "OO:auth_difference", &common_seq, &sets_seq)) return NULL;
    if (graph_check_idle(g) < 0) return NULL;
    PyObject *sets_fast = PySequence_Fast(sets_seq, "per_set must be a sequence");
    if (!sets_fast) return NULL;
    Py_ssize_t nsets = PySequence_Fast_GET_SIZE(sets_fast);
    if (nsets < 2) { Py_DECREF(sets_fast); return PyList_New(0); }
    Py_ssize_t ncommon;
    int32_t *common;
    if (PyObject_TypeCheck(common_seq, &StateSetType)) {
        StateSetObject *st = (StateSetObject *)common_seq;
        ncommon = st->n;
        common = malloc((size_t)(ncommon ? ncommon : 1) * sizeof(int32_t));
        if (common) {
            for (Py_ssize_t i = 0; i < ncommon; i++) {
                if (st->evs[i] < 0 || st->evs[i] >= g->n) {
                    free(common); common = NULL;
                    PyErr_SetString(PyExc_IndexError, "event index out of range");
                    break;
                }
                common[i] = st->evs[i];
            }
        } else {
            PyErr_NoMemory();
        }
    } else {
        common = indices_from(g, common_seq, &ncommon);
    }
    int32_t **sets = calloc((size_t)nsets, sizeof(int32_t *));
    Py_ssize_t *lens = calloc((size_t)nsets, sizeof(Py_ssize_t));
    PyObject *result = NULL;
    ivec touched = {0}, diff = {0};
    int failed = 0;
    if (!common || !sets || !lens) { if (!PyErr_Occurred()) PyErr_NoMemory(); goto done; }
    for (Py_ssize_t i = 0; i < nsets; i++) {
        sets[i] = indices_from(g, PySequence_Fast_GET_ITEM(sets_fast, i), &lens[i]);
        if (!sets[i]) goto done;
    }
    g->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    /* Chain of the common (unconflicted) events: in every set's chain. Mark it
     * in stamp2 so the per-set walks stop there. */
    uint32_t ep_common = next_epoch(g);
    failed = chain_from(g, g->stamp2, common, ncommon, ep_common, NULL, 0, NULL);
    for (Py_ssize_t i = 0; i < nsets && !failed; i++) {
        uint32_t ep = next_epoch(g);
        ivec visited = {0};
        if (chain_from(g, g->stamp, sets[i], lens[i], ep, g->stamp2, ep_common, &visited) < 0) {
            failed = 1;
        } else {
            for (Py_ssize_t k = 0; k < visited.len; k++) {
                int32_t x = visited.data[k];
                if (g->aux[x]++ == 0 && ivec_push(&touched, x) < 0) { failed = 1; break; }
            }
        }
        ivec_free(&visited);
    }
    for (Py_ssize_t k = 0; k < touched.len; k++) {
        int32_t x = touched.data[k];
        if (!failed && g->aux[x] < nsets && ivec_push(&diff, x) < 0) failed = 1;
        g->aux[x] = 0;
    }
    if (!failed && diff.len) qsort(diff.data, (size_t)diff.len, sizeof(int32_t), cmp_int32);
    Py_END_ALLOW_THREADS
    g->busy = 0;
    if (failed) PyErr_NoMemory();
    else result = list_from(diff.data, diff.len);
done:
    if (sets) for (Py_ssize_t i = 0; i < nsets; i++) free(sets[i]);
    free(sets); free(lens); free(common);
    ivec_free(&touched); ivec_free(&diff);
    Py_DECREF(sets_fast);
    return result;
}

/* ---------------------------------------------------- conflicted subgraph */

static PyObject *Graph_conflicted_subgraph(GraphObject *g, PyObject *seq) {
    if (graph_check_idle(g) < 0) return NULL;
    Py_ssize_t nc;
    int32_t *conf = indices_from(g, seq, &nc);
    if (!conf) return NULL;
    ivec down = {0}, up = {0};
    int failed = 0;
    PyObject *result = NULL;
    g->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    uint32_t ep_down = next_epoch(g);
    failed = chain_from(g, g->stamp, conf, nc, ep_down, NULL, 0, &down);
    if (!failed) {
        qsort(down.data, (size_t)down.len, sizeof(int32_t), cmp_int32);
        for (Py_ssize_t i = 0; i < nc; i++) g->aux[conf[i]] = 1;
        uint32_t ep_up = next_epoch(g);
        for (Py_ssize_t k = 0; k < down.len && !failed; k++) {
            int32_t x = down.data[k];
            int is_up = g->aux[x];
            for (int32_t j = g->auth_off[x]; !is_up && j < g->auth_off[x + 1]; j++)
                if (g->stamp2[g->auth.data[j]] == ep_up) is_up = 1;
            if (is_up) {
                g->stamp2[x] = ep_up;
                if (ivec_push(&up, x) < 0) failed = 1;
            }
        }
        for (Py_ssize_t i = 0; i < nc; i++) g->aux[conf[i]] = 0;
    }
    Py_END_ALLOW_THREADS
    g->busy = 0;
    if (failed) PyErr_NoMemory();
    else result = list_from(up.data, up.len);
    ivec_free(&down); ivec_free(&up); free(conf);
    return result;
}

/* ------------------------------------------------------------ power sort */

/* Heap of local node ids, ordered by (-power, ts, event_id). */
typedef struct {
    const GraphObject *g;
    const int32_t *node; /* local -> global */
    int32_t *heap;
    Py_ssize_t len;
} pheap;

static int power_less(const pheap *h, int32_t la, int32_t lb) {
    const GraphObject *g = h->g;
    int32_t a = h->node[la], b = h->node[lb];
    if (g->power[a] != g->power[b]) return g->power[a] > g->power[b];
    if (g->ts[a] != g->ts[b]) return g->ts[a] < g->ts[b];
    return cmp_ids(g, a, b) < 0;
}

static void pheap_push(pheap *h, int32_t v) {
    Py_ssize_t i = h->len++;
    h->heap[i] = v;
    while (i > 0) {
        Py_ssize_t p = (i - 1) / 2;
        if (!power_less(h, h->heap[i], h->heap[p])) break;
        int32_t t = h->heap[i]; h->heap[i] = h->heap[p]; h->heap[p] = t;
        i = p;
    }
}

static int32_t pheap_pop(pheap *h) {
    int32_t top = h->heap[0];
    h->heap[0] = h->heap[--h->len];
    Py_ssize_t i = 0;
    for (;;) {
        Py_ssize_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < h->len && power_less(h, h->heap[l], h->heap[m])) m = l;
        if (r < h->len && power_less(h, h->heap[r], h->heap[m])) m = r;
        if (m == i) break;
        int32_t t = h->heap[i]; h->heap[i] = h->heap[m]; h->heap[m] = t;
        i = m;
    }
    return top;
}

static PyObject *Graph_power_sort(GraphObject *g, PyObject *seq) {
    if (graph_check_idle(g) < 0) return NULL;
    Py_ssize_t nf;
    int32_t *full = indices_from(g, seq, &nf);
    if (!full) return NULL;
    ivec nodes = {0};
    int32_t *outdeg = NULL, *roff = NULL, *rdata = NULL, *heap = NULL, *order = NULL;
    Py_ssize_t norder = 0;
    int failed = 0;
    PyObject *result = NULL;
    g->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    uint32_t ep_full = next_epoch(g);
    for (Py_ssize_t i = 0; i < nf; i++) g->stamp2[full[i]] = ep_full;
    /* Nodes: power events of the full set and, transitively, their auth
     * events inside the full set. */
    uint32_t ep_graph = next_epoch(g);
    int32_t *stack = g->stack;
    Py_ssize_t sp = 0;
    for (Py_ssize_t i = 0; i < nf; i++) {
        int32_t p = full[i];
        if ((g->flags[p] & FLAG_POWER) && g->stamp[p] != ep_graph) {
            g->stamp[p] = ep_graph;
            stack[sp++] = p;
        }
    }
    while (sp && !failed) {
        int32_t x = stack[--sp];
        if (ivec_push(&nodes, x) < 0) { failed = 1; break; }
        for (int32_t j = g->auth_off[x]; j < g->auth_off[x + 1]; j++) {
            int32_t a = g->auth.data[j];
            if (g->stamp2[a] == ep_full && g->stamp[a] != ep_graph) {
                g->stamp[a] = ep_graph;
                stack[sp++] = a;
            }
        }
    }
    Py_ssize_t nn = nodes.len;
    if (!failed) {
        outdeg = calloc((size_t)nn + 1, sizeof(int32_t));
        roff = calloc((size_t)nn + 2, sizeof(int32_t));
        heap = malloc(((size_t)nn + 1) * sizeof(int32_t));
        order = malloc(((size_t)nn + 1) * sizeof(int32_t));
        if (!outdeg || !roff || !heap || !order) failed = 1;
    }
    if (!failed) {
        /* aux[x] = local id + 1 for graph nodes. */
        for (Py_ssize_t l = 0; l < nn; l++) g->aux[nodes.data[l]] = (int32_t)l + 1;
        Py_ssize_t nedges = 0;
        for (Py_ssize_t l = 0; l < nn; l++) {
            int32_t x = nodes.data[l];
            for (int32_t j = g->auth_off[x]; j < g->auth_off[x + 1]; j++) {
                int32_t a = g->auth.data[j];
                if (g->aux[a]) { outdeg[l]++; roff[g->aux[a] - 1 + 1]++; nedges++; }
            }
        }
        for (Py_ssize_t l = 0; l < nn; l++) roff[l + 1] += roff[l];
        rdata = malloc(((size_t)nedges + 1) * sizeof(int32_t));
        int32_t *fill = calloc((size_t)nn + 1, sizeof(int32_t));
        if (!rdata || !fill) {
            failed = 1;
        } else {
            for (Py_ssize_t l = 0; l < nn; l++) {
                int32_t x = nodes.data[l];
                for (int32_t j = g->auth_off[x]; j < g->auth_off[x + 1]; j++) {
                    int32_t a = g->auth.data[j];
                    if (g->aux[a]) {
                        int32_t la = g->aux[a] - 1;
                        rdata[roff[la] + fill[la]++] = (int32_t)l;
                    }
                }
            }
            pheap h = {g, nodes.data, heap, 0};
            for (Py_ssize_t l = 0; l < nn; l++)
                if (outdeg[l] == 0) pheap_push(&h, (int32_t)l);
            while (h.len) {
                int32_t l = pheap_pop(&h);
                order[norder++] = nodes.data[l];
                for (int32_t j = roff[l]; j < roff[l + 1]; j++) {
                    int32_t parent = rdata[j];
                    if (--outdeg[parent] == 0) pheap_push(&h, parent);
                }
            }
        }
        free(fill);
        for (Py_ssize_t l = 0; l < nn; l++) g->aux[nodes.data[l]] = 0;
    }
    Py_END_ALLOW_THREADS
    g->busy = 0;
    if (failed) PyErr_NoMemory();
    else result = list_from(order, norder);
    ivec_free(&nodes);
    free(outdeg); free(roff); free(rdata); free(heap); free(order); free(full);
    return result;
}

/* ---------------------------------------------------------- mainline sort */

typedef struct {
    int64_t depth, ts;
    int32_t node;
    const GraphObject *g;
} mentry;

static int mentry_cmp(const void *pa, const void *pb) {
    const mentry *a = pa, *b = pb;
    if (a->depth != b->depth) return a->depth < b->depth ? -1 : 1;
    if (a->ts != b->ts) return a->ts < b->ts ? -1 : 1;
    return cmp_ids(a->g, a->node, b->node);
}

static PyObject *Graph_mainline_sort(GraphObject *g, PyObject *args) {
    PyObject *seq;
    long pl;
    if (!PyArg_ParseTuple(args, "Ol:mainline_sort", &seq, &pl)) return NULL;
    if (graph_check_idle(g) < 0) return NULL;
    if (pl < -1 || pl >= g->n) { PyErr_SetString(PyExc_IndexError, "event index out of range"); return NULL; }
    Py_ssize_t ne;
    int32_t *events = indices_from(g, seq, &ne);
    if (!events) return NULL;
    mentry *entries = malloc(((size_t)ne + 1) * sizeof(mentry));
    ivec mainline = {0};
    int failed = !entries;
    PyObject *result = NULL;
    g->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    /* pl_auth always points to a smaller index, so these walks terminate. */
    for (int32_t p = (int32_t)pl; p >= 0 && !failed; p = g->pl_auth[p])
        if (ivec_push(&mainline, p) < 0) failed = 1;
    if (!failed) {
        for (Py_ssize_t i = 0; i < mainline.len; i++)
            g->aux[mainline.data[i]] = (int32_t)(mainline.len - i);
        for (Py_ssize_t i = 0; i < ne; i++) {
            int32_t e = events[i], d = 0;
            for (int32_t p = e; p >= 0; p = g->pl_auth[p])
                if (g->aux[p]) { d = g->aux[p]; break; }
            entries[i].depth = d;
            entries[i].ts = g->ts[e];
            entries[i].node = e;
            entries[i].g = g;
        }
        qsort(entries, (size_t)ne, sizeof(mentry), mentry_cmp);
        for (Py_ssize_t i = 0; i < ne; i++) events[i] = entries[i].node;
        for (Py_ssize_t i = 0; i < mainline.len; i++) g->aux[mainline.data[i]] = 0;
    }
    Py_END_ALLOW_THREADS
    g->busy = 0;
    if (failed) PyErr_NoMemory();
    else result = list_from(events, ne);
    free(entries); free(events); ivec_free(&mainline);
    return result;
}


/* ------------------------------------------------- fast authorization */

static int lentry_cmp(const void *a, const void *b) {
    int32_t x = ((const lentry *)a)->id, y = ((const lentry *)b)->id;
    return (x > y) - (x < y);
}

static int parse_level_map(PyObject *seq, lentry **out, Py_ssize_t *n_out) {
    PyObject *fast = PySequence_Fast(seq, "level map must be a sequence of (id, level)");
    if (!fast) return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    lentry *m = malloc((size_t)(n ? n : 1) * sizeof(lentry));
    if (!m) { Py_DECREF(fast); PyErr_NoMemory(); return -1; }
    for (Py_ssize_t i = 0; i < n; i++) {
        int id;
        long long level;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(fast, i), "iL", &id, &level)) {
            free(m); Py_DECREF(fast); return -1;
        }
        m[i].id = id;
        m[i].level = level;
    }
    Py_DECREF(fast);
    qsort(m, (size_t)n, sizeof(lentry), lentry_cmp);
    *out = m;
    *n_out = n;
    return 0;
}

static pltable *parse_pltable(PyObject *obj) {
    PyObject *named, *maps[3];
    if (!PyArg_ParseTuple(obj, "OOOO", &named, &maps[0], &maps[1], &maps[2])) return NULL;
    pltable *t = calloc(1, sizeof(pltable));
    if (!t) { PyErr_NoMemory(); return NULL; }
    PyObject *fast = PySequence_Fast(named, "named levels must be a sequence");
    if (!fast) { free(t); return NULL; }
    if (PySequence_Fast_GET_SIZE(fast) != N_NAMED) {
        PyErr_SetString(PyExc_ValueError, "expected 7 named levels");
        Py_DECREF(fast); free(t); return NULL;
    }
    for (int i = 0; i < N_NAMED; i++) {
        PyObject *v = PySequence_Fast_GET_ITEM(fast, i);
        if (v == Py_None) continue;
        long long level = PyLong_AsLongLong(v);
        if (level == -1 && PyErr_Occurred()) { Py_DECREF(fast); free(t); return NULL; }
        t->has[i] = 1;
        t->named[i] = level;
    }
    Py_DECREF(fast);
    for (int i = 0; i < 3; i++) {
        if (parse_level_map(maps[i], &t->maps[i], &t->n_maps[i]) < 0) { pltable_free(t); return NULL; }
    }
    return t;
}

static createinfo *parse_createinfo(PyObject *obj) {
    PyObject *creators;
    int federate, domain;
    if (!PyArg_ParseTuple(obj, "Opi", &creators, &federate, &domain)) return NULL;
    createinfo *c = calloc(1, sizeof(createinfo));
    if (!c) { PyErr_NoMemory(); return NULL; }
    PyObject *fast = PySequence_Fast(creators, "creators must be a sequence");
    if (!fast) { free(c); return NULL; }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    c->creators = malloc((size_t)(n ? n : 1) * sizeof(int32_t));
    if (!c->creators) { Py_DECREF(fast); free(c); PyErr_NoMemory(); return NULL; }
    for (Py_ssize_t i = 0; i < n; i++) {
        long v = PyLong_AsLong(PySequence_Fast_GET_ITEM(fast, i));
        if (v == -1 && PyErr_Occurred()) { Py_DECREF(fast); createinfo_free(c); return NULL; }
        c->creators[i] = (int32_t)v;
    }
    Py_DECREF(fast);
    c->n_creators = n;
    c->federate = federate;
    c->sender_domain = domain;
    return c;
}

static PyObject *Graph_set_room_config(GraphObject *g, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"infinite_creators", "limit_notifications", "knock_join_rule",
                             "restricted_join_rule", "knock_restricted_join_rule", "create_key",
                             "power_levels_key", "join_rules_key", "named_defaults",
                             "no_power_levels_creator_level", NULL};
    int inf, lim, knock, restricted, knock_restricted, ck, pk, jk;
    PyObject *defaults;
    long long nc;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "pppppiiiOL:set_room_config", kwlist, &inf, &lim, &knock,
                                     &restricted, &knock_restricted, &ck, &pk, &jk, &defaults, &nc))
        return NULL;
    Py_ssize_t nkeys = PyList_GET_SIZE(g->keys);
    if (ck < -1 || ck >= nkeys || pk < -1 || pk >= nkeys || jk < -1 || jk >= nkeys) {
        PyErr_SetString(PyExc_ValueError, "key index out of range");
        return NULL;
    }
    PyObject *fast = PySequence_Fast(defaults, "named_defaults must be a sequence");
    if (!fast) return NULL;
    if (PySequence_Fast_GET_SIZE(fast) != N_NAMED) {
        Py_DECREF(fast);
        PyErr_SetString(PyExc_ValueError, "expected 7 named defaults");
        return NULL;
    }
    int64_t values[N_NAMED];
    for (int i = 0; i < N_NAMED; i++) {
        values[i] = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(fast, i));
        if (values[i] == -1 && PyErr_Occurred()) { Py_DECREF(fast); return NULL; }
    }
    Py_DECREF(fast);
    memcpy(g->named_default, values, sizeof(values));
    g->infinite_creators = inf;
    g->limit_notifications = lim;
    g->knock_join_rule = knock;
    g->restricted_join_rule = restricted;
    g->knock_restricted_join_rule = knock_restricted;
    g->create_key = ck;
    g->pl_key = pk;
    g->jr_key = jk;
    g->no_pl_creator_level = nc;
    Py_RETURN_NONE;
}

static PyObject *Graph_set_auth_info(GraphObject *g, PyObject *args) {
    long idx;
    int kind, code, type_id, sender_id, sender_domain, room_key, sender_mkey, target_id, target_domain,
        target_mkey, rule9;
    PyObject *plobj, *ciobj;
    if (!PyArg_ParseTuple(args, "liiiiiiiiiipOO:set_auth_info", &idx, &kind, &code, &type_id, &sender_id,
                          &sender_domain, &room_key, &sender_mkey, &target_id, &target_domain, &target_mkey,
                          &rule9, &plobj, &ciobj))
        return NULL;
    if (graph_check_idle(g) < 0) return NULL;
    if (idx < 0 || idx >= g->n) { PyErr_SetString(PyExc_IndexError, "event index out of range"); return NULL; }
    if (kind < KIND_PYTHON || kind > KIND_MEMBER || code < 0 || code > 127) {
        PyErr_SetString(PyExc_ValueError, "bad kind or code");
        return NULL;
    }
    Py_ssize_t nkeys = PyList_GET_SIZE(g->keys);
    if (sender_mkey < -1 || sender_mkey >= nkeys || target_mkey < -1 || target_mkey >= nkeys) {
        PyErr_SetString(PyExc_ValueError, "key index out of range");
        return NULL;
    }
    pltable *t = NULL;
    createinfo *c = NULL;
    if (plobj != Py_None && !(t = parse_pltable(plobj))) return NULL;
    if (ciobj != Py_None && !(c = parse_createinfo(ciobj))) { pltable_free(t); return NULL; }
    if (kind == KIND_POWER_LEVELS && !t) {
        PyErr_SetString(PyExc_ValueError, "a power levels event needs its table");
        createinfo_free(c);
        return NULL;
    }
    pltable_free(g->pl[idx]);
    createinfo_free(g->ci[idx]);
    g->pl[idx] = t;
    g->ci[idx] = c;
    g->kind[idx] = (int8_t)kind;
    g->membership[idx] = (int8_t)code;
    g->target_id[idx] = target_id;
    g->target_domain[idx] = target_domain;
    g->target_mkey[idx] = target_mkey;
    g->type_id[idx] = type_id;
    g->sender_id[idx] = sender_id;
    g->sender_domain[idx] = sender_domain;
    g->room_key[idx] = room_key;
    g->sender_mkey[idx] = sender_mkey;
    g->rule9[idx] = (int8_t)rule9;
    Py_RETURN_NONE;
}

static PyObject *Graph_auth_stats(GraphObject *g, PyObject *unused) {
    return Py_BuildValue("LL", g->fast_decisions, g->python_checks);
}

static const lentry *map_find(const pltable *t, int m, int32_t id) {
    Py_ssize_t lo = 0, hi = t->n_maps[m];
    const lentry *a = t->maps[m];
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) / 2;
        if (a[mid].id < id) lo = mid + 1;
        else hi = mid;
    }
    return (lo < t->n_maps[m] && a[lo].id == id) ? &a[lo] : NULL;
}

/* One changed entry of a power levels event (core auth _check_power_levels). */
static int level_change_ok(int users_sub, int32_t key, int32_t sender, int has_old, int64_t old_level,
                           int has_new, int64_t new_level, int64_t user_level) {
    if (has_old == has_new && (!has_old || old_level == new_level)) return 1;
    if (users_sub && key != sender && has_old && old_level >= user_level) return 0;
    if (has_old && old_level > user_level) return 0;
    if (has_new && new_level > user_level) return 0;
    return 1;
}

/*
 * Decide the authorization rules in C for state events other than
 * membership/create/aliases/third-party-invite events, over pre-parsed power
 * level tables. Mirrors homeserver.core.auth.check_auth_rules for that subset.
 * Returns 1 allowed, 0 rejected, -1 "ask Python" (anything unusual: unparsed
 * tables, a create event without parsed info, other event types).
 */
static int64_t named_level(const GraphObject *g, const pltable *t, int i) {
    return (t && t->has[i]) ? t->named[i] : g->named_default[i];
}

static int is_creator_of(const createinfo *ci, int32_t user) {
    for (Py_ssize_t i = 0; i < ci->n_creators; i++)
        if (ci->creators[i] == user) return 1;
    return 0;
}

/* core power_levels.get_user_power_level over a parsed table. */
static int64_t user_level_of(const GraphObject *g, const pltable *cur, const createinfo *ci, int32_t user) {
    int creator = is_creator_of(ci, user);
    if (g->infinite_creators && creator) return LEVEL_INFINITE;
    if (!cur) return creator ? g->no_pl_creator_level : g->named_default[0];
    const lentry *u = map_find(cur, MAP_USERS, user);
    return u ? u->level : named_level(g, cur, 0);
}

/* core auth._check_membership (and _check_join) for the cases it models. */
static int fast_member(const GraphObject *g, int32_t e, const pltable *cur, const createinfo *ci,
                       int32_t sender_member, int32_t target_member, int32_t jr) {
    int code = g->membership[e];
    if (code == M_NONE || code == M_OTHER) return 0;
    if (g->target_domain[e] != ci->sender_domain && !ci->federate) return 0;
    int sm = sender_member >= 0 ? g->membership[sender_member] : M_NONE;
    int tm = target_member >= 0 ? g->membership[target_member] : M_NONE;
    int join_rule = jr >= 0 ? g->membership[jr] : JR_INVITE;
    int32_t sender = g->sender_id[e], target = g->target_id[e];
    switch (code) {
    case M_JOIN:
        if (sender != target) return 0;
        if (tm == M_BAN) return 0;
        if (join_rule == JR_INVITE || (g->knock_join_rule && join_rule == JR_KNOCK))
            return tm == M_INVITE || tm == M_JOIN;
        if ((g->restricted_join_rule && join_rule == JR_RESTRICTED) ||
            (g->knock_restricted_join_rule && join_rule == JR_KNOCK_RESTRICTED))
            return (tm == M_INVITE || tm == M_JOIN) ? 1 : -1; /* authorising user: Python */
        return join_rule == JR_PUBLIC;
    case M_INVITE: {
        if (sm != M_JOIN) return 0;
        if (tm == M_JOIN || tm == M_BAN) return 0;
        return user_level_of(g, cur, ci, sender) >= named_level(g, cur, 6);
    }
    case M_LEAVE: {
        if (sender == target)
            return sm == M_INVITE || sm == M_JOIN || (g->knock_join_rule && sm == M_KNOCK);
        if (sm != M_JOIN) return 0;
        int64_t sl = user_level_of(g, cur, ci, sender);
        if (tm == M_BAN && sl < named_level(g, cur, 3)) return 0;
        if (sl < named_level(g, cur, 5) || user_level_of(g, cur, ci, target) >= sl) return 0;
        return 1;
    }
    case M_BAN: {
        if (sm != M_JOIN) return 0;
        int64_t sl = user_level_of(g, cur, ci, sender);
        if (sl < named_level(g, cur, 3) || user_level_of(g, cur, ci, target) >= sl) return 0;
        return 1;
    }
    case M_KNOCK:
        if (!g->knock_join_rule) return 0;
        if (!(join_rule == JR_KNOCK || (g->knock_restricted_join_rule && join_rule == JR_KNOCK_RESTRICTED)))
            return 0;
        if (sender != target) return 0;
        if (sm == M_BAN || sm == M_INVITE || sm == M_JOIN) return 0;
        return 1;
    }
    return -1;
}

/*
 * Decide the authorization rules in C for state events (other than create,
 * aliases and third-party invites), power levels events and membership events
 * (other than third-party invites, the creator's first join and joins that
 * need an authorising user), over pre-parsed power level tables. Mirrors
 * homeserver.core.auth.check_auth_rules for that subset. Returns 1 allowed,
 * 0 rejected, -1 "ask Python" (anything it does not model).
 */
static int fast_auth(GraphObject *g, int32_t e, const int32_t *keys, const int32_t *evs, int n) {
    int kind = g->kind[e];
    if (kind == KIND_PYTHON || g->create_key < 0 || g->pl_key < 0 || g->jr_key < 0) return -1;
    int32_t create = -1, pl = -1, member = -1, target_member = -1, jr = -1;
    for (int i = 0; i < n; i++) {
        if (keys[i] == g->create_key) create = evs[i];
        else if (keys[i] == g->pl_key) pl = evs[i];
        else if (keys[i] == g->jr_key) jr = evs[i];
        if (keys[i] == g->sender_mkey[e]) member = evs[i];
        if (keys[i] == g->target_mkey[e]) target_member = evs[i];
    }
    if (create < 0) return 0; /* no create event in the auth state */
    const createinfo *ci = g->ci[create];
    if (!ci) return -1;
    if (g->room_key[e] != g->room_key[create]) return 0;
    if (g->sender_domain[e] != ci->sender_domain && !ci->federate) return 0;
    const pltable *cur = NULL;
    if (pl >= 0) {
        cur = g->pl[pl];
        if (!cur) return -1;
    }
    if (kind == KIND_MEMBER) return fast_member(g, e, cur, ci, member, target_member, jr);
    if (member < 0 || g->membership[member] != M_JOIN) return 0; /* sender not joined */
    int32_t sender = g->sender_id[e];
    int64_t user_level = user_level_of(g, cur, ci, sender);
    int64_t send_level = named_level(g, cur, 2);
    if (cur) {
        const lentry *ev = map_find(cur, MAP_EVENTS, g->type_id[e]);
        if (ev) send_level = ev->level;
    }
    if (user_level < send_level) return 0;
    if (g->rule9[e]) return 0;
    if (kind != KIND_POWER_LEVELS) return 1;

    const pltable *nw = g->pl[e];
    if (!nw) return -1;
    if (g->infinite_creators) {
        for (Py_ssize_t i = 0; i < ci->n_creators; i++)
            if (map_find(nw, MAP_USERS, ci->creators[i])) return 0;
    }
    if (!cur) return 1;
    for (int i = 0; i < N_NAMED; i++)
        if (!level_change_ok(0, -1, sender, cur->has[i], cur->named[i], nw->has[i], nw->named[i], user_level))
            return 0;
    int nmaps = g->limit_notifications ? 3 : 2;
    for (int m = 0; m < nmaps; m++) {
        const lentry *a = cur->maps[m], *b = nw->maps[m];
        Py_ssize_t na = cur->n_maps[m], nb = nw->n_maps[m], i = 0, j = 0;
        while (i < na || j < nb) {
            int32_t key;
            int has_old = 0, has_new = 0;
            int64_t old_level = 0, new_level = 0;
            if (j >= nb || (i < na && a[i].id < b[j].id)) {
                key = a[i].id; has_old = 1; old_level = a[i].level; i++;
            } else if (i >= na || b[j].id < a[i].id) {
                key = b[j].id; has_new = 1; new_level = b[j].level; j++;
            } else {
                key = a[i].id; has_old = has_new = 1; old_level = a[i].level; new_level = b[j].level; i++; j++;
            }
            if (!level_change_ok(m == MAP_USERS, key, sender, has_old, old_level, has_new, new_level, user_level))
                return 0;
        }
    }
    return 1;
}

/* ----------------------------------------------------- iterative auth */

/* Current state at key k: overlay first, then base (string-keyed). Returns the
 * event index, -1 if none, -2 on error. */
static long current_state(GraphObject *g, StateSetObject *base, PyObject *overlay, int32_t k) {
    PyObject *kobj = PyLong_FromLong(k);
    if (!kobj) return -2;
    PyObject *cur = PyDict_GetItemWithError(overlay, kobj);
    Py_DECREF(kobj);
    if (cur) {
        long v = PyLong_AsLong(cur);
        if (v == -1 && PyErr_Occurred()) return -2;
        if (v < 0) {
            PyErr_SetString(PyExc_IndexError, "overlay holds a negative event index");
            return -2;
        }
        return v;
    }
    if (PyErr_Occurred()) return -2;
    Py_ssize_t i = stateset_find(base, k);
    return i < 0 ? -1 : base->evs[i];
}

static PyObject *Graph_iterative_auth(GraphObject *g, PyObject *args) {
    PyObject *seq, *overlay, *check;
    StateSetObject *base;
    if (!PyArg_ParseTuple(args, "OO!O!O:iterative_auth", &seq, &StateSetType, &base, &PyDict_Type, &overlay,
                          &check))
        return NULL;
    if (graph_check_idle(g) < 0) return NULL;
    Py_ssize_t no;
    int32_t *order = indices_from(g, seq, &no);
    if (!order) return NULL;
    int32_t ckeys[64], cevents[64];
    for (Py_ssize_t i = 0; i < no; i++) {
        int32_t e = order[i];
        int nchosen = 0;
        int32_t *keys = ckeys, *evs = cevents;
        Py_ssize_t want = (g->auth_off[e + 1] - g->auth_off[e]) + (g->akey_off[e + 1] - g->akey_off[e]);
        int32_t *heap_keys = NULL;
        if (want > 64) {
            heap_keys = malloc((size_t)want * 2 * sizeof(int32_t));
            if (!heap_keys) { free(order); return PyErr_NoMemory(); }
            keys = heap_keys;
            evs = heap_keys + want;
        }
#define CHOOSE(kk, ev)                                                    \
        do {                                                              \
            int found_ = 0;                                               \
            for (int q_ = 0; q_ < nchosen; q_++)                          \
                if (keys[q_] == (kk)) { evs[q_] = (ev); found_ = 1; break; } \
            if (!found_) { keys[nchosen] = (kk); evs[nchosen] = (ev); nchosen++; } \
        } while (0)
        for (int32_t j = g->auth_off[e]; j < g->auth_off[e + 1]; j++) {
            int32_t a = g->auth.data[j];
            if (!(g->flags[a] & FLAG_REJECTED) && g->key[a] >= 0) CHOOSE(g->key[a], a);
        }
        for (int32_t j = g->akey_off[e]; j < g->akey_off[e + 1]; j++) {
            int32_t k = g->akeys.data[j];
            long cur = current_state(g, base, overlay, k);
            if (cur == -2) { free(heap_keys); free(order); return NULL; }
            if (cur >= g->n) {
                PyErr_SetString(PyExc_IndexError, "overlay holds an unknown event index");
                free(heap_keys); free(order); return NULL;
            }
            if (cur >= 0 && !(g->flags[cur] & FLAG_REJECTED)) CHOOSE(k, (int32_t)cur);
        }
#undef CHOOSE
        if ((g->flags[e] & FLAG_REJECTED) || g->key[e] < 0) { free(heap_keys); continue; }
        int decided = fast_auth(g, e, keys, evs, nchosen);
        if (decided >= 0) {
            free(heap_keys);
            g->fast_decisions++;
            if (decided) {
                PyObject *kobj = PyLong_FromLong(g->key[e]), *eobj = PyLong_FromLong(e);
                int rc = (kobj && eobj) ? PyDict_SetItem(overlay, kobj, eobj) : -1;
                Py_XDECREF(kobj);
                Py_XDECREF(eobj);
                if (rc < 0) { free(order); return NULL; }
            }
            continue;
        }
        g->python_checks++;
        /* Present the auth events in first-chosen order, as the Python twin's
         * dict does. */
        PyObject *auth = list_from(evs, nchosen);
        free(heap_keys);
        if (!auth) { free(order); return NULL; }
        PyObject *eobj = PyLong_FromLong(e);
        if (!eobj) { Py_DECREF(auth); free(order); return NULL; }
        PyObject *r = PyObject_CallFunctionObjArgs(check, eobj, auth, NULL);
        Py_DECREF(auth);
        if (!r) { Py_DECREF(eobj); free(order); return NULL; }
        int ok = PyObject_IsTrue(r);
        Py_DECREF(r);
        if (ok < 0) { Py_DECREF(eobj); free(order); return NULL; }
        if (ok) {
            PyObject *kobj = PyLong_FromLong(g->key[e]);
            if (!kobj || PyDict_SetItem(overlay, kobj, eobj) < 0) {
                Py_XDECREF(kobj); Py_DECREF(eobj); free(order); return NULL;
            }
            Py_DECREF(kobj);
        }
        Py_DECREF(eobj);
    }
    free(order);
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------- separate */

static PyObject *as_dict(PyObject *m) {
    if (PyDict_CheckExact(m)) { Py_INCREF(m); return m; }
    PyObject *d = PyDict_New();
    if (d && PyDict_Update(d, m) < 0) Py_CLEAR(d);
    return d;
}

/* Append v to values unless an equal value is there. */
static int add_value(PyObject *values, PyObject *v) {
    int has = PySequence_Contains(values, v);
    if (has < 0) return -1;
    return has ? 0 : PyList_Append(values, v);
}

/* Classify one key: value from dicts[from], compared against dicts[from+1..]. */
static int classify(PyObject **dicts, Py_ssize_t nd, Py_ssize_t from, PyObject *key, PyObject *value,
                    int missing_is_conflict, int missing_from_earlier, Py_ssize_t *found,
                    PyObject *unconflicted, PyObject *conflicted) {
    PyObject *values = NULL;
    int same = !missing_from_earlier;
    for (Py_ssize_t j = from + 1; j < nd; j++) {
        PyObject *v = PyDict_GetItemWithError(dicts[j], key);
        if (!v) {
            if (PyErr_Occurred()) goto fail;
            if (missing_is_conflict) same = 0;
            continue;
        }
        if (found) found[j]++;
        int ne = PyObject_RichCompareBool(v, value, Py_NE);
        if (ne < 0) goto fail;
        if (ne) {
            same = 0;
            if (!values) {
                values = PyList_New(1);
                if (!values) goto fail;
                Py_INCREF(value);
                PyList_SET_ITEM(values, 0, value);
            }
            if (add_value(values, v) < 0) goto fail;
        }
    }
    if (same) {
        if (PyDict_SetItem(unconflicted, key, value) < 0) goto fail;
    } else {
        if (!values) {
            values = PyList_New(1);
            if (!values) goto fail;
            Py_INCREF(value);
            PyList_SET_ITEM(values, 0, value);
        }
        if (PyDict_SetItem(conflicted, key, values) < 0) goto fail;
    }
    Py_XDECREF(values);
    return 0;
fail:
    Py_XDECREF(values);
    return -1;
}

static PyObject *mod_separate(PyObject *self, PyObject *args) {
    PyObject *sets_seq;
    int missing_is_conflict;
    if (!PyArg_ParseTuple(args, "Op:separate", &sets_seq, &missing_is_conflict)) return NULL;
    PyObject *fast = PySequence_Fast(sets_seq, "state_sets must be a sequence");
    if (!fast) return NULL;
    Py_ssize_t nd = PySequence_Fast_GET_SIZE(fast);
    PyObject **dicts = calloc((size_t)(nd ? nd : 1), sizeof(PyObject *));
    Py_ssize_t *found = calloc((size_t)(nd ? nd : 1), sizeof(Py_ssize_t));
    PyObject *unconflicted = PyDict_New(), *conflicted = PyDict_New(), *result = NULL;
    if (!dicts || !found) { PyErr_NoMemory(); goto done; }
    if (!unconflicted || !conflicted) goto done;
    for (Py_ssize_t i = 0; i < nd; i++) {
        dicts[i] = as_dict(PySequence_Fast_GET_ITEM(fast, i));
        if (!dicts[i]) goto done;
    }
    if (nd == 0) goto build;
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(dicts[0], &pos, &key, &value)) {
        Py_INCREF(key); Py_INCREF(value);
        int r = classify(dicts, nd, 0, key, value, missing_is_conflict, 0, found, unconflicted, conflicted);
        Py_DECREF(key); Py_DECREF(value);
        if (r < 0) goto done;
    }
    for (Py_ssize_t i = 1; i < nd; i++) {
        /* Every key of dicts[i] was already met in dicts[0]: nothing new. */
        if (found[i] == PyDict_GET_SIZE(dicts[i])) continue;
        pos = 0;
        while (PyDict_Next(dicts[i], &pos, &key, &value)) {
            int seen = 0;
            for (Py_ssize_t j = 0; j < i && !seen; j++) {
                seen = PyDict_Contains(dicts[j], key);
                if (seen < 0) goto done;
            }
            if (seen) continue;
            Py_INCREF(key); Py_INCREF(value);
            int r = classify(dicts, nd, i, key, value, 0, missing_is_conflict, NULL, unconflicted, conflicted);
            Py_DECREF(key); Py_DECREF(value);
            if (r < 0) goto done;
        }
    }
build:
    result = PyTuple_Pack(2, unconflicted, conflicted);
done:
    if (dicts) for (Py_ssize_t i = 0; i < nd; i++) Py_XDECREF(dicts[i]);
    free(dicts); free(found);
    Py_XDECREF(unconflicted); Py_XDECREF(conflicted);
    Py_DECREF(fast);
    return result;
}


/* --------------------------------------------------------- state sets */

/* Key index of key, interning it if new; -1 on error. */
static long key_of(GraphObject *g, PyObject *key) {
    PyObject *k = PyDict_GetItemWithError(g->key_index, key);
    if (k) return PyLong_AsLong(k);
    if (PyErr_Occurred()) return -1;
    k = Graph_add_key(g, key);
    if (!k) return -1;
    long v = PyLong_AsLong(k);
    Py_DECREF(k);
    return v;
}

static PyObject *Graph_intern_state(GraphObject *g, PyObject *mapping) {
    if (PyDict_CheckExact(mapping)) {
        /* Fast path: no item tuples. State maps are usually copies of one
         * another: walk the previous interned dict in lockstep, entry by
         * entry, and reuse its (key, event) pair whenever the key and value
         * objects are the very same; look up only the others. */
        Py_ssize_t n = PyDict_GET_SIZE(mapping), pos = 0, i = 0;
        int32_t *pairs = malloc((size_t)(n ? n : 1) * 2 * sizeof(int32_t));
        if (!pairs) return PyErr_NoMemory();
        StateSetObject *prev = (StateSetObject *)g->last_state;
        if (prev) Py_INCREF(prev);
        Py_ssize_t ppos = 0, pentry = -1, pc = -1;
        PyObject *pkey = NULL, *pvalue = NULL;
        int pdone = prev == NULL;
        PyObject *key, *value;
        while (PyDict_Next(mapping, &pos, &key, &value)) {
            Py_ssize_t entry = pos - 1;
            while (!pdone && pentry < entry) {
                if (PyDict_Next(prev->source, &ppos, &pkey, &pvalue)) { pentry = ppos - 1; pc++; }
                else pdone = 1;
            }
            long kk = -1, ev = -1;
            if (!pdone && pentry == entry && pkey == key) {
                kk = prev->src_pairs[2 * pc];
                if (pvalue == value) ev = prev->src_pairs[2 * pc + 1];
            }
            if (kk < 0 && (kk = key_of(g, key)) < 0) { free(pairs); Py_XDECREF(prev); return NULL; }
            if (ev < 0) {
                PyObject *evo = PyDict_GetItemWithError(g->index, value);
                if (!evo) {
                    if (!PyErr_Occurred()) PyErr_Format(PyExc_KeyError, "event not interned: %R", value);
                    free(pairs);
                    Py_XDECREF(prev);
                    return NULL;
                }
                ev = PyLong_AsLong(evo);
            }
            pairs[2 * i] = (int32_t)kk;
            pairs[2 * i + 1] = (int32_t)ev;
            i++;
        }
        Py_XDECREF(prev);
        StateSetObject *st = stateset_alloc(n);
        if (!st) { free(pairs); return NULL; }
        st->src_pairs = malloc((size_t)(n ? n : 1) * 2 * sizeof(int32_t));
        if (!st->src_pairs) { free(pairs); Py_DECREF(st); return PyErr_NoMemory(); }
        memcpy(st->src_pairs, pairs, (size_t)n * 2 * sizeof(int32_t));
        /* Dicts copied from one another iterate in key-interning order, so
         * the pairs are usually sorted already. */
        int sorted = 1;
        for (Py_ssize_t j = 1; j < n && sorted; j++)
            if (pairs[2 * j] < pairs[2 * j - 2]) sorted = 0;
        if (!sorted) qsort(pairs, (size_t)n, 2 * sizeof(int32_t), pair_cmp);
        for (Py_ssize_t j = 0; j < n; j++) {
            st->keys[j] = pairs[2 * j];
            st->evs[j] = pairs[2 * j + 1];
        }
        st->n = n;
        free(pairs);
        st->source = PyDict_Copy(mapping);
        if (!st->source) { Py_DECREF(st); return NULL; }
        Py_INCREF(st);
        Py_XSETREF(g->last_state, (PyObject *)st);
        return (PyObject *)st;
    }
    PyObject *items = PyMapping_Items(mapping);
    if (!items) return NULL;
    Py_ssize_t n = PyList_GET_SIZE(items);
    int32_t *pairs = malloc((size_t)(n ? n : 1) * 2 * sizeof(int32_t));
    if (!pairs) { Py_DECREF(items); return PyErr_NoMemory(); }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *kv = PyList_GET_ITEM(items, i);
        if (!PyTuple_Check(kv) || PyTuple_GET_SIZE(kv) != 2) {
            PyErr_SetString(PyExc_TypeError, "items() must yield pairs");
            goto fail;
        }
        PyObject *k = Graph_add_key(g, PyTuple_GET_ITEM(kv, 0));
        if (!k) goto fail;
        long kk = PyLong_AsLong(k);
        Py_DECREF(k);
        PyObject *ev = PyDict_GetItemWithError(g->index, PyTuple_GET_ITEM(kv, 1));
        if (!ev) {
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_KeyError, "event not interned: %R", PyTuple_GET_ITEM(kv, 1));
            goto fail;
        }
        pairs[2 * i] = (int32_t)kk;
        pairs[2 * i + 1] = (int32_t)PyLong_AsLong(ev);
    }
    Py_DECREF(items);
    qsort(pairs, (size_t)n, 2 * sizeof(int32_t), pair_cmp);
    StateSetObject *st = stateset_alloc(n);
    if (!st) { free(pairs); return NULL; }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (i && pairs[2 * i] == pairs[2 * i - 2]) {
            PyErr_SetString(PyExc_ValueError, "duplicate key in state map");
            free(pairs); Py_DECREF(st); return NULL;
        }
        st->keys[i] = pairs[2 * i];
        st->evs[i] = pairs[2 * i + 1];
    }
    st->n = n;
    free(pairs);
    return (PyObject *)st;
fail:
    Py_DECREF(items);
    free(pairs);
    return NULL;
}

static int state_entry_ok(GraphObject *g, const StateSetObject *st, Py_ssize_t i) {
    if (st->keys[i] < 0 || st->keys[i] >= PyList_GET_SIZE(g->keys) || st->evs[i] < 0 || st->evs[i] >= g->n) {
        PyErr_SetString(PyExc_IndexError, "state set does not belong to this graph");
        return 0;
    }
    return 1;
}

/* StateSet -> dict. With like= a StateSet interned from a dict, copy that
 * dict (no rehashing) and patch the differences. */
static PyObject *Graph_state_to_dict(GraphObject *g, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"state", "like", NULL};
    StateSetObject *st, *like = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!|O:state_to_dict", kwlist, &StateSetType, &st, &like))
        return NULL;
    if ((PyObject *)like == Py_None) like = NULL;
    if (like && !PyObject_TypeCheck((PyObject *)like, &StateSetType)) {
        PyErr_SetString(PyExc_TypeError, "like must be a StateSet or None");
        return NULL;
    }
    if (like && like->source) {
        PyObject *d = PyDict_Copy(like->source);
        if (!d) return NULL;
        Py_ssize_t i = 0, j = 0;
        while (i < st->n || j < like->n) {
            int rc = 0;
            if (j >= like->n || (i < st->n && st->keys[i] < like->keys[j])) {
                if (!state_entry_ok(g, st, i)) { Py_DECREF(d); return NULL; }
                rc = PyDict_SetItem(d, PyList_GET_ITEM(g->keys, st->keys[i]), PyList_GET_ITEM(g->ids, st->evs[i]));
                i++;
            } else if (i >= st->n || like->keys[j] < st->keys[i]) {
                if (!state_entry_ok(g, like, j)) { Py_DECREF(d); return NULL; }
                rc = PyDict_DelItem(d, PyList_GET_ITEM(g->keys, like->keys[j]));
                j++;
            } else {
                if (st->evs[i] != like->evs[j]) {
                    if (!state_entry_ok(g, st, i)) { Py_DECREF(d); return NULL; }
                    rc = PyDict_SetItem(d, PyList_GET_ITEM(g->keys, st->keys[i]),
                                        PyList_GET_ITEM(g->ids, st->evs[i]));
                }
                i++;
                j++;
            }
            if (rc < 0) { Py_DECREF(d); return NULL; }
        }
        return d;
    }
    PyObject *d = _PyDict_NewPresized(st->n);
    if (!d) return NULL;
    for (Py_ssize_t i = 0; i < st->n; i++) {
        if (!state_entry_ok(g, st, i) ||
            PyDict_SetItem(d, PyList_GET_ITEM(g->keys, st->keys[i]), PyList_GET_ITEM(g->ids, st->evs[i])) < 0) {
            Py_DECREF(d);
            return NULL;
        }
    }
    return d;
}

/* base plus the overlay entries (key index -> event index) whose keys base lacks. */
static PyObject *Graph_merge_state(GraphObject *g, PyObject *args) {
    StateSetObject *base;
    PyObject *overlay;
    if (!PyArg_ParseTuple(args, "O!O!:merge_state", &StateSetType, &base, &PyDict_Type, &overlay)) return NULL;
    Py_ssize_t extra = PyDict_GET_SIZE(overlay), m = 0;
    int32_t *pairs = malloc((size_t)(extra ? extra : 1) * 2 * sizeof(int32_t));
    if (!pairs) return PyErr_NoMemory();
    PyObject *k, *v;
    Py_ssize_t pos = 0;
    while (PyDict_Next(overlay, &pos, &k, &v)) {
        long kk = PyLong_AsLong(k), vv = PyLong_AsLong(v);
        if ((kk == -1 || vv == -1) && PyErr_Occurred()) { free(pairs); return NULL; }
        if (kk < 0 || kk >= PyList_GET_SIZE(g->keys) || vv < 0 || vv >= g->n) {
            free(pairs);
            PyErr_SetString(PyExc_IndexError, "overlay index out of range");
            return NULL;
        }
        if (stateset_find(base, (int32_t)kk) >= 0) continue;
        pairs[2 * m] = (int32_t)kk;
        pairs[2 * m + 1] = (int32_t)vv;
        m++;
    }
    qsort(pairs, (size_t)m, 2 * sizeof(int32_t), pair_cmp);
    StateSetObject *st = stateset_alloc(base->n + m);
    if (!st) { free(pairs); return NULL; }
    Py_ssize_t i = 0, j = 0, o = 0;
    while (i < base->n || j < m) {
        if (j >= m || (i < base->n && base->keys[i] < pairs[2 * j])) {
            st->keys[o] = base->keys[i]; st->evs[o] = base->evs[i]; i++;
        } else {
            st->keys[o] = pairs[2 * j]; st->evs[o] = pairs[2 * j + 1]; j++;
        }
        o++;
    }
    st->n = o;
    free(pairs);
    return (PyObject *)st;
}

/* separate() over interned state sets: a k-way merge of sorted arrays. */
static PyObject *mod_separate_interned(PyObject *self, PyObject *args) {
    PyObject *seq;
    int missing_is_conflict;
    if (!PyArg_ParseTuple(args, "Op:separate_interned", &seq, &missing_is_conflict)) return NULL;
    PyObject *fast = PySequence_Fast(seq, "state_sets must be a sequence");
    if (!fast) return NULL;
    Py_ssize_t k = PySequence_Fast_GET_SIZE(fast), total = 0;
    for (Py_ssize_t j = 0; j < k; j++) {
        PyObject *o = PySequence_Fast_GET_ITEM(fast, j);
        if (!PyObject_TypeCheck(o, &StateSetType)) {
            Py_DECREF(fast);
            PyErr_SetString(PyExc_TypeError, "expected StateSet objects");
            return NULL;
        }
        if (((StateSetObject *)o)->n > total) total = ((StateSetObject *)o)->n;
    }
    StateSetObject **sets = malloc((size_t)(k ? k : 1) * sizeof(StateSetObject *));
    Py_ssize_t *pos = calloc((size_t)(k ? k : 1), sizeof(Py_ssize_t));
    int32_t *vals = malloc((size_t)(k ? k : 1) * sizeof(int32_t));
    StateSetObject *unconf = stateset_alloc(total);
    PyObject *conflicted = PyDict_New(), *result = NULL;
    if (!sets || !pos || !vals || !unconf || !conflicted) { if (!PyErr_Occurred()) PyErr_NoMemory(); goto done; }
    for (Py_ssize_t j = 0; j < k; j++) sets[j] = (StateSetObject *)PySequence_Fast_GET_ITEM(fast, j);
    /* Merge without the GIL into flat buffers: conflicted keys as
     * (key, count, values...) records. */
    ivec conf = {0};
    int failed = 0, cooldown = 0;
    Py_BEGIN_ALLOW_THREADS
    for (;;) {
        /* Fast path: states resolved together mostly agree, and their sorted
         * arrays line up in long identical runs. Take whole blocks that every
         * set holds identically (memcmp), then fall back to the merge. */
        if (k > 0 && cooldown == 0) {
            const Py_ssize_t B = 256;
            for (;;) {
                if (pos[0] + B > sets[0]->n) break;
                const int32_t *k0 = sets[0]->keys + pos[0], *e0 = sets[0]->evs + pos[0];
                int same = 1;
                for (Py_ssize_t j = 1; j < k && same; j++) {
                    if (pos[j] + B > sets[j]->n ||
                        memcmp(sets[j]->keys + pos[j], k0, (size_t)B * sizeof(int32_t)) != 0 ||
                        memcmp(sets[j]->evs + pos[j], e0, (size_t)B * sizeof(int32_t)) != 0)
                        same = 0;
                }
                if (!same) { cooldown = 64; break; } /* merge a while before retrying */
                memcpy(unconf->keys + unconf->n, k0, (size_t)B * sizeof(int32_t));
                memcpy(unconf->evs + unconf->n, e0, (size_t)B * sizeof(int32_t));
                unconf->n += B;
                for (Py_ssize_t j = 0; j < k; j++) pos[j] += B;
            }
        }
        if (cooldown) cooldown--;
        int32_t key = INT32_MAX;
        int any = 0;
        for (Py_ssize_t j = 0; j < k; j++)
            if (pos[j] < sets[j]->n && (!any || sets[j]->keys[pos[j]] < key)) { key = sets[j]->keys[pos[j]]; any = 1; }
        if (!any) break;
        Py_ssize_t nv = 0, present = 0;
        for (Py_ssize_t j = 0; j < k; j++) {
            if (pos[j] < sets[j]->n && sets[j]->keys[pos[j]] == key) {
                int32_t v = sets[j]->evs[pos[j]++];
                present++;
                int seen = 0;
                for (Py_ssize_t q = 0; q < nv; q++) if (vals[q] == v) { seen = 1; break; }
                if (!seen) vals[nv++] = v;
            }
        }
        if (nv == 1 && (present == k || !missing_is_conflict)) {
            unconf->keys[unconf->n] = key;
            unconf->evs[unconf->n] = vals[0];
            unconf->n++;
        } else {
            if (ivec_push(&conf, key) < 0 || ivec_push(&conf, (int32_t)nv) < 0) { failed = 1; break; }
            for (Py_ssize_t q = 0; q < nv; q++)
                if (ivec_push(&conf, vals[q]) < 0) { failed = 1; break; }
            if (failed) break;
        }
    }
    Py_END_ALLOW_THREADS
    if (failed) { ivec_free(&conf); PyErr_NoMemory(); goto done; }
    for (Py_ssize_t r = 0; r < conf.len;) {
        int32_t key = conf.data[r], nv = conf.data[r + 1];
        PyObject *list = list_from(conf.data + r + 2, nv), *kobj = PyLong_FromLong(key);
        int rc = (list && kobj) ? PyDict_SetItem(conflicted, kobj, list) : -1;
        Py_XDECREF(list); Py_XDECREF(kobj);
        if (rc < 0) { ivec_free(&conf); goto done; }
        r += 2 + nv;
    }
    ivec_free(&conf);
    result = PyTuple_Pack(2, (PyObject *)unconf, conflicted);
done:
    free(sets); free(pos); free(vals);
    Py_XDECREF(unconf); Py_XDECREF(conflicted);
    Py_DECREF(fast);
    return result;
}

/* ------------------------------------------------------------- type glue */

static PyMemberDef Graph_members[] = {
    {"index", T_OBJECT, offsetof(GraphObject, index), READONLY, "dict: event ID -> index"},
    {"key_index", T_OBJECT, offsetof(GraphObject, key_index), READONLY, "dict: key -> key index"},
    {"keys", T_OBJECT, offsetof(GraphObject, keys), READONLY, "list: key index -> key"},
    {NULL}
};

static PyMethodDef Graph_methods[] = {
    {"add_key", (PyCFunction)Graph_add_key, METH_O, "Intern a (type, state_key) pair; return its key index."},
    {"add_event", (PyCFunction)Graph_add_event, METH_VARARGS,
     "add_event(event_id, auth, ts, power, flags, key, pl_auth, auth_keys) -> index"},
    {"event_id", (PyCFunction)Graph_event_id, METH_O, "The event ID of an interned event."},
    {"event_key", (PyCFunction)Graph_event_key, METH_O, "The key index of an event (-1: not state)."},
    {"flags", (PyCFunction)Graph_flags, METH_O, "The FLAG_* bits of an event."},
    {"set_rejected", (PyCFunction)Graph_set_rejected, METH_VARARGS, "Mark or unmark an event as rejected."},
    {"lookup", (PyCFunction)Graph_lookup, METH_O, "Indices of the given event IDs, skipping unknown ones."},
    {"auth_difference", (PyCFunction)Graph_auth_difference, METH_VARARGS,
     "auth_difference(common, per_set) -> sorted indices"},
    {"conflicted_subgraph", (PyCFunction)Graph_conflicted_subgraph, METH_O,
     "conflicted_subgraph(conflicted) -> sorted indices"},
    {"power_sort", (PyCFunction)Graph_power_sort, METH_O,
     "power_sort(full_conflicted) -> power events + auth chains, reverse topological power order"},
    {"mainline_sort", (PyCFunction)Graph_mainline_sort, METH_VARARGS,
     "mainline_sort(events, power_levels_index) -> events in mainline order"},
    {"set_room_config", (PyCFunction)(void (*)(void))Graph_set_room_config, METH_VARARGS | METH_KEYWORDS,
     "Room-wide settings of the fast authorization path."},
    {"set_auth_info", (PyCFunction)Graph_set_auth_info, METH_VARARGS,
     "set_auth_info(idx, kind, code, type_id, sender_id, sender_domain, room_key, sender_member_key,"
     " target_id, target_domain, target_member_key, rule9, power_levels_table, create_info)"},
    {"auth_stats", (PyCFunction)Graph_auth_stats, METH_NOARGS,
     "(decisions taken by the fast path, decisions asked of the Python rules)"},
    {"intern_state", (PyCFunction)Graph_intern_state, METH_O,
     "intern_state(mapping) -> StateSet; every event must be interned"},
    {"state_to_dict", (PyCFunction)(void (*)(void))Graph_state_to_dict, METH_VARARGS | METH_KEYWORDS,
     "state_to_dict(state, like=None) -> {(type, state_key): event_id}; like: a StateSet interned from a"
     " dict, copied and patched (faster for similar states)"},
    {"merge_state", (PyCFunction)Graph_merge_state, METH_VARARGS,
     "merge_state(base, overlay) -> base plus overlay entries for keys base lacks"},
    {"iterative_auth", (PyCFunction)Graph_iterative_auth, METH_VARARGS,
     "iterative_auth(order, base, overlay, check) -> None; updates overlay"},
    {NULL}
};

static PySequenceMethods Graph_as_sequence = {
    .sq_length = (lenfunc)Graph_len,
};

static PyTypeObject GraphType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "homeserver.state._speedups.Graph",
    .tp_basicsize = sizeof(GraphObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The interned auth DAG of one room.",
    .tp_new = Graph_new,
    .tp_dealloc = (destructor)Graph_dealloc,
    .tp_traverse = (traverseproc)Graph_traverse,
    .tp_clear = (inquiry)Graph_clear,
    .tp_methods = Graph_methods,
    .tp_members = Graph_members,
    .tp_as_sequence = &Graph_as_sequence,
};

static PyMethodDef module_methods[] = {
    {"separate_interned", mod_separate_interned, METH_VARARGS,
     "separate_interned(state_sets, missing_is_conflict) -> (unconflicted StateSet, {key: [events]})"},
    {"separate", mod_separate, METH_VARARGS,
     "separate(state_sets, missing_is_conflict) -> (unconflicted, conflicted)"},
    {NULL}
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "homeserver.state._speedups",
    "C kernels for state resolution (twin of homeserver.state._pure).", -1, module_methods,
};

PyMODINIT_FUNC PyInit__speedups(void) {
    if (PyType_Ready(&GraphType) < 0 || PyType_Ready(&StateSetType) < 0) return NULL;
    PyObject *m = PyModule_Create(&moduledef);
    if (!m) return NULL;
    Py_INCREF(&GraphType);
    Py_INCREF(&StateSetType);
    if (PyModule_AddObject(m, "Graph", (PyObject *)&GraphType) < 0 ||
        PyModule_AddObject(m, "StateSet", (PyObject *)&StateSetType) < 0 ||
        PyModule_AddIntConstant(m, "FLAG_POWER", FLAG_POWER) < 0 ||
        PyModule_AddIntConstant(m, "FLAG_POWER_LEVELS", FLAG_POWER_LEVELS) < 0 ||
        PyModule_AddIntConstant(m, "FLAG_REJECTED", FLAG_REJECTED) < 0 ||
        PyModule_AddIntConstant(m, "FLAG_STATE", FLAG_STATE) < 0 ||
        PyModule_AddStringConstant(m, "IMPLEMENTATION", "c") < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
