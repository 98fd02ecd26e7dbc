// core/dataset.h: image classification datasets, decoded once into memory.
//
// A Dataset holds every image of one split as uint8, CHW per image
// (N x C x H x W in one buffer), plus an int label per image and the class
// names. Two on-disk layouts are read, both validated on load (every
// malformed input throws std::runtime_error whose message names the file):
//
// 1. The official CIFAR-10 binary distribution (cifar-10-binary.tar.gz):
//      data_batch_1.bin .. data_batch_5.bin   the train split
//      test_batch.bin                         the test split
//      batches.meta.txt                       the class names, one per line
//    Each record is 3073 bytes: 1 label byte (0..9), then 1024 R, 1024 G and
//    1024 B bytes, each plane 32x32 row-major; so a record already is CHW.
//    Each file holds 10,000 records. batches.meta.txt may be absent (the
//    standard names are used) but, when present, must hold exactly 10 names.
//
// 2. A class-per-folder image tree:  root/<split>/<class>/*.jpg|*.jpeg|*.png
//    Class ids are the folder names sorted by name (byte order): class 0 is
//    the first name. For CIFAR-10 the official label order (airplane
//    automobile bird cat deer dog frog horse ship truck) is alphabetical, so
//    a tree with those folder names gets the official ids. Within a class,
//    files are taken in name order, so the image order is deterministic.
//    Files are decoded in parallel with stb_image (gray is expanded to RGB,
//    alpha dropped). All images must share one size (or the size asked for).
//
//     std::string root = resolve_data_path(flag);   // --data, else $OCTET_DATA
//     Dataset train = load_dataset(root, Split::train);
//     const uint8_t* img = train.image(0);          // 3 x 32 x 32, CHW
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace octet {

enum class Split { train, test };
const char* split_name(Split s);  // "train", "test"

struct Dataset {
  int channels = 3;
  int height = 0;
  int width = 0;
  std::vector<uint8_t> images;  // size() x channels x height x width, CHW per image
  std::vector<int> labels;      // size() labels in [0, num_classes())
  std::vector<std::string> class_names;
  std::string source;  // where it was read from, for messages

  int64_t size() const { return int64_t(labels.size()); }
  int num_classes() const { return int(class_names.size()); }
  int64_t image_numel() const { return int64_t(channels) * height * width; }
  const uint8_t* image(int64_t i) const { return images.data() + i * image_numel(); }
  uint8_t* image(int64_t i) { return images.data() + i * image_numel(); }
  // Images per class, indexed by label.
  std::vector<int64_t> class_counts() const;
};

// The CIFAR-10 class names in label order.
const std::vector<std::string>& cifar10_class_names();

enum class DataFormat { cifar_binary, image_folder };

struct LoadOptions {
  // Required image size. 0 = take it from the first image (image trees);
  // every image must then share it. CIFAR-10 binary is always 32x32.
  int height = 0;
  int width = 0;
  // Image trees: resize images of another size to height x width (area
  // filter) instead of rejecting them. Needs height and width.
  bool resize = false;
  // CIFAR-10 binary: records every batch file must hold (0 = any count).
  int64_t records_per_file = 10000;
};

// Where the data is: `explicit_path` when non-empty (it must exist), else
// $OCTET_DATA, else std::runtime_error explaining that nothing can be
// downloaded here and how to point Octet at a local copy.
std::string resolve_data_path(const std::string& explicit_path);

// The layout under path; for CIFAR binary, `dir` receives the folder that
// holds the batch files (path itself or path/cifar-10-batches-bin).
// Throws when path holds neither layout.
DataFormat detect_format(const std::string& path, std::string* dir = nullptr);

// One split, auto-detected layout.
Dataset load_dataset(const std::string& path, Split split, const LoadOptions& opt = {});

// The CIFAR-10 binary batches of one split from `dir`.
Dataset load_cifar10_binary(const std::string& dir, Split split, const LoadOptions& opt = {});
// Appends the records of one batch file to `out` (which must be 3x32x32).
void read_cifar10_batch(const std::string& file, Dataset& out, int64_t expected_records = 10000);
// Class names from batches.meta.txt (non-empty lines); exactly 10 required.
std::vector<std::string> read_cifar10_meta(const std::string& file);

// root/<split_name>/<class>/*.{jpg,jpeg,png} (see the top of this file).
Dataset load_image_folder(const std::string& root, const std::string& split_name, const LoadOptions& opt = {});

// Per-channel mean and standard deviation of the pixels in [0, 1] units.
// Sums are exact integers, so the result does not depend on thread count.
struct ChannelStats {
  std::vector<double> mean;
  std::vector<double> std;
};
ChannelStats compute_channel_stats(const Dataset& data);

}  // namespace octet
