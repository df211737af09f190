/* The DLP decoders' run finding in one native module (bot_bottle_dlp._runs).
 *
 * find(data) -> (base64_runs, spaced_candidates, hex_sep_regions), each a
 * list of (start, end) byte offsets, in order:
 *
 *  - base64_runs: each maximal run of [A-Za-z0-9+/_-] at least 24 long,
 *    with up to two '=' after it (what views._b64_runs yields), but for
 *    those views.decode_runs would drop at first sight (see
 *    base64_worth_decoding);
 *  - spaced_candidates: the stretches of words of base64 characters joined
 *    by the separators views._B64_SPACED_RUN allows (1-4 spaces/tabs, or
 *    one line break with spaces/tabs around it), plus up to two '=' after
 *    the last word, that could hold a match of that pattern worth decoding
 *    (two words or more, a digit, '+' or '/', 25 bytes or more, both letter
 *    cases or two adjacent words without letters; a word shorter than 3
 *    without a digit, '+' or '/' is in no match and ends a stretch). A
 *    match of the pattern never crosses the edge of such a stretch, so RE2
 *    run over each finds what a pass over the whole buffer finds there;
 *  - hex_sep_regions: each maximal run of hex digits and the separator
 *    bytes of views._HEX_SEP_CLASS at least 47 long (what views._hex_sep_runs
 *    hands RE2), but for those with fewer than 15 bytes other than hex
 *    digits, where that pattern cannot match (see hex_sep_possible).
 *
 * The input is untrusted: every index is checked against the length before
 * it is read, and the output grows by at most one tuple per 23 input bytes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

enum {
    B64 = 1,      /* [A-Za-z0-9+/_-] */
    WS = 2,       /* [ \t\r\n] */
    DIGITISH = 4, /* [0-9+/] */
    UPPER = 8,
    LOWER = 16,
    HEXSEP = 32,  /* [0-9a-fA-FxX\\:, -] */
    HEXDIGIT = 64,
    PRINTABLE = 128, /* [\x20-\x7e\t\n\r] */
};

/* Built with -DRUNS_UNFILTERED (tests only): every run and match is
 * returned, none dropped, so the run finding itself can be compared with
 * the views' regexes exactly, on inputs the filters would mostly hide. */
#ifdef RUNS_UNFILTERED
#define KEEP_ALL 1
#else
#define KEEP_ALL 0
#endif

/* views.MAX_RUN_BYTES: a run is read up to this long. */
#define MAX_RUN_BYTES (1024 * 1024)

static uint8_t T[256];

static void init_table(void)
{
    for (int c = 0; c < 256; c++) {
        uint8_t v = 0;
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            c == '+' || c == '/' || c == '_' || c == '-')
            v |= B64;
        if (c == ' ' || c == '\t' || c == '\r' || c == '\n')
            v |= WS;
        if ((c >= '0' && c <= '9') || c == '+' || c == '/')
            v |= DIGITISH;
        if (c >= 'A' && c <= 'Z')
            v |= UPPER;
        if (c >= 'a' && c <= 'z')
            v |= LOWER;
        if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') ||
            c == 'x' || c == 'X' || c == '\\' || c == ':' || c == '-' || c == ',' || c == ' ')
            v |= HEXSEP;
        if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))
            v |= HEXDIGIT;
        if ((c >= 0x20 && c < 0x7f) || c == '\t' || c == '\n' || c == '\r')
            v |= PRINTABLE;
        T[c] = v;
    }
}

/* The first maximal run [*start, *end) at or after i of bytes whose class
 * has a bit of mask, at least min_len long; 0 when there is none. The
 * caller keeps i == 0 or d[i - 1] outside the class. The byte min_len - 1
 * ahead is probed first: outside the class, no run of min_len starts at or
 * before it, and the search skips past it. */
