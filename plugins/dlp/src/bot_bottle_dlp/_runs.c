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
 *    hands RE2).
 *
 * The input is untrusted: every index is checked against the length before
 * it is read, and the output grows by at most one tuple per 23 input bytes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

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

static int hex_value(uint8_t c)
{
    return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;
}

/* views.decode_runs's first look at a base64 run r = d[s:e] (read up to
 * MAX_RUN_BYTES): a run of 32 hex digits or more whose decoding is
 * printable text (views._printable) is kept as hex; any other run with
 * letters of one case only (r.islower() or r.isupper()) is dropped there.
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
    return ((any & UPPER) != 0) == ((any & LOWER) != 0);
}

static int find_base64(const uint8_t *d, Py_ssize_t n, PyObject *out)
{
    Py_ssize_t i = 0, s, e;
    while (next_run(d, n, i, B64, 24, &s, &e)) {
        Py_ssize_t end = equals_after(d, n, e);
        if (base64_worth_decoding(d, s, end) && append(out, s, end) < 0)
            return -1;
        i = e; /* d[e] is not base64 ('=' included) */
    }
    return 0;
}

static int find_hex_sep(const uint8_t *d, Py_ssize_t n, PyObject *out)
{
    Py_ssize_t i = 0, s, e;
    while (next_run(d, n, i, HEXSEP, 16 * 2 + 15, &s, &e)) {
        if (append(out, s, e) < 0)
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

/* A match is two whole words or more of one segment. The views decode it
 * only with a digit, '+' or '/' in it (the pattern requires one), 25 bytes
 * long, and with both letter cases or no letter at all: a segment with
 * neither both cases nor two adjacent words without letters holds no match
 * worth decoding. */
static int emit_segment(const uint8_t *d, Py_ssize_t n, Py_ssize_t s, Py_ssize_t last_end,
                        Py_ssize_t region_end, int words, uint8_t flags, int letterless_pair,
                        PyObject *out)
{
    /* '=' can follow the last word only where it is outside the region. */
    Py_ssize_t e = last_end == region_end ? equals_after(d, n, last_end) : last_end;
    int both_cases = (flags & UPPER) && (flags & LOWER);
    if (words < 2 || !(flags & DIGITISH) || e - s < 25 || !(both_cases || letterless_pair))
        return 0;
    return append(out, s, e);
}

static int find_spaced(const uint8_t *d, Py_ssize_t n, PyObject *out)
{
    Py_ssize_t i = 0;
    /* Each candidate holds a digit, '+' or '/': the regions of base64
     * characters and whitespace around one are the only ones parsed. */
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
        /* A candidate of 25 bytes holds at most two '=' outside the region. */
        if (re - rs < 23)
            continue;
        Py_ssize_t k = rs;
        Py_ssize_t seg = -1, last_end = -1;
        int words = 0, letterless = 0, letterless_pair = 0;
        uint8_t flags = 0;
        while (k < re) {
            Py_ssize_t g = k;
            while (k < re && (T[d[k]] & WS))
                k++;
            if (k == re)
                break; /* trailing whitespace ends the last segment */
            Py_ssize_t w = k;
            uint8_t wf = 0;
            while (k < re && (T[d[k]] & B64))
                wf |= T[d[k++]];
            /* A match's words are 3 bytes or longer, but for one holding
             * the digit, '+' or '/': a shorter word without one ends the
             * segment, as a separator the pattern does not take does. */
            if (k - w < 3 && !(wf & DIGITISH)) {
                if (seg >= 0 &&
                    emit_segment(d, n, seg, last_end, re, words, flags, letterless_pair, out) < 0)
                    return -1;
                seg = -1;
                continue;
            }
            if (seg >= 0 && !valid_gap(d, g, w)) {
                if (emit_segment(d, n, seg, last_end, re, words, flags, letterless_pair, out) < 0)
                    return -1;
                seg = -1;
            }
            if (seg < 0) {
                seg = w;
                words = 0;
                flags = 0;
                letterless = 0;
                letterless_pair = 0;
            }
            int no_letter = !(wf & (UPPER | LOWER));
            letterless_pair |= letterless && no_letter;
            letterless = no_letter;
            words++;
            flags |= wf;
            last_end = k;
        }
        if (seg >= 0 &&
            emit_segment(d, n, seg, last_end, re, words, flags, letterless_pair, out) < 0)
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
    return PyModule_Create(&module);
}
