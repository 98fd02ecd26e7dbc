#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <cmath>
#include <numbers>

#include "nn/schedule.h"

using namespace octet::nn;

TEST_CASE("one-cycle matches PyTorch OneCycleLR") {
  // torch.optim.lr_scheduler.OneCycleLR(opt, 0.1, total_steps=100, pct_start=0.25) on SGD(momentum=0.9):
  // (lr, momentum) seen by the optimizer at step s.
  OneCycleOptions o;
  o.max_lr = 0.1;
  o.pct_start = 0.25;
  OneCycleSchedule s(o, 100);
  struct Row {
    int step;
    double lr, m;
  };
  const Row rows[] = {{0, 0.004, 0.95},
                      {10, 0.0395766858351, 0.912940952255},
                      {24, 0.1, 0.85},
                      {25, 0.0999561416804, 0.850043858495},
                      {50, 0.0731649090968, 0.876835198244},
                      {99, 4e-07, 0.95}};
  for (const Row& r : rows) {
    CAPTURE(r.step);
    CHECK(s.lr(r.step) == doctest::Approx(r.lr).epsilon(1e-9));
    CHECK(*s.momentum(r.step) == doctest::Approx(r.m).epsilon(1e-9));
  }
  o.cycle_momentum = false;
  CHECK_FALSE(OneCycleSchedule(o, 100).momentum(3).has_value());
}

TEST_CASE("one-cycle with a warm-up phase of zero length stays finite") {
  // pct_start * total_steps == 1 (4 steps, 0.25): the warm-up ends at step 0.
  // Dividing by the phase's length gave NaN; the phase is over, so step 0
  // runs at the peak and the rest anneals down from it.
  OneCycleOptions o;
  o.max_lr = 0.1;
  o.pct_start = 0.25;
  OneCycleSchedule s(o, 4);
  CHECK(s.lr(0) == doctest::Approx(0.1));
  CHECK(*s.momentum(0) == doctest::Approx(0.85));
  for (int step = 0; step < 4; ++step) {
    CAPTURE(step);
    CHECK(std::isfinite(s.lr(step)));
    if (step > 0) CHECK(s.lr(step) < s.lr(step - 1));
  }
}

TEST_CASE("step, exponential, cosine, warmup at known steps") {
  StepSchedule st(0.1, {10, 20}, 0.1);
  CHECK(st.lr(9) == doctest::Approx(0.1));
  CHECK(st.lr(10) == doctest::Approx(0.01));
  CHECK(st.lr(20) == doctest::Approx(0.001));

  // TF exponential_decay(0.1, step, decay_steps=10, rate=0.5, staircase) with a floor of 0.02.
  ExponentialSchedule ex(0.1, 0.5, 10, true, 0.02);
  CHECK(ex.lr(9) == doctest::Approx(0.1));
  CHECK(ex.lr(10) == doctest::Approx(0.05));
  CHECK(ex.lr(25) == doctest::Approx(0.025));
  CHECK(ex.lr(30) == doctest::Approx(0.02));  // 0.0125 is below the floor
  ExponentialSchedule smooth(0.1, 0.5, 10, false, 0.0);
  CHECK(smooth.lr(5) == doctest::Approx(0.1 * std::sqrt(0.5)));

  CosineSchedule cs(0.1, 100, 0.0);
  CHECK(cs.lr(0) == doctest::Approx(0.1));
  CHECK(cs.lr(25) == doctest::Approx(0.05 * (1 + std::cos(std::numbers::pi / 4))));  // 0.0853553
  CHECK(cs.lr(50) == doctest::Approx(0.05));
  CHECK(cs.lr(100) == doctest::Approx(0.0));

  WarmupSchedule wu(std::make_unique<ConstantSchedule>(0.1), 10);
  CHECK(wu.lr(0) == doctest::Approx(0.01));
  CHECK(wu.lr(4) == doctest::Approx(0.05));
  CHECK(wu.lr(9) == doctest::Approx(0.1));
  CHECK(wu.lr(50) == doctest::Approx(0.1));
}

TEST_CASE("make_schedule converts epochs to steps") {
  ScheduleConfig c;
  c.kind = "step";
  c.lr = 0.1;
  c.milestones = {2, 3};
  c.gamma = 0.5;
  auto s = make_schedule(c, 10, 4);  // milestones at steps 20 and 30
  CHECK(s->lr(19) == doctest::Approx(0.1));
  CHECK(s->lr(20) == doctest::Approx(0.05));
  CHECK(s->lr(30) == doctest::Approx(0.025));

  c.kind = "exp";
  c.decay_rate = 0.5;
  c.decay_epochs = 1.5;  // 15 steps
  c.floor_lr = 0.0;
  s = make_schedule(c, 10, 4);
  CHECK(s->lr(14) == doctest::Approx(0.1));
  CHECK(s->lr(15) == doctest::Approx(0.05));

  c.kind = "cosine";
  c.warmup_epochs = 1;  // 10 steps of linear warmup on top of the cosine
  s = make_schedule(c, 10, 4);
  CHECK(s->lr(0) == doctest::Approx(0.1 * 0.1 * (1 + std::cos(0.0)) / 2));
  CHECK(s->lr(20) == doctest::Approx(0.05));

  c.kind = "onecycle";
  c.warmup_epochs = 0;
  s = make_schedule(c, 10, 4);  // pct_start 0.25 of 40 steps: the peak at step 9
  CHECK(s->lr(9) == doctest::Approx(0.1));
  CHECK(s->lr(0) == doctest::Approx(0.1 / 25));

  c.kind = "linear";
  CHECK_THROWS_WITH_AS(make_schedule(c, 10, 4), doctest::Contains("valid: onecycle"), std::invalid_argument);
}
