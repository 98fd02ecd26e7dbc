#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <vector>

#include "nn/metrics.h"

using namespace octet;
using namespace octet::nn;

TEST_CASE("a hand-made confusion case") {
  // 4 images, 3 classes:
  //   image 0, label 0, logits [3 1 0] -> predicted 0 (right)
  //   image 1, label 1, logits [2 1 0] -> predicted 0 (wrong)
  //   image 2, label 2, logits [0 0 5] -> predicted 2 (right)
  //   image 3, label 2, logits [1 4 0] -> predicted 1 (wrong)
  Metrics m(3);
  m.add(Tensor::from({4, 3}, std::vector<float>{3, 1, 0, 2, 1, 0, 0, 0, 5, 1, 4, 0}), std::vector<int>{0, 1, 2, 2});
  CHECK(m.count() == 4);
  CHECK(m.top1() == doctest::Approx(0.5));
  CHECK(m.top5() == doctest::Approx(1.0));  // top-3 of 3 classes
  // confusion[true][pred]: (0,0)=1 (1,0)=1 (2,2)=1 (2,1)=1
  CHECK(m.confusion(0, 0) == 1);
  CHECK(m.confusion(1, 0) == 1);
  CHECK(m.confusion(2, 2) == 1);
  CHECK(m.confusion(2, 1) == 1);
  CHECK(m.confusion(1, 1) == 0);
  // precision: class 0 predicted twice, once right; class 1 predicted once, wrong; class 2 once, right
  CHECK(m.precision(0) == doctest::Approx(0.5));
  CHECK(m.precision(1) == doctest::Approx(0.0));
  CHECK(m.precision(2) == doctest::Approx(1.0));
  // recall: class 0 1/1, class 1 0/1, class 2 1/2
  CHECK(m.recall(0) == doctest::Approx(1.0));
  CHECK(m.recall(1) == doctest::Approx(0.0));
  CHECK(m.recall(2) == doctest::Approx(0.5));

  const std::string r = m.report({"cat", "dog", "ship"});
  CHECK(r.find("top1 50.00%") != std::string::npos);
  CHECK(r.find("ship") != std::string::npos);
  CHECK(r.find("confusion matrix") != std::string::npos);
}

TEST_CASE("top-5 among 6 classes, ties go to the lower index") {
  Metrics m(6);
  // label 0 has the lowest of 6 distinct logits: rank 5, a top-5 miss;
  // label 1 has rank 4: a hit; all-equal logits with label 5: rank 5 (miss), predicted 0.
  m.add(Tensor::from({3, 6}, std::vector<float>{0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5, 1, 1, 1, 1, 1, 1}),
        std::vector<int>{0, 1, 5});
  CHECK(m.top1() == doctest::Approx(0.0));
  CHECK(m.top5() == doctest::Approx(1.0 / 3));
  CHECK(m.confusion(5, 0) == 1);
}

TEST_CASE("bad input") {
  Metrics m(3);
  CHECK_THROWS_AS(m.add(Tensor::zeros({2, 4}), std::vector<int>{0, 1}), std::invalid_argument);
  CHECK_THROWS_WITH_AS(m.add(Tensor::zeros({1, 3}), std::vector<int>{3}), doctest::Contains("label 3"),
                       std::invalid_argument);
  CHECK(m.count() == 0);
  CHECK(m.precision(0) == 0.0);  // nothing predicted: 0, not a division by zero
}
