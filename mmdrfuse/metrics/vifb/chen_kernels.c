/* The per-pixel work of VIFB's Qcb and Qcv, each in one pass: the maths and the contract are in
   mmdrfuse/metrics/vifb/chen_native.py, which builds this file (mmdrfuse.native: the build cache
   keys on this file's text) and calls it through ctypes. All planes are float64 with contiguous
   rows; strides are in elements. */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define RADIUS 15 /* VIFB's 31x31 Gaussians */
#define TAPS (2 * RADIUS + 1)
#define BLOCK 16  /* blkproc's blocks */

/* Vertical pass of both Gaussians for one output row from its 31 input rows rows[0..30] (rows
   outside the image point at a zero row: filter2's zero padding) into the rows n and w. The taps
   are symmetric, so rows i and 30 - i are added first (16 multiplies per Gaussian, one load for
   both). The row pairs are taken SWEEP at a time, each sweep adding into n and w, which stay in
   the L1 cache: one loop over x reading all 31 rows needs 31 row pointers, more than x86 has
   registers. */
#define SWEEP 5
_Static_assert(RADIUS % SWEEP == 0, "the sweeps must cover the row pairs exactly");
static void vertical(const double *const *rows, int W, const double *restrict k2, const double *restrict k4,
                     double *restrict n, double *restrict w) {
    const double *restrict centre = rows[RADIUS];
    for (int x = 0; x < W; x++) {
        n[x] = k2[RADIUS] * centre[x];
        w[x] = k4[RADIUS] * centre[x];
    }
    for (int i0 = 0; i0 < RADIUS; i0 += SWEEP) {
        const double *restrict u[SWEEP], *restrict v[SWEEP];
        double t2[SWEEP], t4[SWEEP];
        for (int j = 0; j < SWEEP; j++) {
            u[j] = rows[i0 + j];
            v[j] = rows[2 * RADIUS - i0 - j];
            t2[j] = k2[i0 + j];
            t4[j] = k4[i0 + j];
        }
        for (int x = 0; x < W; x++) {
            double a2 = n[x], a4 = w[x];
#pragma GCC unroll 8
            for (int j = 0; j < SWEEP; j++) {
                const double sum = u[j][x] + v[j][x];
                a2 += t2[j] * sum;
                a4 += t4[j] * sum;
            }
            n[x] = a2;
            w[x] = a4;
        }
    }
}

/* The same for a row whose 31 input rows all lie in the image (a: the first, s: the row stride).
   Row addresses computed from one base: through the array of row pointers above, the inside rows
   took 1.5 times as long. */
static void vertical_inside(const double *restrict a, ptrdiff_t s, int W, const double *restrict k2,
                            const double *restrict k4, double *restrict n, double *restrict w) {
    const double *restrict centre = a + RADIUS * s;
    for (int x = 0; x < W; x++) {
        n[x] = k2[RADIUS] * centre[x];
        w[x] = k4[RADIUS] * centre[x];
    }
    for (int i0 = 0; i0 < RADIUS; i0 += SWEEP) {
        const double *restrict u = a + i0 * s, *restrict v = a + (2 * RADIUS - i0) * s;
        for (int x = 0; x < W; x++) {
            double a2 = n[x], a4 = w[x];
#pragma GCC unroll 8
            for (int j = 0; j < SWEEP; j++) {
                const double sum = u[j * s + x] + v[-j * s + x];
                a2 += k2[i0 + j] * sum;
                a4 += k4[i0 + j] * sum;
            }
            n[x] = a2;
            w[x] = a4;
        }
    }
}

/* Horizontal pass of one zero-padded row t (t[-RADIUS .. W + RADIUS - 1] readable) into h. */
static inline __attribute__((always_inline)) void horizontal(const double *restrict t, int W,
                                                             const double *restrict k, double *restrict h) {
    for (int x = 0; x < W; x++) {
        double acc = k[RADIUS] * t[x];
#pragma GCC unroll 16
        for (int i = 0; i < RADIUS; i++) acc += k[i] * (t[x - RADIUS + i] + t[x + RADIUS - i]);
        h[x] = acc;
    }
}

