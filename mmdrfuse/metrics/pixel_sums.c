/* Per-pixel maps of 8-bit planes summed in one pass (VIFB's SSIM, average gradient and edge
   intensity): the maths and the contract are in mmdrfuse/metrics/native_sums.py, which builds
   this file (mmdrfuse.native: the build cache keys on this file's text) and calls it through
   ctypes. Planes are H x W uint8 with row stride s bytes; everything else is float64. Every loop
   over x runs over a row held in L1 with the taps outside, so GCC vectorises it without
   reassociation flags; sums keep 8 interleaved partial sums for the same reason. */
#include <math.h>
#include <stddef.h>
#include <stdlib.h>

#define LANES 8

static double row_sum(const double *restrict v, int n) {
    double acc[LANES] = {0.0};
    int x = 0;
    for (; x + LANES <= n; x += LANES)
        for (int l = 0; l < LANES; l++) acc[l] += v[x + l];
    double total = 0.0;
    for (int l = 0; l < LANES; l++) total += acc[l];
    for (; x < n; x++) total += v[x];
    return total;
}

/* Output columns per strip: one strip for VIFB's images. Narrower strips (a ring that stays in L2)
   measured slower: the row loops' fixed costs outweigh the cache misses the prefetcher hides. */
#define STRIP 1024
/* Output rows filtered down the ring at once: each ring row is loaded once for all of them
   (2R + BLOCK loads for BLOCK rows instead of (2R + 1) BLOCK), which is what bounds the pass. */
#define BLOCK 4
/* The longest kernel ssim_sums takes (the ring's row pointers are on the stack). */
#define MAX_TAPS 61

/* The kernel along one row t of n + 2R values: the n 'valid' outputs h (taps unrolled where R is
   a constant, the accumulator in a register). */
static inline __attribute__((always_inline)) void horizontal(const double *restrict t, int n, const double *restrict k,
                                                             const int R, double *restrict h) {
    for (int x = 0; x < n; x++) {
        double acc = k[R] * t[x + R];
#pragma GCC unroll 16
        for (int i = 0; i < R; i++) acc += k[i] * (t[x + i] + t[x + 2 * R - i]);
        h[x] = acc;
    }
}

/* horizontal() of t and of t * t in one loop: each value loaded once for both (the products are
   those of a separate t * t row, the sums in the same order: the same doubles). */
static inline __attribute__((always_inline)) void horizontal_moments(const double *restrict t, int n,
                                                                     const double *restrict k, const int R,
                                                                     double *restrict mean, double *restrict square) {
    for (int x = 0; x < n; x++) {
        const double c = t[x + R];
        double m = k[R] * c, q = k[R] * (c * c);
#pragma GCC unroll 16
        for (int i = 0; i < R; i++) {
            const double u = t[x + i], v = t[x + 2 * R - i];
            m += k[i] * (u + v);
            q += k[i] * (u * u + v * v);
        }
        mean[x] = m;
        square[x] = q;
    }
}

/* The kernel down the ring for G consecutive output rows: output row j from the ring rows j ..
   j + 2R, ring row i at ring + offset[i] + q; output row j into out + j * out_step. The row
   pointers are taken before the loop over x: indexed through offset inside it, GCC gathers. */
static inline __attribute__((always_inline)) void vertical(const double *restrict ring, const size_t *restrict offset,
                                                           size_t q, int n, const double *restrict k, const int R,
                                                           const int G, double *restrict out, size_t out_step) {
    const double *restrict r[MAX_TAPS + BLOCK];
    for (int i = 0; i < 2 * R + G; i++) r[i] = ring + offset[i] + q;
    for (int x = 0; x < n; x++) {
        double acc[BLOCK];
#pragma GCC unroll 8
        for (int j = 0; j < G; j++) {
            acc[j] = k[R] * r[j + R][x];
#pragma GCC unroll 16
            for (int i = 0; i < R; i++) acc[j] += k[i] * (r[j + i][x] + r[j + 2 * R - i][x]);
        }
#pragma GCC unroll 8
        for (int j = 0; j < G; j++) out[j * out_step + x] = acc[j];
    }
}

/* The SSIM map of G output rows of every pair from their filtered rows (out: per row, the means
   of the planes, their mean squares, then the cross term of the pair being summed), summed. */
