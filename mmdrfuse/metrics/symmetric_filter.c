/* The float64 symmetric separable 'valid' filter of VIF and SSIM: the maths, the speed and the
   contract are in mmdrfuse/metrics/native_filter.py, which builds this file (mmdrfuse.native: the
   build cache keys on this file's text) and calls local_moments through ctypes. */
#include <stddef.h>
#include <stdlib.h>

/* Horizontal pass of one row t (W values) into h (W - 2R values). Always inlined, so each
   caller's constant R unrolls the taps. */
static inline __attribute__((always_inline)) void horizontal_pass(const double *restrict t, int W,
        const double *restrict k, const int R, double *restrict h) {
    for (int x = 0; x < W - 2 * R; x++) {
        double acc = k[R] * t[x + R];
#pragma GCC unroll 16
        for (int i = 0; i < R; i++) acc += k[i] * (t[x + i] + t[x + 2 * R - i]);
        h[x] = acc;
    }
}

/* The horizontal pass into o, or every col_step-th value of it through the scratch row t2
   (one function with the subsampling in its loop ran scalar: GCC vectorised only one copy). */
static inline __attribute__((always_inline)) void horizontal(const double *restrict t, int W,
        const double *restrict k, const int R, double *restrict o, int col_step, double *restrict t2) {
    if (col_step == 1) {
        horizontal_pass(t, W, k, R, o);
        return;
    }
    horizontal_pass(t, W, k, R, t2);
    for (int x = 0, j = 0; x < W - 2 * R; x += col_step, j++) o[j] = t2[x];
}

/* One output row of the planes a and, with SQUARE, a*a from the input rows y..y+2R (s: row
   stride in doubles): one vertical pass loads each input value once for both planes, into the
   rows mean and square, then one horizontal pass per plane. */
#define DEFINE_ROW(NAME, RADIUS, SQUARE)                                                          \
static void NAME(const double *restrict a, ptrdiff_t s, int W, const double *restrict k,         \
                 int radius_arg, double *restrict mean, double *restrict square,                  \
                 double *const *o, int col_step, double *restrict t2) {                           \
    const int R = RADIUS;                                                                         \
    (void)radius_arg;                                                                             \
    for (int x = 0; x < W; x++) {                                                                 \
        const double centre = a[R * s + x];                                                       \
        double m = k[R] * centre, q = SQUARE ? k[R] * (centre * centre) : 0.0;                    \
        _Pragma("GCC unroll 16")                                                                  \
        for (int i = 0; i < R; i++) {                                                             \
            const double u = a[i * s + x], v = a[(2 * R - i) * s + x];                            \
            m += k[i] * (u + v);                                                                  \
            if (SQUARE) q += k[i] * (u * u + v * v);                                              \
        }                                                                                         \
        mean[x] = m;                                                                              \
        if (SQUARE) square[x] = q;                                                                \
    }                                                                                             \
    horizontal(mean, W, k, R, o[0], col_step, t2);                                                \
    if (SQUARE) horizontal(square, W, k, R, o[1], col_step, t2);                                  \
}

#define DEFINE_RADIUS(RADIUS, SUFFIX)                                                             \
    DEFINE_ROW(mean_##SUFFIX, RADIUS, 0)                                                          \
    DEFINE_ROW(square_##SUFFIX, RADIUS, 1)

DEFINE_RADIUS(1, r1)
DEFINE_RADIUS(2, r2)
DEFINE_RADIUS(3, r3)
DEFINE_RADIUS(4, r4)
DEFINE_RADIUS(5, r5)
DEFINE_RADIUS(6, r6)
DEFINE_RADIUS(7, r7)
DEFINE_RADIUS(8, r8)
DEFINE_RADIUS(radius_arg, any)

typedef void (*row_function)(const double *, ptrdiff_t, int, const double *, int, double *, double *,
                             double *const *, int, double *);

/* Local moments of H x W planes a and b (row stride in_stride, in doubles) under the
   symmetric kernel of 2 radius + 1 taps: planes = 1 gives the mean of a, 2 adds the mean of
   a*a, 3 adds the mean of a*b (b is read only then). Output p gets the rows 0, step, ... and
   columns 0, step, ... of the 'valid' filter ((H - 2 radius) x (W - 2 radius)) at
   outputs[p], row stride out_stride. Returns 0, -1 when out of memory, -2 on bad arguments.
   a*b is formed once into a buffer (formed on the fly, the vertical pass needs 2 (2 radius + 1)
   row pointers, more than x86 has registers, and ran 3x slower). */
int local_moments(const double *a, const double *b, int H, int W, ptrdiff_t in_stride, int planes,
                  const double *kernel, int radius, int step, double *const *outputs,
                  ptrdiff_t out_stride) {
    static const row_function by_radius[2][9] = {
        {mean_any, mean_r1, mean_r2, mean_r3, mean_r4, mean_r5, mean_r6, mean_r7, mean_r8},
        {square_any, square_r1, square_r2, square_r3, square_r4, square_r5, square_r6, square_r7, square_r8},
    };
    if (planes < 1 || planes > 3 || step < 1 || (planes == 3 && !b)) return -2;
    const int index = radius <= 8 ? radius : 0;
    const row_function row = by_radius[planes > 1][index], mean_row = by_radius[0][index];
    /* three rows (the vertical pass of a, of a*a, the subsampling scratch), then a*b */
    double *buffer = (double *)malloc(sizeof(double) * (size_t)W * (3 + (planes == 3 ? (size_t)H : 0)));
    if (!buffer) return -1;
    double *product = buffer + 3 * (size_t)W;
    if (planes == 3)
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++)
                product[(size_t)y * W + x] = a[(size_t)y * in_stride + x] * b[(size_t)y * in_stride + x];
    for (int y = 0, j = 0; y < H - 2 * radius; y += step, j++) {
        double *row_outputs[3];
        for (int p = 0; p < planes; p++) row_outputs[p] = outputs[p] + (size_t)j * out_stride;
        row(a + (size_t)y * in_stride, in_stride, W, kernel, radius, buffer, buffer + W, row_outputs, step,
            buffer + 2 * W);
        if (planes == 3)
            mean_row(product + (size_t)y * W, W, W, kernel, radius, buffer, NULL, row_outputs + 2, step,
                     buffer + 2 * W);
    }
    free(buffer);
    return 0;
}