static int next_run(const uint8_t *d, Py_ssize_t n, Py_ssize_t i, uint8_t mask,
                    Py_ssize_t min_len, Py_ssize_t *start, Py_ssize_t *end)
{
    while (i >= 0 && min_len <= n - i) {
        Py_ssize_t probe = i + min_len - 1;
        if (!(T[d[probe]] & mask)) {
            i = probe + 1;
            continue;
        }
        Py_ssize_t k = probe;
        while (k > i && (T[d[k - 1]] & mask))
            k--;
        /* k starts a maximal run: k == i (d[i - 1] is outside) or d[k - 1] is. */
        Py_ssize_t e = probe + 1;
        while (e < n && e - k < min_len && (T[d[e]] & mask))
            e++;
        if (e - k >= min_len) {
            while (e < n && (T[d[e]] & mask))
                e++;
            *start = k;
            *end = e;
            return 1;
        }
        i = e + 1; /* d[e] is outside the class, or e == n */
    }
    return 0;
}

static int append(PyObject *list, Py_ssize_t s, Py_ssize_t e)
{
    PyObject *t = Py_BuildValue("(nn)", s, e);
    if (t == NULL)
        return -1;
    int rc = PyList_Append(list, t);
    Py_DECREF(t);
    return rc;
}

static Py_ssize_t equals_after(const uint8_t *d, Py_ssize_t n, Py_ssize_t e)
{
    if (e < n && d[e] == '=') {
        e++;
        if (e < n && d[e] == '=')
            e++;
    }
    return e;
}

/* Each of views._HEX_SEP_RUN's alternatives has 15 or more of these bytes
 * ([:, -] separators, the backslash of \x, the x of 0x): a region with
 * fewer (a hash: hex digits only) holds no match, and is left out so a
 * body of hashes does not cost a tuple and an RE2 call per hash. */
static int hex_sep_possible(const uint8_t *d, Py_ssize_t s, Py_ssize_t e)
{
    Py_ssize_t marks = 0;
    for (Py_ssize_t k = s; k < e && marks < 15; k++)
        marks += !(T[d[k]] & HEXDIGIT); /* in the region: [xX\\:, -] */
    return marks >= 15;
}

static int find_hex_sep(const uint8_t *d, Py_ssize_t n, PyObject *out)
{
    Py_ssize_t i = 0, s, e;
    while (next_run(d, n, i, HEXSEP, 16 * 2 + 15, &s, &e)) {
        if ((KEEP_ALL || hex_sep_possible(d, s, e)) && append(out, s, e) < 0)
            return -1;
        i = e;
    }
    return 0;
}

/* A gap d[a:b) (whitespace only) that _B64_SPACED_RUN's separator matches
 * whole: [ \t]{1,4}, or [ \t]*\r?\n[ \t]*. */
static int valid_gap(const uint8_t *d, Py_ssize_t a, Py_ssize_t b)
{
    Py_ssize_t lf = -1;
    for (Py_ssize_t k = a; k < b; k++) {
        if (d[k] == '\n') {
            if (lf >= 0)
                return 0;
            lf = k;
        }
    }
    if (lf < 0) {
        if (b - a > 4)
            return 0;
        for (Py_ssize_t k = a; k < b; k++)
            if (d[k] == '\r')
                return 0;
        return 1;
    }
    for (Py_ssize_t k = a; k < b; k++)
        if (d[k] == '\r' && k != lf - 1)
            return 0;
    return 1;
}

/* ---- what views._b64 and views._binary_or_text do with a run ---------- */

static int8_t B64VALUE[256];

static void init_b64(void)
{
    const char *alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (int c = 0; c < 256; c++)
        B64VALUE[c] = -1;
    for (int v = 0; v < 64; v++)
        B64VALUE[(uint8_t)alphabet[v]] = (int8_t)v;
    B64VALUE['-'] = 62; /* views._B64_TRANSLATE: URL-safe as standard */
    B64VALUE['_'] = 63;
}

/* The characters of a run with whitespace left out (the "joined" run),
 * read from d[s:lim). */
typedef struct {
    const uint8_t *d;
    Py_ssize_t pos, lim;
} Joined;

static int joined_next(Joined *j)
{
    while (j->pos < j->lim) {
        uint8_t c = j->d[j->pos++];
        if (!(T[c] & WS))
            return c;
    }
    return -1;
}

/* views._b64(joined[shift:]) (joined holds `count` characters, the last
 * `equals` of them '=') is bytes the views keep looking at
 * (views._binary_or_text): printable text, or a first byte a key or a
 * compressed format starts with, or "ustar" at 257. A 0 here means that
 * alignment adds nothing. */
