#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "nn/module.h"
#include "nn/resnet.h"

using namespace octet;
using namespace octet::nn;

namespace {

bool has_name(const NamedTensors& v, const std::string& n) {
  return std::any_of(v.begin(), v.end(), [&](auto& p) { return p.first == n; });
}

// A weight transform for the test: multiplies by a constant.
class Scale : public Module {
 public:
  explicit Scale(float s) : Module("Scale"), s_(s) {}
  Tensor forward(const Tensor& x) override { return mul(x, s_); }

 private:
  float s_;
};

// Gives every BN of `m` non-trivial statistics and affine parameters, so a
// fold has something to fold.
void randomize_bns(Module& m, Rng& rng) {
  for (auto& [name, t] : m.named_state()) {
    if (name.find(".bn") == std::string::npos && name.rfind("bn", 0) != 0) continue;
    float* d = t.data();
    for (int64_t i = 0; i < t.numel(); ++i)
      d[i] = name.find("running_var") != std::string::npos ? rng.uniform(0.2f, 3.0f) : rng.uniform(-1.5f, 1.5f);
  }
}

// `plain` loaded with fold_branches(rep's state) computes rep's eval-mode
// function on x, to float rounding; returns the largest difference.
float check_fold(Module& rep, Module& plain, const Tensor& x) {
  rep.eval();
  const Tensor want = rep.forward(x);
  plain.load_state(fold_branches(rep.named_state()));  // strict: exactly the plain model's names and shapes
  plain.eval();
  const Tensor got = plain.forward(x);
  REQUIRE(got.numel() == want.numel());
  float scale = 0, worst = 0;
  for (int64_t i = 0; i < want.numel(); ++i) {
    scale = std::max(scale, std::fabs(want.data()[i]));
    worst = std::max(worst, std::fabs(got.data()[i] - want.data()[i]));
  }
  CHECK(scale > 1.0f);
  CHECK(worst <= 1e-5f * scale);
  return worst;
}

}  // namespace

TEST_CASE("ResNet parameter counts match the PyTorch models") {
  // resnet20..110: ../shared/bench/torch_resnet20.py --depth D prints these;
  // resnet18 (CIFAR stem) and resnet50 (ImageNet stem): torchvision with 10 classes.
  CHECK(make_model("resnet20", 10, 0)->num_parameters() == 272474);
  CHECK(make_model("resnet32", 10, 0)->num_parameters() == 466906);
  CHECK(make_model("resnet56", 10, 0)->num_parameters() == 855770);
  CHECK(make_model("resnet110", 10, 0)->num_parameters() == 1730714);
  CHECK(make_model("resnet18", 10, 0)->num_parameters() == 11173962);
  CHECK(make_model("resnet50_imagenet", 10, 0)->num_parameters() == 23528522);
  CHECK(make_model("resnet50", 10, 0)->num_parameters() == 23520842);
  CHECK(make_model("resnet50_v1.5", 10, 0)->num_parameters() == 23520842);
}

TEST_CASE("dotted names, buffers and state") {
  auto m = make_model("resnet20", 10, 1);
  NamedTensors p = m->named_parameters();
  CHECK(p.front().first == "conv1.weight");
  CHECK(has_name(p, "layer1.0.conv1.weight"));
  CHECK(has_name(p, "layer2.0.shortcut.0.weight"));
  CHECK(has_name(p, "layer2.0.shortcut.1.bias"));
  CHECK_FALSE(has_name(p, "layer1.0.shortcut.0.weight"));  // identity shortcut
  CHECK(has_name(p, "fc.bias"));
  for (auto& [n, t] : p) CHECK(t.requires_grad());
  NamedTensors b = m->named_buffers();
  CHECK(has_name(b, "bn1.running_mean"));
  CHECK(has_name(b, "layer3.2.bn2.running_var"));
  CHECK(b.size() == 2 * 21);  // 21 BatchNorm2d layers: stem, 2 per block, 2 shortcuts
  CHECK(m->named_state().size() == p.size() + b.size());
  std::set<std::string> unique;
  for (auto& [n, t] : m->named_state()) unique.insert(n);
  CHECK(unique.size() == m->named_state().size());
}