static inline __attribute__((always_inline)) void ssim_rows(
        const double *restrict ring, const size_t *restrict offset, int n_planes, const int *pairs, int n_pairs, int n,
        const double *k, const int R, const int G, double c1, double c2, double *out, size_t out_step,
        double *restrict map, double *sums) {
    for (int q = 0; q < 2 * n_planes; q++) vertical(ring, offset, (size_t)q * n, n, k, R, G, out + (size_t)q * n, out_step);
    for (int p = 0; p < n_pairs; p++) {
        const int a = pairs[2 * p], b = pairs[2 * p + 1];
        double *cross = out + (size_t)2 * n_planes * n;
        vertical(ring, offset, (size_t)(2 * n_planes + p) * n, n, k, R, G, cross, out_step);
        for (int j = 0; j < G; j++) {
            const double *restrict row = out + j * out_step;
            const double *restrict ma = row + (size_t)a * n, *restrict mb = row + (size_t)b * n;
            const double *restrict qa = row + (size_t)(n_planes + a) * n, *restrict qb = row + (size_t)(n_planes + b) * n;
            const double *restrict ab = cross + j * out_step;
            for (int x = 0; x < n; x++) {
                const double product = ma[x] * mb[x], square_sum = ma[x] * ma[x] + mb[x] * mb[x];
                const double numerator = (2.0 * product + c1) * (2.0 * (ab[x] - product) + c2);
                const double denominator = (square_sum + c1) * (qa[x] + qb[x] - square_sum + c2);
                map[x] = numerator / denominator;
            }
            sums[p] += row_sum(map, n);
        }
    }
}

/* One strip of output columns c0 .. c0 + n - 1: each input row's planes converted to double
   once, filtered along the row (a, a * a, and a * b per pair: exact products) into a ring of
   2R + BLOCK slots; BLOCK output rows at a time filtered down the ring, then the map and its sum. */
static inline __attribute__((always_inline)) void ssim_strip(
        const unsigned char *const *planes, int n_planes, const int *pairs, int n_pairs, int H, ptrdiff_t s,
        int c0, int n, const double *k, const int R, double c1, double c2, double *ring, double *rows,
        double *t, double *out, size_t *offset, double *sums) {
    const int slots = 2 * R + BLOCK, wide = n + 2 * R;
    const size_t quantities = (size_t)2 * n_planes + n_pairs, slot_size = quantities * n;
    const size_t out_step = ((size_t)2 * n_planes + 1) * n;
    double *map = out + BLOCK * out_step;
    int done = 0; /* output rows summed */
    for (int y = 0; y < H; y++) {
        double *slot = ring + (size_t)(y % slots) * slot_size;
        for (int p = 0; p < n_planes; p++) {
            const unsigned char *in = planes[p] + (ptrdiff_t)y * s + c0;
            double *row = rows + (size_t)p * wide;
            for (int x = 0; x < wide; x++) row[x] = in[x];
            horizontal_moments(row, n, k, R, slot + (size_t)p * n, slot + (size_t)(n_planes + p) * n);
        }
        for (int j = 0; j < n_pairs; j++) {
            const double *a = rows + (size_t)pairs[2 * j] * wide, *b = rows + (size_t)pairs[2 * j + 1] * wide;
            for (int x = 0; x < wide; x++) t[x] = a[x] * b[x];
            horizontal(t, n, k, R, slot + (size_t)(2 * n_planes + j) * n);
        }
        const int ready = y - 2 * R + 1 - done; /* output rows whose input rows are all in the ring */
        if (ready == BLOCK || (y == H - 1 && ready > 0)) {
            for (int i = 0; i < 2 * R + ready; i++) offset[i] = (size_t)((done + i) % slots) * slot_size;
            if (ready == BLOCK)
                ssim_rows(ring, offset, n_planes, pairs, n_pairs, n, k, R, BLOCK, c1, c2, out, out_step, map, sums);
            else
                for (int j = 0; j < ready; j++)
                    ssim_rows(ring, offset + j, n_planes, pairs, n_pairs, n, k, R, 1, c1, c2, out, out_step, map, sums);
            done += ready;
        }
    }
}

/* VIFB's 11-tap window unrolled; any other radius takes the same code with a variable R. */
static void ssim_strip_r5(const unsigned char *const *planes, int n_planes, const int *pairs, int n_pairs, int H,
                          ptrdiff_t s, int c0, int n, const double *k, int R, double c1, double c2, double *ring,
                          double *rows, double *t, double *out, size_t *offset, double *sums) {
    (void)R;
    ssim_strip(planes, n_planes, pairs, n_pairs, H, s, c0, n, k, 5, c1, c2, ring, rows, t, out, offset, sums);
}

static void ssim_strip_any(const unsigned char *const *planes, int n_planes, const int *pairs, int n_pairs, int H,
                           ptrdiff_t s, int c0, int n, const double *k, int R, double c1, double c2, double *ring,
                           double *rows, double *t, double *out, size_t *offset, double *sums) {
    ssim_strip(planes, n_planes, pairs, n_pairs, H, s, c0, n, k, R, c1, c2, ring, rows, t, out, offset, sums);
}

