/* The student's fused forward pass (conv1 + ReLU + conv2 + Tanh, reflection padding) on uint8
   frames, row band by row band. Built and loaded by mmdrfuse/fusion/fast_student.py, whose
   docstring has the maths; the build cache keys on this file's text. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Eigen's rational tanh (float32 error of a few ulp); unlike libm's tanhf it vectorises. */
static inline float rational_tanh(float x) {
    const float clamp = 7.90531110763549805f;
    x = x < -clamp ? -clamp : (x > clamp ? clamp : x);
    const float x2 = x * x;
    float p = -2.76076847742355e-16f;
    p = p * x2 + 2.00018790482477e-13f;
    p = p * x2 + -8.60467152213735e-11f;
    p = p * x2 + 5.12229709037114e-08f;
    p = p * x2 + 1.48572235717979e-05f;
    p = p * x2 + 6.37261928875436e-04f;
    p = p * x2 + 4.89352455891786e-03f;
    p = p * x;
    float q = 1.19825839466702e-06f;
    q = q * x2 + 1.18534705686654e-04f;
    q = q * x2 + 2.26843463243900e-03f;
    q = q * x2 + 4.89352518554385e-03f;
    return p / q;
}

/* nn.ReflectionPad2d(1) index map for n >= 2. */
static inline int reflect(int i, int n) { return i < 0 ? -i : (i >= n ? 2 * n - 2 - i : i); }

/* Input row y of both images as float, one reflected column each side: 2 x (W + 2). */
static void input_row(const uint8_t *restrict ir, const uint8_t *restrict vi, int W, int y,
                      float *restrict dst) {
    const uint8_t *src[2] = {ir + (size_t)y * W, vi + (size_t)y * W};
    for (int c = 0; c < 2; c++) {
        float *d = dst + c * (W + 2);
        const uint8_t *s = src[c];
        for (int x = 0; x < W; x++) d[x + 1] = (float)s[x];
        d[0] = d[2];
        d[W + 1] = d[W - 1];
    }
}

/* One row of the post-ReLU feature, one reflected column each side: 4 x (W + 2).
   rows[dy] holds input rows y-1, y, y+1 (already reflected), each 2 x (W + 2). */
static void feature_row(const float *const rows[3], int W, const float *restrict w1,
                        const float *restrict b1, float *restrict dst) {
    const int P = W + 2;
    float w[72];
    memcpy(w, w1, sizeof w);
    const float *in[6] = {rows[0], rows[1], rows[2], rows[0] + P, rows[1] + P, rows[2] + P};
    float *restrict f0 = dst, *restrict f1 = dst + P, *restrict f2 = dst + 2 * P, *restrict f3 = dst + 3 * P;
    for (int x = 0; x < W; x++) {
        float a0 = b1[0], a1 = b1[1], a2 = b1[2], a3 = b1[3];
#pragma GCC unroll 18
        for (int t = 0; t < 18; t++) {
            /* t = channel * 9 + dy * 3 + dx: the (out, in, kh, kw) weight layout. */
            const float v = in[(t / 9) * 3 + (t / 3) % 3][x + t % 3];
            a0 += w[t] * v;
            a1 += w[18 + t] * v;
            a2 += w[36 + t] * v;
            a3 += w[54 + t] * v;
        }
        f0[x + 1] = a0 > 0.f ? a0 : 0.f;
        f1[x + 1] = a1 > 0.f ? a1 : 0.f;
        f2[x + 1] = a2 > 0.f ? a2 : 0.f;
        f3[x + 1] = a3 > 0.f ? a3 : 0.f;
    }
    for (int k = 0; k < 4; k++) {
        float *f = dst + k * P;
        f[0] = f[2];
        f[W + 1] = f[W - 1];
    }
}

static void output_row(const float *const rows[3], int W, const float *restrict w2, float b2,
                       float *restrict dst) {
    const int P = W + 2;
    float w[36];
    memcpy(w, w2, sizeof w);
    const float *f[12];
    for (int k = 0; k < 4; k++)
        for (int dy = 0; dy < 3; dy++) f[k * 3 + dy] = rows[dy] + k * P;
    for (int x = 0; x < W; x++) {
        float a = b2;
#pragma GCC unroll 36
        for (int t = 0; t < 36; t++) a += w[t] * f[t / 3][x + t % 3];
        dst[x] = rational_tanh(a);
    }
}

/* Rows [y0, y1) of the Tanh output of one H x W frame (H, W >= 2). w1: 4x2x3x3 already
   times 1/255, b1: 4, w2: 1x4x3x3, b2. Rows go through 3-slot rings keyed by row % 3:
   the rows one output needs span at most 3 consecutive indices, so they never collide.
   Returns 0, or -1 when out of memory. */
int student_rows(const uint8_t *ir, const uint8_t *vi, float *out, int H, int W, int y0, int y1,
                 const float *w1, const float *b1, const float *w2, float b2) {
    const int P = W + 2;
    float *buffer = (float *)malloc(sizeof(float) * (size_t)P * (3 * 2 + 3 * 4));
    if (!buffer) return -1;
    float *input_ring = buffer, *feature_ring = buffer + 3 * 2 * P;
    int input_tag[3] = {-1, -1, -1}, feature_tag[3] = {-1, -1, -1};
    for (int y = y0; y < y1; y++) {
        const float *feature_rows[3];
        for (int dy = 0; dy < 3; dy++) {
            const int fy = reflect(y + dy - 1, H);
            float *slot = feature_ring + (fy % 3) * 4 * P;
            if (feature_tag[fy % 3] != fy) {
                const float *input_rows[3];
                for (int ey = 0; ey < 3; ey++) {
                    const int iy = reflect(fy + ey - 1, H);
                    float *in_slot = input_ring + (iy % 3) * 2 * P;
                    if (input_tag[iy % 3] != iy) {
                        input_row(ir, vi, W, iy, in_slot);
                        input_tag[iy % 3] = iy;
                    }
                    input_rows[ey] = in_slot;
                }
                feature_row(input_rows, W, w1, b1, slot);
                feature_tag[fy % 3] = fy;
            }
            feature_rows[dy] = slot;
        }
        output_row(feature_rows, W, w2, b2, out + (size_t)y * W);
    }
    free(buffer);
    return 0;
}