TEST_CASE("initialization: seeded, --weight-init he is Kaiming fan_out for convs, BN 1/0") {
  auto a = make_model("resnet20", 10, 7, ConvInit::he), b = make_model("resnet20", 10, 7, ConvInit::he);
  auto c = make_model("resnet20", 10, 8, ConvInit::he);
  auto pa = a->named_parameters(), pb = b->named_parameters(), pc = c->named_parameters();
  bool same = true, differ = false;
  for (size_t i = 0; i < pa.size(); ++i)
    for (int64_t k = 0; k < pa[i].second.numel(); ++k) {
      same = same && pa[i].second.data()[k] == pb[i].second.data()[k];
      differ = differ || pa[i].second.data()[k] != pc[i].second.data()[k];
    }
  CHECK(same);
  CHECK(differ);
  // layer3.0.conv2: [64, 64, 3, 3], std sqrt(2 / (64*9)) = 0.0589
  Conv2d& conv = dynamic_cast<Conv2d&>(a->find("layer3.0.conv2"));
  double sq = 0;
  for (int64_t k = 0; k < conv.weight().numel(); ++k) sq += double(conv.weight().data()[k]) * conv.weight().data()[k];
  CHECK(std::sqrt(sq / conv.weight().numel()) == doctest::Approx(std::sqrt(2.0 / 576)).epsilon(0.03));
  BatchNorm2d& bn = dynamic_cast<BatchNorm2d&>(a->find("layer3.0.bn2"));
  CHECK(bn.weight().data()[5] == 1.0f);
  CHECK(bn.bias().data()[5] == 0.0f);
  CHECK(bn.running_var().data()[5] == 1.0f);
  // fc: PyTorch default, uniform in +-1/sqrt(64)
  Linear& fc = dynamic_cast<Linear&>(a->find("fc"));
  for (int64_t k = 0; k < fc.weight().numel(); ++k) CHECK(std::fabs(fc.weight().data()[k]) <= 0.125f);
}

TEST_CASE("initialization: the default, --weight-init torch, draws U(+-1/sqrt(fan_in)) in every conv") {
  auto he = make_model("resnet20", 10, 7, ConvInit::he), torch = make_model("resnet20", 10, 7);
  // layer2.0.conv1: [32, 16, 3, 3], fan_in 144, bound 1/12; shortcut 1x1: fan_in 16, bound 1/4.
  for (auto [name, fan_in] : {std::pair<const char*, int>{"layer2.0.conv1", 144}, {"layer2.0.shortcut.0", 16},
                              {"conv1", 27}}) {
    CAPTURE(name);
    Conv2d& conv = dynamic_cast<Conv2d&>(torch->find(name));
    const float bound = 1.0f / std::sqrt(static_cast<float>(fan_in));
    float lo = bound, hi = -bound;
    double sq = 0;
    for (int64_t k = 0; k < conv.weight().numel(); ++k) {
      const float w = conv.weight().data()[k];
      lo = std::min(lo, w), hi = std::max(hi, w);
      sq += double(w) * w;
    }
    CHECK(lo >= -bound);
    CHECK(hi <= bound);
    CHECK(hi - lo > 1.8f * bound);  // fills the interval, not a narrower one
    // uniform: rms = bound / sqrt(3)
    CHECK(std::sqrt(sq / conv.weight().numel()) == doctest::Approx(bound / std::sqrt(3.0)).epsilon(0.1));
  }
  // The two inits differ in the convs only; BN and fc come out the same.
  auto ph = he->named_parameters(), pt = torch->named_parameters();
  REQUIRE(ph.size() == pt.size());
  for (size_t i = 0; i < ph.size(); ++i) {
    const bool is_conv = dynamic_cast<Conv2d*>(&he->find(ph[i].first.substr(0, ph[i].first.rfind('.')))) != nullptr;
    bool equal = true;
    for (int64_t k = 0; k < ph[i].second.numel(); ++k) equal = equal && ph[i].second.data()[k] == pt[i].second.data()[k];
    if (ph[i].first.rfind("fc.", 0) == 0) continue;  // fc draws after the convs: a different stream position
    CAPTURE(ph[i].first);
    CHECK(equal == !is_conv);
  }
  CHECK(parse_conv_init("he") == ConvInit::he);
  CHECK(parse_conv_init("torch") == ConvInit::torch);
  CHECK_THROWS_WITH_AS(parse_conv_init("xavier"), doctest::Contains("valid: torch, he"), std::invalid_argument);
}