/* sums[j] = the sum over the (H - 2R) x (W - 2R) valid windows of the SSIM map of the planes
   planes[pairs[2j]] and planes[pairs[2j + 1]] (all H x W, row stride s), in strips of columns.
   Returns 0, -1 when out of memory, -2 on bad arguments. */
int ssim_sums(const unsigned char *const *planes, int n_planes, const int *pairs, int n_pairs, int H, int W,
              ptrdiff_t s, const double *k, int R, double c1, double c2, double *sums) {
    if (n_planes < 1 || n_pairs < 1 || R < 0 || 2 * R + 1 > MAX_TAPS || H < 2 * R + 1 || W < 2 * R + 1) return -2;
    for (int j = 0; j < 2 * n_pairs; j++)
        if (pairs[j] < 0 || pairs[j] >= n_planes) return -2;
    const size_t slots = (size_t)2 * R + BLOCK, wide = STRIP + (size_t)2 * R, quantities = (size_t)2 * n_planes + n_pairs;
    /* the ring, the converted input rows, one product row, BLOCK rows of filtered planes and a cross term, the map */
    double *buffer = (double *)malloc(sizeof(double) * (slots * quantities * STRIP + (n_planes + 1) * wide
                                                        + (BLOCK * (2 * (size_t)n_planes + 1) + 1) * STRIP));
    size_t *offset = (size_t *)malloc(sizeof(size_t) * slots);
    if (!buffer || !offset) {
        free(buffer);
        free(offset);
        return -1;
    }
    double *ring = buffer, *rows = ring + slots * quantities * STRIP, *t = rows + (size_t)n_planes * wide;
    double *out = t + wide;
    for (int j = 0; j < n_pairs; j++) sums[j] = 0.0;
    for (int c0 = 0; c0 < W - 2 * R; c0 += STRIP) {
        const int n = W - 2 * R - c0 < STRIP ? W - 2 * R - c0 : STRIP;
        (R == 5 ? ssim_strip_r5 : ssim_strip_any)(planes, n_planes, pairs, n_pairs, H, s, c0, n, k, R, c1, c2,
                                                 ring, rows, t, out, offset, sums);
    }
    free(buffer);
    free(offset);
    return 0;
}

/* The sum over all pixels of sqrt((g_x^2 + g_y^2) / 2) with MATLAB's gradient: with the doubled
   differences D (f[j+1] - f[j-1] inside, 2 (f[1] - f[0]) and 2 (f[-1] - f[-2]) on the border,
   exact integers) the value is sqrt((D_x^2 + D_y^2) / 8), the same double as MATLAB's. H, W >= 2. */
int gradient_sum(const unsigned char *f, int H, int W, ptrdiff_t s, double *total) {
    if (H < 2 || W < 2) return -2;
    int *dx = (int *)malloc(sizeof(int) * (size_t)W * 2);
    double *value = (double *)malloc(sizeof(double) * (size_t)W);
    if (!dx || !value) {
        free(dx);
        free(value);
        return -1;
    }
    int *dy = dx + W;
    double sum = 0.0;
    for (int y = 0; y < H; y++) {
        const unsigned char *row = f + (ptrdiff_t)y * s;
        const unsigned char *next = f + (ptrdiff_t)(y == H - 1 ? y : y + 1) * s;
        const unsigned char *previous = f + (ptrdiff_t)(y == 0 ? 0 : y - 1) * s;
        const int vertical_factor = (y == 0 || y == H - 1) ? 2 : 1;
        for (int x = 0; x < W; x++) dy[x] = vertical_factor * ((int)next[x] - (int)previous[x]);
        for (int x = 1; x < W - 1; x++) dx[x] = (int)row[x + 1] - (int)row[x - 1];
        dx[0] = 2 * ((int)row[1] - (int)row[0]);
        dx[W - 1] = 2 * ((int)row[W - 1] - (int)row[W - 2]);
        for (int x = 0; x < W; x++) value[x] = sqrt((double)(dx[x] * dx[x] + dy[x] * dy[x]) * 0.125);
        sum += row_sum(value, W);
    }
    free(dx);
    free(value);
    *total = sum;
    return 0;
}

/* The sum over all pixels of the magnitude of the 3x3 Sobel responses with replicated borders
   (imfilter(f, fspecial('sobel'), 'replicate') and its transpose): integers, so each root is
   the same double as MATLAB's. */