static int decoding_worth_a_look(const uint8_t *d, Py_ssize_t s, Py_ssize_t lim, Py_ssize_t count,
                                 Py_ssize_t equals, Py_ssize_t shift)
{
    Py_ssize_t len = count - equals - shift;
    if (len % 4 == 1)
        len--; /* one dangling character carries no whole byte */
    if (len <= 0)
        return 0; /* views._b64 gives None */
    Joined j = {d, s, lim};
    for (Py_ssize_t k = 0; k < shift; k++)
        joined_next(&j);
    Py_ssize_t produced = 0, other = 0;
    uint32_t acc = 0;
    int bits = 0, first = -1;
    uint8_t tar[5] = {0};
    for (Py_ssize_t k = 0; k < len; k++) {
        int c = joined_next(&j);
        int v = c < 0 ? -1 : B64VALUE[c];
        if (v < 0)
            return 1; /* not base64 after all: let Python look (never seen) */
        acc = (acc << 6 | (uint32_t)v) & 0xffffff;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            uint8_t byte = (uint8_t)(acc >> bits);
            if (produced == 0)
                first = byte;
            if (produced >= 257 && produced < 262)
                tar[produced - 257] = byte;
            other += !(T[byte] & PRINTABLE);
            produced++;
        }
    }
    if (produced > 0 && (double)other <= (double)produced * 0.1)
        return 1;
    if (first == 0x30 || first == 'o' || first == 0x1f || first == 0x78 || first == 'B' ||
        first == 0xfd || first == 0x28 || first == 'P')
        return 1;
    return produced >= 262 && memcmp(tar, "ustar", 5) == 0;
}

/* Python's checks of a spaced-base64 match d[s:e] before and while it is
 * decoded (views._decode_spaced): 0 when it adds nothing to the views. */
static int spaced_worth_decoding(const uint8_t *d, Py_ssize_t s, Py_ssize_t e)
{
    if (e - s <= 24)
        return 0;
    Py_ssize_t lim = e - s < MAX_RUN_BYTES ? e : s + MAX_RUN_BYTES;
    Py_ssize_t count = 0, equals = 0;
    uint8_t all = 0xff, any = 0;
    for (Py_ssize_t k = s; k < lim; k++) {
        uint8_t c = d[k];
        if (T[c] & WS)
            continue;
        count++;
        all &= T[c];
        any |= T[c];
        equals = c == '=' ? equals + 1 : 0;
    }
    int upper = (any & UPPER) != 0, lower = (any & LOWER) != 0;
    if (count < 24 || upper != lower)
        return 0; /* too short; or joined.islower() or joined.isupper() */
    if (upper) {
        /* joined.isalpha(): every character a letter */
        Joined j = {d, s, lim};
        int c, all_letters = 1;
        while ((c = joined_next(&j)) >= 0)
            if (!(T[c] & (UPPER | LOWER))) {
                all_letters = 0;
                break;
            }
        if (all_letters)
            return 0;
    }
    if (count >= 32 && (all & HEXDIGIT))
        return 0; /* hex with spaces is the separator decoder's */
    for (Py_ssize_t shift = 0; shift < 4; shift++)
        if (decoding_worth_a_look(d, s, lim, count, equals, shift))
            return 1;
    return 0;
}

static int hex_value(uint8_t c)
{
    return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;
}

/* views.decode_runs's first look at a base64 run r = d[s:e] (read up to
 * MAX_RUN_BYTES): a run of 32 hex digits or more whose decoding is
 * printable text (views._printable) is kept as hex; any other run with
 * letters of one case only (r.islower() or r.isupper()) is dropped there,
 * and so is one whose decoding views._binary_or_text does not look at.
 * Such runs (hashes, UUIDs, identifiers) are most runs in a body; they are
 * left out here, so Python never slices them. */
