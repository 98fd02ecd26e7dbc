// core/dataset.h: image classification datasets, decoded once into memory.
//
// A Dataset holds every image of one split as uint8, CHW per image
// (N x C x H x W in one buffer), plus an int label per image and the class
// names. Its shape (C, H, W) is what a model trained on it takes: the trainer
// records it in every checkpoint and the exporter in the model file, so
// grayscale data stay one channel end to end. Three on-disk layouts are read,
// all validated on load (every malformed input throws std::runtime_error
// whose message names the file and what is wrong):
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
// 2. The IDX files of MNIST and Fashion-MNIST, read directly as torchvision
//    does (Debian's dataset-fashion-mnist installs them in
//    /usr/share/datasets/fashion-mnist):
//      train-images-idx3-ubyte  train-labels-idx1-ubyte   the train split
//      t10k-images-idx3-ubyte   t10k-labels-idx1-ubyte    the test split
//    in the folder itself or in its raw/ subfolder (torchvision's
//    <root>/FashionMNIST/raw). Each file may also be gzip-compressed, named
//    with ".gz" (decompressed with zlib); when both are there the plain file
//    is read. An IDX file is a big-endian header, the magic 0x00000803
//    (unsigned bytes, 3 dimensions) then count, rows and columns for images,
//    0x00000801 then count for labels, followed by the bytes, row-major: each
//    image is 1 x rows x columns (gray, one channel). Checked: the magic, a
//    whole gzip stream, 1..4096 rows and columns, each (decompressed) file's
//    size against its header, equal image and label counts, labels 0..9.
//    The files do not say which data set they hold (torchvision knows it
//    from the class the user picked), so the class names come from the
//    folder's name: one containing "fashion" (any case; for a raw/ folder,
//    its parent's name) gets Fashion-MNIST's names (T-shirt/top, Trouser,
//    Pullover, Dress, Coat, Sandal, Shirt, Sneaker, Bag, Ankle boot), any
//    other MNIST's digits "0".."9".
//
// 3. A class-per-folder image tree:  root/<split>/<class>/*.jpg|*.jpeg|*.png
//    Class ids are the folder names sorted by name (byte order): class 0 is
//    the first name. For CIFAR-10 the official label order (airplane
//    automobile bird cat deer dog frog horse ship truck) is alphabetical, so
//    a tree with those folder names gets the official ids. Within a class,
//    files are taken in name order, so the image order is deterministic.
//    Files are decoded in parallel with stb_image, alpha dropped. Channels:
//    as asked (LoadOptions::channels; gray is replicated to RGB, RGB turned
//    to gray by stb_image's luma), else 1 when every file is grayscale (a
//    tree of MNIST PNGs) and 3 when any file has color. All images must
//    share one size (or the size asked for).
//
//     std::string root = resolve_data_path(flag);   // --data, else $OCTET_DATA
//     Dataset train = load_dataset(root, Split::train);
//     const uint8_t* img = train.image(0);          // e.g. 3 x 32 x 32 or 1 x 28 x 28, CHW
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace octet {

enum class Split { train, test };
const char* split_name(Split s);  // "train", "test"

// The shape of one image, channels x height x width: a data set's, and the
// input a model takes. The default is CIFAR-10's, 3 channels of 32x32: what
// every model took before checkpoints recorded their input.
struct ImageShape {
  int channels = 3;
  int height = 32;
  int width = 32;
  bool operator==(const ImageShape&) const = default;
  // "28x28 (1 channel)", "40x30 (3 channels)": width x height, as image sizes
  // are written (and the image-tree messages write them), for messages.
  std::string str() const;
};

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
  ImageShape shape() const { return {channels, height, width}; }
  const uint8_t* image(int64_t i) const { return images.data() + i * image_numel(); }
  uint8_t* image(int64_t i) { return images.data() + i * image_numel(); }
  // Images per class, indexed by label.
  std::vector<int64_t> class_counts() const;
};

// The CIFAR-10 class names in label order.
const std::vector<std::string>& cifar10_class_names();
// Fashion-MNIST's class names in label order (T-shirt/top .. Ankle boot).
const std::vector<std::string>& fashion_mnist_class_names();

enum class DataFormat { cifar_binary, idx, image_folder };

struct LoadOptions {
  // Required image size. 0 = take it from the data (image trees: the first
  // image, which every image must then share). CIFAR-10 binary is always
  // 32x32; IDX files are the size their header says.
  int height = 0;
  int width = 0;
  // Required channels, 1 or 3. 0 = from the data (see the top of this file).
  // Image trees convert every file to it; CIFAR-10 binary (3) and IDX (1)
  // must already have it.
  int channels = 0;
  // Image trees and IDX: resize images of another size to height x width
  // (area filter) instead of rejecting them. Needs height and width. Only on
  // request: a model is never fed another shape than it was trained on
  // unless the user asked for it.
  bool resize = false;
  // For messages: who asks for the shape, e.g. "the input of model.oct".
  std::string wanted_by;
  // CIFAR-10 binary: records every batch file must hold (0 = any count).
  int64_t records_per_file = 10000;
};

// Where the data is: `explicit_path` when non-empty (it must exist), else
// $OCTET_DATA, else std::runtime_error explaining that nothing can be
// downloaded here and how to point Octet at a local copy.
std::string resolve_data_path(const std::string& explicit_path);

// The layout under path; for CIFAR binary and IDX, `dir` receives the folder
// that holds the files (path itself, path/cifar-10-batches-bin, path/raw).
// Throws when path holds none of the layouts.
DataFormat detect_format(const std::string& path, std::string* dir = nullptr);

// One split, auto-detected layout.
Dataset load_dataset(const std::string& path, Split split, const LoadOptions& opt = {});

// The CIFAR-10 binary batches of one split from `dir`.
Dataset load_cifar10_binary(const std::string& dir, Split split, const LoadOptions& opt = {});
// Appends the records of one batch file to `out` (which must be 3x32x32).
void read_cifar10_batch(const std::string& file, Dataset& out, int64_t expected_records = 10000);
// Class names from batches.meta.txt (non-empty lines); exactly 10 required.
std::vector<std::string> read_cifar10_meta(const std::string& file);

// ---- IDX (MNIST, Fashion-MNIST) ----

// The bytes of a file, gunzipped (zlib) when they start with the gzip magic
// 1f 8b, whatever the name. Throws naming the file: unreadable, a truncated
// or corrupt gzip stream, bytes after it that are no further gzip member.
std::vector<uint8_t> read_maybe_gzip(const std::string& file);

struct IdxImages {
  int64_t count = 0;
  int rows = 0, cols = 0;
  std::vector<uint8_t> pixels;  // count x rows x cols, row-major
};
// One IDX file of unsigned-byte images (magic 0x00000803), plain or gzip.
IdxImages read_idx_images(const std::string& file);
// One IDX file of unsigned-byte labels (magic 0x00000801), each < num_classes.
std::vector<int> read_idx_labels(const std::string& file, int num_classes = 10);
// The class names of the IDX files in `dir`: Fashion-MNIST's when the
// folder's name (its parent's for a raw/ folder) contains "fashion", else
// the digits "0".."9".
std::vector<std::string> idx_class_names(const std::string& dir);
// One split of the IDX files in `dir` (see the top of this file).
Dataset load_idx(const std::string& dir, Split split, const LoadOptions& opt = {});

// ---- image trees ----

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