int sobel_sum(const unsigned char *f, int H, int W, ptrdiff_t s, double *total) {
    if (H < 1 || W < 1) return -2;
    int *smooth = (int *)malloc(sizeof(int) * ((size_t)W + 2) * 2);
    double *value = (double *)malloc(sizeof(double) * (size_t)W);
    if (!smooth || !value) {
        free(smooth);
        free(value);
        return -1;
    }
    int *difference = smooth + W + 2;
    double sum = 0.0;
    for (int y = 0; y < H; y++) {
        const unsigned char *row = f + (ptrdiff_t)y * s;
        const unsigned char *up = f + (ptrdiff_t)(y == 0 ? 0 : y - 1) * s;
        const unsigned char *down = f + (ptrdiff_t)(y == H - 1 ? y : y + 1) * s;
        /* columns shifted by one, the replicated border at 0 and W + 1 */
        for (int x = 0; x < W; x++) {
            smooth[x + 1] = (int)up[x] + 2 * (int)row[x] + (int)down[x];
            difference[x + 1] = (int)up[x] - (int)down[x];
        }
        smooth[0] = smooth[1], smooth[W + 1] = smooth[W];
        difference[0] = difference[1], difference[W + 1] = difference[W];
        for (int x = 0; x < W; x++) {
            const int across = difference[x] + 2 * difference[x + 1] + difference[x + 2];
            const int along = smooth[x] - smooth[x + 2];
            value[x] = sqrt((double)(across * across + along * along));
        }
        sum += row_sum(value, W);
    }
    free(smooth);
    free(value);
    *total = sum;
    return 0;
}

/* -sum p log p over the non-zero counts c of n bins, p = c / total, compensated (Kahan): MI is
   a difference of entropies, so their rounding errors weigh relative to the smaller MI. */
static double entropy_nats(const unsigned int *c, int n, double total) {
    double sum = 0.0, lost = 0.0;
    for (int i = 0; i < n; i++)
        if (c[i]) {
            const double p = c[i] / total, term = -(p * log(p)) - lost, next = sum + term;
            lost = (next - sum) - term;
            sum = next;
        }
    return sum;
}

/* The mutual information in nats of two H x W 8-bit planes (row stride s) from their 256 x 256
   joint histogram: H(a) + H(b) - H(a, b), the marginals the joint histogram's row and column sums. */
int mutual_information(const unsigned char *a, const unsigned char *b, int H, int W, ptrdiff_t s, double *nats) {
    if (H < 1 || W < 1) return -2;
    unsigned int *joint = (unsigned int *)calloc(256 * 256 + 2 * 256, sizeof(unsigned int));
    if (!joint) return -1;
    unsigned int *rows = joint + 256 * 256, *columns = rows + 256;
    for (int y = 0; y < H; y++) {
        const unsigned char *p = a + (ptrdiff_t)y * s, *q = b + (ptrdiff_t)y * s;
        for (int x = 0; x < W; x++) joint[(unsigned)p[x] << 8 | q[x]]++;
    }
    for (int i = 0; i < 256; i++)
        for (int j = 0; j < 256; j++) {
            rows[i] += joint[i << 8 | j];
            columns[j] += joint[i << 8 | j];
        }
    const double total = (double)H * W;
    *nats = entropy_nats(rows, 256, total) + entropy_nats(columns, 256, total) - entropy_nats(joint, 256 * 256, total);
    free(joint);
    return 0;
}

/* The 256-bin histogram of an H x W 8-bit plane (row stride s) into counts (as doubles: exact),
   counted in 4 tables so that runs of one value do not wait on one counter. */
int histogram(const unsigned char *a, int H, int W, ptrdiff_t s, double *counts) {
    if (H < 1 || W < 1) return -2;
    unsigned int tables[4][256] = {{0}};
    for (int y = 0; y < H; y++) {
        const unsigned char *p = a + (ptrdiff_t)y * s;
        int x = 0;
        for (; x + 4 <= W; x += 4) {
            tables[0][p[x]]++;
            tables[1][p[x + 1]]++;
            tables[2][p[x + 2]]++;
            tables[3][p[x + 3]]++;
        }
        for (; x < W; x++) tables[0][p[x]]++;
    }
    for (int v = 0; v < 256; v++)
        counts[v] = (double)tables[0][v] + (double)tables[1][v] + (double)tables[2][v] + (double)tables[3][v];
    return 0;
}

/* sums[0] = sum of (f[y][x + 1] - f[y][x])^2, sums[1] = sum of (f[y + 1][x] - f[y][x])^2 over an
   H x W 8-bit plane (row stride s): exact integers (64-bit sums). */
int difference_sums(const unsigned char *f, int H, int W, ptrdiff_t s, double *sums) {
    if (H < 1 || W < 1) return -2;
    long long across = 0, down = 0;
    for (int y = 0; y < H; y++) {
        const unsigned char *row = f + (ptrdiff_t)y * s, *next = row + s;
        for (int x = 0; x + 1 < W; x++) {
            const long long d = (int)row[x + 1] - (int)row[x];
            across += d * d;
        }
        if (y + 1 < H)
            for (int x = 0; x < W; x++) {
                const long long d = (int)next[x] - (int)row[x];
                down += d * d;
            }
    }
    sums[0] = (double)across;
    sums[1] = (double)down;
    return 0;
}