TEST_CASE("zero_init_residual: every block starts as its shortcut") {
  auto m = make_model("resnet20", 10, 0);
  CHECK(zero_init_residual(*m) == 9);  // 3 stages x 3 BasicBlocks
  for (const char* bn : {"layer1.0.bn2", "layer2.0.bn2", "layer3.2.bn2"}) {
    CAPTURE(bn);
    const Tensor g = m->find(bn).named_parameters().front().second;  // "weight" (a handle: a copy shares the data)
    CHECK(std::all_of(g.data(), g.data() + g.numel(), [](float v) { return v == 0.0f; }));
  }
  const Tensor kept = m->find("layer1.0.bn1").named_parameters().front().second;
  CHECK(std::all_of(kept.data(), kept.data() + kept.numel(), [](float v) { return v == 1.0f; }));
  // An identity-shortcut block then maps a non-negative input to itself:
  // relu(bn2(...) + x) = relu(0 * ... + 0 + x) = x, in training mode too.
  Rng rng(4);
  Tensor x = relu(Tensor::randn({2, 16, 8, 8}, rng));
  Tensor y = m->find("layer1.1").forward(x);
  REQUIRE(y.numel() == x.numel());
  CHECK(std::equal(x.data(), x.data() + x.numel(), y.data()));
  // Bottleneck models zero bn3: resnet50 has 3 + 4 + 6 + 3 blocks.
  auto r50 = make_model("resnet50", 10, 0);
  CHECK(zero_init_residual(*r50) == 16);
  const Tensor g3 = r50->find("layer2.3.bn3").named_parameters().front().second;
  CHECK(std::all_of(g3.data(), g3.data() + g3.numel(), [](float v) { return v == 0.0f; }));
}

