// engine/kernels_conv.cpp: ConvKernel, the prepared convolution.
#include <stdexcept>
#include <string>

#include "engine/kernels.h"

namespace octet::engine {

struct ConvKernel::Impl {
  ConvGeometry g;
  std::vector<int8_t> w;
  std::vector<int32_t> bias;
  int32_t x_zp = 0;
  Requant rq;
  Isa isa = Isa::reference;
};

ConvKernel::ConvKernel(const ConvGeometry& g, const int8_t* w, const int32_t* bias, int32_t x_zp, Requant rq, Isa isa)
    : impl_(std::make_unique<Impl>()) {
  if (!isa_supported(isa))
    throw std::invalid_argument(std::string("ConvKernel: this CPU cannot run isa ") + isa_name(isa));
  Impl& k = *impl_;
  k.g = g;
  const size_t wn = static_cast<size_t>(g.out_c) * g.kernel_h * g.kernel_w * g.in_c_per_group();
  k.w.assign(w, w + wn);
  k.bias.assign(static_cast<size_t>(g.out_c), 0);
  if (bias) k.bias.assign(bias, bias + g.out_c);
  k.x_zp = x_zp;
  k.rq = std::move(rq);
  k.isa = isa;
}

ConvKernel::~ConvKernel() = default;
ConvKernel::ConvKernel(ConvKernel&&) noexcept = default;
ConvKernel& ConvKernel::operator=(ConvKernel&&) noexcept = default;

size_t ConvKernel::scratch_bytes(int) const { return 0; }
Isa ConvKernel::isa() const { return impl_->isa; }

void ConvKernel::run(int batch, const int8_t* x, int8_t* y, std::span<std::byte>) const {
  const Impl& k = *impl_;
  const size_t x_img = static_cast<size_t>(k.g.in_h) * k.g.in_w * k.g.in_c;
  const size_t y_img = static_cast<size_t>(k.g.out_h()) * k.g.out_w() * k.g.out_c;
  struct Ctx {
    const Impl* k;
    const int8_t* x;
    int8_t* y;
    size_t x_img, y_img;
  } ctx{&k, x, y, x_img, y_img};
  parallel_for(static_cast<size_t>(batch), 1, &ctx, [](const void* c, size_t b, size_t e) {
    const Ctx& p = *static_cast<const Ctx*>(c);
    ConvGeometry g = p.k->g;
    g.batch = static_cast<int>(e - b);
    conv2d_ref(g, p.x + b * p.x_img, p.k->x_zp, p.k->w.data(), p.k->bias.data(), p.k->rq, p.y + b * p.y_img);
  });
}

}  // namespace octet::engine