/* Qcb's contrast power of one CSF-filtered image (H x W, row stride s) into out (row stride
   out_s): the 31x31 Gaussians k2 (x) k2 and k4 (x) k4 with zero padding (filter2 'same'), then
   per pixel C = |(G2 / G4) ratio - 1| and C' = C^3 / (C^2 + 1e-4) in the order of the NumPy path.
   Returns 0, or -1 when out of memory. */
int contrast_power(const double *image, int H, int W, ptrdiff_t s, const double *k2, const double *k4,
                   double ratio, double *out, ptrdiff_t out_s) {
    const size_t padded = (size_t)W + 2 * RADIUS;
    /* the zero row, the zero-padded rows of the two vertical passes, the two horizontal results */
    double *buffer = (double *)calloc(3 * padded + 2 * (size_t)W, sizeof(double));
    if (!buffer) return -1;
    const double *zero = buffer;
    double *n = buffer + padded + RADIUS, *w = n + padded;
    double *h2 = buffer + 3 * padded, *h4 = h2 + W;
    for (int y = 0; y < H; y++) {
        if (y >= RADIUS && y + RADIUS < H) {
            vertical_inside(image + (size_t)(y - RADIUS) * s, s, W, k2, k4, n, w);
        } else {
            const double *rows[TAPS];
            for (int i = 0; i < TAPS; i++) {
                const int row = y - RADIUS + i;
                rows[i] = row >= 0 && row < H ? image + (size_t)row * s : zero;
            }
            vertical(rows, W, k2, k4, n, w);
        }
        horizontal(n, W, k2, h2);
        horizontal(w, W, k4, h4);
        double *o = out + (size_t)y * out_s;
        for (int x = 0; x < W; x++) {
            double c = h2[x] / h4[x];
            c *= ratio;
            c -= 1.0;
            c = fabs(c);
            const double square = c * c;
            o[x] = c * square / (square + 1e-4);
        }
    }
    free(buffer);
    return 0;
}

/* Sum of the n values of q in 4 interleaved partial sums (n % 4 handled). */
static double row_sum(const double *restrict q, int n) {
    double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
    int x = 0;
    for (; x + 4 <= n; x += 4) {
        s0 += q[x];
        s1 += q[x + 1];
        s2 += q[x + 2];
        s3 += q[x + 3];
    }
    for (; x < n; x++) s0 += q[x];
    return (s0 + s1) + (s2 + s3);
}

/* Qcb's sum over the pixels of Q = (C1^2 min(C1,CF)/max(C1,CF) + C2^2 min(C2,CF)/max(C2,CF)) /
   (C1^2 + C2^2) of three H x W planes of one row stride s. *zero is set to 1 when some C' is 0
   (the caller's NaN rule); a NaN C' makes the sum NaN through its weight C'^2. Returns 0, or -1
   when out of memory. */
int chen_blum_sum(const double *c1, const double *c2, const double *cf, int H, int W, ptrdiff_t s,
                  double *sum, int *zero) {
    double *q = (double *)malloc(sizeof(double) * (size_t)W);
    if (!q) return -1;
    double total = 0.0;
    int any_zero = 0;
    for (int y = 0; y < H; y++) {
        const double *a = c1 + (size_t)y * s, *b = c2 + (size_t)y * s, *f = cf + (size_t)y * s;
        int row_zero = 0;
        for (int x = 0; x < W; x++) {
            const double ax = a[x], bx = b[x], fx = f[x];
            row_zero |= (ax == 0.0) | (bx == 0.0) | (fx == 0.0);
            const double aa = ax * ax, bb = bx * bx;
            const double q1 = (ax < fx ? ax : fx) / (ax > fx ? ax : fx) * aa;
            const double q2 = (bx < fx ? bx : fx) / (bx > fx ? bx : fx) * bb;
            q[x] = (q1 + q2) / (aa + bb);
        }
        any_zero |= row_zero;
        total += row_sum(q, W);
    }
    free(q);
    *sum = total;
    *zero = any_zero;
    return 0;
}