TEST_CASE("train-time 1x1 branches: added beside every block 3x3 conv, folded back into the plain model") {
  auto plain = make_model("resnet20", 10, 3);
  auto rep = make_model("resnet20", 10, 3);
  CHECK(add_1x1_branches(*rep, 3) == 18);  // 9 BasicBlocks x (conv1, conv2); no stem, no shortcut
  CHECK(add_1x1_branches(*rep, 3) == 0);   // a second call adds nothing
  // 1x1 convs + their BNs: 16*16 x 6 + (16*32 + 32*32 x 5) + (32*64 + 64*64 x 5) weights,
  // 2 x 32 BN parameters per branch channel.
  const int64_t conv1x1 = 16 * 16 * 6 + (16 * 32 + 32 * 32 * 5) + (32 * 64 + 64 * 64 * 5);
  const int64_t bn = 2 * (16 * 6 + 32 * 6 + 64 * 6);
  CHECK(rep->num_parameters() == plain->num_parameters() + conv1x1 + bn);
  const NamedTensors rs = rep->named_state();
  CHECK(has_name(rs, "layer2.0.conv1_1x1.weight"));
  CHECK(has_name(rs, "layer2.0.bn1_1x1.running_var"));
  CHECK_FALSE(has_name(rs, "conv1_1x1.weight"));
  CHECK_FALSE(has_name(rs, "layer2.0.shortcut.0_1x1.weight"));
  CHECK(rep->find("layer2.0.conv1_1x1").describe() == "Conv2d(16, 32, k=1, s=2, p=0, bias=false)");
  // The branches draw from their own stream: every other weight is the plain model's.
  for (auto& [name, t] : plain->named_state()) {
    CAPTURE(name);
    const Tensor& r = std::find_if(rs.begin(), rs.end(), [&](auto& p) { return p.first == name; })->second;
    CHECK(std::equal(t.data(), t.data() + t.numel(), r.data()));
  }

  Rng rng(11);
  randomize_bns(*rep, rng);
  Tensor x = Tensor::randn({4, 3, 16, 16}, rng);
  // Folded into the plain model, the same function in eval mode.
  CHECK(fold_branches(rep->named_state()).size() == plain->named_state().size());
  const float worst = check_fold(*rep, *plain, x);
  const Tensor want = rep->forward(x);
  // Folded entries are new tensors; the branches' own state is left as it was.
  CHECK(rep->find("layer1.0.bn1").named_buffers().front().second.data()[0] != 0.0f);
  // A block without branches is not the same function: the fold did real work.
  auto unfolded = make_model("resnet20", 10, 3);
  NamedTensors without;
  for (auto& [name, t] : rep->named_state())
    if (name.find("_1x1.") == std::string::npos) without.emplace_back(name, t);
  unfolded->load_state(without);
  unfolded->eval();
  const Tensor other = unfolded->forward(x);
  float moved = 0;
  for (int64_t i = 0; i < want.numel(); ++i) moved = std::max(moved, std::fabs(other.data()[i] - want.data()[i]));
  CHECK(moved > 100 * worst);

  // A state without branches passes through unchanged.
  const NamedTensors same = fold_branches(without);
  REQUIRE(same.size() == without.size());
  for (size_t i = 0; i < same.size(); ++i) CHECK(same[i].second.data() == without[i].second.data());
  // A branch whose BN or 3x3 conv is missing, or of another width, is an error naming it.
  NamedTensors broken = rep->named_state();
  broken.erase(std::find_if(broken.begin(), broken.end(), [](auto& p) { return p.first == "layer1.1.bn2_1x1.bias"; }));
  CHECK_THROWS_WITH_AS(fold_branches(broken),
                       doctest::Contains("branch layer1.1.conv2_1x1 has no 'layer1.1.bn2_1x1.bias'"),
                       std::invalid_argument);
  broken = rep->named_state();
  for (auto& [name, t] : broken)
    if (name == "layer3.0.conv1.weight") t = Tensor::zeros({64, 16, 3, 3});
  CHECK_THROWS_WITH_AS(fold_branches(broken), doctest::Contains("'layer3.0.conv1.weight' has shape [64, 16, 3, 3]"),
                       std::invalid_argument);
  broken = rep->named_state();
  broken.emplace_back("layer1.0.shortcut_1x1.weight", Tensor::zeros({16, 16, 1, 1}));
  CHECK_THROWS_WITH_AS(fold_branches(broken), doctest::Contains("'layer1.0.shortcut_1x1.weight' belongs to no branch"),
                       std::invalid_argument);

  // Bottlenecks get a branch on their one 3x3 conv; zero-init zeroes it with the block's.
  auto r50 = make_model("resnet50", 10, 0);
  CHECK(add_1x1_branches(*r50, 0) == 16);
  CHECK(r50->find("layer2.0.conv2_1x1").describe() == "Conv2d(128, 128, k=1, s=1, p=0, bias=false)");
  auto r20 = make_model("resnet20", 10, 0);
  add_1x1_branches(*r20, 0);
  CHECK(zero_init_residual(*r20) == 9);
  for (const char* b : {"layer1.0.bn2", "layer1.0.bn2_1x1"}) {
    CAPTURE(b);
    const Tensor g = r20->find(b).named_parameters().front().second;
    CHECK(std::all_of(g.data(), g.data() + g.numel(), [](float v) { return v == 0.0f; }));
  }
}