static int base64_worth_decoding(const uint8_t *d, Py_ssize_t s, Py_ssize_t e)
{
    Py_ssize_t len = e - s < MAX_RUN_BYTES ? e - s : MAX_RUN_BYTES;
    uint8_t all = 0xff, any = 0;
    for (Py_ssize_t k = s; k < s + len; k++) {
        all &= T[d[k]];
        any |= T[d[k]];
    }
    if (len >= 32 && (all & HEXDIGIT)) {
        Py_ssize_t pairs = len / 2, other = 0;
        for (Py_ssize_t k = 0; k < pairs; k++) {
            int byte = hex_value(d[s + 2 * k]) << 4 | hex_value(d[s + 2 * k + 1]);
            other += !(T[byte] & PRINTABLE);
        }
        if ((double)other <= (double)pairs * 0.1)
            return 1;
    }
    if (((any & UPPER) != 0) != ((any & LOWER) != 0))
        return 0;
    Py_ssize_t equals = 0;
    while (equals < len && d[s + len - 1 - equals] == '=')
        equals++;
    /* A run at the start of the buffer (a streamed window) is tried at
     * every alignment. */
    for (Py_ssize_t shift = 0; shift < (s == 0 ? 4 : 1); shift++)
        if (decoding_worth_a_look(d, s, s + len, len, equals, shift))
            return 1;
    return 0;
}

static int find_base64(const uint8_t *d, Py_ssize_t n, PyObject *out)
{
    Py_ssize_t i = 0, s, e;
    while (next_run(d, n, i, B64, 24, &s, &e)) {
        Py_ssize_t end = equals_after(d, n, e);
        if ((KEEP_ALL || base64_worth_decoding(d, s, end)) && append(out, s, end) < 0)
            return -1;
        i = e; /* d[e] is not base64 ('=' included) */
    }
    return 0;
}

/* ---- base64 with whitespace inside --------------------------------------
 *
 * views._B64_SPACED_RUN is
 *     (W{3,} S)* W* D W* (S W{3,})+ ={0,2}
 * with W a base64 character, D one of [0-9+/] and S a separator (1-4
 * spaces/tabs, or one line break with spaces/tabs around it). Its matches
 * are made of whole words (maximal runs of W): a match starts at a word
 * (a match from inside one is also a match from its start) and its greedy
 * W{3,} and W* end at a word's end. Every word of a match is 3 bytes or
 * longer, but for the one holding D, which may be shorter. So a *chain*
 * (words joined by separators the pattern takes, without a word shorter
 * than 3 that lacks D) holds the matches; inside it, with "blocks" of
 * words of 3 bytes or more between the short words that hold D ("SD"):
 *
 *     B0 SD1 B1 SD2 B2 ...
 *
 * RE2's leftmost-first match (the loops greedy, tried longest first) from
 * the start of a block Bk is Bk SD(k+1) B(k+1) when B(k+1) is not empty;
 * else Bk itself when a word of Bk other than its last holds D; else none
 * starts in Bk. From SDk it is SDk Bk when Bk is not empty, else none. The
 * search resumes after each match. Only B0 is ever reached unconsumed from
 * its start with an SD after it; later blocks are reached from their SD. */

typedef struct {
    PyObject *out;
    const uint8_t *d;
    Py_ssize_t n;
    /* The block being read: its first word, its end, and whether a word
     * before its last holds D. */
    Py_ssize_t block_start, block_end;
    int block_words, block_d_before_last, last_has_d;
    /* What comes before that block: nothing (the chain's start), the
     * chain's first block waiting for the next (B0 SD1), or an SD word
     * from which a match may start. */
    enum { CHAIN_START, WAITING, FROM_SD } before;
    Py_ssize_t waiting_start, waiting_end, sd_start;
    int waiting_d_before_last;
} Chain;

static int emit_match(Chain *c, Py_ssize_t s, Py_ssize_t last_end)
{
    Py_ssize_t e = equals_after(c->d, c->n, last_end);
    if (!KEEP_ALL && !spaced_worth_decoding(c->d, s, e))
        return 0;
    return append(c->out, s, e);
}

static void chain_reset(Chain *c)
{
    c->before = CHAIN_START;
    c->block_words = 0;
    c->block_d_before_last = 0;
    c->last_has_d = 0;
}

/* The block being read ends: at an SD word [sd, ...), or (sd < 0) at the
 * end of the chain. */