/* Adds the sums of v[0..W-1] over blkproc's 16-wide blocks to sums[0..ceil(W / 16) - 1]. */
static void add_block_row(const double *restrict v, int W, double *restrict sums) {
    for (int j = 0, x = 0; x < W; j++, x += BLOCK) {
        const int end = x + BLOCK < W ? x + BLOCK : W;
        double acc = 0.0;
        for (int i = x; i < end; i++) acc += v[i];
        sums[j] += acc;
    }
}

/* Qcv's D: the 16x16 block sums of d^2 of one H x W plane (row stride s) into sums
   (ceil(H / 16) x ceil(W / 16), contiguous; partial blocks count their pixels only: blkproc pads
   with zeros). Returns 0, or -1 when out of memory. */
int block_square_sums(const double *d, int H, int W, ptrdiff_t s, double *sums) {
    const int cols = (W + BLOCK - 1) / BLOCK, rows = (H + BLOCK - 1) / BLOCK;
    double *v = (double *)malloc(sizeof(double) * (size_t)W);
    if (!v) return -1;
    memset(sums, 0, sizeof(double) * (size_t)rows * cols);
    for (int y = 0; y < H; y++) {
        const double *row = d + (size_t)y * s;
        for (int x = 0; x < W; x++) v[x] = row[x] * row[x];
        add_block_row(v, W, sums + (size_t)(y / BLOCK) * cols);
    }
    free(v);
    return 0;
}

/* Qcv's saliency: the 16x16 block sums of g^5, g the 3x3 Sobel magnitude (filter2: zero padding)
   of one H x W uint8 image (row stride s bytes), into sums as for block_square_sums. g^2 is an
   exact integer; g^5 is formed as (g g)^2 g from g = sqrt(g^2), as the NumPy path does. Returns
   0, or -1 when out of memory. */
int saliency_sums(const uint8_t *image, int H, int W, ptrdiff_t s, double *sums) {
    const int cols = (W + BLOCK - 1) / BLOCK, rows = (H + BLOCK - 1) / BLOCK;
    const size_t padded = (size_t)W + 2;
    /* three zero-padded int32 rows (above, at, below) and the row of g^5 */
    int32_t *lines = (int32_t *)calloc(3 * padded, sizeof(int32_t));
    double *v = (double *)malloc(sizeof(double) * (size_t)W);
    if (!lines || !v) {
        free(lines);
        free(v);
        return -1;
    }
    memset(sums, 0, sizeof(double) * (size_t)rows * cols);
    int32_t *above = lines, *at = lines + padded, *below = lines + 2 * padded;
    for (int x = 0; x < W; x++) at[x + 1] = image[x];
    for (int y = 0; y < H; y++) {
        if (y + 1 < H)
            for (int x = 0; x < W; x++) below[x + 1] = image[(size_t)(y + 1) * s + x];
        else
            memset(below, 0, sizeof(int32_t) * padded);
        for (int x = 0; x < W; x++) {
            const int32_t gx = (above[x + 2] - above[x]) + 2 * (at[x + 2] - at[x]) + (below[x + 2] - below[x]);
            const int32_t gy = (below[x] + 2 * below[x + 1] + below[x + 2]) - (above[x] + 2 * above[x + 1] + above[x + 2]);
            const double g = sqrt((double)(gx * gx + gy * gy));
            double p = g * g;
            p *= p;
            v[x] = p * g;
        }
        add_block_row(v, W, sums + (size_t)(y / BLOCK) * cols);
        int32_t *spare = above; /* rotate the three rows */
        above = at;
        at = below;
        below = spare;
    }
    free(lines);
    free(v);
    return 0;
}

/* Qcv's spectrum product out = (a - f) m of n values (a, f: two packed spectra, m: the filter's
   CCS multiplier): the difference is rounded before the product, as in NumPy's two passes. */
int difference_product(const double *a, const double *f, const double *m, double *out, ptrdiff_t n) {
    for (ptrdiff_t i = 0; i < n; i++) {
        const double d = a[i] - f[i];
        out[i] = d * m[i];
    }
    return 0;
}