TEST_CASE("train-time 1x1, 1x3 and 3x1 branches (ACNet): folded, the same function, stride-2 blocks included") {
  CHECK(branch_kinds_str(parse_branch_kinds("3x1,1x1,1x3")) == "1x1,1x3,3x1");  // canonical order
  CHECK(branch_kinds_str(parse_branch_kinds("1x3,3x1")) == "1x3,3x1");
  CHECK_THROWS_WITH_AS(parse_branch_kinds("1x3,acb"), doctest::Contains("'acb' is not one of 1x1, 1x3, 3x1"),
                       std::invalid_argument);
  CHECK_THROWS_WITH_AS(parse_branch_kinds("3x1,3x1"), doctest::Contains("'3x1' twice"), std::invalid_argument);
  CHECK_THROWS_AS(parse_branch_kinds(""), std::invalid_argument);

  auto plain = make_model("resnet20", 10, 5);
  auto rep = make_model("resnet20", 10, 5);
  CHECK(add_branches(*rep, parse_branch_kinds("1x1,1x3,3x1"), 5) == 54);  // 18 3x3 convs x 3 kinds
  CHECK(rep->find("layer2.0.conv1_1x3").describe() == "Conv2d(16, 32, k=1x3, s=2, p=0x1, bias=false)");
  CHECK(rep->find("layer2.0.conv1_3x1").describe() == "Conv2d(16, 32, k=3x1, s=2, p=1x0, bias=false)");
  // 1x3 and 3x1 weights hold 3 taps each: 3 + 3 = 6 times the 1x1 weights.
  const int64_t conv1x1 = 16 * 16 * 6 + (16 * 32 + 32 * 32 * 5) + (32 * 64 + 64 * 64 * 5);
  const int64_t bn = 2 * (16 * 6 + 32 * 6 + 64 * 6);
  CHECK(branch_parameters(*rep) == 7 * conv1x1 + 3 * bn);

  Rng rng(12);
  randomize_bns(*rep, rng);
  Tensor x = Tensor::randn({3, 3, 15, 15}, rng);  // odd size: the stride-2 convs see an uneven border
  const float worst = check_fold(*rep, *plain, x);
  const Tensor want = rep->forward(x);
  // Leaving out the 1x3 branches (their fold) is not the same function.
  NamedTensors without_1x3;
  for (auto& [name, t] : rep->named_state())
    if (name.find("_1x3.") == std::string::npos) without_1x3.emplace_back(name, t);
  auto partial = make_model("resnet20", 10, 5);
  partial->load_state(fold_branches(without_1x3));
  partial->eval();
  const Tensor other = partial->forward(x);
  float moved = 0;
  for (int64_t i = 0; i < want.numel(); ++i) moved = std::max(moved, std::fabs(other.data()[i] - want.data()[i]));
  CHECK(moved > 100 * worst);
  // A 1x3 branch weight of the wrong shape is an error naming it.
  NamedTensors broken = rep->named_state();
  for (auto& [name, t] : broken)
    if (name == "layer1.0.conv2_1x3.weight") t = Tensor::zeros({16, 16, 3, 1});
  CHECK_THROWS_WITH_AS(fold_branches(broken), doctest::Contains("'layer1.0.conv2_1x3.weight' has shape [16, 16, 3, 1]"),
                       std::invalid_argument);
  // Zero-init zeroes every branch BN of the last conv.
  auto r20 = make_model("resnet20", 10, 0);
  add_branches(*r20, parse_branch_kinds("1x3,3x1"), 0);
  zero_init_residual(*r20);
  for (const char* b : {"layer3.2.bn2", "layer3.2.bn2_1x3", "layer3.2.bn2_3x1"}) {
    CAPTURE(b);
    const Tensor g = r20->find(b).named_parameters().front().second;
    CHECK(std::all_of(g.data(), g.data() + g.numel(), [](float v) { return v == 0.0f; }));
  }
}

TEST_CASE("forward shapes, train/eval propagation, groups") {
  auto m = make_model("resnet20", 10, 0);
  Rng rng(3);
  Tensor x = Tensor::randn({2, 3, 32, 32}, rng);
  CHECK(m->forward(x).shape() == Shape{2, 10});
  m->eval();
  CHECK_FALSE(m->find("layer2.1.bn1").training());
  m->train();
  CHECK(m->find("layer2.1.bn1").training());
  CHECK_THROWS_WITH_AS(m->forward(Tensor::zeros({2, 1, 32, 32})), doctest::Contains("expected input"),
                       std::invalid_argument);

  const auto& g = m->conv_bn_relu_groups();
  CHECK(g.size() == 1 + 9 * 2 + 2);  // stem, two per block, two projection shortcuts
  CHECK(g.front().conv == "conv1");
  CHECK(g.front().relu == "relu");
  CHECK(g[1].conv == "layer1.0.conv1");
  CHECK(g[1].relu == "layer1.0.relu1");
  CHECK(g[2].relu.empty());
  for (auto& e : g) {
    CHECK(m->find(e.conv).type() == "Conv2d");
    CHECK(m->find(e.bn).type() == "BatchNorm2d");
    if (!e.relu.empty()) CHECK(m->find(e.relu).type() == "ReLU");
  }
  auto r18 = make_model("resnet18_imagenet", 10, 0);
  CHECK(r18->forward(Tensor::randn({1, 3, 64, 64}, rng)).shape() == Shape{1, 10});
  CHECK_THROWS_WITH_AS(make_model("resnet21", 10, 0), doctest::Contains("valid names: resnet20"),
                       std::invalid_argument);
}

