// core/blas.cpp: sgemm over OpenBLAS's cblas interface, single-threaded.
#include "core/blas.h"

#include <cblas.h>

#include <climits>
#include <cstdlib>
#include <mutex>
#include <stdexcept>
#include <string>

namespace octet {

void blas_init() {
  static std::once_flag once;
  std::call_once(once, [] { openblas_set_num_threads(1); });
}

namespace {
int to_blas_int(int64_t v, const char* what) {
  if (v < 0 || v > INT_MAX) throw std::invalid_argument(std::string("sgemm: ") + what + " out of range: " + std::to_string(v));
  return static_cast<int>(v);
}
}  // namespace

void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  blas_init();
  if (M == 0 || N == 0) return;
  if (K == 0) {  // C = beta * C; OpenBLAS handles this too, but make beta == 0 exact.
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
    return;
  }
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
              to_blas_int(M, "M"), to_blas_int(N, "N"), to_blas_int(K, "K"), alpha, A, to_blas_int(lda, "lda"), B,
              to_blas_int(ldb, "ldb"), beta, C, to_blas_int(ldc, "ldc"));
}

void sgemm_ref(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
               int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  for (int64_t i = 0; i < M; ++i) {
    for (int64_t j = 0; j < N; ++j) {
      double acc = 0.0;
      for (int64_t k = 0; k < K; ++k) {
        float a = trans_a ? A[k * lda + i] : A[i * lda + k];
        float b = trans_b ? B[j * ldb + k] : B[k * ldb + j];
        acc += double(a) * double(b);
      }
      float c = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
      C[i * ldc + j] = c + alpha * static_cast<float>(acc);
    }
  }
}

std::string openblas_corename() {
  const char* s = openblas_get_corename();
  return s ? s : "unknown";
}

std::string openblas_core_banner() {
  std::string name = openblas_corename();
  const char* forced = std::getenv("OPENBLAS_CORETYPE");
  if (forced && *forced)
    name += std::string(" (chosen by OPENBLAS_CORETYPE=") + forced +
            " in the environment; unset it to let OpenBLAS pick this CPU's kernels)";
  return name;
}

std::string openblas_config() {
  const char* s = openblas_get_config();
  return s ? s : "unknown";
}

}  // namespace octet
