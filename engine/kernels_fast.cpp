// engine/kernels_fast.cpp: the dispatch of the element-wise fast kernels to
// the ISA's implementation (engine/kernels_internal.h).
#include <stdexcept>
#include <string>

#include "engine/kernels.h"
#include "engine/kernels_internal.h"

namespace octet::engine {

void add_fast(size_t n, const int8_t* a, const int8_t* b, const AddParams& p, int8_t* y, Isa isa) {
  if (!isa_supported(isa))
    throw std::invalid_argument(std::string("add_fast: this CPU (or build) cannot run isa ") + isa_name(isa));
  [[maybe_unused]] const detail::AddParamsView v{p.a_zp,    p.b_zp,    p.left_shift, p.a_mult, p.b_mult,
                                                 p.out_mult, p.a_shift, p.b_shift,   p.out_shift, p.zp_out,
                                                 p.act_min, p.act_max};
  switch (isa) {
#if defined(__x86_64__)
    case Isa::amx:
    case Isa::avx512_vnni: detail::add_avx512(n, a, b, v, y); return;
    case Isa::avx2: detail::add_avx2(n, a, b, v, y); return;
#elif defined(__aarch64__)
    case Isa::neon:
    case Isa::neon_dot: detail::add_neon(n, a, b, v, y); return;
#endif
    default: add_ref(n, a, b, p, y); return;
  }
}

}  // namespace octet::engine
