// core/blas.h: the BLAS wrapper. Every float GEMM in Octet goes through sgemm()
// here; nothing else includes cblas.h.
//
// Threading policy (see core/parallel.h): OpenBLAS runs single-threaded. The
// first call into this wrapper sets openblas_set_num_threads(1); parallelism
// comes from TBB tasks that each call sgemm() on their own tile.
//
// OpenBLAS picks its kernels ("core") when the library loads, from the CPU or
// from the environment variable OPENBLAS_CORETYPE (read once, at load time).
// openblas_corename() says which one it picked; docs/results.md has the
// measured speed of each on our machine.
#pragma once

#include <cstdint>
#include <string>

namespace octet {

// Row-major C[M, N] = alpha * op(A)[M, K] * op(B)[K, N] + beta * C.
// op(A) = A (stored [M, K], leading dim lda) or A^T (stored [K, M]) when trans_a;
// likewise B ([K, N] or, when trans_b, [N, K]). With beta == 0, C is not read.
void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

// The same contract in plain loops (double accumulation): the test oracle.
void sgemm_ref(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
               int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

// Makes OpenBLAS single-threaded; idempotent, called by sgemm() itself.
void blas_init();

std::string openblas_corename();  // e.g. "SkylakeX", "Haswell", "Cooperlake"
// The core name for a banner: "Cooperlake", or "Haswell (chosen by
// OPENBLAS_CORETYPE=Haswell in the environment; unset it to let OpenBLAS pick
// this CPU's kernels)" when the variable is set, since a forced older core
// can halve sgemm on a newer CPU.
std::string openblas_core_banner();
std::string openblas_config();    // build configuration string

}  // namespace octet
