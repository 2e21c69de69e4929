/* BPR-MF with lazy Adam, one C call per half-step (trainables/kernels.py loads this with ctypes).

   Why C: at batch 1024 a step moves ~3k embedding rows of 65 floats, microseconds of work, while
   the same step as torch ops is ~60 dispatches (unique, index_add, gathers, scatters, Adam's
   arithmetic) whose fixed cost dominates. Single-threaded: a trial's cores go to other trials.

   Tables (float32, row-major, contiguous):
     P [U, D]      user factors
     Q [N, D + 1]  item factors, then the item bias (column D)
   A step's lookups: users u [B], items it [B, K] (column 0 the positive, then the negatives).
   score[b, k] = <P[u_b], Q[it_bk, :D]> + Q[it_bk, D]. */

#include <math.h>
#include <stdint.h>
#include <string.h>

#define AHEAD 8 /* rows prefetched ahead: random rows miss the caches, so keep several loads in flight */

/* every cache line of a row of W floats (16 a line; the row need not start on a line), for
   reading (RW 0) or writing (RW 1): __builtin_prefetch takes RW only as a constant */
#define PREFETCH_ROW(row, W, RW)                                                                   \
    do {                                                                                           \
        for (int64_t d_ = 0; d_ < (W); d_ += 16) __builtin_prefetch((row) + d_, RW);             \
        __builtin_prefetch((row) + (W) - 1, RW);                                                   \
    } while (0)

/* scores s [B, K] of the lookups; returns the sum of squared factor norms over all lookups
   (sum_b |P[u_b]|^2 + sum_bk |Q[it_bk, :D]|^2: the bias is not penalised), for the L2 term. */
double mf_scores(const float *P, const float *Q, const int64_t *u, const int64_t *it,
                 int64_t B, int64_t K, int64_t D, float *s)
{
    const int64_t W = D + 1;
    double sq = 0.0;
    for (int64_t b = 0; b < B; ++b) {
        if (b + AHEAD < B) {
            PREFETCH_ROW(P + u[b + AHEAD] * D, D, 0);
            for (int64_t k = 0; k < K; ++k) PREFETCH_ROW(Q + it[(b + AHEAD) * K + k] * W, W, 0);
        }
        const float *p = P + u[b] * D;
        float pp = 0.f;
#pragma omp simd reduction(+ : pp)
        for (int64_t d = 0; d < D; ++d) pp += p[d] * p[d];
        sq += pp;
        for (int64_t k = 0; k < K; ++k) {
            const float *q = Q + it[b * K + k] * W;
            float acc = 0.f, qq = 0.f;
#pragma omp simd reduction(+ : acc, qq)
            for (int64_t d = 0; d < D; ++d) {
                acc += p[d] * q[d];
                qq += q[d] * q[d];
            }
            s[b * K + k] = acc + q[D];
            sq += qq;
        }
    }
    return sq;
}

/* Row slot of `row` in the gradient buffer G [*, W]: assigned on first sight (slot[row] == -1),
   when the row is recorded in rows[] and its gradient zeroed. */
static inline float *grad_row(int32_t *slot, int64_t row, float *G, int64_t W, int64_t *rows, int64_t *n)
{
    int32_t s = slot[row];
    if (s < 0) {
        s = slot[row] = (int32_t)*n;
        rows[(*n)++] = row;
        memset(G + (int64_t)s * W, 0, (size_t)W * sizeof(float));
    }
    return G + (int64_t)s * W;
}

/* Adam on the n distinct rows of X [*, W] whose summed gradients are G [n, W], in the arithmetic
   of trainables.loop.LazyAdam; resets their slots to -1 for the next step. */
static void adam_rows(float *X, float *M, float *V, int64_t W, const float *G, const int64_t *rows,
                      int64_t n, int32_t *slot, float lr_t, float b1, float b2, float bc2, float eps)
{
    for (int64_t r = 0; r < n; ++r) {
        if (r + AHEAD < n) {
            const int64_t ahead = rows[r + AHEAD] * W;
            PREFETCH_ROW(X + ahead, W, 1);
            PREFETCH_ROW(M + ahead, W, 1);
            PREFETCH_ROW(V + ahead, W, 1);
        }
        const int64_t row = rows[r];
        float *x = X + row * W, *m = M + row * W, *v = V + row * W;
        const float *g = G + r * W;
#pragma omp simd
        for (int64_t d = 0; d < W; ++d) {
            m[d] += (1.f - b1) * (g[d] - m[d]);                /* torch.lerp(m, g, 1 - b1) */
            v[d] = v[d] * b2 + (1.f - b2) * g[d] * g[d];
            x[d] -= lr_t * m[d] / (sqrtf(v[d] / bc2) + eps);
        }
        slot[row] = -1;
    }
}

/* One lazy Adam step on both tables given dLoss/dscore: dpos [B] for column 0 of `it`, dneg
   [B, K - 1] for the others; and the L2 coefficient c2
   (the loss holds c2 / 2 * the sum that mf_scores returns, so each lookup adds c2 * row).
   Gradients of every lookup are summed per distinct row first (all reads of P and Q happen
   before any write), then each distinct row gets one Adam update.
   lr_t = lr / (1 - b1^t), bc2 = 1 - b2^t (bias corrections at the optimizer's step t).
   Workspace: slotP [U], slotQ [N] all -1 on entry (and on return); gP [B, D], rowsP [B],
   gQ [B * K, W], rowsQ [B * K]. */
void mf_lazy_adam(float *P, float *mP, float *vP, float *Q, float *mQ, float *vQ,
                  const int64_t *u, const int64_t *it, const float *dpos, const float *dneg,
                  int64_t B, int64_t K, int64_t D,
                  float c2, float lr_t, float b1, float b2, float bc2, float eps,
                  int32_t *slotP, int32_t *slotQ, float *gP, int64_t *rowsP, float *gQ, int64_t *rowsQ)
{
    const int64_t W = D + 1;
    int64_t nP = 0, nQ = 0;
    for (int64_t b = 0; b < B; ++b) {
        if (b + AHEAD < B) {
            PREFETCH_ROW(P + u[b + AHEAD] * D, D, 0);
            for (int64_t k = 0; k < K; ++k) PREFETCH_ROW(Q + it[(b + AHEAD) * K + k] * W, W, 0);
        }
        const float *p = P + u[b] * D;
        float *gp = grad_row(slotP, u[b], gP, D, rowsP, &nP);
#pragma omp simd
        for (int64_t d = 0; d < D; ++d) gp[d] += c2 * p[d];
        for (int64_t k = 0; k < K; ++k) {
            const int64_t i = it[b * K + k];
            const float g = k == 0 ? dpos[b] : dneg[b * (K - 1) + k - 1], *q = Q + i * W;
            float *gq = grad_row(slotQ, i, gQ, W, rowsQ, &nQ);
#pragma omp simd
            for (int64_t d = 0; d < D; ++d) {
                gp[d] += g * q[d];
                gq[d] += g * p[d] + c2 * q[d];
            }
            gq[D] += g;
        }
    }
    adam_rows(P, mP, vP, D, gP, rowsP, nP, slotP, lr_t, b1, b2, bc2, eps);
    adam_rows(Q, mQ, vQ, W, gQ, rowsQ, nQ, slotQ, lr_t, b1, b2, bc2, eps);
}