TEST_CASE("QAT hooks: replace by name, Add input slots, weight transforms") {
  auto m = make_model("resnet20", 10, 0);
  m->eval();
  Rng rng(4);
  Tensor x = Tensor::randn({1, 3, 16, 16}, rng);
  NoGradGuard ng;
  Tensor y0 = m->forward(x);

  // An Identity swapped in after a ReLU changes nothing; the tree shows it.
  auto seq = std::make_shared<Sequential>(std::vector<ModulePtr>{std::make_shared<ReLU>(), std::make_shared<Identity>()});
  auto old = m->replace("layer1.0.relu1", seq);
  CHECK(old->type() == "ReLU");
  CHECK(m->find("layer1.0.relu1.1").type() == "Identity");
  Tensor y1 = m->forward(x);
  for (int i = 0; i < 10; ++i) CHECK(y1.data()[i] == y0.data()[i]);

  // Scaling one input of the last Add changes the output.
  CHECK(m->find("layer3.2.add.input_a").type() == "Identity");
  m->replace("layer3.2.add.input_a", std::make_shared<Scale>(0.0f));
  Tensor y2 = m->forward(x);
  bool changed = false;
  for (int i = 0; i < 10; ++i) changed = changed || y2.data()[i] != y0.data()[i];
  CHECK(changed);

  // A zero weight transform on the fc leaves only the bias.
  Linear& fc = dynamic_cast<Linear&>(m->find("fc"));
  fc.set_weight_transform(std::make_shared<Scale>(0.0f));
  Tensor y3 = m->forward(x);
  for (int i = 0; i < 10; ++i) CHECK(y3.data()[i] == fc.bias().data()[i]);
  fc.set_weight_transform(nullptr);
  CHECK(fc.weight_transform() == nullptr);

  CHECK_THROWS_WITH_AS(m->replace("layer9.0", std::make_shared<Identity>()), doctest::Contains("layer9"),
                       std::out_of_range);
  CHECK_THROWS_WITH_AS(m->find("layer1.7.conv1"), doctest::Contains("'7'"), std::out_of_range);
}

TEST_CASE("load_state checks names and shapes") {
  auto a = make_model("resnet20", 10, 1), b = make_model("resnet20", 10, 2);
  b->load_state(a->named_state());
  auto sa = a->named_state(), sb = b->named_state();
  for (size_t i = 0; i < sa.size(); ++i) CHECK(sa[i].second.data()[0] == sb[i].second.data()[0]);
  NamedTensors missing(sa.begin() + 1, sa.end());
  CHECK_THROWS_WITH_AS(b->load_state(missing), doctest::Contains("missing: conv1.weight"), std::runtime_error);
  NamedTensors extra = sa;
  extra.emplace_back("ghost", Tensor::zeros({1}));
  CHECK_THROWS_WITH_AS(b->load_state(extra), doctest::Contains("unexpected: ghost"), std::runtime_error);
  auto c = make_model("resnet20", 100, 1);
  CHECK_THROWS_WITH_AS(c->load_state(sa), doctest::Contains("fc.weight"), std::runtime_error);
}

TEST_CASE("Sequential, Add arity, summary") {
  Rng rng(1);
  Sequential s;
  s.append(std::make_shared<Conv2d>(3, 4, 3, 1, 1, true, rng));
  s.append(std::make_shared<BatchNorm2d>(4));
  s.append(std::make_shared<ReLU>());
  s.append(std::make_shared<MaxPool2d>(2, 2));
  s.append(std::make_shared<AvgPool2d>(2, 2));
  s.append(std::make_shared<Flatten>());
  s.append(std::make_shared<Linear>(4 * 2 * 2, 3, true, rng));
  CHECK(s.num_parameters() == 4 * 27 + 4 + 8 + 16 * 3 + 3);
  CHECK(s.forward(Tensor::randn({2, 3, 8, 8}, rng)).shape() == Shape{2, 3});
  CHECK(has_name(s.named_parameters(), "0.bias"));
  Add add;
  CHECK_THROWS_AS(add.forward(Tensor::zeros({1})), std::logic_error);
  CHECK_THROWS_AS(static_cast<Module&>(s).forward(Tensor::zeros({1}), Tensor::zeros({1})), std::logic_error);
  CHECK(s.summary().find("Conv2d(3, 4, k=3, s=1, p=1, bias=true)") != std::string::npos);
}