static int close_block(Chain *c, Py_ssize_t sd)
{
    int rc = 0;
    int nonempty = c->block_words > 0;
    if (c->before == WAITING) {
        if (nonempty)
            rc = emit_match(c, c->waiting_start, c->block_end);
        else if (c->waiting_d_before_last)
            rc = emit_match(c, c->waiting_start, c->waiting_end);
        c->before = sd >= 0 ? FROM_SD : CHAIN_START;
    } else if (c->before == FROM_SD) {
        if (nonempty)
            rc = emit_match(c, c->sd_start, c->block_end);
        c->before = sd >= 0 ? FROM_SD : CHAIN_START;
    } else if (nonempty && sd >= 0) {
        c->before = WAITING;
        c->waiting_start = c->block_start;
        c->waiting_end = c->block_end;
        c->waiting_d_before_last = c->block_d_before_last;
    } else {
        if (nonempty && c->block_d_before_last)
            rc = emit_match(c, c->block_start, c->block_end);
        c->before = sd >= 0 ? FROM_SD : CHAIN_START;
    }
    c->sd_start = sd;
    c->block_words = 0;
    c->block_d_before_last = 0;
    c->last_has_d = 0;
    return rc;
}

static int end_chain(Chain *c)
{
    int rc = close_block(c, -1);
    chain_reset(c);
    return rc;
}

static int find_spaced(const uint8_t *d, Py_ssize_t n, PyObject *out)
{
    Chain c = {.out = out, .d = d, .n = n};
    chain_reset(&c);
    Py_ssize_t i = 0;
    /* Every match holds a D: only the regions of base64 characters and
     * whitespace around one are read. */
    for (;;) {
        Py_ssize_t p = i;
        while (p < n && !(T[d[p]] & DIGITISH))
            p++;
        if (p >= n)
            break;
        /* d[i - 1] is outside the region class (or i == 0): rs >= i. */
        Py_ssize_t rs = p, re = p + 1;
        while (rs > i && (T[d[rs - 1]] & (B64 | WS)))
            rs--;
        while (re < n && (T[d[re]] & (B64 | WS)))
            re++;
        i = re;
        /* A match worth decoding is over 24 bytes, at most two of them '='
         * outside the region. */
        if (!KEEP_ALL && re - rs < 23)
            continue;
        Py_ssize_t k = rs, prev_end = -1;
        while (k < re) {
            Py_ssize_t g = k;
            while (k < re && (T[d[k]] & WS))
                k++;
            if (k == re)
                break;
            Py_ssize_t w = k;
            uint8_t wf = 0;
            while (k < re && (T[d[k]] & B64))
                wf |= T[d[k++]];
            int has_d = (wf & DIGITISH) != 0, is_short = k - w < 3;
            if (prev_end >= 0 && !valid_gap(d, g, w) && end_chain(&c) < 0)
                return -1;
            prev_end = k;
            if (is_short && !has_d) {
                /* in no match: the chain ends before it */
                if (end_chain(&c) < 0)
                    return -1;
                continue;
            }
            if (is_short) {
                if (close_block(&c, w) < 0)
                    return -1;
                continue;
            }
            if (c.block_words == 0)
                c.block_start = w;
            c.block_d_before_last |= c.last_has_d;
            c.last_has_d = has_d;
            c.block_words++;
            c.block_end = k;
        }
        if (end_chain(&c) < 0)
            return -1;
    }
    return 0;
}

static PyObject *find(PyObject *self, PyObject *arg)
{
    (void)self;
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    const uint8_t *d = (const uint8_t *)view.buf;
    Py_ssize_t n = view.len;
    PyObject *b64 = PyList_New(0), *spaced = PyList_New(0), *hex = PyList_New(0);
    PyObject *result = NULL;
    if (b64 != NULL && spaced != NULL && hex != NULL && find_base64(d, n, b64) == 0 &&
        find_spaced(d, n, spaced) == 0 && find_hex_sep(d, n, hex) == 0)
        result = PyTuple_Pack(3, b64, spaced, hex);
    Py_XDECREF(b64);
    Py_XDECREF(spaced);
    Py_XDECREF(hex);
    PyBuffer_Release(&view);
    return result;
}

static PyMethodDef methods[] = {
    {"find", find, METH_O,
     "find(data) -> (base64_runs, spaced_candidates, hex_sep_regions): (start, end) lists."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_runs", "The DLP decoders' run finding, in one native pass.", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__runs(void)
{
    init_table();
    init_b64();
    return PyModule_Create(&module);
}
